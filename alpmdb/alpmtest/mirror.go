package alpmtest

import (
	"os"
	"path/filepath"
	"testing"
)

// SyncMirror brings the Arch mirror tree under root in line with repos, as an operator's rsync does:
// each repository's database at <root>/<repo>/os/<arch>/<repo>.db (a link to <repo>.db.tar.gz, as
// repo-add writes them) and each package the database lists, with its .sig when there is one. With
// pool set, the files live in <root>/pool/packages and os/<arch>/ links to them, as on Arch's own
// mirrors; else they sit beside the database. Files no database lists any more are deleted (rsync
// --delete); files already there with the right size are left alone, so an unchanged package keeps
// its inode, as rsync leaves it.
func SyncMirror(t testing.TB, root, arch string, pool bool, repos ...*Repo) {
	t.Helper()
	poolDir := filepath.Join(root, "pool", "packages")
	want := map[string]bool{}
	for _, r := range repos {
		dir := filepath.Join(root, r.Name, "os", arch)
		mkdir(t, dir)
		if pool {
			mkdir(t, poolDir)
		}
		listed := map[string]bool{}
		for _, p := range r.Pkgs {
			for _, name := range []string{p.FileName(), p.FileName() + ".sig"} {
				src := filepath.Join(r.Dir, name)
				if _, err := os.Stat(src); err != nil {
					continue
				}
				listed[name] = true
				if !pool {
					syncFile(t, src, filepath.Join(dir, name))
					continue
				}
				syncFile(t, src, filepath.Join(poolDir, name))
				want[name] = true
				link := filepath.Join(dir, name)
				if _, err := os.Lstat(link); err != nil {
					if err := os.Symlink(filepath.Join("..", "..", "..", "pool", "packages", name), link); err != nil {
						t.Fatalf("alpmtest: %v", err)
					}
				}
			}
		}
		for _, db := range []string{"db", "files"} {
			archive := r.Name + "." + db + ".tar.gz"
			syncFile(t, filepath.Join(r.Dir, archive), filepath.Join(dir, archive))
			listed[archive] = true
			listed[r.Name+"."+db] = true
			if _, err := os.Lstat(filepath.Join(dir, r.Name+"."+db)); err != nil {
				if err := os.Symlink(archive, filepath.Join(dir, r.Name+"."+db)); err != nil {
					t.Fatalf("alpmtest: %v", err)
				}
			}
		}
		deleteUnlisted(t, dir, listed)
	}
	if pool {
		deleteUnlisted(t, poolDir, want)
	}
}

// syncFile copies from to to unless to already has from's size; a changed file is replaced by a new
// one (a new inode), as rsync does.
func syncFile(t testing.TB, from, to string) {
	t.Helper()
	a, err := os.Stat(from)
	if err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	if b, err := os.Lstat(to); err == nil && b.Mode().IsRegular() && b.Size() == a.Size() && b.ModTime().Equal(a.ModTime()) {
		return
	}
	tmp := filepath.Join(filepath.Dir(to), "."+filepath.Base(to)+".rsync")
	CopyFile(t, from, tmp, 0o644)
	if err := os.Chtimes(tmp, a.ModTime(), a.ModTime()); err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
}

func deleteUnlisted(t testing.TB, dir string, listed map[string]bool) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	for _, e := range entries {
		if !e.IsDir() && !listed[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				t.Fatalf("alpmtest: %v", err)
			}
		}
	}
}

func mkdir(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
}
