package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/memnode"
)

// httpMirror serves a repo directory like an Arch mirror (/<repo>/os/<arch>/<file>) on loopback, keeps
// an access log, and can be told to serve some files tampered.
type httpMirror struct {
	url      string
	mu       sync.Mutex
	log      []string
	tampered map[string]bool
	sent     atomic.Int64 // package bytes sent
	// A mirror far away: latency before each answer, rate bytes a second on each connection (0: as
	// fast as loopback goes). Set before the requests it is for.
	latency time.Duration
	rate    int64
}

func startMirror(t *testing.T, repo *alpmtest.Repo) *httpMirror {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveMirror(t, repo, ln)
}

// countingWriter counts what is written through it.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	k, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(k))
	return k, err
}

// serveMirror serves the repo on ln until the test ends.
func serveMirror(t testing.TB, repo *alpmtest.Repo, ln net.Listener) *httpMirror {
	m := &httpMirror{tampered: map[string]bool{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		file := filepath.Base(r.URL.Path)
		m.mu.Lock()
		m.log = append(m.log, file)
		bad, latency, rate := m.tampered[file], m.latency, m.rate
		m.mu.Unlock()
		time.Sleep(latency)
		if rate > 0 {
			w = &shapedWriter{ResponseWriter: w, rate: rate}
		}
		f, err := os.Open(filepath.Join(repo.Dir, file))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		var content io.ReadSeeker = f // not read into memory: a test package may be a gigabyte
		if bad {
			b, err := io.ReadAll(f)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			b[len(b)/3] ^= 0x55
			content = bytes.NewReader(b)
		}
		if strings.Contains(file, ".pkg.tar") {
			w = countingWriter{w, &m.sent}
		}
		http.ServeContent(w, r, file, time.Unix(1700000000, 0), content)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	m.url = "http://" + ln.Addr().String()
	return m
}

// shapedWriter sends at most rate bytes a second, as a mirror's connection far away does.
type shapedWriter struct {
	http.ResponseWriter
	rate int64
}

func (s *shapedWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), int(max(s.rate/20, 1)))
		w, err := s.ResponseWriter.Write(p[:k])
		n += w
		if err != nil {
			return n, err
		}
		p = p[k:]
		time.Sleep(time.Duration(int64(k) * int64(time.Second) / s.rate))
	}
	return n, nil
}

// packageRequests lists the package files (not databases) the mirror was asked for.
func (m *httpMirror) packageRequests() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, f := range m.log {
		if strings.Contains(f, ".pkg.tar") {
			out = append(out, f)
		}
	}
	return out
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startAgent runs `pacman-ipfs agent` in the background until the test ends.
func startAgent(t testing.TB, args ...string) (logs string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"agent", "-v"}, args...)...)
	cmd.Env = append(os.Environ(), "PACMAN_IPFS_BE_CLI=1")
	return runLogged(t, cmd, syscall.SIGTERM, "agent")
}

// runLogged starts cmd with its output in a log file under t.TempDir() and returns the file's path. At
// cleanup it sends stop (SIGKILL after 10 s) and, if the test failed, prints the log.
func runLogged(t testing.TB, cmd *exec.Cmd, stop os.Signal, what string) (logs string) {
	t.Helper()
	logs = filepath.Join(t.TempDir(), "out.log")
	f, err := os.Create(logs)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(stop)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logs)
			t.Logf("%s log:\n%s", what, b)
		}
	})
	return logs
}

// testHedge is the hedge delay of the tests that assert which source served a package: on a loaded
// machine (CI runs both legs' kubo daemons on two cores) a peer's first bytes can take longer than the
// default 300 ms, and the mirror would then be asked too. The default's cost is measured in make bench.
const testHedge = "2s"

