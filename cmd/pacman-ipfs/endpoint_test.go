package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// endpointWorld is a seeder A (a kubo node whose cache was filled by real pacman from the mirror) and a
// second machine B with its own kubo node connected to A, its agent and its pacman sandbox.
type endpointWorld struct {
	repo      *alpmtest.Repo
	m         *httpMirror
	nodeA     *kubotest.Node
	indexA    string
	b         *alpmtest.Sandbox
	nodeB     *kubotest.Node
	port      int
	agentLogs string
	control   string
}

// newEndpointWorld seeds seed on A. B's sandbox and agent are set up by the caller through startB.
func newEndpointWorld(t *testing.T, pkgs []alpmtest.Pkg, seed ...string) *endpointWorld {
	t.Helper()
	if testing.Short() {
		t.Skip("integration: real pacman and two kubo nodes")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	w := &endpointWorld{repo: alpmtest.MakeRepo(t, "core", pkgs...)}
	w.m = startMirror(t, w.repo)
	a := alpmtest.NewSandbox(t, w.repo)
	a.Servers = map[string][]string{"core": {w.m.template()}}
	a.WriteConf(t)
	if len(seed) > 0 {
		a.Pacman(t, append([]string{"-Syw"}, seed...)...)
	}
	w.nodeA = kubotest.Start(t, kubotest.Options{Filestore: true, RepoDir: filepath.Join(a.Root, "var", "cache", "pacman-ipfs")})
	flags := []string{"--pacman-conf", a.Conf, "--api", w.nodeA.APIAddr, "--state-dir", t.TempDir()}
	if r := cli(t, append([]string{"sync"}, flags...)...); r.code != 0 {
		t.Fatalf("sync on A: %s", r.stderr)
	}
	w.indexA = strings.TrimSpace(w.nodeA.IPFS(t, "files", "stat", "--hash", "/pacman-ipfs"))
	w.indexA = "/ipfs/" + w.indexA
	w.m.reset()
	w.nodeB = kubotest.Start(t, kubotest.Options{Filestore: true})
	w.nodeB.Connect(t, w.nodeA)
	w.b = alpmtest.NewSandbox(t, w.repo)
	w.port = freePort(t)
	return w
}

func (w *endpointWorld) endpoint() string { return "http://127.0.0.1:" + strconv.Itoa(w.port) }

// startB starts B's agent with its endpoint, after B's pacman.conf is written.
func (w *endpointWorld) startB(t *testing.T, args ...string) {
	t.Helper()
	w.control = filepath.Join(t.TempDir(), "control.sock")
	w.agentLogs = startAgent(t, append([]string{"--pacman-conf", w.b.Conf, "--api", w.nodeB.APIAddr,
		"--state-dir", t.TempDir(), "--listen", w.control, "--http", "127.0.0.1:" + strconv.Itoa(w.port),
		"--quiet", "200ms", "--hedge", testHedge}, args...)...)
	waitListening(t, w.port)
	if slices.Contains(args, "--index") {
		waitCatalog(t, w.endpoint())
	}
}

// waitCatalog waits until the agent behind the endpoint at base has listed the indexes it follows: it
// decides requests from what it knows, and a package no listed index holds goes to the mirror at once.
func waitCatalog(t testing.TB, base string) {
	t.Helper()
	alpmtest.Eventually(t, 30*time.Second, "the agent lists the index it follows", func() bool {
		return metricValue(t, base, "pacman_ipfs_catalog_files") > 0
	})
}

// metricValue reads one unlabelled figure from the endpoint's /metrics; -1 when it is not there.
func metricValue(t testing.TB, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// startBActivated starts B's agent as the packaged units do: behind systemd-socket-activate holding
// both the endpoint's TCP socket (pacman-ipfs-mirror.socket) and the control socket (pacman-ipfs.socket),
// with the unit's own ExecStart flags and no --http: the agent takes what systemd passes.
func (w *endpointWorld) startBActivated(t *testing.T, args ...string) {
	t.Helper()
	alpmtest.Require(t, "systemd-socket-activate")
	w.control = filepath.Join(t.TempDir(), "control.sock")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"-l", "127.0.0.1:" + strconv.Itoa(w.port), "-l", w.control, "--fdname=mirror:control", "-E", "PACMAN_IPFS_BE_CLI=1",
		exe, "agent", "--idle-exit", "15m", // pacman-ipfs.service's ExecStart
		"--pacman-conf", w.b.Conf, "--api", w.nodeB.APIAddr, "--state-dir", t.TempDir(), "-v",
		"--quiet", "200ms", "--hedge", testHedge}, args...)
	w.agentLogs = runLogged(t, exec.Command("systemd-socket-activate", all...), syscall.SIGTERM, "agent")
	waitListening(t, w.port)
	if slices.Contains(args, "--index") {
		waitCatalog(t, w.endpoint())
	}
}

