package endpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/catalog"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

func lookup(t *testing.T, ix *alpmdb.Index, name string) alpmdb.Entry {
	t.Helper()
	e, ok := ix.Lookup(name)
	if !ok {
		t.Fatalf("%s is not in the index", name)
	}
	return e
}

// fakeIPFS serves some CIDs, after a delay; others never arrive (like a CID nobody provides).
type fakeIPFS struct {
	delay   time.Duration
	mu      sync.Mutex // files changes between requests, while a lost race may still be asking
	files   map[cid.Cid][]byte
	dropped []cid.Cid // what BlockDropper was asked to remove
}

func (f *fakeIPFS) Blocks(_ context.Context, c cid.Cid) ([]cid.Cid, error) { return []cid.Cid{c}, nil }

func (f *fakeIPFS) DropBlocks(_ context.Context, bs []cid.Cid) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropped = append(f.dropped, bs...)
	return nil
}

// add makes c deliverable.
func (f *fakeIPFS) add(c cid.Cid, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[c] = b
}

func (f *fakeIPFS) Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error) {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f.mu.Lock()
	b, ok := f.files[c]
	f.mu.Unlock()
	if !ok {
		<-ctx.Done() // bitswap keeps looking until told to stop
		return nil, ctx.Err()
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// fakeMirror is a real HTTP server with an access log.
type fakeMirror struct {
	*httptest.Server
	mu    sync.Mutex
	log   []string
	via   string // of the last request
	files map[string][]byte
}

func (m *fakeMirror) lastVia() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.via
}

func newMirror(t *testing.T) *fakeMirror {
	m := &fakeMirror{files: map[string][]byte{}}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.log = append(m.log, r.URL.Path)
		m.via = r.Header.Get("Via")
		b, ok := m.files[r.URL.Path]
		m.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		if ims := r.Header.Get("If-Modified-Since"); ims != "" {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		// As real mirrors do: Range, HEAD, Content-Length (not Python's http.server, which ignores Range).
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *fakeMirror) requests() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.log...)
}

// testCatalog is a catalog of ix, with what this machine seeds and what one index root ("/ipfs/root")
// lists: file name -> CID.
func testCatalog(ix *alpmdb.Index, seeded, listed map[string]cid.Cid) *catalog.Catalog {
	cat := catalog.New(nil, nil)
	cat.SetIndex(ix)
	sums := map[[32]byte]cid.Cid{}
	for name, c := range seeded {
		e, _ := ix.Lookup(name)
		sums[e.SHA256] = c
	}
	cat.SetSeeded(sums)
	if listed != nil {
		cat.SetListing(&catalog.Listing{Root: "/ipfs/root", Files: listed, Complete: true})
	}
	return cat
}

type setup struct {
	cat    *catalog.Catalog
	ep     *Server
	srv    *httptest.Server
	mirror *fakeMirror
	ipfs   *fakeIPFS
	small  []byte
	large  []byte
}

func newSetup(t *testing.T) *setup { return newSetupWith(t, nil) }

// newSetupWith is newSetup with options of the test's own (the status page's, the tally's).
func newSetupWith(t *testing.T, more func(*Options)) *setup {
	s := &setup{mirror: newMirror(t), ipfs: &fakeIPFS{files: map[cid.Cid][]byte{}}}
	s.small = nodetest.Bytes(1, 300<<10)
	s.large = nodetest.Bytes(2, 3<<20)
	sig := []byte("a detached signature")
	ix := alpmdb.NewIndex([]alpmdb.Entry{
		{Repo: "core", FileName: "small-1-1-x86_64.pkg.tar.zst", Size: int64(len(s.small)), SHA256: sha256.Sum256(s.small), PGPSig: base64.StdEncoding.EncodeToString(sig)},
		{Repo: "core", FileName: "large-1-1-x86_64.pkg.tar.zst", Size: int64(len(s.large)), SHA256: sha256.Sum256(s.large)},
	})
	largeCID := node.RawCID([32]byte{42}) // stands for the large file's DAG root
	s.cat = testCatalog(ix, map[string]cid.Cid{"large-1-1-x86_64.pkg.tar.zst": largeCID}, nil)
	opts := Options{
		Catalog: s.cat,
		Node:    s.ipfs,
		Mirrors: []string{s.mirror.URL + "/$repo/os/$arch"},
		Hedge:   100 * time.Millisecond,
		Budget:  time.Second,
	}
	if more != nil {
		more(&opts)
	}
	srv := New(opts)
	s.ep = srv
	s.ipfs.add(largeCID, s.large)
	s.srv = httptest.NewServer(srv)
	t.Cleanup(s.srv.Close)
	return s
}

