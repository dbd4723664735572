package endpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

const flightFile = "big-1-1-x86_64.pkg.tar.zst"

// slowMirror serves one file at about rate bytes a second, and counts the requests for it. Slow enough
// that requests made at the same moment overlap, as they do behind a real uplink.
func slowMirror(t *testing.T, data []byte, rate int) (*httptest.Server, func() int) {
	var mu sync.Mutex
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/core/os/x86_64/"+flightFile {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		hits++
		mu.Unlock()
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		const chunk = 32 << 10
		for off := 0; off < len(data); off += chunk {
			if _, err := w.Write(data[off:min(off+chunk, len(data))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(time.Duration(chunk) * time.Second / time.Duration(rate))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() int { mu.Lock(); defer mu.Unlock(); return hits }
}

// lanMachine is an endpoint with its own mirror and its LAN handler on a listener of its own (as the
// node's p2p listener would hand it streams).
type lanMachine struct {
	srv      *Server
	endpoint *httptest.Server
	lan      *httptest.Server
	hits     func() int
	owner    string // base URL of the neighbour it elects; "" for itself
}

func newLANMachine(t *testing.T, data []byte, rate int) *lanMachine {
	ix := alpmdb.NewIndex([]alpmdb.Entry{{Repo: "core", FileName: flightFile, Size: int64(len(data)), SHA256: sha256.Sum256(data)}})
	mirror, hits := slowMirror(t, data, rate)
	m := &lanMachine{hits: hits}
	m.srv = New(Options{
		Catalog: testCatalog(ix, nil, nil), Node: &fakeIPFS{files: map[cid.Cid][]byte{}},
		Mirrors: []string{mirror.URL + "/$repo/os/$arch"}, Hedge: 50 * time.Millisecond, Budget: 20 * time.Second,
		SpoolDir: t.TempDir(),
		Owner: func(context.Context, [sha256.Size]byte) (string, string) {
			return m.owner, "12D3KooWneighbour"
		},
	})
	m.endpoint = httptest.NewServer(m.srv)
	m.lan = httptest.NewServer(http.HandlerFunc(m.srv.ServeLAN))
	t.Cleanup(m.endpoint.Close)
	t.Cleanup(m.lan.Close)
	return m
}

// fetchAll has every machine's pacman ask its endpoint for the file at the same moment, n times each.
func fetchAll(t *testing.T, data []byte, n int, machines ...*lanMachine) {
	t.Helper()
	var wg sync.WaitGroup
	for i, m := range machines {
		for j := range n {
			wg.Go(func() {
				resp, err := http.Get(m.endpoint.URL + "/core/os/x86_64/" + flightFile)
				if err != nil {
					t.Errorf("machine %d, request %d: %v", i, j, err)
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, data) {
					t.Errorf("machine %d, request %d: %s, %d bytes, %v: want the file", i, j, resp.Status, len(b), err)
				}
			})
		}
	}
	wg.Wait()
}

func TestConcurrentRequestsShareOneDownload(t *testing.T) {
	data := nodetest.Bytes(7, 2<<20)
	m := newLANMachine(t, data, 8<<20)
	fetchAll(t, data, 4, m)
	if h := m.hits(); h != 1 {
		t.Errorf("the mirror was asked %d times for four requests at once, want 1", h)
	}
	// A request a little later is served from the finished download, kept for a while.
	fetchAll(t, data, 1, m)
	if h := m.hits(); h != 1 {
		t.Errorf("the mirror was asked %d times after a later request, want 1", h)
	}
}

// Three machines want the same package at the same moment and nobody has it: the two that elect the
// first get it through the first one's download (cut-through), so it crosses the uplink once.
func TestCutThroughFromTheElectedNeighbour(t *testing.T) {
	data := nodetest.Bytes(8, 3<<20)
	a, b, c := newLANMachine(t, data, 8<<20), newLANMachine(t, data, 8<<20), newLANMachine(t, data, 8<<20)
	b.owner, c.owner = a.lan.URL, a.lan.URL
	fetchAll(t, data, 1, a, b, c)
	if a.hits() != 1 || b.hits() != 0 || c.hits() != 0 {
		t.Errorf("mirror requests A %d, B %d, C %d: want 1, 0, 0", a.hits(), b.hits(), c.hits())
	}
	if got := b.srv.metrics.relayed.Load(); got != 1 {
		t.Errorf("B relayed %d packages, want 1", got)
	}
	if got := a.srv.metrics.lanServed.Load(); got != 2*int64(len(data)) {
		t.Errorf("A passed %d bytes to neighbours, want %d", got, 2*len(data))
	}
	if peers, _ := b.srv.metrics.Served(); peers != int64(len(data)) {
		t.Errorf("B counts %d bytes from peers, want %d", peers, len(data))
	}
}

// Two machines that saw the LAN differently elect each other: neither waits on the other, both get the
// file, and it crosses the uplink at most twice.
func TestNeighboursThatElectEachOther(t *testing.T) {
	data := nodetest.Bytes(9, 2<<20)
	a, b := newLANMachine(t, data, 8<<20), newLANMachine(t, data, 8<<20)
	a.owner, b.owner = b.lan.URL, a.lan.URL
	start := time.Now()
	fetchAll(t, data, 1, a, b)
	if a.hits()+b.hits() > 2 || a.hits()+b.hits() == 0 {
		t.Errorf("mirror requests A %d, B %d: want one or two in all", a.hits(), b.hits())
	}
	t.Logf("both had the file after %s; mirror requests A %d, B %d", time.Since(start).Round(time.Millisecond), a.hits(), b.hits())
}

// A neighbour that sends other bytes is dropped for the machine's own mirror; nothing wrong reaches
// pacman.
func TestNeighbourWithWrongBytes(t *testing.T) {
	data := nodetest.Bytes(10, 2<<20)
	b := newLANMachine(t, data, 32<<20)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 1
		w.Write(bad)
	}))
	t.Cleanup(evil.Close)
	b.owner = evil.URL
	fetchAll(t, data, 1, b)
	if b.hits() != 1 || b.srv.metrics.verifyFailed.Load() == 0 {
		t.Errorf("mirror requests %d, verification failures %d: want the mirror after the neighbour failed", b.hits(), b.srv.metrics.verifyFailed.Load())
	}
	// The bytes pacman got are the mirror's, and counted so.
	if peers, _ := b.srv.metrics.Served(); peers != 0 {
		t.Errorf("%d bytes counted as a peer's", peers)
	}
}

