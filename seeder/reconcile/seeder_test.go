package reconcile_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/memnode"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// cache is a CacheDir in a temp dir with the index that vouches for what it was given.
type cache struct {
	dir     string
	entries []alpmdb.Entry
}

func newCache(t *testing.T) *cache { return &cache{dir: t.TempDir()} }

// put writes a package file the index vouches for (listed=true) or not.
func (c *cache) put(t *testing.T, name string, data []byte, listed bool) string {
	t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if listed {
		c.entries = append(c.entries, alpmdb.Entry{Repo: "core", Name: name, FileName: name, Size: int64(len(data)), SHA256: sha256.Sum256(data)})
	}
	return p
}

func (c *cache) index() *alpmdb.Index { return alpmdb.NewIndex(c.entries) }

func newSeeder(t *testing.T, c *cache, n node.Node, stateDir string) *reconcile.Seeder {
	return reconcile.New(reconcile.Options{CacheDirs: []string{c.dir}, StateDir: stateDir, Node: n})
}

func sync(t *testing.T, s *reconcile.Seeder, ix *alpmdb.Index) *reconcile.Report {
	t.Helper()
	rep, err := s.Sync(context.Background(), ix)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return rep
}

func pinned(t *testing.T, n node.Node) map[cid.Cid]string {
	t.Helper()
	p, err := n.Pins(context.Background(), node.PinPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func refusedReason(rep *reconcile.Report, path string) string {
	for _, r := range rep.Refused {
		if r.Path == path {
			return r.Reason
		}
	}
	return ""
}

func TestSyncPublishesOnlyVerifiedFiles(t *testing.T) {
	c := newCache(t)
	small := nodetest.Bytes(1, 500<<10)
	large := nodetest.Bytes(2, 3<<20)
	c.put(t, "small-1-1-x86_64.pkg.tar.zst", small, true)
	c.put(t, "large-1-1-x86_64.pkg.tar.zst", large, true)
	tampered := c.put(t, "tampered-1-1-x86_64.pkg.tar.zst", nodetest.Bytes(3, 1000), true)
	if err := os.WriteFile(tampered, nodetest.Bytes(4, 1000), 0o644); err != nil { // same size, other bytes
		t.Fatal(err)
	}
	secret := c.put(t, "secret.txt", []byte("my private notes"), false)
	// A symlink named like a listed package, pointing at the private file.
	link := filepath.Join(c.dir, "linked-1-1-x86_64.pkg.tar.zst")
	c.entries = append(c.entries, alpmdb.Entry{Repo: "core", FileName: "linked-1-1-x86_64.pkg.tar.zst", Size: 16, SHA256: sha256.Sum256([]byte("my private notes"))})
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(c.dir, "fifo-1-1-x86_64.pkg.tar.zst")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	c.put(t, "partial-1-1-x86_64.pkg.tar.zst.part", small, false)
	if err := os.Mkdir(filepath.Join(c.dir, "download-abc123"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "download-abc123", "small-1-1-x86_64.pkg.tar.zst"), small, 0o644); err != nil {
		t.Fatal(err)
	}

	n := memnode.New()
	s := newSeeder(t, c, n, t.TempDir())
	rep := sync(t, s, c.index())

	if rep.Added != 2 || rep.Unpinned != 0 || !rep.Converged() {
		t.Errorf("report: added %d unpinned %d failed %v", rep.Added, rep.Unpinned, rep.Failed)
	}
	pins := pinned(t, n)
	wantSmall := node.RawCID(sha256.Sum256(small))
	if pins[wantSmall] != node.PinPrefix+"core/small-1-1-x86_64.pkg.tar.zst" {
		t.Errorf("small package not pinned as %s: %v", wantSmall, pins)
	}
	if len(pins) != 2 {
		t.Errorf("pins = %v, want exactly the two verified packages", pins)
	}
	for path, reason := range map[string]string{
		tampered: "sha256 mismatch",
		secret:   "not in any sync db",
		link:     "symlink",
		fifo:     "fifo",
	} {
		if got := refusedReason(rep, path); !strings.Contains(got, reason) {
			t.Errorf("%s: refused for %q, want %q", filepath.Base(path), got, reason)
		}
	}
	for _, r := range rep.Refused {
		if strings.Contains(r.Path, ".part") || strings.Contains(r.Path, "download-") {
			t.Errorf("%s should be ignored, not refused", r.Path)
		}
	}
	if n.Has(context.Background(), node.RawCID(sha256.Sum256([]byte("my private notes")))) {
		t.Error("the private file reached the node")
	}
}

func TestSecondPassReadsNothing(t *testing.T) {
	c := newCache(t)
	for i := range 5 {
		c.put(t, "p"+string(rune('a'+i))+"-1-1-x86_64.pkg.tar.zst", nodetest.Bytes(uint64(i), 2<<20), true)
	}
	n := memnode.New()
	state := t.TempDir()
	first := sync(t, newSeeder(t, c, n, state), c.index())
	if first.HashedBytes != 5*2<<20 || first.Added != 5 {
		t.Fatalf("first pass hashed %d bytes, added %d", first.HashedBytes, first.Added)
	}
	// A new Seeder reads the state from disk, as a new process would.
	second := sync(t, newSeeder(t, c, n, state), c.index())
	if second.HashedBytes != 0 || second.Added != 0 || second.Seeded != 5 || n.Adds() != 5 {
		t.Errorf("second pass hashed %d bytes, added %d, seeded %d; node saw %d adds", second.HashedBytes, second.Added, second.Seeded, n.Adds())
	}
}

func TestRemovalUnpinsAndVerifiedStaysAfterDBDropsIt(t *testing.T) {
	c := newCache(t)
	a := c.put(t, "a-1-1-x86_64.pkg.tar.zst", nodetest.Bytes(1, 3<<20), true)
	c.put(t, "b-1-1-x86_64.pkg.tar.zst", nodetest.Bytes(2, 1000), true)
	n := memnode.New()
	s := newSeeder(t, c, n, t.TempDir())
	sync(t, s, c.index())
	if len(pinned(t, n)) != 2 {
		t.Fatalf("pins %v", pinned(t, n))
	}

	// A newer db no longer lists b: it stays seeded while it stays in the cache.
	newer := alpmdb.NewIndex(c.entries[:1])
	rep := sync(t, s, newer)
	if len(pinned(t, n)) != 2 || rep.Unpinned != 0 {
		t.Fatalf("after the db dropped b: pins %v, unpinned %d", pinned(t, n), rep.Unpinned)
	}

	// paccache -r: the file goes, so does its pin and its blocks.
	before := pinned(t, n)
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	rep = sync(t, s, newer)
	after := pinned(t, n)
	if rep.Unpinned != 1 || len(after) != 1 {
		t.Fatalf("after removing a: unpinned %d, pins %v", rep.Unpinned, after)
	}
	for k := range before {
		if _, ok := after[k]; !ok && n.Has(context.Background(), k) {
			t.Errorf("blocks of unpinned %s are still in the node", k)
		}
	}
}

func TestNodeDownIsAnErrorAndHarmless(t *testing.T) {
	c := newCache(t)
	c.put(t, "a-1-1-x86_64.pkg.tar.zst", nodetest.Bytes(1, 1000), true)
	n := memnode.New()
	n.FailWith = errors.New("connection refused")
	state := t.TempDir()
	s := newSeeder(t, c, n, state)
	if _, err := s.Sync(context.Background(), c.index()); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Sync with the node down: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, reconcile.StateFile)); !os.IsNotExist(err) {
		t.Errorf("a pass that could not reach the node wrote its state: %v", err)
	}
	n.FailWith = nil
	rep := sync(t, newSeeder(t, c, n, state), c.index())
	if rep.Added != 1 || len(pinned(t, n)) != 1 {
		t.Errorf("after the node came back: added %d pins %v", rep.Added, pinned(t, n))
	}
}