// peerHolds makes an index list the small package: a peer is known to hold it.
func (s *setup) peerHolds(t *testing.T) {
	t.Helper()
	s.cat.SetListing(&catalog.Listing{Root: "/ipfs/neighbour", Complete: true,
		Files: map[string]cid.Cid{"small-1-1-x86_64.pkg.tar.zst": node.RawCID(sha256.Sum256(s.small))}})
}

func (s *setup) get(t *testing.T, path string) (int, []byte, time.Duration, error) {
	t.Helper()
	start := time.Now()
	resp, err := http.Get(s.srv.URL + path)
	if err != nil {
		return 0, nil, time.Since(start), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, time.Since(start), err
}

func TestFromIPFSWithoutTouchingTheMirror(t *testing.T) {
	s := newSetup(t)
	s.peerHolds(t)
	s.ipfs.add(node.RawCID(sha256.Sum256(s.small)), s.small)
	for path, want := range map[string][]byte{"/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst": s.small, "/core/os/x86_64/large-1-1-x86_64.pkg.tar.zst": s.large} {
		code, body, _, err := s.get(t, path)
		if err != nil || code != 200 || !bytes.Equal(body, want) {
			t.Errorf("%s: %d, %d bytes, %v", path, code, len(body), err)
		}
	}
	if reqs := s.mirror.requests(); len(reqs) != 0 {
		t.Errorf("the mirror was asked for %v", reqs)
	}
}

// A package no peer is known to hold goes to the mirror at once; one an index lists but no peer
// delivers goes there after the hedge.
func TestMirrorAtOnceWhenNoPeerHoldsIt(t *testing.T) {
	for _, tt := range []struct {
		name           string
		listed         bool
		direct, hedges int64
	}{
		{"nobody holds it", false, 1, 0},
		{"an index lists it, no peer sends it", true, 0, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t)
			if tt.listed {
				s.peerHolds(t)
			}
			s.mirror.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = s.small
			code, body, took, err := s.get(t, "/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst")
			if err != nil || code != 200 || !bytes.Equal(body, s.small) {
				t.Fatalf("%d, %d bytes, %v", code, len(body), err)
			}
			m := s.ep.metrics
			if m.direct.Load() != tt.direct || m.hedges.Load() != tt.hedges {
				t.Errorf("direct %d, hedged %d: want %d, %d", m.direct.Load(), m.hedges.Load(), tt.direct, tt.hedges)
			}
			t.Logf("took %s with a 100 ms hedge", took)
		})
	}
}

func TestSlowIPFSLosesTheRace(t *testing.T) {
	s := newSetup(t)
	s.peerHolds(t)
	s.ipfs.delay = 5 * time.Second
	s.ipfs.add(node.RawCID(sha256.Sum256(s.small)), s.small)
	s.mirror.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = s.small
	code, body, took, err := s.get(t, "/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst")
	if err != nil || code != 200 || !bytes.Equal(body, s.small) || took > 3*time.Second {
		t.Fatalf("%d, %d bytes, %v, after %s", code, len(body), err, took)
	}
}

