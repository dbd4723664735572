package kubotest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
)

const (
	// startTimeout bounds how long Start waits for the API to answer. A cold
	// daemon is ready in well under a second; 30 s leaves room for slow CI.
	startTimeout = 30 * time.Second
	// stopGrace is how long a SIGTERM'd daemon gets before SIGKILL.
	stopGrace = 5 * time.Second
	// logTailLines is how much of the daemon log is shown on failure.
	logTailLines = 50
	// logName is the daemon's stdout+stderr, kept in the repo so it is
	// found next to the data it describes.
	logName = "daemon.log"
)

// Environment variables read by Binary.
const (
	EnvKubo         = "PACMAN_IPFS_KUBO"
	EnvRequireTools = "PACMAN_IPFS_REQUIRE_TOOLS"
)

var (
	toolOnce sync.Once
	toolPath string
	toolErr  error
)

// Binary returns the kubo binary: $PACMAN_IPFS_KUBO if set, else the result
// of `go tool -n ipfs` run in the module root (built once per process).
// It skips the test if kubo can't be found, unless
// PACMAN_IPFS_REQUIRE_TOOLS=1, in which case it fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := binary()
	if err != nil {
		if os.Getenv(EnvRequireTools) == "1" {
			t.Fatalf("kubotest: kubo binary: %v", err)
		}
		t.Skipf("kubotest: kubo binary not available (set %s=1 to fail instead): %v", EnvRequireTools, err)
	}
	return path
}

func binary() (string, error) {
	if p := os.Getenv(EnvKubo); p != "" {
		// Checked on every call, not cached: it is cheap and tests may set
		// the variable with t.Setenv.
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("$%s: %w", EnvKubo, err)
		}
		return p, nil
	}
	toolOnce.Do(func() { toolPath, toolErr = goToolIPFS() })
	return toolPath, toolErr
}

// goToolIPFS builds (or finds in the build cache) the kubo tool pinned in
// go.mod. The first build takes minutes; later ones are cache hits.
func goToolIPFS() (string, error) {
	root, err := ModuleDir(".")
	if err != nil {
		return "", err
	}
	return GoTool(root, "ipfs")
}

// GoTool builds (or finds in the build cache) the tool name pinned in the
// go.mod of dir, with `go tool -n`, and returns its path.
func GoTool(dir, name string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(goBin, "tool", "-n", name)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go tool -n %s in %s: %v: %s", name, dir, err, strings.TrimSpace(stderr.String()))
	}
	p := strings.TrimSpace(string(out))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("go tool -n %s in %s: %w", name, dir, err)
	}
	return p, nil
}

// ModuleDir walks up from the current directory (the package directory
// under go test) to the nearest directory d with d/sub/go.mod, and returns
// d/sub: ModuleDir(".") is the module root, ModuleDir("testdata/cluster")
// the module of the cluster tools.
func ModuleDir(sub string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, sub, "go.mod")); err == nil {
			return filepath.Join(dir, sub), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s above the current directory", filepath.Join(sub, "go.mod"))
		}
		dir = parent
	}
}

// Options configures Start.
type Options struct {
	// RepoDir is the IPFS_PATH. Default: a new dir under t.TempDir(). If
	// it already holds an initialised repo, that repo is reused.
	RepoDir string
	// Filestore sets Experimental.FilestoreEnabled=true, so `ipfs add
	// --nocopy` works for files under filepath.Dir(RepoDir).
	Filestore bool
	// Config holds extra `ipfs config --json KEY VALUE` pairs, applied
	// after the defaults (so they can override them) in key order.
	Config map[string]string
}

