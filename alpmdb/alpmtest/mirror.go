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
	inPool := map[string]bool{}
	for _, r := range repos {
		dir := filepath.Join(root, r.Name, "os", arch)
		mkdir(t, dir)
		listed := map[string]bool{}
		for _, name := range r.listedFiles() {
			listed[name] = true
			if pool {
				inPool[name] = true
				linkToPool(t, filepath.Join(r.Dir, name), poolDir, filepath.Join(dir, name))
			} else {
				syncFile(t, filepath.Join(r.Dir, name), filepath.Join(dir, name))
			}
		}
		for _, db := range []string{"db", "files"} {
			archive := r.Name + "." + db + ".tar.gz"
			syncFile(t, filepath.Join(r.Dir, archive), filepath.Join(dir, archive))
			listed[archive], listed[r.Name+"."+db] = true, true
			symlink(t, archive, filepath.Join(dir, r.Name+"."+db))
		}
		deleteUnlisted(t, dir, listed)
	}
	if pool {
		deleteUnlisted(t, poolDir, inPool)
	}
}

// listedFiles are the files of the packages the database lists, with their signatures.
func (r *Repo) listedFiles() []string {
	var out []string
	for _, p := range r.Pkgs {
		for _, name := range []string{p.FileName(), p.FileName() + ".sig"} {
			if _, err := os.Stat(filepath.Join(r.Dir, name)); err == nil {
				out = append(out, name)
			}
		}
	}
	return out
}

// linkToPool puts src into poolDir and links to it from link, as ../../../pool/packages/<name>.
func linkToPool(t testing.TB, src, poolDir, link string) {
	t.Helper()
	mkdir(t, poolDir)
	name := filepath.Base(src)
	syncFile(t, src, filepath.Join(poolDir, name))
	symlink(t, filepath.Join("..", "..", "..", "pool", "packages", name), link)
}

// symlink makes link point at target unless something is there already.
func symlink(t testing.TB, target, link string) {
	t.Helper()
	if _, err := os.Lstat(link); err == nil {
		return
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatalf("alpmtest: %v", err)
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