// Two real kubo nodes on loopback: A seeds, B downloads through its agent's endpoint with real pacman.
func TestDownloadThroughTheEndpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: real pacman and two kubo nodes")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	small := alpmtest.Pkg{Name: "small", Size: 300 << 10}
	large := alpmtest.Pkg{Name: "large", Size: 6 << 20, Ext: ".pkg.tar"}
	other := alpmtest.Pkg{Name: "other", Size: 200 << 10}
	bad := alpmtest.Pkg{Name: "bad", Size: 100 << 10}
	late := alpmtest.Pkg{Name: "late", Size: 150 << 10}
	repo := alpmtest.MakeRepo(t, "core", small, large, other, bad, late)
	m := startMirror(t, repo)
	mirrorTemplate := m.url + "/$repo/os/$arch"

	// A: downloads from the mirror and seeds.
	a := alpmtest.NewSandbox(t, repo)
	a.Servers = map[string][]string{"core": {mirrorTemplate}}
	a.WriteConf(t)
	a.Pacman(t, "-Syw", "small", "large")
	nodeA := kubotest.Start(t, kubotest.Options{Filestore: true, RepoDir: filepath.Join(a.Root, "var", "cache", "pacman-ipfs")})
	stateA := t.TempDir()
	flagsA := []string{"--pacman-conf", a.Conf, "--api", nodeA.APIAddr, "--state-dir", stateA, "--socket", filepath.Join(t.TempDir(), "none")}
	if r := cli(t, append([]string{"sync"}, flagsA[:6]...)...); r.code != 0 {
		t.Fatalf("sync on A: %d %s %s", r.code, r.stdout, r.stderr)
	}
	var st status
	r := cli(t, append([]string{"status", "--json"}, flagsA[2:]...)...)
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || !strings.HasPrefix(st.Index, "/ipfs/") {
		t.Fatalf("A's status has no index root: %v\n%s", err, r.stdout)
	}
	t.Logf("A seeds %d files; its index is %s", st.Seeded.Files, st.Index)
	m.mu.Lock()
	m.log = nil // from here on, every package request the mirror sees is one B made
	m.mu.Unlock()

	// B: pacman's only Server is B's endpoint; the endpoint races B's node against the mirror.
	b, nodeB, _, logsB := downloader(t, repo, nodeA, mirrorTemplate, st.Index, "--quiet", "200ms", "--hedge", testHedge)
	b.Pacman(t, "-Sy") // databases come from the mirror, through the endpoint
	start := time.Now()
	b.Pacman(t, "-S", "small", "large")
	t.Logf("installed small and large on B in %s", time.Since(start).Round(time.Millisecond))
	if reqs := m.packageRequests(); len(reqs) != 0 {
		t.Errorf("package requests reached the mirror: %v", reqs)
	}
	for _, p := range []alpmtest.Pkg{small, large} {
		if _, err := os.Stat(b.Path(p.PayloadPath())); err != nil {
			t.Errorf("%s not installed on B: %v", p.Name, err)
		}
	}
	// The loop closes: what B downloaded through the endpoint, B now seeds.
	clientB := nodeB.Client(t)
	pinnedB := func() []string {
		pins, _ := clientB.Pins(context.Background(), node.PinPrefix)
		var names []string
		for _, n := range pins {
			names = append(names, strings.TrimPrefix(n, node.PinPrefix+"core/"))
		}
		slices.Sort(names)
		return names
	}
	alpmtest.Eventually(t, 20*time.Second, "B seeds what it downloaded", func() bool {
		return slices.Equal(pinnedB(), []string{large.FileName(), small.FileName()})
	})

	// A tampered file from the mirror never gets through as a success: pacman fails, nothing is cached.
	m.mu.Lock()
	m.tampered[bad.FileName()] = true
	m.mu.Unlock()
	tb := time.Now()
	out, err := b.PacmanErr("-S", "bad")
	t.Logf("pacman -S of a tampered package failed after %s", time.Since(tb).Round(time.Millisecond))
	if err == nil {
		t.Errorf("pacman installed a tampered package:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(b.CacheDir, bad.FileName())); err == nil {
		t.Error("the tampered package is in B's cache")
	}
	if b, _ := os.ReadFile(logsB); !bytes.Contains(b, []byte("mirror failed")) || !bytes.Contains(b, []byte("sha256 differs")) {
		t.Errorf("the endpoint did not log the mismatch with its source:\n%s", b)
	}

	// IPFS slowed down: A seeds late, then hangs (SIGSTOP); B's bitswap waits on it, the mirror wins.
	a.Pacman(t, "-Sw", "late")
	if r := cli(t, append([]string{"sync"}, flagsA[:6]...)...); r.code != 0 {
		t.Fatalf("sync on A: %s", r.stderr)
	}
	nodeA.Pause(t)
	start = time.Now()
	b.Pacman(t, "-S", "late")
	t.Logf("with A hung, late installed from the mirror in %s", time.Since(start).Round(time.Millisecond))
	if !slices.Contains(m.packageRequests(), late.FileName()) {
		t.Errorf("late did not come from the mirror: %v", m.packageRequests())
	}
	nodeA.Resume(t)

	// A gone and B's copy collected: the mirror serves, quickly.
	ts := time.Now()
	nodeA.Stop(t)
	t.Logf("A stopped in %s", time.Since(ts).Round(time.Millisecond))
	// paccache -r everything (pacman -Scc --noconfirm answers its own question with no).
	for _, f := range b.CachedPackages(t) {
		if err := os.Remove(filepath.Join(b.CacheDir, f)); err != nil {
			t.Fatal(err)
		}
	}
	alpmtest.Eventually(t, 20*time.Second, "B unpins what left its cache", func() bool { return len(pinnedB()) == 0 })
	// Unpinning dropped the blocks too: B holds nothing of them any more.
	for _, p := range []alpmtest.Pkg{small, large, late} {
		c := cidOf(t, repo, p)
		if out, err := nodeB.TryIPFS(t, "block", "stat", "--offline", c); err == nil {
			t.Errorf("%s's root block %s is still on B: %s", p.Name, c, out)
		}
	}
	start = time.Now()
	b.Pacman(t, "-S", "small", "other")
	took := time.Since(start)
	t.Logf("with no peer holding them, small and other installed from the mirror in %s", took.Round(time.Millisecond))
	if reqs := m.packageRequests(); !slices.Contains(reqs, small.FileName()) || !slices.Contains(reqs, other.FileName()) {
		t.Errorf("mirror requests: %v", reqs)
	}
}