// Node is a running (or stopped) kubo daemon.
type Node struct {
	RepoDir    string   // IPFS_PATH
	APIAddr    string   // RPC API multiaddr, e.g. /ip4/127.0.0.1/tcp/41234 (from $IPFS_PATH/api)
	APIURL     string   // e.g. http://127.0.0.1:41234
	GatewayURL string   // e.g. http://127.0.0.1:41235 (from $IPFS_PATH/gateway); "" if the gateway is off
	PeerID     string   // the node's peer ID
	SwarmAddrs []string // loopback TCP swarm multiaddrs ending in /p2p/<PeerID>

	bin     string
	logPath string

	// Set by start, owned by the test goroutine; waitErr is written by the
	// reaper goroutine before it closes done.
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	// stopping is set when we signal the daemon ourselves, so an exit we
	// didn't ask for can be reported at cleanup.
	stopping bool
}

// localConfig is applied after `ipfs init --profile test`. The test profile
// already sets most of these; setting them again keeps the guarantees
// explicit (and holds for reused repos initialised some other way).
// Values are JSON, as for `ipfs config --json`.
var localConfig = [][2]string{
	// Listen only on loopback, kernel-chosen ports. Swarm is TCP only: with
	// no QUIC/WebTransport/WebRTC listen addresses nothing binds UDP.
	{"Addresses.API", `"/ip4/127.0.0.1/tcp/0"`},
	{"Addresses.Gateway", `"/ip4/127.0.0.1/tcp/0"`},
	{"Addresses.Swarm", `["/ip4/127.0.0.1/tcp/0"]`},
	// Announce exactly the listen addresses, i.e. loopback.
	{"Addresses.Announce", `[]`},
	{"Addresses.AppendAnnounce", `[]`},
	{"Addresses.NoAnnounce", `[]`},
	// The RPC API is open: tests talk to it without credentials.
	{"API.Authorizations", `{}`},
	// AutoConf would fetch its JSON from the internet; once it is off, every
	// field that defaults to "auto" needs an explicit value.
	{"AutoConf.Enabled", `false`},
	{"Bootstrap", `[]`},
	{"DNS.Resolvers", `{}`},
	{"Routing.DelegatedRouters", `[]`},
	{"Ipns.DelegatedPublishers", `[]`},
	// Plain DHT: unlike "auto" it adds no implicit HTTP routers, unlike
	// "none" the node routes like a production node. With no bootstrap
	// peers it only ever talks to peers connected by hand.
	{"Routing.Type", `"dht"`},
	// Let loopback peers into the LAN DHT (otherwise filtered out).
	{"Routing.LoopbackAddressesOnLanDHT", `true`},
	{"Discovery.MDNS.Enabled", `false`},
	{"Swarm.DisableNatPortMap", `true`},
	{"AutoTLS.Enabled", `false`},
	// Relays are pointless on loopback and only add background work.
	{"Swarm.RelayClient.Enabled", `false`},
	{"Swarm.RelayService.Enabled", `false`},
	// Telemetry would POST to an internet endpoint (IPFS_TELEMETRY=off in
	// the environment too, which takes precedence over config).
	{"Plugins.Plugins.telemetry.Disabled", `true`},
	// Import.* is deliberately left alone: callers test that their own
	// code overrides kubo's defaults.
}

// Start initialises a repo (unless opts.RepoDir already holds one),
// configures it to stay on loopback, starts `ipfs daemon` and waits until
// its API answers. The daemon is stopped at test cleanup; if the test
// failed, the tail of the daemon log is printed.
func Start(t testing.TB, opts Options) *Node {
	t.Helper()
	bin := Binary(t)

	repo := opts.RepoDir
	if repo == "" {
		// A subdirectory, so the filestore root filepath.Dir(repo) is a
		// directory the test owns and can put files in.
		repo = filepath.Join(t.TempDir(), "ipfs")
	}
	repo, err := filepath.Abs(repo)
	if err != nil {
		t.Fatalf("kubotest: repo %s: %v", opts.RepoDir, err)
	}
	n := &Node{RepoDir: repo, bin: bin, logPath: filepath.Join(repo, logName)}

	if _, err := os.Stat(filepath.Join(repo, "config")); errors.Is(err, os.ErrNotExist) {
		n.IPFS(t, "init", "--empty-repo", "--profile", "test")
	} else if err != nil {
		t.Fatalf("kubotest: repo %s: %v", repo, err)
	}

	cfg := slices.Clone(localConfig)
	if opts.Filestore {
		cfg = append(cfg, [2]string{"Experimental.FilestoreEnabled", "true"})
	}
	// Our own keys are known-good, so they are written straight into the
	// config file: one `ipfs config` process per key costs ~40 ms each.
	if err := EditJSON(filepath.Join(repo, "config"), cfg); err != nil {
		t.Fatalf("kubotest: %v", err)
	}
	// The caller's keys go through `ipfs config`, which rejects typos.
	for _, k := range slices.Sorted(maps.Keys(opts.Config)) {
		n.IPFS(t, "config", "--json", k, opts.Config[k])
	}

	// Registered before the daemon starts so a failed start is cleaned up.
	t.Cleanup(func() {
		if n.cmd != nil && !n.stopping && n.exited() {
			t.Logf("kubotest: daemon %s exited on its own: %v", repo, n.waitErr)
		}
		n.Stop(t)
		if t.Failed() {
			t.Logf("kubotest: last %d lines of %s:\n%s", logTailLines, n.logPath, tail(n.logPath, logTailLines))
		}
	})
	n.start(t)
	return n
}