// What a neighbour may ask for is narrow: a package of this machine's dbs, with the sha256 they list.
func TestServeLANRefuses(t *testing.T) {
	data := nodetest.Bytes(11, 100<<10)
	m := newLANMachine(t, data, 32<<20)
	good := hex.EncodeToString(func() []byte { s := sha256.Sum256(data); return s[:] }())
	for _, tc := range []struct {
		name, method, path, sum string
		want                    int
	}{
		{"the package", "GET", "/core/os/x86_64/" + flightFile, good, 200},
		{"another sha256", "GET", "/core/os/x86_64/" + flightFile, hex.EncodeToString(make([]byte, 32)), 404},
		{"no sha256", "GET", "/core/os/x86_64/" + flightFile, "", 400},
		{"not hex", "GET", "/core/os/x86_64/" + flightFile, "zz", 400},
		{"unknown file", "GET", "/core/os/x86_64/other-1-1-x86_64.pkg.tar.zst", good, 404},
		{"a database", "GET", "/core/os/x86_64/core.db", good, 404},
		{"a signature", "GET", "/core/os/x86_64/" + flightFile + ".sig", good, 404},
		// The repository and architecture go into this machine's mirror URLs: only its own.
		{"another repository", "GET", "/ZZattacker@chosen/os/x86_64/" + flightFile, good, 404},
		{"another architecture", "GET", "/core/os/i686~x/" + flightFile, good, 404},
		{"outside the prefix", "GET", "/../../etc/passwd", good, 404},
		{"POST", "POST", "/core/os/x86_64/" + flightFile, good, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := LANPrefix + tc.path
			if tc.name == "outside the prefix" {
				path = tc.path
			}
			req, _ := http.NewRequest(tc.method, m.lan.URL+path, nil)
			if tc.sum != "" {
				req.Header.Set(lanSumHeader, tc.sum)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s: %d %s", fmt.Sprint(tc.method, " ", path), resp.StatusCode, b)
			}
			if tc.want == 200 && !bytes.Equal(b, data) {
				t.Errorf("%d bytes, not the package", len(b))
			}
		})
	}
	if h := m.hits(); h != 1 {
		t.Errorf("the mirror was asked %d times, want 1 (for the one request that is allowed)", h)
	}
}

// A neighbour elected for a package that sends junk, then trickles past the budget, then cuts the
// stream: none of its bytes reach pacman (it would keep them in its .part and resume from a good mirror
// with a Range); pacman gets the mirror's file.
func TestTricklingNeighbourNeverReachesPacman(t *testing.T) {
	data := nodetest.Bytes(12, 4<<20)
	b := newLANMachine(t, data, 32<<20)
	b.srv.opts.Budget = 300 * time.Millisecond
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(bytes.Repeat([]byte{0x55}, 1<<20))
		w.(http.Flusher).Flush()
		for range 20 {
			time.Sleep(100 * time.Millisecond)
			w.Write([]byte{0x55})
			w.(http.Flusher).Flush()
		}
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(evil.Close)
	b.owner = evil.URL
	resp, err := http.Get(b.endpoint.URL + "/core/os/x86_64/" + flightFile)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%s, %d bytes, %v: want the mirror's file", resp.Status, len(got), err)
	}
	if bytes.Contains(got[:1<<20], bytes.Repeat([]byte{0x55}, 4096)) {
		t.Error("the neighbour's bytes reached the client")
	}
}

