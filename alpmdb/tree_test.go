package alpmdb_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
)

func TestLoadTree(t *testing.T) {
	alpmtest.Require(t, "repo-add", "bsdtar")
	core := alpmtest.MakeRepo(t, "core", alpmtest.Pkg{Name: "a", Size: 1000}, alpmtest.Pkg{Name: "any", Arch: "any", Size: 500})
	extra := alpmtest.MakeRepo(t, "extra", alpmtest.Pkg{Name: "b", Size: 2000})
	root := t.TempDir()
	alpmtest.SyncMirror(t, root, "x86_64", false, core, extra)
	if err := os.MkdirAll(filepath.Join(root, "pool", "packages"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "lastsync-dir", "os", "x86_64"), 0o755); err != nil { // no db: not a repo
		t.Fatal(err)
	}
	dbs, err := alpmdb.FindTree(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(dbs) != 2 || dbs[0].Repo != "core" || dbs[1].Repo != "extra" || dbs[0].Arch != "x86_64" {
		t.Fatalf("FindTree = %+v", dbs)
	}
	ix, err := alpmdb.LoadTree(context.Background(), dbs, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		p    alpmtest.Pkg
		repo string
	}{{core.Pkgs["a"], "core"}, {core.Pkgs["any"], "core"}, {extra.Pkgs["b"], "extra"}} {
		e, ok := ix.Lookup(want.p.FileName())
		if !ok || e.Repo != want.repo || e.Size == 0 {
			t.Errorf("Lookup(%s) = %+v, %v", want.p.FileName(), e, ok)
		}
	}
	if len(ix.DBs()) != 2 || ix.DBs()[0].Path != dbs[0].Path {
		t.Errorf("DBs = %+v", ix.DBs())
	}
	if _, err := alpmdb.FindTree(t.TempDir()); err == nil {
		t.Error("FindTree of an empty directory: no error")
	}
}