// EditJSON sets dotted KEY to JSON VALUE pairs in a JSON config file (kubo's, a cluster peer's service.json),
// like `ipfs config --json KEY VALUE`, creating intermediate objects.
func EditJSON(path string, kvs [][2]string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var root map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // keep numbers exactly as kubo wrote them
	if err := dec.Decode(&root); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, kv := range kvs {
		var v any
		if err := json.Unmarshal([]byte(kv[1]), &v); err != nil {
			return fmt.Errorf("%s: %s=%s: %w", path, kv[0], kv[1], err)
		}
		keys := strings.Split(kv[0], ".")
		m := root
		for _, k := range keys[:len(keys)-1] {
			sub, ok := m[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[k] = sub
			}
			m = sub
		}
		m[keys[len(keys)-1]] = v
	}
	out, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// Write-and-rename so a failed write can't leave a truncated config;
	// 0600 because the file holds the node's private key.
	tmp := path + ".kubotest.tmp"
	if err := os.WriteFile(tmp, append(out, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// env is the environment for every kubo process of this node. A user's
// IPFS_* and GOLOG_* settings are dropped so they can't point the node at
// another repo, change its logging or turn telemetry back on.
func (n *Node) env() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "IPFS_") || strings.HasPrefix(kv, "GOLOG_")
	})
	return append(env,
		"IPFS_PATH="+n.RepoDir,
		"GOLOG_LOG_LEVEL=error",
		"IPFS_TELEMETRY=off",
	)
}

// running reports whether the daemon was started and has not exited.
func (n *Node) running() bool { return n.cmd != nil && !n.exited() }

func (n *Node) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

func (n *Node) start(t testing.TB) {
	t.Helper()
	// A killed daemon leaves its api/gateway files behind; remove them so
	// we never read a stale address. (repo.lock needs no cleanup: it is an
	// fcntl lock, released by the kernel when the process dies.)
	for _, f := range []string{"api", "gateway"} {
		if err := os.Remove(filepath.Join(n.RepoDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("kubotest: %v", err)
		}
	}
	logf, err := os.OpenFile(n.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("kubotest: daemon log: %v", err)
	}
	defer logf.Close() // the child has its own copy of the descriptor
	logStart, _ := logf.Seek(0, io.SeekEnd)
	fmt.Fprintf(logf, "=== kubotest: ipfs daemon starting at %s\n", time.Now().Format(time.RFC3339Nano))

	cmd := exec.Command(n.bin, "daemon")
	cmd.Env = n.env()
	cmd.Dir = n.RepoDir
	cmd.Stdout = logf
	cmd.Stderr = logf
	setSysProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubotest: start %s daemon (repo %s): %v", n.bin, n.RepoDir, err)
	}
	n.cmd, n.done, n.waitErr, n.stopping = cmd, make(chan struct{}), nil, false
	go func(done chan struct{}) {
		n.waitErr = cmd.Wait()
		close(done)
	}(n.done)

	if err := n.waitReady(logStart); err != nil {
		t.Fatalf("kubotest: daemon %s: %v\nlast %d lines of %s:\n%s",
			n.RepoDir, err, logTailLines, n.logPath, tail(n.logPath, logTailLines))
	}
}

