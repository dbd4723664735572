package reconcile_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/memnode"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// Hostile entries in the cache are refused, published never, and none of them stalls a pass.
func TestAbuseHostileEntries(t *testing.T) {
	c := newCache(t)
	real := []byte("the real package")
	c.put(t, "ok-1-1-x86_64.pkg.tar.zst", real, true)

	// A character device named like a listed package (root only: mknod).
	dev := filepath.Join(c.dir, "dev-1-1-x86_64.pkg.tar.zst")
	c.entries = append(c.entries, alpmdb.Entry{Repo: "core", FileName: filepath.Base(dev), Size: 0, SHA256: sha256.Sum256(nil)})
	haveDev := unix.Mknod(dev, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))) == nil // /dev/null's numbers

	// A huge sparse file claiming a listed package's name and exact size: read (zeros), refused.
	const huge = 512 << 20
	sparse := filepath.Join(c.dir, "huge-1-1-x86_64.pkg.tar.zst")
	c.entries = append(c.entries, alpmdb.Entry{Repo: "core", FileName: filepath.Base(sparse), Size: huge, SHA256: sha256.Sum256([]byte("not zeros"))})
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(huge); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// And one claiming a size it does not have: refused without reading a byte.
	liar := filepath.Join(c.dir, "liar-1-1-x86_64.pkg.tar.zst")
	c.entries = append(c.entries, alpmdb.Entry{Repo: "core", FileName: filepath.Base(liar), Size: 100, SHA256: sha256.Sum256(nil)})
	if err := os.WriteFile(liar, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(liar, 1<<40); err != nil { // a terabyte of nothing
		t.Fatal(err)
	}

	// Names no package has: spaces, a newline, invalid UTF-8, a leading dash.
	odd := []string{"with space.pkg.tar.zst", "new\nline.pkg.tar.zst", "bad\xff\xfeutf8.pkg.tar.zst", "-rf.pkg.tar.zst"}
	for _, name := range odd {
		if err := os.WriteFile(filepath.Join(c.dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	n := memnode.New()
	s := reconcile.New(reconcile.Options{CacheDirs: []string{c.dir}, StateDir: t.TempDir(), Node: n})
	start := time.Now()
	rep, err := s.Sync(context.Background(), c.index())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pass over hostile entries: %s, %d bytes hashed", time.Since(start).Round(time.Millisecond), rep.HashedBytes)
	pins, _ := n.Pins(context.Background(), node.PinPrefix)
	if len(pins) != 1 || !strings.HasSuffix(pins[node.RawCID(sha256.Sum256(real))], "ok-1-1-x86_64.pkg.tar.zst") {
		t.Errorf("pins: %v", pins)
	}
	want := map[string]string{sparse: "sha256 mismatch", liar: "size mismatch"}
	if haveDev {
		want[dev] = "character device"
	}
	for _, name := range odd {
		want[filepath.Join(c.dir, name)] = "not in any sync db"
	}
	for path, reason := range want {
		if got := refusedReason(rep, path); !strings.Contains(got, reason) {
			t.Errorf("%q: refused for %q, want %q", path, got, reason)
		}
	}
	if rep.HashedBytes > huge+int64(len(real)) {
		t.Errorf("hashed %d bytes: the liar's terabyte was read", rep.HashedBytes)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Errorf("the report with odd names does not encode: %v", err)
	}
}
