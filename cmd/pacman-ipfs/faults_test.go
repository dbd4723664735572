package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
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
		if b, err := os.ReadFile(filepath.Join(e.state, reconcile.StateFile)); err == nil && !json.Valid(b) {
			t.Fatalf("kill %d left a torn state file (%d bytes)", i+1, len(b))
		}
	}
	t.Logf("after 50 kills: %d of %d packages pinned", len(e.pinned(t)), len(pkgs))

	startAgent(t, args[1:]...)
	alpmtest.Eventually(t, 60*time.Second, "pins converge to the cache", func() bool { return slices.Equal(e.pinned(t), e.sb.CachedPackages(t)) })
	pins, err := e.client.Pins(t.Context(), node.PinPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for c, name := range pins {
		if out, err := e.node.TryIPFS(t, "refs", "-r", "--offline", c.String()); err != nil {
			t.Errorf("%s (%s) is incomplete: %v %s", name, c, err, out)
		}
	}
}

// kubo unreachable for a minute while pacman runs: the hook and pacman are unaffected, the agent keeps
// running and says why it waits, and the pins converge within seconds of kubo's return.
func TestFaultKuboDownForAMinute(t *testing.T) {
	a := alpmtest.Pkg{Name: "a", Size: 40 << 10}
	b := alpmtest.Pkg{Name: "b", Size: 2 << 20, Ext: ".pkg.tar"}
	e := newE2E(t, a, b)
	// kubo comes back on the same address, as a system service does.
	port := freePort(t)
	e.node.Stop(t)
	e.node = kubotest.Start(t, kubotest.Options{Filestore: true, RepoDir: e.node.RepoDir, Config: map[string]string{"Addresses.API": `"/ip4/127.0.0.1/tcp/` + strconv.Itoa(port) + `"`}})
	if e.node.APIAddr != "/ip4/127.0.0.1/tcp/"+strconv.Itoa(port) {
		t.Fatalf("kubo's API is at %s", e.node.APIAddr)
	}
	e.listen(t)
	e.node.Stop(t)
	start := time.Now()
	out := e.sb.Pacman(t, "-S", "a", "b")
	if took := time.Since(start); len(e.hookLines(out)) > 0 {
		t.Errorf("with kubo down the hook printed %q (pacman took %s)", e.hookLines(out), took)
	}
	alpmtest.Eventually(t, 15*time.Second, "the agent reports that it waits for kubo", func() bool {
		r := cli(t, "status", "--json", "--socket", e.socket, "--api", e.node.APIAddr, "--state-dir", t.TempDir())
		var st status
		return json.Unmarshal([]byte(r.stdout), &st) == nil && st.Agent != nil && st.Agent.State == "waiting" &&
			strings.Contains(st.Agent.LastError, strconv.Itoa(port))
	})
	time.Sleep(time.Until(start.Add(time.Minute)))
	e.node.Restart(t)
	back := time.Now()
	var err error
	if e.client, err = kubo.Dial(t.Context(), e.node.APIAddr); err != nil {
		t.Fatal(err)
	}
	took := alpmtest.Eventually(t, 30*time.Second, "pins converge after kubo's return", func() bool { return slices.Equal(e.pinned(t), e.sb.CachedPackages(t)) })
	t.Logf("kubo down %s; pins converged %s after it came back", back.Sub(start).Round(time.Second), took.Round(time.Millisecond))
}
