package alpmdb_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// A mirror tree's directories are never reached through a link: "<repo>/os -> elsewhere" is refused
// with an error that names it, and nothing below it is read.
func TestFindTreeFollowsNoLink(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	for _, d := range []string{filepath.Join(root, "core", "os", "x86_64"), filepath.Join(outside, "x86_64"), filepath.Join(root, "evil")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(root, "core", "os", "x86_64", "core.db"), filepath.Join(outside, "x86_64", "evil.db")} {
		if err := os.WriteFile(f, []byte("db"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alpmdb.FindTree(root); err != nil {
		t.Fatalf("without the link: %v", err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "evil", "os")); err != nil {
		t.Fatal(err)
	}
	_, err := alpmdb.FindTree(root)
	if !errors.Is(err, alpmdb.ErrLink) || !strings.Contains(err.Error(), filepath.Join(root, "evil", "os")) {
		t.Errorf("FindTree with evil/os a link: %v, want ErrLink naming it", err)
	}
}