// waitReady polls until the daemon's API answers /api/v0/id and the
// daemon has finished starting, then fills in the address fields.
func (n *Node) waitReady(logStart int64) error {
	deadline := time.Now().Add(startTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	lastErr := errors.New("no api file yet")
	for {
		if n.exited() {
			return fmt.Errorf("exited during startup: %v", n.waitErr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %v", startTimeout, lastErr)
		}
		if lastErr = n.probe(client, logStart); lastErr == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *Node) probe(client *http.Client, logStart int64) error {
	b, err := os.ReadFile(filepath.Join(n.RepoDir, "api"))
	if err != nil {
		return err
	}
	apiAddr := strings.TrimSpace(string(b))
	apiURL, err := maddrToURL(apiAddr)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(n.RepoDir, "api"), err)
	}
	resp, err := client.Post(apiURL+"/api/v0/id", "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s/api/v0/id: %s: %s", apiURL, resp.Status, bytes.TrimSpace(body))
	}
	var id struct {
		ID        string
		Addresses []string
	}
	if err := json.Unmarshal(body, &id); err != nil {
		return fmt.Errorf("POST %s/api/v0/id: %w", apiURL, err)
	}
	swarm := loopbackTCP(id.Addresses, id.ID)
	if len(swarm) == 0 {
		return fmt.Errorf("no loopback TCP swarm address in %q", id.Addresses)
	}
	// The API comes up before the gateway. The gateway file marks the end of
	// startup; "Daemon is ready" covers configs with the gateway turned off.
	gw, err := os.ReadFile(filepath.Join(n.RepoDir, "gateway"))
	if err != nil && !logContains(n.logPath, logStart, "Daemon is ready") {
		return errors.New("API is up, waiting for the gateway")
	}
	n.APIAddr, n.APIURL, n.PeerID, n.SwarmAddrs = apiAddr, apiURL, id.ID, swarm
	n.GatewayURL = strings.TrimSpace(string(gw))
	return nil
}

// maddrToURL turns /ip4/127.0.0.1/tcp/5001 (or ip6/dns*) into an http URL.
func maddrToURL(maddr string) (string, error) {
	p := strings.Split(maddr, "/")
	if len(p) < 5 || p[0] != "" || p[3] != "tcp" {
		return "", fmt.Errorf("unsupported API multiaddr %q", maddr)
	}
	host := p[2]
	switch p[1] {
	case "ip4", "dns", "dns4", "dns6":
	case "ip6":
		host = "[" + host + "]"
	default:
		return "", fmt.Errorf("unsupported API multiaddr %q", maddr)
	}
	return "http://" + host + ":" + p[4], nil
}

// loopbackTCP keeps plain-TCP loopback addresses, each ending in /p2p/<id>.
func loopbackTCP(addrs []string, id string) []string {
	var out []string
	for _, a := range addrs {
		a = strings.TrimSuffix(a, "/p2p/"+id)
		p := strings.Split(a, "/")
		if len(p) != 5 || p[3] != "tcp" {
			continue // not bare TCP: ws, quic, p2p-circuit, ...
		}
		if !(p[1] == "ip4" && strings.HasPrefix(p[2], "127.")) && !(p[1] == "ip6" && p[2] == "::1") {
			continue
		}
		out = append(out, a+"/p2p/"+id)
	}
	return out
}

// Client dials the node's RPC API; the test fails if it cannot.
func (n *Node) Client(t testing.TB) *kubo.Client {
	t.Helper()
	c, err := kubo.Dial(context.Background(), n.APIAddr)
	if err != nil {
		t.Fatalf("kubo at %s: %v", n.APIAddr, err)
	}
	return c
}