func TestFileChangedAfterVerificationIsNotSeeded(t *testing.T) {
	c := newCache(t)
	p := c.put(t, "a-1-1-x86_64.pkg.tar.zst", nodetest.Bytes(1, 3<<20), true)
	n := memnode.New()
	state := t.TempDir()
	sync(t, newSeeder(t, c, n, state), c.index())
	pins := pinned(t, n)
	// Rewrite in place, same size: the hash record no longer matches, the file is hashed again and refused.
	if err := os.WriteFile(p, nodetest.Bytes(9, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := sync(t, newSeeder(t, c, n, state), c.index())
	if !strings.Contains(refusedReason(rep, p), "sha256 mismatch") || rep.Unpinned != 1 || len(pinned(t, n)) != 0 {
		t.Errorf("rewritten file: refused %q, unpinned %d, pins %v (before %v)", refusedReason(rep, p), rep.Unpinned, pinned(t, n), pins)
	}
}

func TestProgressLine(t *testing.T) {
	reconcile.SetProgressAfter(0)
	defer reconcile.SetProgressAfter(time.Second)
	c := newCache(t)
	for i := range 3 {
		c.put(t, fmt.Sprintf("p%d-1-1-x86_64.pkg.tar.zst", i), nodetest.Bytes(uint64(i), 2<<20), true)
	}
	var out bytes.Buffer
	s := reconcile.New(reconcile.Options{CacheDirs: []string{c.dir}, StateDir: t.TempDir(), Node: memnode.New(), Progress: &out})
	sync(t, s, c.index())
	line := out.String()
	for _, want := range []string{"\rseeding: ", "/3 files", "MiB of ", "/s, ETA "} {
		if !strings.Contains(line, want) {
			t.Errorf("progress line %q lacks %q", line, want)
		}
	}
	if !strings.HasSuffix(line, "\n") {
		t.Error("the progress line is not ended when the pass is")
	}
}