// Each neighbour gets a bounded share of the downloads served to the LAN: the fifth request of one peer
// at once is refused while another peer is still served.
func TestEveryNeighbourHasABoundedShare(t *testing.T) {
	data := nodetest.Bytes(13, 1<<20)
	m := newLANMachine(t, data, 256<<10) // four seconds a download: the requests overlap
	lan := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := r.Header.Get("X-Test-Peer") // what kubo reports before the stream, in production
		m.srv.ServeLAN(w, r.WithContext(WithPeer(r.Context(), func() string { return peer })))
	}))
	t.Cleanup(lan.Close)
	sum := sha256.Sum256(data)
	get := func(peer string) int {
		req, _ := http.NewRequest("GET", lan.URL+LANPrefix+"/core/os/x86_64/"+flightFile, nil)
		req.Header.Set(lanSumHeader, hex.EncodeToString(sum[:]))
		req.Header.Set("X-Test-Peer", peer)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	codes := make(chan int, maxPeerStreams)
	for range maxPeerStreams {
		go func() { codes <- get("12D3KooWGreedy") }()
	}
	// The greedy peer's four downloads are running (its slots are taken first thing in ServeLAN).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		m.srv.peersMu.Lock()
		n := m.srv.peerStreams["12D3KooWGreedy"]
		m.srv.peersMu.Unlock()
		if n == maxPeerStreams || time.Now().After(deadline) {
			break
		}
	}
	if code := get("12D3KooWGreedy"); code != http.StatusServiceUnavailable {
		t.Errorf("the greedy peer's fifth request: %d, want 503", code)
	}
	if code := get("12D3KooWOther"); code != http.StatusOK {
		t.Errorf("another peer while the greedy one holds its share: %d, want 200", code)
	}
	for range maxPeerStreams {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("one of the greedy peer's four: %d", code)
		}
	}
}

// A neighbour whose copy failed is not asked again for benchTime: a hostile neighbour costs this
// machine one attempt, not one for every package it is elected for. The protocol's own refusals, given
// at once, bench nobody; a refusal that takes its time does.
func TestAFailedNeighbourIsBenched(t *testing.T) {
	data := nodetest.Bytes(14, 1<<20)
	for _, tc := range []struct {
		name    string
		answer  func(w http.ResponseWriter)
		benched bool
	}{
		{"wrong bytes", func(w http.ResponseWriter) { w.Write(bytes.Repeat([]byte{1}, len(data))) }, true},
		{"more than the db's size", func(w http.ResponseWriter) { w.Write(append(bytes.Clone(data), 1)) }, true},
		{"cut short", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}, true},
		{"a trickle that never stalls", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data[:600<<10])
			for range 200 {
				w.(http.Flusher).Flush()
				time.Sleep(50 * time.Millisecond)
				if _, err := w.Write([]byte{0}); err != nil {
					return
				}
			}
		}, true},
		{"a slow refusal", func(w http.ResponseWriter) {
			time.Sleep(1100 * time.Millisecond)
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}, true},
		{"a refusal at once", func(w http.ResponseWriter) { http.Error(w, "not ours", http.StatusNotFound) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newLANMachine(t, data, 64<<20)
			var asked atomic.Int32
			evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked.Add(1)
				tc.answer(w)
			}))
			t.Cleanup(evil.Close)
			b.owner = evil.URL
			for range 3 {
				fetchAll(t, data, 1, b)
				// The next request makes a new download, as another package of the upgrade would.
				b.srv.flightsMu.Lock()
				clear(b.srv.flights)
				b.srv.flightsMu.Unlock()
			}
			want, benched := int32(3), int64(0)
			if tc.benched {
				want, benched = 1, 1
			}
			if got := asked.Load(); got != want || b.hits() != 3 {
				t.Errorf("the neighbour was asked %d times, the mirror %d, for three downloads: want %d and 3", got, b.hits(), want)
			}
			if got := b.srv.metrics.benched.Load(); got != benched {
				t.Errorf("pacman_ipfs_lan_benched_total: %d, want %d", got, benched)
			}
		})
	}
}

// A neighbour that reads, but too slowly to be done within the time this machine gives a neighbour's
// copy, is cut then: it holds a LAN slot and the download's spool for a bounded time.
func TestASlowReadingNeighbourIsCut(t *testing.T) {
	data := nodetest.Bytes(15, 32<<20) // more than the sockets' buffers hold
	m := newLANMachine(t, data, 256<<20)
	m.srv.lanTime = func(int64) time.Duration { return 500 * time.Millisecond }
	req, _ := http.NewRequest("GET", m.lan.URL+LANPrefix+"/core/os/x86_64/"+flightFile, nil)
	sum := sha256.Sum256(data)
	req.Header.Set(lanSumHeader, hex.EncodeToString(sum[:]))
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got int
	buf := make([]byte, 64<<10)
	start := time.Now()
	for {
		time.Sleep(10 * time.Millisecond) // about 6 MiB/s: 5 s for the whole
		n, err := resp.Body.Read(buf)
		got += n
		if err != nil {
			break
		}
	}
	if got >= len(data) {
		t.Fatalf("the slow reader got the whole file in %s", time.Since(start))
	}
	t.Logf("cut after %d of %d bytes, %s", got, len(data), time.Since(start).Round(time.Millisecond))
}