func (w *endpointWorld) log(t *testing.T) string {
	t.Helper()
	b, _ := os.ReadFile(w.agentLogs)
	return string(b)
}

func fileSize(t testing.TB, path string) int {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Size())
}

func (m *httpMirror) template() string { return m.url + "/$repo/os/$arch" }

// mirrorlist writes a mirrorlist of Server lines (templates) and returns its path.
func mirrorlist(t testing.TB, servers ...string) string {
	t.Helper()
	var b strings.Builder
	for _, s := range servers {
		b.WriteString("Server = " + s + "\n")
	}
	path := filepath.Join(t.TempDir(), "mirrorlist")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func (m *httpMirror) reset() {
	m.mu.Lock()
	m.log = nil
	m.mu.Unlock()
}

// The README's recipe, followed literally: the endpoint first in the mirrorlist that pacman.conf
// includes, and the agent's --mirrorlist that same file. The endpoint must not be its own upstream:
// databases and packages no peer has come from the real mirror behind it, and the agent stays small.
func TestEndpointReadmeRecipeServerMode(t *testing.T) {
	small := alpmtest.Pkg{Name: "small", Size: 300 << 10}
	other := alpmtest.Pkg{Name: "other", Size: 200 << 10}
	w := newEndpointWorld(t, []alpmtest.Pkg{small, other}, "small")
	// pacman-ipfs first, as the README says.
	ml := mirrorlist(t, w.endpoint()+"/$repo/os/$arch", w.m.template())
	w.b.Includes = map[string]string{"core": ml}
	w.b.WriteConf(t)
	w.startBActivated(t, "--mirrorlist", ml, "--index", w.indexA)
	start := time.Now()
	w.b.Pacman(t, "-Sy")
	out := w.b.Pacman(t, "-S", "small", "other")
	t.Logf("pacman -Sy and -S through the recipe's endpoint: %s", time.Since(start).Round(time.Millisecond))
	// The databases' If-Modified-Since reaches the mirror and its 304 comes back: pacman keeps the db
	// it has (a download would replace the file).
	before, err := os.Stat(w.b.SyncDBPath("core"))
	if err != nil {
		t.Fatal(err)
	}
	w.b.Pacman(t, "-Sy")
	if after, err := os.Stat(w.b.SyncDBPath("core")); err != nil || !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("a second pacman -Sy replaced the sync db: %v", err)
	}
	if strings.Contains(out, "error") {
		t.Errorf("pacman printed an error:\n%s", out)
	}
	if reqs := w.m.packageRequests(); !slices.Equal(reqs, []string{other.FileName()}) {
		t.Errorf("the mirror served %v, want only %s (small comes from A)", reqs, other.FileName())
	}
	// /metrics: what came from the peer and what from the mirror, in Prometheus' text format.
	resp, err := http.Get(w.endpoint() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`pacman_ipfs_endpoint_packages_total{source="peer"} 1`,
		`pacman_ipfs_endpoint_packages_total{source="mirror"} 1`,
		`pacman_ipfs_endpoint_bytes_total{source="peer"} ` + strconv.Itoa(fileSize(t, w.repo.Path(small))),
		"pacman_ipfs_seeded_files ", "pacman_ipfs_passes_total ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	logs := w.log(t)
	if !strings.Contains(logs, "own address is not one of its mirrors") {
		t.Errorf("the agent did not drop its own address from the mirrors:\n%s", logs)
	}
	st := agentState(t, w.control)
	if want := int64(fileSize(t, w.repo.Path(small))); st.FromPeers != want || st.FromMirrors != int64(fileSize(t, w.repo.Path(other))) {
		t.Errorf("the agent's status: %d bytes from peers, %d from mirrors; want %d and %d",
			st.FromPeers, st.FromMirrors, want, fileSize(t, w.repo.Path(other)))
	}
	r := cli(t, "status", "--socket", w.control, "--api", w.nodeB.APIAddr, "--state-dir", t.TempDir())
	if !strings.Contains(r.stdout, "% from peers") {
		t.Errorf("status does not show the share of bytes from peers:\n%s", r.stdout)
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", st.PID))
	if len(fds) > 100 {
		t.Errorf("the agent holds %d fds after the recipe's -Sy and -S", len(fds))
	}
	t.Logf("the agent holds %d fds", len(fds))
}

// A bad source before a good mirror must not break the transaction: a mirror serving a tampered file
// first in the endpoint's mirrorlist, and an index that maps a package to other content. pacman (6.0
// resumes a failed download from its next server) must end with the right packages installed.
func TestEndpointBadSourceThenGoodMirror(t *testing.T) {
	small := alpmtest.Pkg{Name: "small", Size: 300 << 10}
	large := alpmtest.Pkg{Name: "large", Size: 3 << 20, Ext: ".pkg.tar"}
	decoy := alpmtest.Pkg{Name: "decoy", Size: 3 << 20, Ext: ".pkg.tar"}
	w := newEndpointWorld(t, []alpmtest.Pkg{small, large, decoy}, "decoy")
	// An index whose entry for large is decoy's CID.
	decoyCID := cidOf(t, w.repo, decoy)
	w.nodeA.IPFS(t, "files", "mkdir", "-p", "/bad/core/os/x86_64")
	w.nodeA.IPFS(t, "files", "cp", "/ipfs/"+decoyCID, "/bad/core/os/x86_64/"+large.FileName())
	badIndex := "/ipfs/" + strings.TrimSpace(w.nodeA.IPFS(t, "files", "stat", "--hash", "/bad"))

	tampered := startMirror(t, w.repo)
	tampered.tampered[small.FileName()] = true
	tampered.tampered[large.FileName()] = true
	w.b.Servers = map[string][]string{"core": {w.endpoint() + "/$repo/os/$arch", w.m.template()}}
	w.b.WriteConf(t)
	// --mirror-check: a mirror's download is checked whole before pacman gets a byte, so the tampered
	// one is replaced by the next; by default its bytes would stream as pacman itself would take them.
	w.startB(t, "--mirrorlist", mirrorlist(t, tampered.template(), w.m.template()), "--index", badIndex, "--mirror-check", "5s")
	w.b.Pacman(t, "-Sy")
	start := time.Now()
	out := w.b.Pacman(t, "-S", "small", "large")
	t.Logf("small (tampered first mirror) and large (wrong index CID) installed in %s", time.Since(start).Round(time.Millisecond))
	for _, p := range []alpmtest.Pkg{small, large} {
		if _, err := os.Stat(w.b.Path(p.PayloadPath())); err != nil {
			t.Errorf("%s not installed: %v\n%s", p.Name, err, out)
		}
	}
	logs := w.log(t)
	for _, want := range []string{"an index maps the package to other content", "mirror failed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the agent's log does not say %q:\n%s", want, logs)
		}
	}
	if reqs := tampered.packageRequests(); len(reqs) == 0 {
		t.Error("the tampered mirror was never asked: the test proves nothing")
	}
}

