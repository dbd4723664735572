package alpmdb_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
)

// An index knows when pacman has replaced a db behind it, the way pacman does it: a new file renamed
// into place.
func TestStale(t *testing.T) {
	dbPath := t.TempDir()
	for _, d := range []string{"sync", "local"} {
		if err := os.MkdirAll(filepath.Join(dbPath, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &alpmdb.Config{Path: "test", RootDir: "/", DBPath: dbPath + "/", Repos: []alpmdb.Repo{{Name: "core"}}}
	alpmtest.WriteSyntheticDB(t, cfg.SyncDBPath("core"), 3)
	ix, err := alpmdb.Load(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ix.Stale(cfg) {
		t.Fatal("a freshly loaded index is stale")
	}
	tmp := cfg.SyncDBPath("core") + ".part"
	alpmtest.WriteSyntheticDB(t, tmp, 4)
	if err := os.Rename(tmp, cfg.SyncDBPath("core")); err != nil {
		t.Fatal(err)
	}
	if !ix.Stale(cfg) {
		t.Error("the index does not notice a replaced db")
	}
	more := *cfg
	more.Repos = append(more.Repos, alpmdb.Repo{Name: "extra"})
	if fresh, _ := alpmdb.Load(context.Background(), cfg); fresh.Stale(cfg) || !fresh.Stale(&more) {
		t.Error("a repository added to pacman.conf is not noticed")
	}
}

// A db replaced (renamed over) again and again while it is being loaded: every load sees one whole
// version or the other, never a mix or an error.
func TestDBReplacedWhileRead(t *testing.T) {
	dbPath := t.TempDir()
	for _, d := range []string{"sync", "local"} {
		if err := os.MkdirAll(filepath.Join(dbPath, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &alpmdb.Config{Path: "test", RootDir: "/", DBPath: dbPath + "/", Repos: []alpmdb.Repo{{Name: "core"}}}
	versions := []string{filepath.Join(dbPath, "v1"), filepath.Join(dbPath, "v2")}
	alpmtest.WriteSyntheticDB(t, versions[0], 2000)
	alpmtest.WriteSyntheticDB(t, versions[1], 3000)
	copyDB := func(from string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Error(err)
			return
		}
		tmp := cfg.SyncDBPath("core") + ".part"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, cfg.SyncDBPath("core")); err != nil {
			t.Error(err)
		}
	}
	copyDB(versions[0])
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				copyDB(versions[i%2])
			}
		}
	}()
	for range 30 {
		ix, err := alpmdb.Load(context.Background(), cfg)
		if err != nil {
			t.Fatalf("Load while the db is replaced: %v", err)
		}
		if n := ix.DBs()[0].Packages; n != 2000 && n != 3000 {
			t.Fatalf("a load saw %d packages: neither version", n)
		}
	}
	close(stop)
	<-done
}
