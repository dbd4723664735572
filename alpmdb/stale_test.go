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