// pacman 6.1 and 7: the endpoint as a CacheServer. pacman never asks it for databases, a package a peer
// has comes from the peer, one no peer has is a fast 404 and pacman takes it from its Server lines,
// silently; the agent needs no mirror at all (no --mirrorlist).
func TestEndpointAsCacheServer(t *testing.T) {
	if !pacmanHasCacheServer(t) {
		t.Skip("pacman 6.0 has no CacheServer (the trixie leg runs this with pacman 7)")
	}
	small := alpmtest.Pkg{Name: "small", Size: 300 << 10}
	other := alpmtest.Pkg{Name: "other", Size: 200 << 10}
	w := newEndpointWorld(t, []alpmtest.Pkg{small, other}, "small")
	w.b.CacheServers = map[string][]string{"core": {w.endpoint() + "/cache/$repo/os/$arch"}}
	w.b.Servers = map[string][]string{"core": {w.m.template()}}
	w.b.WriteConf(t)
	w.startBActivated(t, "--mirrorlist", filepath.Join(t.TempDir(), "none"), "--index", w.indexA)
	w.b.Pacman(t, "-Sy")
	out := w.b.Pacman(t, "-S", "small", "other")
	if strings.Contains(out, "error") {
		t.Errorf("pacman printed an error:\n%s", out)
	}
	if reqs := w.m.packageRequests(); !slices.Equal(reqs, []string{other.FileName()}) {
		t.Errorf("the mirror served %v, want only %s", reqs, other.FileName())
	}
	for _, p := range []alpmtest.Pkg{small, other} {
		if _, err := os.Stat(w.b.Path(p.PayloadPath())); err != nil {
			t.Errorf("%s not installed: %v", p.Name, err)
		}
	}
	if logs := w.log(t); !strings.Contains(logs, "source=ipfs") {
		t.Errorf("small did not come from IPFS:\n%s", logs)
	}
}

