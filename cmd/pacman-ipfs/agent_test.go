package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

var (
	notifyOnce sync.Once
	notifyBin  string
	notifyErr  error
)

// notifyBinary builds cmd/pacman-ipfs-notify as it ships: static, no cgo.
func notifyBinary(t testing.TB) string {
	t.Helper()
	notifyOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pacman-ipfs-notify")
		if err != nil {
			notifyErr = err
			return
		}
		notifyBin = filepath.Join(dir, "pacman-ipfs-notify")
		cmd := exec.Command("go", "build", "-trimpath", "-o", notifyBin, "../pacman-ipfs-notify")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			notifyErr = fmt.Errorf("build the notify client: %v\n%s", err, out)
		}
	})
	if notifyErr != nil {
		t.Fatal(notifyErr)
	}
	return notifyBin
}

// e2e is a pacman sandbox with the project's hook in its HookDir and the notify client inside its root
// (pacman runs hooks chrooted there), a kubo node beside its cache, and the agent behind
// systemd-socket-activate on the socket the hook talks to, inside the root.
type e2e struct {
	repo   *alpmtest.Repo
	sb     *alpmtest.Sandbox
	node   *kubotest.Node
	client *kubo.Client
	socket string
	state  string
	logs   string
	agent  *exec.Cmd // systemd-socket-activate, which execs the agent in its place
	exited chan error
}

