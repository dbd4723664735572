package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// flood is what the flooding helper process does, as an unprivileged user: connections that never send
// a request, that send a request's first bytes slowly, that send one request and then idle on
// keep-alive, and silent connections to the control socket. It says "ready" once all are open and holds
// them until its stdin closes.
type flood struct {
	Endpoint  string // host:port
	Control   string // socket path
	Idle      int
	Slow      int
	KeepAlive int
	Silent    int
	// RefuseFor, when set, is how long to keep asking the control socket for work it refuses to an
	// unprivileged user, one request after another.
	RefuseFor time.Duration
}

const floodEnv = "PACMAN_IPFS_BE_FLOODER"

// floodIfAsked turns the test binary into the flooding helper.
func floodIfAsked() {
	spec := os.Getenv(floodEnv)
	if spec == "" {
		return
	}
	var f flood
	if err := json.Unmarshal([]byte(spec), &f); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var conns []net.Conn
	dial := func(network, addr string) net.Conn {
		c, err := net.DialTimeout(network, addr, 10*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "flooder:", err)
			os.Exit(1)
		}
		conns = append(conns, c)
		return c
	}
	for range f.Idle {
		dial("tcp", f.Endpoint)
	}
	for range f.KeepAlive {
		c := dial("tcp", f.Endpoint)
		fmt.Fprintf(c, "GET /core/os/x86_64/none HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	var slow []net.Conn
	for range f.Slow {
		c := dial("tcp", f.Endpoint)
		fmt.Fprintf(c, "GET /core/os/x86_64/")
		slow = append(slow, c)
	}
	for range f.Silent {
		dial("unix", f.Control)
	}
	if f.RefuseFor > 0 {
		n := 0
		for end := time.Now().Add(f.RefuseFor); time.Now().Before(end); n++ {
			c, err := net.DialTimeout("unix", f.Control, time.Second)
			if err != nil {
				break // the agent is gone
			}
			fmt.Fprintf(c, "{\"op\":\"reconcile\"}\n")
			_, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
		fmt.Println("refused", n)
		os.Exit(0)
	}
	fmt.Println("ready", len(conns))
	go func() {
		for {
			for _, c := range slow {
				c.Write([]byte("a")) // one byte a second: a slowloris
			}
			time.Sleep(time.Second)
		}
	}()
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

// Thousands of idle, slow and keep-alive connections to the endpoint and silent ones to the control
// socket, from an unprivileged local user: the agent's descriptors and memory stay bounded while they
// are held, pacman is served through the endpoint while they are, and once they are gone pacman installs
// through it and the hook is answered.
func TestFloodOfIdleAndSlowConnections(t *testing.T) {
	small := alpmtest.Pkg{Name: "small", Size: 300 << 10}
	other := alpmtest.Pkg{Name: "other", Size: 200 << 10}
	w := newEndpointWorld(t, []alpmtest.Pkg{small, other}, "small")
	w.b.Servers = map[string][]string{"core": {w.endpoint() + "/$repo/os/$arch"}}
	w.b.WriteConf(t)
	w.startB(t, "--mirrorlist", mirrorlist(t, w.m.template()), "--index", w.indexA)
	openUp(t, w.control)
	if err := os.Chmod(w.control, 0o666); err != nil {
		t.Fatal(err)
	}
	pid := agentState(t, w.control).PID
	rss0, fds0 := procFigures(t, pid)

	cmd, stdin, line := startFlooder(t, flood{Endpoint: "127.0.0.1:" + strconv.Itoa(w.port), Control: w.control,
		Idle: 2000, Slow: 300, KeepAlive: 4000, Silent: 400})
	if !strings.HasPrefix(line, "ready") {
		t.Fatalf("the flooder did not get its connections open: %q", line)
	}
	// While the flood holds, pacman is served: at the cap the idlest connections make room.
	type result struct {
		out  string
		err  error
		took time.Duration
	}
	served := make(chan result, 1)
	go func() {
		start := time.Now()
		out, err := w.b.PacmanErr("-Sy")
		if err == nil {
			out, err = w.b.PacmanErr("-Sw", "small")
		}
		served <- result{out, err, time.Since(start)}
	}()
	// Hold the flood past the header (5 s) and control (5 s) timeouts and until pacman is done,
	// sampling the agent.
	peakRSS, peakFDs := rss0, fds0
	var res *result
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end) || res == nil; time.Sleep(100 * time.Millisecond) {
		rss, fds := procFigures(t, pid)
		peakRSS, peakFDs = max(peakRSS, rss), max(peakFDs, fds)
		select {
		case r := <-served:
			res = &r
		default:
		}
	}
	out, err, tookDuring := res.out, res.err, res.took
	stdin.Close()
	cmd.Wait()
	if err != nil {
		t.Errorf("pacman during the flood: %v\n%s", err, out)
	}
	t.Logf("during a flood of %s: pacman -Sy and -Sw through the endpoint in %s; the agent's fds %d -> peak %d, RSS %d -> peak %d KiB",
		strings.TrimSpace(line), tookDuring.Round(time.Millisecond), fds0, peakFDs, rss0, peakRSS)
	if peakFDs > 400 {
		t.Errorf("the agent held %d descriptors under the flood: unbounded", peakFDs)
	}

	// After the flood: the hook is answered and pacman installs through the endpoint.
	start := time.Now()
	r := cli(t, "status", "--json", "--socket", w.control, "--api", w.nodeB.APIAddr, "--state-dir", t.TempDir())
	var st status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Agent == nil {
		t.Errorf("status after the flood: %v\n%s%s", err, r.stdout, r.stderr)
	}
	// The hook's client, asking for a pass and waiting for the answer.
	if out, err := exec.Command(notifyBinary(t), "--socket", w.control, "--reconcile", "--wait").CombinedOutput(); err != nil {
		t.Errorf("the hook's client after the flood: %v\n%s", err, out)
	}
	w.b.Pacman(t, "-Sy")
	w.b.Pacman(t, "-S", "small", "other")
	t.Logf("after the flood: status and the hook's client answered, and small and other installed through the endpoint in %s", time.Since(start).Round(time.Millisecond))
	if logs := w.log(t); strings.Count(logs, "control request refused") > 3 {
		t.Errorf("refusals are not rate-limited in the log: %d lines", strings.Count(logs, "control request refused"))
	}
}

// startFlooder runs the test binary as the flooding helper, as the unprivileged user nobody, and returns
// once it printed its first line.
func startFlooder(t *testing.T, f flood) (*exec.Cmd, io.WriteCloser, string) {
	t.Helper()
	spec, _ := json.Marshal(f)
	// The test binary is the flooder; nobody must be able to run it.
	exe, _ := os.Executable()
	dir, err := os.MkdirTemp("", "pacman-ipfs-flood-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	flooder := filepath.Join(dir, "flooder")
	alpmtest.CopyFile(t, exe, flooder, 0o755)
	cmd := exec.Command(flooder)
	cmd.Env = append(os.Environ(), floodEnv+"="+string(spec))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("the flooder: %v", err)
	}
	return cmd, stdin, strings.TrimSpace(line)
}

// Requests the agent refuses are not activity: a local user asking for work again and again cannot
// keep it from its idle exit.
func TestRefusedRequestsDoNotKeepTheAgentUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the agent")
	}
	conf := syntheticCache(t, 3)
	node := kubotest.Start(t, kubotest.Options{}).APIAddr
	dir, err := os.MkdirTemp("", "pacman-ipfs-idle-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(dir, "control.sock")
	exe, _ := os.Executable()
	agentCmd := exec.Command(exe, "agent", "--pacman-conf", conf, "--api", node, "--state-dir", t.TempDir(),
		"--listen", control, "--quiet", "50ms", "--idle-exit", "2s")
	agentCmd.Env = append(os.Environ(), "PACMAN_IPFS_BE_CLI=1")
	if err := agentCmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan time.Time, 1)
	go func() { agentCmd.Wait(); exited <- time.Now() }()
	t.Cleanup(func() { agentCmd.Process.Kill() })
	alpmtest.Eventually(t, 30*time.Second, "the first pass", func() bool {
		st, err := tryAgentState(control)
		return err == nil && st.Passes >= 1
	})
	start := time.Now()
	_, _, line := startFlooder(t, flood{Control: control, RefuseFor: 20 * time.Second})
	select {
	case at := <-exited:
		t.Logf("the agent exited %s after the refusals began (--idle-exit 2s); the flooder: %s", at.Sub(start).Round(time.Millisecond), line)
	case <-time.After(20 * time.Second):
		t.Fatalf("the agent is still up after 20 s of refused requests with --idle-exit 2s (%s)", line)
	}
}
