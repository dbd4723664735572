package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/endpoint"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/lanindex"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

// A hostile neighbour is a test's own code behind a real kubo node on the LAN: it mounts the LAN
// protocol with `ipfs p2p listen` and answers by hand, and publishes an index of its making under its
// peer ID, as anyone on a campus Wi-Fi could.
type neighbour struct {
	h     *lanHost
	id    string
	asked atomic.Int32 // package requests its handler got
}

// serveLAN mounts the LAN protocol on n's node and answers it with handler (the hello is answered, so
// that the victim takes it for an agent and elects it for its share of the packages).
func (n *neighbour) serveLAN(t testing.TB, handler func(w http.ResponseWriter, r *http.Request)) {
	t.Helper()
	ln := listenIn(t, n.h.ns, "127.0.0.1:0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == endpoint.LANHelloPath {
			io.WriteString(w, "pacman-ipfs\n")
			return
		}
		n.asked.Add(1)
		handler(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	n.mustIPFS(t, "p2p", "listen", lanindex.Protocol, "/ip4/127.0.0.1/tcp/"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

func (n *neighbour) mustIPFS(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.h.ipfs(args...)
	if err != nil {
		t.Fatalf("ipfs %s on %s: %v\n%s", strings.Join(args, " "), n.h.name, err, out)
	}
	return strings.TrimSpace(out)
}

// publishIndex publishes, under n's peer ID, an index that lists every one of files as the DAG at
// path (on n's node).
func (n *neighbour) publishIndex(t testing.TB, path string, files []string) string {
	t.Helper()
	n.mustIPFS(t, "files", "mkdir", "-p", "/idx/core/os/x86_64")
	for _, f := range files {
		n.mustIPFS(t, "files", "cp", path, "/idx/core/os/x86_64/"+f)
	}
	root := n.mustIPFS(t, "files", "stat", "--hash", "/idx")
	n.mustIPFS(t, "name", "publish", "--allow-offline", "--key", "self", "/ipfs/"+root)
	return root
}

// floodLAN opens count streams to victim's LAN protocol from n's node at once, each asking for file
// (with the sha256 the victim's db lists) and reading nothing past the headers. It returns the status
// of each answer; the connections stay open, unread, until the test ends.
func (n *neighbour) floodLAN(t testing.TB, victim, file, sum string, count int) map[int]int {
	t.Helper()
	port := freePortIn(t, n.h.ns)
	n.mustIPFS(t, "p2p", "forward", lanindex.Protocol, "/ip4/127.0.0.1/tcp/"+strconv.Itoa(port), "/p2p/"+victim)
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range count {
		wg.Go(func() {
			var conn net.Conn
			err := inNetns(n.h.ns, func() (err error) {
				conn, err = net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
				return err
			})
			if err != nil {
				t.Errorf("flood: %v", err)
				return
			}
			t.Cleanup(func() { conn.Close() })
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			fmt.Fprintf(conn, "GET %s/core/os/x86_64/%s HTTP/1.1\r\nHost: x\r\nX-Pacman-Ipfs-Sha256: %s\r\n\r\n", endpoint.LANPrefix, file, sum)
			code := 0
			if resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 512), nil); err == nil {
				code = resp.StatusCode // and not a byte of the body read: a neighbour that stops reading
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return codes
}

// freePortIn is a loopback TCP port free in namespace ns.
func freePortIn(t testing.TB, ns string) int {
	ln := listenIn(t, ns, "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// The hostile-neighbour suite. A victim machine upgrades through its endpoint, with --prefetch, a
// good mirror on the uplink, and two hostile neighbours on its LAN, each a real kubo node answering by
// hand. The liar sends, for every package it is elected for, the wrong bytes: junk of the right size,
// junk then a trickle then a cut, more than the db's size; its index maps the upgrade's large packages
// to a 200 MiB DAG. The greedy one publishes an index root it withholds, never answers the packages it
// is elected for, and floods the victim's LAN protocol with 64 requests for a 64 MiB package at once,
// reading nothing. Wanted: the victim's pacman installs every package, at about the mirror's pace; no
// neighbour's byte reaches pacman or a pin; the victim's node does not keep what it refused; the flood
// gets its bounded share and its unread streams are cut; the agent's descriptors stay bounded.
func TestAHostileNeighbour(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: network namespaces, three kubo nodes, real pacman")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	var v1, v2 []alpmtest.Pkg
	var names []string
	for i := range 12 {
		name := fmt.Sprintf("small%02d", i)
		names = append(names, name)
		v1 = append(v1, alpmtest.Pkg{Name: name, Size: (200 + 40*i) << 10})
		v2 = append(v2, alpmtest.Pkg{Name: name, Version: "2.0-1", Size: (210 + 40*i) << 10})
	}
	for i := range 3 {
		name := fmt.Sprintf("large%d", i)
		names = append(names, name)
		v1 = append(v1, alpmtest.Pkg{Name: name, Size: 3 << 20, Ext: ".pkg.tar"})
		v2 = append(v2, alpmtest.Pkg{Name: name, Version: "2.0-1", Size: 3<<20 + 7, Ext: ".pkg.tar"})
	}
	// Not installed anywhere: only the flood asks for it.
	huge := alpmtest.Pkg{Name: "huge", Version: "2.0-1", Size: 64 << 20, Ext: ".pkg.tar"}
	repo := alpmtest.MakeRepo(t, "core", v1...)
	lan := newLAN(t, repo, 3)
	v, liar, greedy := lan.hosts[0], &neighbour{h: lan.hosts[1]}, &neighbour{h: lan.hosts[2]}
	m := lan.addMirror(t, repo, "")
	// The victim has version 1 installed (before the test's uplink existed), and so has the machine of
	// the baseline, which upgrades straight from the mirror.
	base := alpmtest.NewSandbox(t, repo)
	for _, sb := range []*alpmtest.Sandbox{v.sb, base} {
		sb.Wrap = nil
		sb.Pacman(t, append([]string{"-Sy", "--noconfirm"}, names...)...)
		sb.Wrap = []string{"ip", "netns", "exec", v.ns}
	}
	repo.Add(t, append(v2, huge)...)
	sizes := map[string]int{}
	for _, p := range append(v2, huge) {
		sizes[p.FileName()] = fileSize(t, repo.Path(p))
	}
	for _, h := range lan.hosts {
		h.startKubo(t)
	}
	v.sb.Servers = map[string][]string{"core": {"http://127.0.0.1:7878/$repo/os/$arch"}}
	v.sb.WriteConf(t)
	v.startAgent(t, "--mirrorlist", mirrorlist(t, m.url+"/$repo/os/$arch"), "--prefetch")
	vID := v.status(t).Node.ID
	liar.id, greedy.id = liar.mustIPFS(t, "id", "-f", "<id>"), greedy.mustIPFS(t, "id", "-f", "<id>")

	// The liar: wrong bytes, three ways, for whatever it is asked.
	liar.serveLAN(t, func(w http.ResponseWriter, r *http.Request) {
		size := sizes[filepath.Base(r.URL.Path)]
		junk := bytes.Repeat([]byte{0x55}, size)
		w.Header().Set("Content-Length", strconv.Itoa(size))
		switch liar.asked.Load() % 3 {
		case 2: // the right size, other bytes
			w.Write(junk)
		case 1: // junk, then a trickle past pacman's patience, then a cut (first: the worst of the three)
			w.Write(junk[:min(size, 1<<20)])
			w.(http.Flusher).Flush()
			for range 40 {
				time.Sleep(500 * time.Millisecond)
				if _, err := w.Write([]byte{0x55}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
			panic(http.ErrAbortHandler)
		default: // more than the db's size
			w.Header().Del("Content-Length")
			w.Write(junk)
			w.Write(junk)
		}
	})
	// Its index: the large upgrades are a 200 MiB DAG.
	bloat := filepath.Join(t.TempDir(), "bloat")
	if err := os.WriteFile(bloat, nodetest.Bytes(77, 200<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	bloatCID := liar.mustIPFS(t, "add", "-Q", "--pin=false", bloat)
	var large []string
	for _, p := range v2[12:] {
		large = append(large, p.FileName())
	}
	liar.publishIndex(t, "/ipfs/"+bloatCID, large)

	// The greedy one: answers hello, then nothing; its index root is withheld (a CID it does not hold).
	greedy.serveLAN(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	withheld := greedy.mustIPFS(t, "add", "-Q", "--only-hash", bloat)
	greedy.mustIPFS(t, "name", "publish", "--allow-offline", "--resolve=false", "--key", "self", "/ipfs/"+withheld)

	alpmtest.Eventually(t, 120*time.Second, "the victim takes both neighbours for agents and lists the liar's index", func() bool {
		logs, _ := os.ReadFile(v.logs)
		i := bytes.LastIndex(logs, []byte("agents on the LAN"))
		if i < 0 {
			return false
		}
		line, _, _ := bytes.Cut(logs[i:], []byte("\n"))
		return bytes.Contains(line, []byte(liar.id)) && bytes.Contains(line, []byte(greedy.id)) && listedIndexOf(string(logs), liar.id)
	})
	repoBefore := dirSize(t, v.repo)

	// pacman -Sy on the victim: the upgrade is out; prefetch follows the liar's index and refuses.
	alpmtest.CopyFile(t, repo.DB, v.sb.SyncDBPath("core"), 0o644)
	alpmtest.Eventually(t, 120*time.Second, "the victim refuses the liar's index", func() bool {
		logs, _ := os.ReadFile(v.logs)
		return bytes.Contains(logs, []byte("an index root listed a package as other content"))
	})

	// The flood and the upgrade at the same moment.
	hugeSum := sha256File(t, repo.Path(huge))
	var codes map[int]int
	var flooded sync.WaitGroup
	flooded.Go(func() { codes = greedy.floodLAN(t, vID, huge.FileName(), hugeSum, 64) })
	start := time.Now()
	out, err := v.sb.PacmanErr("-Su", "--noconfirm")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("pacman -Su on the victim: %v\n%s", err, out)
	}
	flooded.Wait()
	_, fds := procFigures(t, v.status(t).Agent.PID)
	if q := v.sb.Pacman(t, append([]string{"-Q"}, names...)...); strings.Count(q, "2.0-1") != len(names) {
		t.Errorf("after -Su: %s", q)
	}
	// The flood's share: 4 streams; the rest refused at once.
	if codes[http.StatusOK] > 4 || codes[http.StatusOK]+codes[http.StatusServiceUnavailable] != 64 {
		t.Errorf("64 requests of one neighbour at once: %v, want at most 4 answered and the rest 503", codes)
	}
	alpmtest.Eventually(t, 90*time.Second, "the neighbour's unread streams are cut", func() bool {
		logs, _ := os.ReadFile(v.logs)
		return bytes.Count(logs, []byte("a neighbour's download ended early")) >= codes[http.StatusOK]
	})
	if fds > 200 {
		t.Errorf("the agent held %d descriptors during the flood", fds)
	}

	// Nothing the victim refused stays on its node; every pin is a package of its dbs.
	grown := dirSize(t, v.repo) - repoBefore
	if grown > 48<<20 {
		t.Errorf("the victim's node grew by %d bytes (a 200 MiB DAG was offered; the upgrade is %d bytes)", grown, upgradeBytes(sizes, v2))
	}
	pinsAreVerified(t, v, repo)

	// Every neighbour that failed a package was benched after its first failure.
	benched := getIn(t, v.ns, "127.0.0.1:7878", "/metrics")
	for _, n := range []*neighbour{liar, greedy} {
		if a := n.asked.Load(); a > 3 {
			t.Errorf("%s was asked for %d packages: a neighbour that failed one is not asked again for a while", n.h.name, a)
		}
	}
	if liar.asked.Load()+greedy.asked.Load() > 0 && !strings.Contains(benched, "pacman_ipfs_lan_benched_total ") {
		t.Error("no neighbour benched")
	}

	// The same upgrade straight from the mirror, as the figure beside it.
	alpmtest.CopyFile(t, repo.DB, base.SyncDBPath("core"), 0o644)
	base.Servers = map[string][]string{"core": {m.url + "/$repo/os/$arch"}}
	base.WriteConf(t)
	bstart := time.Now()
	base.Pacman(t, "-Su", "--noconfirm")
	btook := time.Since(bstart)
	t.Logf("with a liar (asked %d times) and a greedy neighbour (asked %d times; its flood got %v) on the LAN, the victim's -Su of %d packages (%d bytes) took %s; the same upgrade straight from the mirror %s; the victim's node grew by %.1f MB (a %d MB DAG was offered); the agent held %d descriptors during the flood",
		liar.asked.Load(), greedy.asked.Load(), codes, len(v2), upgradeBytes(sizes, v2), took.Round(time.Millisecond), btook.Round(time.Millisecond), float64(grown)/1e6, 200<<20/1000000, fds)
}

func upgradeBytes(sizes map[string]int, pkgs []alpmtest.Pkg) int {
	n := 0
	for _, p := range pkgs {
		n += sizes[p.FileName()]
	}
	return n
}

// dirSize sums the sizes of the regular files under dir.
func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func sha256File(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// emptyDir is the CID of the empty UnixFS directory, which kubo pins itself.
const emptyDir = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"

// pinsAreVerified checks that every recursive pin on h's node is the content of a package file of repo.
func pinsAreVerified(t testing.TB, h *lanHost, repo *alpmtest.Repo) {
	t.Helper()
	want := map[string]bool{}
	for _, path := range repo.Files {
		want[sha256File(t, path)] = true
	}
	out, err := h.ipfs("pin", "ls", "--type", "recursive", "-q")
	if err != nil {
		t.Fatalf("pin ls on %s: %v\n%s", h.name, err, out)
	}
	pins := strings.Fields(out)
	for _, c := range pins {
		if c == emptyDir {
			continue // kubo's own
		}
		data, err := h.ipfs("cat", c)
		if err != nil {
			t.Errorf("cat %s on %s: %v", c, h.name, err)
			continue
		}
		sum := sha256.Sum256([]byte(data))
		if !want[hex.EncodeToString(sum[:])] {
			t.Errorf("%s pins %s: not a package of its dbs", h.name, c)
		}
	}
	if len(pins) == 0 {
		t.Errorf("%s pins nothing", h.name)
	}
}
