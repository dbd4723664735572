package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder"
)

// The agent SIGKILLed at random points of a long seeding, 50 times in a row: the state file is always
// whole (written atomically), and once it may run to the end, the pins are exactly the cache, every one
// complete, nothing orphaned.
func TestFaultAgentKilled50Times(t *testing.T) {
	var pkgs []alpmtest.Pkg
	var names []string
	for i := range 40 {
		p := alpmtest.Pkg{Name: fmt.Sprintf("pkg%02d", i), Size: (1 + i%6) << 20, Ext: ".pkg.tar"}
		if i%3 == 0 {
			p.Size = 300 << 10 // one-block files too
		}
		pkgs, names = append(pkgs, p), append(names, p.Name)
	}
	e := newE2E(t, pkgs...)
	e.sb.Pacman(t, append([]string{"-Sw"}, names...)...)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(t.TempDir(), "c.sock")
	args := []string{"agent", "--pacman-conf", e.sb.Conf, "--api", e.node.APIAddr, "--state-dir", e.state, "--listen", socket, "--quiet", "50ms"}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "PACMAN_IPFS_BE_CLI=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if b, err := os.ReadFile(filepath.Join(e.state, seeder.StateFile)); err == nil && !json.Valid(b) {
			t.Fatalf("kill %d left a torn state file (%d bytes)", i+1, len(b))
		}
	}
	t.Logf("after 50 kills: %d of %d packages pinned", len(e.pinned(t)), len(pkgs))

	startAgent(t, args[1:]...)
	within(t, 60*time.Second, "pins converge to the cache", func() bool { return slices.Equal(e.pinned(t), e.cacheFiles(t)) })
	pins, err := e.client.Pins(t.Context(), seeder.PinPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for c, name := range pins {
		if out, err := e.node.TryIPFS(t, "refs", "-r", "--offline", c.String()); err != nil {
			t.Errorf("%s (%s) is incomplete: %v %s", name, c, err, out)
		}
	}
}