// downloader is a second machine: a kubo node connected to the seeder's, a pacman sandbox whose only
// Server is the endpoint of its own agent, and that agent racing the node against mirrorTemplate and
// following index. It returns the sandbox, the node, the agent's state dir and its log.
func downloader(t testing.TB, repo *alpmtest.Repo, seederNode *kubotest.Node, mirrorTemplate, index string, extra ...string) (*alpmtest.Sandbox, *kubotest.Node, string, string) {
	t.Helper()
	node := kubotest.Start(t, kubotest.Options{Filestore: true})
	node.Connect(t, seederNode)
	sb := alpmtest.NewSandbox(t, repo)
	port := freePort(t)
	sb.Servers = map[string][]string{"core": {"http://127.0.0.1:" + strconv.Itoa(port) + "/$repo/os/$arch"}}
	sb.WriteConf(t)
	mirrorlist := filepath.Join(t.TempDir(), "mirrorlist")
	if err := os.WriteFile(mirrorlist, []byte("Server = "+mirrorTemplate+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	logs := startAgent(t, append([]string{"--pacman-conf", sb.Conf, "--api", node.APIAddr, "--state-dir", state,
		"--listen", filepath.Join(t.TempDir(), "control.sock"), "--http", "127.0.0.1:" + strconv.Itoa(port),
		"--mirrorlist", mirrorlist, "--index", index}, extra...)...)
	waitListening(t, port)
	waitCatalog(t, "http://127.0.0.1:"+strconv.Itoa(port))
	return sb, node, state, logs
}

// cidOf computes a package's CID from the repo's file with the seeder's import parameters.
func cidOf(t *testing.T, repo *alpmtest.Repo, p alpmtest.Pkg) string {
	t.Helper()
	f, err := os.Open(repo.Path(p))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := memnode.Import(context.Background(), nil, f)
	if err != nil {
		t.Fatal(err)
	}
	return c.String()
}