func TestWrongBytesNeverSucceed(t *testing.T) {
	tests := []struct {
		name   string
		mirror []byte
	}{
		{name: "one byte changed", mirror: func() []byte { b := bytes.Clone(nodetest.Bytes(1, 300<<10)); b[1000] ^= 1; return b }()},
		{name: "truncated", mirror: nodetest.Bytes(1, 300<<10)[:200<<10]},
		{name: "longer than the db says", mirror: append(bytes.Clone(nodetest.Bytes(1, 300<<10)), "trailing"...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t)
			s.mirror.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = tt.mirror
			code, body, _, err := s.get(t, "/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst")
			if err == nil && code == 200 {
				t.Fatalf("a bad file was delivered as a success (%d bytes)", len(body))
			}
			if len(body) > len(s.small) || bytes.Equal(body, tt.mirror) {
				t.Errorf("sent %d bytes of a %d-byte file", len(body), len(s.small))
			}
		})
	}
	t.Run("from IPFS", func(t *testing.T) {
		s := newSetup(t)
		s.peerHolds(t)
		bad := bytes.Clone(s.small)
		bad[7] ^= 1
		s.ipfs.add(node.RawCID(sha256.Sum256(s.small)), bad)
		if code, _, _, err := s.get(t, "/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"); err == nil && code == 200 {
			t.Fatal("bad bytes from IPFS were delivered as a success")
		}
	})
}

func TestProxiedAndLocalAnswers(t *testing.T) {
	s := newSetup(t)
	s.mirror.files["/core/os/x86_64/core.db"] = []byte("a database")
	s.mirror.files["/extra/os/x86_64/unknown-1-1-any.pkg.tar.zst"] = []byte("not in our dbs")
	for path, want := range map[string]string{
		"/core/os/x86_64/core.db":                          "a database",
		"/extra/os/x86_64/unknown-1-1-any.pkg.tar.zst":     "not in our dbs",
		"/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst.sig": "a detached signature",
	} {
		code, body, _, err := s.get(t, path)
		if err != nil || code != 200 || string(body) != want {
			t.Errorf("%s: %d %q %v", path, code, body, err)
		}
	}
	// pacman's If-Modified-Since on databases reaches the mirror, and its 304 comes back.
	req, _ := http.NewRequest("GET", s.srv.URL+"/core/os/x86_64/core.db", nil)
	req.Header.Set("If-Modified-Since", time.Now().UTC().Format(http.TimeFormat))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNotModified {
		t.Errorf("conditional db request: %v %v", resp.Status, err)
	}
	if strings.Contains(strings.Join(s.mirror.requests(), " "), ".sig") {
		t.Error("the signature was fetched from the mirror although the db carries it")
	}
}

func TestParsePath(t *testing.T) {
	for path, ok := range map[string]bool{
		"/core/os/x86_64/zlib-1:1.3.1-2-x86_64.pkg.tar.zst": true,
		"/core/os/x86_64/core.db":                           true,
		"/core/os/x86_64/../../../etc/passwd":               false,
		"/core/os/x86_64/..":                                false,
		"/core/os/x86_64/.hidden":                           false,
		"/core/os/x86_64/a/b":                               false,
		"/core/xx/x86_64/core.db":                           false,
		"/core/os//core.db":                                 false,
		"core/os/x86_64/core.db":                            false,
		"/core/os/x86_64/a%2Fb":                             false,
		"/core/os/x86_64/a b":                               false,
		"/core/os/x86_64/-rf":                               false,
	} {
		if _, err := ParsePath(path); (err == nil) != ok {
			t.Errorf("ParsePath(%q): %v, want ok=%v", path, err, ok)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/core/os/x86_64/core.db", "/../os/x/y", "/a/os/b/c.pkg.tar.zst.sig"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, err := ParsePath(p)
		if err != nil {
			return
		}
		for _, s := range []string{r.Repo, r.Arch, r.File} {
			if strings.ContainsAny(s, "/\\\x00") || strings.Contains(s, "..") || s == "" {
				t.Fatalf("ParsePath(%q) accepted %q", p, s)
			}
		}
	})
}

func TestParseMirrorlist(t *testing.T) {
	in := `## Worldwide
#Server = https://commented.example/$repo/os/$arch
Server = https://geo.mirror.pkgbuild.com/$repo/os/$arch
Server=http://mirror.example:8080/archlinux/$repo/os/$arch   # trailing comment
Include = /etc/pacman.d/other
`
	got, err := ParseMirrorlist(strings.NewReader(in))
	if err != nil || len(got) != 2 || Expand(got[1], "core", "x86_64") != "http://mirror.example:8080/archlinux/core/os/x86_64" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := ParseMirrorlist(strings.NewReader("Server = gopher://x/$repo\n")); err == nil {
		t.Error("accepted a gopher server")
	}
}