func newE2E(t *testing.T, pkgs ...alpmtest.Pkg) *e2e {
	t.Helper()
	if testing.Short() {
		t.Skip("integration: real pacman, kubo and systemd-socket-activate")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar", "systemd-socket-activate", "go")
	e := &e2e{repo: alpmtest.MakeRepo(t, "core", pkgs...)}
	e.sb = alpmtest.NewSandbox(t, e.repo)
	e.sb.Pacman(t, "-Sy")
	notify := filepath.Join(e.sb.Root, "usr", "lib", "pacman-ipfs", "pacman-ipfs-notify")
	alpmtest.CopyFile(t, notifyBinary(t), notify, 0o755)
	alpmtest.CopyFile(t, "../../hooks/pacman-ipfs.hook", filepath.Join(e.sb.HookDir, "pacman-ipfs.hook"), 0o644)
	e.socket = filepath.Join(e.sb.Root, "run", "pacman-ipfs", "control.sock")
	if err := os.MkdirAll(filepath.Dir(e.socket), 0o755); err != nil {
		t.Fatal(err)
	}
	e.node = kubotest.Start(t, kubotest.Options{Filestore: true, RepoDir: filepath.Join(e.sb.Root, "var", "cache", "pacman-ipfs")})
	var err error
	if e.client, err = kubo.Dial(context.Background(), e.node.APIAddr); err != nil {
		t.Fatal(err)
	}
	e.state = t.TempDir()
	e.logs = filepath.Join(t.TempDir(), "agent.log")
	return e
}

// listen puts the agent behind systemd-socket-activate, which listens now and starts the agent at the
// first connection, as pacman-ipfs.socket does.
func (e *e2e) listen(t *testing.T, extra ...string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(e.socket) // what a dead agent left behind; systemd would keep its own socket
	args := append([]string{"-l", e.socket, "-E", "PACMAN_IPFS_BE_CLI=1", exe, "agent",
		"--pacman-conf", e.sb.Conf, "--api", e.node.APIAddr, "--state-dir", e.state, "--quiet", "200ms", "-v"}, extra...)
	log, err := os.OpenFile(e.logs, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("systemd-socket-activate", args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log.Close()
	e.agent, e.exited = cmd, make(chan error, 1)
	go func() { e.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(e.logs)
			t.Logf("agent log:\n%s", b)
		}
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(e.socket); err == nil {
			return
		}
		if i > 200 {
			t.Fatal("systemd-socket-activate did not create the socket")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pinned lists our pins by file name.
func (e *e2e) pinned(t *testing.T) []string {
	t.Helper()
	pins, err := e.client.Pins(context.Background(), node.PinPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range pins {
		names = append(names, strings.TrimPrefix(n, node.PinPrefix+"core/"))
	}
	slices.Sort(names)
	return names
}

func (e *e2e) hookLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		// pacman itself prints the hook's Description; anything else naming us came from the client.
		if strings.Contains(l, "pacman-ipfs") && !strings.Contains(l, "Telling pacman-ipfs about the transaction") {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestAgentEndToEnd(t *testing.T) {
	a := alpmtest.Pkg{Name: "a", Size: 50 << 10}
	b := alpmtest.Pkg{Name: "b", Size: 3 << 20, Ext: ".pkg.tar.zst"}
	c := alpmtest.Pkg{Name: "c", Size: 20 << 10}
	d := alpmtest.Pkg{Name: "d", Size: 20 << 10}
	e := newE2E(t, a, b, c, d)

	// No agent yet: the hook says nothing and pacman succeeds.
	out := e.sb.Pacman(t, "-S", "d")
	if !strings.Contains(out, "Telling pacman-ipfs about the transaction") || len(e.hookLines(out)) > 0 {
		t.Errorf("pacman -S with no agent:\n%q", out)
	}
	if _, err := os.Stat(e.socket); err == nil {
		t.Fatal("socket exists before the agent was set up")
	}

	e.listen(t)
	out = e.sb.Pacman(t, "-S", "a", "b")
	if lines := e.hookLines(out); len(lines) > 0 {
		t.Errorf("the hook printed %q", lines)
	}
	took := alpmtest.Eventually(t, 30*time.Second, "pacman -S leads to pins", func() bool {
		return slices.Equal(e.pinned(t), e.sb.CachedPackages(t))
	})
	t.Logf("pins %v %s after pacman -S returned", e.pinned(t), took.Round(time.Millisecond))

	// paccache -r and -m behind pacman's back: the watcher alone unpins.
	if err := os.Remove(filepath.Join(e.sb.CacheDir, a.FileName())); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(e.sb.CacheDir, b.FileName()), filepath.Join(t.TempDir(), b.FileName())); err != nil {
		t.Fatal(err)
	}
	alpmtest.Eventually(t, 15*time.Second, "removal and move unpinned", func() bool { return slices.Equal(e.pinned(t), e.sb.CachedPackages(t)) })
	// A verified file copied in by hand is seeded.
	alpmtest.CopyFile(t, e.repo.Path(c), filepath.Join(e.sb.CacheDir, c.FileName()), 0o644)
	alpmtest.Eventually(t, 15*time.Second, "hand-copied file seeded", func() bool { return slices.Contains(e.pinned(t), c.FileName()) })

	// status talks to the running agent.
	r := cli(t, "status", "--json", "--socket", e.socket, "--api", e.node.APIAddr, "--state-dir", t.TempDir())
	var st status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Agent == nil || st.Agent.Passes == 0 || st.LastSync == nil {
		t.Errorf("status --json with the agent up: %v\n%s%s", err, r.stdout, r.stderr)
	}

	// A user who is not root may ask for status but not for work. (pacman-ipfs.socket makes the socket
	// 0666; systemd-socket-activate leaves it to the umask.)
	openUp(t, e.socket)
	if err := os.Chmod(e.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(e.sb.Root, "usr", "lib", "pacman-ipfs", "pacman-ipfs-notify")
	nobody := exec.Command(bin, "--reconcile", "--wait", "--socket", e.socket)
	nobody.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	nobody.Stderr = &stderr
	if err := nobody.Run(); err != nil || !strings.Contains(stderr.String(), "only root or the agent's group may ask for work") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("reconcile as nobody: %v, said %q", err, stderr.String())
	}

	// SIGTERM ends the agent cleanly.
	if err := e.agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-e.exited:
		if err != nil {
			t.Errorf("agent after SIGTERM: %v", err)
		}
		e.exited <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop within 10 s of SIGTERM")
	}
}

// openUp lets other users reach path: the test's temp dirs are private by default.
func openUp(t *testing.T, path string) {
	t.Helper()
	for d := filepath.Dir(path); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// The agent killed (SIGKILL) while seeding, the cache changed while it is down, then re-activated by the
// next hook: the pins converge to the cache, nothing orphaned and nothing missing.
func TestAgentKilledWhileSeedingConverges(t *testing.T) {
	var pkgs []alpmtest.Pkg
	var names []string
	for i := range 40 {
		p := alpmtest.Pkg{Name: fmt.Sprintf("big%02d", i), Size: 8 << 20, Ext: ".pkg.tar"}
		pkgs = append(pkgs, p)
		names = append(names, p.Name)
	}
	late := alpmtest.Pkg{Name: "late", Size: 30 << 10}
	byHand := alpmtest.Pkg{Name: "byhand", Size: 2 << 20, Ext: ".pkg.tar"}
	e := newE2E(t, append(pkgs, late, byHand)...)
	e.listen(t)
	e.sb.Pacman(t, append([]string{"-S"}, names...)...)
	alpmtest.Eventually(t, 60*time.Second, "seeding under way", func() bool { return len(e.pinned(t)) > 0 })
	seeded := len(e.pinned(t))
	if err := e.agent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-e.exited
	e.exited <- nil
	t.Logf("killed the agent with %d of %d packages pinned", seeded, len(pkgs))

	// While it is down: paccache removes five packages, one arrives by hand.
	for _, p := range pkgs[:5] {
		if err := os.Remove(filepath.Join(e.sb.CacheDir, p.FileName())); err != nil {
			t.Fatal(err)
		}
	}
	alpmtest.CopyFile(t, e.repo.Path(byHand), filepath.Join(e.sb.CacheDir, byHand.FileName()), 0o644)

	// The next transaction's hook activates it again; its first pass catches up.
	e.listen(t)
	e.sb.Pacman(t, "-S", "late")
	alpmtest.Eventually(t, 60*time.Second, "pins converge to the cache", func() bool { return slices.Equal(e.pinned(t), e.sb.CachedPackages(t)) })
	// Every pin is complete in the node.
	pins, _ := e.client.Pins(context.Background(), node.PinPrefix)
	for c, name := range pins {
		if out, err := e.node.TryIPFS(t, "refs", "-r", "--offline", c.String()); err != nil {
			t.Errorf("%s (%s) is incomplete: %v %s", name, c, err, out)
		}
	}
}