// Stop stops the daemon: SIGTERM, then SIGKILL if it hasn't exited after a
// few seconds. It is a no-op if the daemon isn't running.
func (n *Node) Stop(t testing.TB) {
	t.Helper()
	if !n.running() {
		return
	}
	n.stopping = true
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil && !n.exited() {
		t.Errorf("kubotest: SIGTERM daemon %s: %v", n.RepoDir, err)
	}
	select {
	case <-n.done:
		return
	case <-time.After(stopGrace):
	}
	t.Logf("kubotest: daemon %s ignored SIGTERM for %s; sending SIGKILL", n.RepoDir, stopGrace)
	n.Kill(t)
}

// Kill sends SIGKILL (for fault tests: no clean shutdown, stale api file)
// and waits for the process to exit. It is a no-op if it isn't running.
func (n *Node) Kill(t testing.TB) {
	t.Helper()
	if !n.running() {
		return
	}
	n.stopping = true
	if err := n.cmd.Process.Kill(); err != nil && !n.exited() {
		t.Fatalf("kubotest: SIGKILL daemon %s: %v", n.RepoDir, err)
	}
	<-n.done
}

// Pause freezes the daemon (SIGSTOP) without ending it: its peers and clients see it hang, as they would
// a node on a stalled link. Resume (also run at cleanup) lets it go on.
func (n *Node) Pause(t testing.TB) {
	t.Helper()
	if !n.running() {
		t.Fatalf("kubotest: Pause: daemon %s is not running", n.RepoDir)
	}
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("kubotest: SIGSTOP daemon %s: %v", n.RepoDir, err)
	}
	t.Cleanup(func() { n.Resume(t) })
}

// Resume continues a paused daemon.
func (n *Node) Resume(t testing.TB) {
	t.Helper()
	if n.running() {
		_ = n.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Restart stops the daemon (if running) and starts it again on the same
// repo. Ports change; the address fields are refreshed.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.Stop(t)
	n.start(t)
}

// IPFS runs the kubo CLI for this node and returns its trimmed stdout,
// failing the test (with stderr) if it exits non-zero.
func (n *Node) IPFS(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.TryIPFS(t, args...)
	if err != nil {
		t.Fatalf("kubotest: %v", err)
	}
	return out
}

// TryIPFS is IPFS for commands that are expected to fail: it returns the
// trimmed stdout and an error that includes the trimmed stderr.
//
// While the daemon runs, the command is pinned to it with --api, so it
// fails if the daemon is unreachable instead of silently falling back to
// offline mode (which kubo does when the api file is stale). When the
// daemon is stopped, the command runs offline against the repo.
func (n *Node) TryIPFS(t testing.TB, args ...string) (string, error) {
	t.Helper()
	full := args
	if n.running() && n.APIAddr != "" {
		full = append([]string{"--api", n.APIAddr}, args...)
	}
	cmd := exec.Command(n.bin, full...)
	cmd.Env = n.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := strings.TrimSpace(stdout.String())
	if err != nil {
		return out, fmt.Errorf("ipfs %s (IPFS_PATH=%s): %v: %s",
			strings.Join(args, " "), n.RepoDir, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Connect makes a direct swarm connection from n to other.
func (n *Node) Connect(t testing.TB, other *Node) {
	t.Helper()
	if len(other.SwarmAddrs) == 0 {
		t.Fatalf("kubotest: node %s has no swarm address (not started?)", other.RepoDir)
	}
	n.IPFS(t, "swarm", "connect", other.SwarmAddrs[0])
}

// LogPath is the file that receives the daemon's stdout and stderr.
func (n *Node) LogPath() string { return n.logPath }

// logContains reports whether the log, from offset on, contains s.
func logContains(path string, offset int64, s string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return false
	}
	b, err := io.ReadAll(f)
	return err == nil && bytes.Contains(b, []byte(s))
}

// tail returns the last n lines of the file, or a note saying why not.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if err := sc.Err(); err != nil {
		lines = append(lines, fmt.Sprintf("(reading %s: %v)", path, err))
	}
	return strings.Join(lines, "\n")
}