// FuzzParseMirrorlist: any mirrorlist either fails with an error or yields servers of the allowed
// schemes, never a panic.
func FuzzParseMirrorlist(f *testing.F) {
	for _, s := range []string{"Server = https://m.example/$repo/os/$arch\n", "#Server = x\n", "Server=\n", "Server = file:///srv/$repo\n", "Server = javascript:alert(1)\n", "Server = http://[::1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		servers, err := ParseMirrorlist(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, s := range servers {
			ok := false
			for _, scheme := range []string{"http://", "https://", "ftp://", "file:/"} {
				ok = ok || strings.HasPrefix(s, scheme)
			}
			if !ok {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}

// sigVerifier stands in for gpgv: a signature is good when it is "good:" followed by the data's sha256.
type sigVerifier struct{}

func (sigVerifier) Verify(ctx context.Context, sig []byte, data io.Reader) error {
	h := sha256.New()
	if _, err := io.Copy(h, data); err != nil {
		return err
	}
	if !bytes.Equal(sig, append([]byte("good:"), h.Sum(nil)...)) {
		return errors.New("bad signature")
	}
	return nil
}

// A signature the db does not carry comes from a peer only once it is valid over the package; a bad
// one, or none, sends the request to the mirrors.
func TestPeerSignatureOnlyWhenValid(t *testing.T) {
	large := nodetest.Bytes(2, 3<<20)
	sum := sha256.Sum256(large)
	good := append([]byte("good:"), sum[:]...)
	for _, tt := range []struct {
		name       string
		peer       []byte // what the peer's index has as large's .sig; nil for nothing
		fromMirror bool
	}{
		{"valid", good, false},
		{"over other bytes", append([]byte("good:"), make([]byte, 32)...), true},
		{"not in any index", nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newMirror(t)
			m.files["/core/os/x86_64/large-1-1-x86_64.pkg.tar.zst.sig"] = good
			ipfs := &fakeIPFS{files: map[cid.Cid][]byte{}}
			largeCID, sigCID := node.RawCID([32]byte{42}), node.RawCID([32]byte{43})
			ipfs.add(largeCID, large)
			listed := map[string]cid.Cid{"large-1-1-x86_64.pkg.tar.zst": largeCID}
			if tt.peer != nil {
				ipfs.add(sigCID, tt.peer)
				listed["large-1-1-x86_64.pkg.tar.zst.sig"] = sigCID
			}
			ix := alpmdb.NewIndex([]alpmdb.Entry{{Repo: "core", FileName: "large-1-1-x86_64.pkg.tar.zst", Size: int64(len(large)), SHA256: sum}})
			srv := httptest.NewServer(New(Options{
				Catalog: testCatalog(ix, nil, listed), Node: ipfs,
				Mirrors: []string{m.URL + "/$repo/os/$arch"}, Hedge: 100 * time.Millisecond,
				Signatures: func() sigcheck.Verifier { return sigVerifier{} },
			}))
			t.Cleanup(srv.Close)
			resp, err := http.Get(srv.URL + "/core/os/x86_64/large-1-1-x86_64.pkg.tar.zst.sig")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(b, good) {
				t.Errorf("%d %q, want the good signature", resp.StatusCode, b)
			}
			if got := len(m.requests()) > 0; got != tt.fromMirror {
				t.Errorf("mirror asked: %v, want %v", m.requests(), tt.fromMirror)
			}
		})
	}
}

// A tampered mirror first, a good one second. By default a mirror's bytes stream as they arrive, as
// pacman would take them from that mirror itself: the transfer is cut short of its end, never a success
// with wrong bytes. With MirrorCheck, pacman gets the good mirror's file and never a byte of the
// tampered one (it would keep them in its .part and resume elsewhere).
func TestTamperedMirrorThenGoodMirror(t *testing.T) {
	small := nodetest.Bytes(1, 300<<10)
	tampered := bytes.Clone(small)
	tampered[1000] ^= 1
	for _, tt := range []struct {
		name        string
		mirrorCheck time.Duration
	}{{"as pacman would", 0}, {"checked first", time.Second}} {
		t.Run(tt.name, func(t *testing.T) {
			bad, good := newMirror(t), newMirror(t)
			bad.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = tampered
			good.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = small
			ix := alpmdb.NewIndex([]alpmdb.Entry{{Repo: "core", FileName: "small-1-1-x86_64.pkg.tar.zst", Size: int64(len(small)), SHA256: sha256.Sum256(small)}})
			srv := httptest.NewServer(New(Options{
				Catalog: testCatalog(ix, nil, nil), Node: &fakeIPFS{files: map[cid.Cid][]byte{}}, MirrorCheck: tt.mirrorCheck,
				Mirrors: []string{bad.URL + "/$repo/os/$arch", good.URL + "/$repo/os/$arch"}, Hedge: 50 * time.Millisecond,
			}))
			t.Cleanup(srv.Close)
			resp, err := http.Get(srv.URL + "/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst")
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case tt.mirrorCheck > 0 && (err != nil || resp.StatusCode != 200 || !bytes.Equal(b, small)):
				t.Errorf("%d, %d bytes, %v: want the good mirror's file", resp.StatusCode, len(b), err)
			case tt.mirrorCheck == 0 && (err == nil || len(b) >= len(small)):
				t.Errorf("%d, %d bytes, %v: want a transfer cut short of its end", resp.StatusCode, len(b), err)
			}
			if len(bad.requests()) != 1 {
				t.Errorf("requests: tampered %v, good %v", bad.requests(), good.requests())
			}
		})
	}
}