// pacman resumes a half-written download with "Range: bytes=N-": from a peer and from the mirror, the
// endpoint answers 206 with the rest of a file it checked whole, and the package installs.
func TestEndpointResumesPartialDownloads(t *testing.T) {
	small := alpmtest.Pkg{Name: "small", Size: 600 << 10}
	other := alpmtest.Pkg{Name: "other", Size: 500 << 10}
	w := newEndpointWorld(t, []alpmtest.Pkg{small, other}, "small")
	w.b.Servers = map[string][]string{"core": {w.endpoint() + "/$repo/os/$arch"}}
	w.b.WriteConf(t)
	w.startB(t, "--mirrorlist", mirrorlist(t, w.m.template()), "--index", w.indexA)
	w.b.Pacman(t, "-Sy")
	for _, p := range []alpmtest.Pkg{small, other} {
		b, err := os.ReadFile(w.repo.Path(p))
		if err != nil {
			t.Fatal(err)
		}
		// pacman 6.0 keeps <file>.part in the cache and resumes it; pacman 7 downloads into a
		// download-* directory of its own and starts over.
		if err := os.WriteFile(filepath.Join(w.b.CacheDir, p.FileName()+".part"), b[:len(b)/2], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w.b.Pacman(t, "-S", "small", "other")
	for _, p := range []alpmtest.Pkg{small, other} {
		if _, err := os.Stat(w.b.Path(p.PayloadPath())); err != nil {
			t.Errorf("%s not installed: %v", p.Name, err)
		}
	}
	logs := w.log(t)
	resumed := regexp.MustCompile(`"package served" file=(\S+) source=(\S+) checked_first=\S+ bytes=(\d+)`)
	got := map[string]string{}
	for _, m := range resumed.FindAllStringSubmatch(logs, -1) {
		got[m[1]] = m[2] + " " + m[3]
	}
	t.Logf("served: %v", got)
	if pacmanMajor(t) == 6 {
		for _, p := range []alpmtest.Pkg{small, other} {
			b, _ := os.ReadFile(w.repo.Path(p))
			rest := strconv.Itoa(len(b) - len(b)/2)
			if !strings.HasSuffix(got[p.FileName()], " "+rest) {
				t.Errorf("%s: served %q, want the %s bytes after the .part", p.Name, got[p.FileName()], rest)
			}
		}
		if !strings.HasPrefix(got[small.FileName()], "ipfs ") || strings.HasPrefix(got[other.FileName()], "ipfs ") {
			t.Errorf("sources: %v, want small from ipfs and other from the mirror", got)
		}
	}
}

var pacmanVersionRE = regexp.MustCompile(`Pacman v(\d+)\.(\d+)`)

func pacmanVersion(t *testing.T) (major, minor int) {
	t.Helper()
	out, err := exec.Command("pacman", "--version").CombinedOutput()
	m := pacmanVersionRE.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("pacman --version: %v\n%s", err, out)
	}
	major, _ = strconv.Atoi(string(m[1]))
	minor, _ = strconv.Atoi(string(m[2]))
	return major, minor
}

func pacmanMajor(t *testing.T) int { major, _ := pacmanVersion(t); return major }

func pacmanHasCacheServer(t *testing.T) bool {
	major, minor := pacmanVersion(t)
	return major > 6 || major == 6 && minor >= 1
}