// An index that maps a package to other content: nothing of it reaches pacman, the mirror serves.
func TestWrongIndexCIDFallsBackToTheMirror(t *testing.T) {
	large := nodetest.Bytes(2, 3<<20)
	other := nodetest.Bytes(3, 3<<20)
	m := newMirror(t)
	m.files["/core/os/x86_64/large-1-1-x86_64.pkg.tar.zst"] = large
	wrong := node.RawCID([32]byte{7})
	ipfs := &fakeIPFS{files: map[cid.Cid][]byte{wrong: other}}
	ix := alpmdb.NewIndex([]alpmdb.Entry{{Repo: "core", FileName: "large-1-1-x86_64.pkg.tar.zst", Size: int64(len(large)), SHA256: sha256.Sum256(large)}})
	cat := testCatalog(ix, nil, map[string]cid.Cid{"large-1-1-x86_64.pkg.tar.zst": wrong})
	srv := httptest.NewServer(New(Options{
		Catalog: cat, Node: ipfs,
		Mirrors: []string{m.URL + "/$repo/os/$arch"}, Hedge: 50 * time.Millisecond,
	}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL + "/core/os/x86_64/large-1-1-x86_64.pkg.tar.zst")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, large) {
		t.Errorf("%d, %d bytes, %v: want the mirror's file", resp.StatusCode, len(b), err)
	}
	if len(m.requests()) != 1 {
		t.Errorf("mirror requests %v", m.requests())
	}
	// The wrong CID is not followed again: the next request goes to the mirror at once; and what was
	// fetched of it is removed from the node.
	if h := cat.Lookup(lookup(t, ix, "large-1-1-x86_64.pkg.tar.zst")); h.Held {
		t.Errorf("after the mismatch the catalog still has %+v", h)
	}
	ipfs.mu.Lock()
	defer ipfs.mu.Unlock()
	if len(ipfs.dropped) != 1 || !ipfs.dropped[0].Equals(wrong) {
		t.Errorf("blocks removed: %v, want those of %s", ipfs.dropped, wrong)
	}
}

// Range, If-Range and HEAD, from IPFS and from a mirror, answered as nginx answers for the same file:
// 206 with Content-Range for one satisfiable range (a suffix, an open range, bytes=0- too), the whole
// file for several ranges or a stale If-Range, 416 for a malformed range or one past the end; the bytes
// of the whole file checked first.
func TestRangeAndHead(t *testing.T) {
	s := newSetup(t)
	s.mirror.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = s.small
	size := len(s.small)
	sum := sha256.Sum256(s.small)
	tag := `"` + hex.EncodeToString(sum[:]) + `"`
	for _, src := range []string{"mirror", "ipfs"} {
		if src == "ipfs" {
			s.peerHolds(t)
			s.ipfs.add(node.RawCID(sha256.Sum256(s.small)), s.small)
		}
		for _, tt := range []struct {
			rng, ifRange string
			code         int
			from, to     int
			contentRange string
		}{
			{"", "", 200, 0, size - 1, ""},
			{"bytes=1000-", "", 206, 1000, size - 1, fmt.Sprintf("bytes 1000-%d/%d", size-1, size)},
			{"bytes=5-9", "", 206, 5, 9, fmt.Sprintf("bytes 5-9/%d", size)},
			{"bytes=0-", "", 206, 0, size - 1, fmt.Sprintf("bytes 0-%d/%d", size-1, size)},
			{"bytes=-500", "", 206, size - 500, size - 1, fmt.Sprintf("bytes %d-%d/%d", size-500, size-1, size)},
			{"bytes=5-9000000", "", 206, 5, size - 1, fmt.Sprintf("bytes 5-%d/%d", size-1, size)},
			{"bytes=0-1,5-9", "", 200, 0, size - 1, ""},
			{"bytes=5-9", tag, 206, 5, 9, fmt.Sprintf("bytes 5-9/%d", size)},
			{"bytes=5-9", `"stale"`, 200, 0, size - 1, ""},
			{fmt.Sprintf("bytes=%d-", size), "", 416, 0, -1, fmt.Sprintf("bytes */%d", size)},
			{"bytes=abc", "", 416, 0, -1, fmt.Sprintf("bytes */%d", size)},
			{"bytes=9-5", "", 416, 0, -1, fmt.Sprintf("bytes */%d", size)},
			{"bytes=-0", "", 416, 0, -1, fmt.Sprintf("bytes */%d", size)},
		} {
			for _, method := range []string{"GET", "HEAD"} {
				if method == "HEAD" && (tt.ifRange != "" || src == "mirror" && tt.code == 200 && tt.rng != "") {
					continue // If-Range is for GET; a HEAD no peer can answer is the mirror's own answer
				}
				req, _ := http.NewRequest(method, s.srv.URL+"/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst", nil)
				if tt.rng != "" {
					req.Header.Set("Range", tt.rng)
				}
				if tt.ifRange != "" {
					req.Header.Set("If-Range", tt.ifRange)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				name := fmt.Sprintf("%s %s %q %q", src, method, tt.rng, tt.ifRange)
				if resp.StatusCode != tt.code || resp.Header.Get("Content-Range") != tt.contentRange {
					t.Errorf("%s: %d %q, want %d %q", name, resp.StatusCode, resp.Header.Get("Content-Range"), tt.code, tt.contentRange)
					continue
				}
				if tt.code == 416 {
					continue
				}
				if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(tt.to-tt.from+1) {
					t.Errorf("%s: Content-Length %s, want %d", name, cl, tt.to-tt.from+1)
				}
				if method == "GET" && !bytes.Equal(b, s.small[tt.from:tt.to+1]) {
					t.Errorf("%s: %d bytes, not bytes %d-%d of the file", name, len(b), tt.from, tt.to)
				}
				if method == "GET" && resp.Header.Get("ETag") != tag {
					t.Errorf("%s: ETag %q, want the db's sha256 %s", name, resp.Header.Get("ETag"), tag)
				}
			}
		}
	}
	// A range is part of a package: the packages counted are the whole ones only.
	if got := s.ep.metrics.packages["peer"] + s.ep.metrics.packages["mirror"]; got != 6 {
		t.Errorf("%d packages counted, want the 6 whole GETs", got)
	}
}

// HEAD answers what GET would deliver: a CacheServer's 404 for what no peer is known to hold (nginx:
// 404 where GET is 404), the mirror's own answer with its validators as a Server.
func TestHeadOfWhatNoPeerHolds(t *testing.T) {
	s := newSetup(t)
	s.mirror.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = s.small
	for path, want := range map[string]int{
		"/cache/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst": 404,
		"/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst":       200,
		"/cache/core/os/x86_64/large-1-1-x86_64.pkg.tar.zst": 200, // seeded here
	} {
		resp, err := http.Head(s.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("HEAD %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// A client that stops reading is cut off after the write stall, and that is not a source whose bytes
// failed the check either.
func TestClientThatStopsReadingIsCut(t *testing.T) {
	huge := nodetest.Bytes(6, 48<<20)
	hugeCID := node.RawCID([32]byte{6})
	s := newSetupWith(t, func(o *Options) {
		ix := alpmdb.NewIndex([]alpmdb.Entry{{Repo: "core", FileName: "huge-1-1-x86_64.pkg.tar.zst", Size: int64(len(huge)), SHA256: sha256.Sum256(huge)}})
		o.Catalog = testCatalog(ix, map[string]cid.Cid{"huge-1-1-x86_64.pkg.tar.zst": hugeCID}, nil)
		o.WriteStall = 300 * time.Millisecond
	})
	s.ipfs.add(hugeCID, huge)
	conn, err := net.Dial("tcp", s.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /core/os/x86_64/huge-1-1-x86_64.pkg.tar.zst HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	// Reads nothing.
	for deadline := time.Now().Add(20 * time.Second); s.ep.metrics.clientGone.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if s.ep.metrics.clientGone.Load() != 1 || s.ep.metrics.verifyFailed.Load() != 0 {
		t.Errorf("client aborts %d, verification failures %d: want 1, 0", s.ep.metrics.clientGone.Load(), s.ep.metrics.verifyFailed.Load())
	}
}

// A client that hangs up is not a source whose bytes failed the check.
func TestClientHangUpIsNotAVerificationFailure(t *testing.T) {
	// Larger than what the loopback's socket buffers take in: the endpoint is still writing when the
	// client goes.
	huge := nodetest.Bytes(5, 48<<20)
	hugeCID := node.RawCID([32]byte{5})
	s := newSetupWith(t, func(o *Options) {
		ix := alpmdb.NewIndex([]alpmdb.Entry{{Repo: "core", FileName: "huge-1-1-x86_64.pkg.tar.zst", Size: int64(len(huge)), SHA256: sha256.Sum256(huge)}})
		o.Catalog = testCatalog(ix, map[string]cid.Cid{"huge-1-1-x86_64.pkg.tar.zst": hugeCID}, nil)
	})
	s.ipfs.add(hugeCID, huge)
	conn, err := net.Dial("tcp", s.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /core/os/x86_64/huge-1-1-x86_64.pkg.tar.zst HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	for deadline := time.Now().Add(10 * time.Second); s.ep.metrics.clientGone.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if s.ep.metrics.clientGone.Load() != 1 || s.ep.metrics.verifyFailed.Load() != 0 {
		t.Errorf("client aborts %d, verification failures %d: want 1, 0", s.ep.metrics.clientGone.Load(), s.ep.metrics.verifyFailed.Load())
	}
}

// As a CacheServer (/cache/...) the endpoint answers from peers only: a fast 404 for what no peer has
// and for anything that is not a package, and the mirrors are never asked.
func TestCacheServerPeersOnly(t *testing.T) {
	s := newSetup(t)
	s.mirror.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = s.small
	s.mirror.files["/core/os/x86_64/core.db"] = []byte("a database")
	for path, want := range map[string]int{
		"/cache/core/os/x86_64/large-1-1-x86_64.pkg.tar.zst":     200, // a peer has it
		"/cache/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst":     404, // no peer has it
		"/cache/core/os/x86_64/core.db":                          404,
		"/cache/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst.sig": 200, // from the db
		"/cache/core/os/x86_64/large-1-1-x86_64.pkg.tar.zst.sig": 404, // the db has none, no peer either
	} {
		code, _, took, err := s.get(t, path)
		if err != nil || code != want {
			t.Errorf("%s: %d %v, want %d", path, code, err, want)
		}
		if took > 3*time.Second {
			t.Errorf("%s took %s", path, took)
		}
	}
	if reqs := s.mirror.requests(); len(reqs) != 0 {
		t.Errorf("a CacheServer request reached the mirror: %v", reqs)
	}
}

// A request that passed through an endpoint already is never sent upstream again.
func TestLoopedRequestsStayHere(t *testing.T) {
	s := newSetup(t)
	s.mirror.files["/core/os/x86_64/core.db"] = []byte("a database")
	s.mirror.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = s.small
	for path, want := range map[string]int{
		"/core/os/x86_64/core.db":                      508,
		"/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst": 404, // no peer has it, and no mirror is asked
		"/core/os/x86_64/large-1-1-x86_64.pkg.tar.zst": 200, // from IPFS
	} {
		req, _ := http.NewRequest("GET", s.srv.URL+path, nil)
		req.Header.Set("Via", "1.1 pacman-ipfs")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s with Via: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if reqs := s.mirror.requests(); len(reqs) != 0 {
		t.Errorf("looped requests reached the mirror: %v", reqs)
	}
	// And what the endpoint sends upstream carries the token.
	s.get(t, "/core/os/x86_64/core.db")
	if via := s.mirror.lastVia(); !strings.Contains(via, "pacman-ipfs") {
		t.Errorf("upstream request without Via: %q", via)
	}
}

func TestDropSelf(t *testing.T) {
	self := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7878}
	kept, dropped := DropSelf([]string{
		"http://127.0.0.1:7878/$repo/os/$arch",
		"http://localhost:7878/$repo/os/$arch",
		"http://127.0.0.2:7878/$repo/os/$arch",
		"http://[::1]:7878/$repo/os/$arch",
		"http://127.0.0.1:7879/$repo/os/$arch",
		"https://127.0.0.1:7878/$repo/os/$arch",
		"https://geo.mirror.pkgbuild.com/$repo/os/$arch",
	}, self)
	if len(dropped) != 4 || len(kept) != 3 {
		t.Errorf("kept %q, dropped %q", kept, dropped)
	}
}

func TestRedirectPolicy(t *testing.T) {
	req := func(u string) *http.Request { r, _ := http.NewRequest("GET", u, nil); return r }
	for _, tt := range []struct {
		from, to string
		ok       bool
	}{
		{"http://192.0.2.10/x", "https://192.0.2.11/x", true},
		{"https://192.0.2.10/x", "http://192.0.2.11/x", false},
		{"http://192.0.2.10/x", "http://127.0.0.1:5001/api/v0/shutdown", false},
		{"http://192.0.2.10/x", "http://localhost/x", false},
		{"http://192.0.2.10/x", "http://169.254.169.254/latest/meta-data", false},
		{"http://192.0.2.10/x", "http://[::1]/x", false},
		{"http://192.0.2.10/x", "ftp://192.0.2.11/x", false},
	} {
		err := checkRedirect(req(tt.to), []*http.Request{req(tt.from)})
		if (err == nil) != tt.ok {
			t.Errorf("%s -> %s: %v, want ok %v", tt.from, tt.to, err, tt.ok)
		}
	}
	via := make([]*http.Request, maxRedirects)
	for i := range via {
		via[i] = req("http://192.0.2.10/x")
	}
	if err := checkRedirect(req("http://192.0.2.11/x"), via); err == nil {
		t.Error("more than maxRedirects followed")
	}
}

// Where the unit forbids the network (Options.Forbidden), a mirror that is not on loopback fails at
// once and says why, where a connection would hang until pacman gave up; a loopback mirror still serves.
func TestForbiddenMirrorFailsAtOnce(t *testing.T) {
	why := "the unit forbids the network"
	s := newSetupWith(t, func(o *Options) {
		// 192.0.2.1 (TEST-NET-1) answers nothing: without Forbidden these requests would hang.
		o.Mirrors = append([]string{"http://192.0.2.1/$repo/os/$arch"}, o.Mirrors...)
		o.Forbidden = why
	})
	code, body, took, _ := s.get(t, "/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst")
	if code != http.StatusBadGateway || !strings.Contains(string(body), why) || !strings.Contains(string(body), "192.0.2.1") {
		t.Errorf("%d %.200q: want a 502 naming the mirror and why", code, body)
	}
	t.Logf("the forbidden mirror failed in %s", took)
	s.mirror.files["/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"] = s.small
	code, body, took, err := s.get(t, "/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst")
	if err != nil || code != 200 || !bytes.Equal(body, s.small) {
		t.Fatalf("%d, %d bytes, %v: want the loopback mirror's file", code, len(body), err)
	}
	t.Logf("then served by the loopback mirror in %s", took)
}
