package alpmtest

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBuildPackageReproducible(t *testing.T) {
	Require(t, "bsdtar")
	for _, ext := range []string{".pkg.tar.gz", ".pkg.tar.zst", ".pkg.tar.xz", ".pkg.tar.bz2", ".pkg.tar"} {
		p := Pkg{Name: "repro", Size: 3000, Ext: ext}
		a := BuildPackage(t, t.TempDir(), p)
		b := BuildPackage(t, t.TempDir(), p)
		if filepath.Base(a) != "repro-1.0-1-x86_64"+ext {
			t.Errorf("built %s, want repro-1.0-1-x86_64%s", filepath.Base(a), ext)
		}
		if !bytes.Equal(readFile(t, a), readFile(t, b)) {
			t.Errorf("%s: two builds of the same Pkg differ", ext)
		}
		// What the archive holds, in order: .PKGINFO first, as pacman and makepkg expect.
		out, err := run("", "bsdtar", "-tvf", a)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if f[2] != "root" || f[3] != "root" {
				t.Errorf("%s: %q not owned by root", ext, line)
			}
			names = append(names, f[len(f)-1])
		}
		want := []string{".PKGINFO", "usr/", "usr/share/", "usr/share/repro/", "usr/share/repro/data"}
		if !slices.Equal(names, want) {
			t.Errorf("%s holds %q, want %q", ext, names, want)
		}
		data, err := run("", "bsdtar", "-xOf", a, "usr/share/repro/data")
		if err != nil {
			t.Fatal(err)
		}
		if payload := readAll(t, p.Payload()); data != string(payload) || len(payload) != 3000 {
			t.Errorf("%s: payload differs from Pkg.Payload (%d bytes)", ext, len(data))
		}
	}
	// Name and version pick the payload.
	x, y := readAll(t, Pkg{Name: "x", Size: 64}.Payload()), readAll(t, Pkg{Name: "x", Version: "2.0-1", Size: 64}.Payload())
	if bytes.Equal(x, y) {
		t.Error("payloads of two versions are equal")
	}
}

func TestSandboxDownloadAndInstall(t *testing.T) {
	Require(t, "pacman", "repo-add", "bsdtar")
	pkgs := []Pkg{
		{Name: "alpha", Size: 4096},
		{Name: "beta", Version: "1:2.0-3", Size: 10000, Ext: ".pkg.tar.zst"},
		{Name: "gamma", Arch: "any", Ext: ".pkg.tar"},
	}
	repo := MakeRepo(t, "core", pkgs...)
	if len(repo.Files) != 3 || len(repo.Pkgs) != 3 {
		t.Fatalf("repo has files %v, pkgs %v", repo.Files, repo.Pkgs)
	}
	for _, link := range []string{"core.db", "core.files"} {
		if target, err := os.Readlink(filepath.Join(repo.Dir, link)); err != nil || target != link+".tar.gz" {
			t.Errorf("%s -> %q, %v; want %s.tar.gz", link, target, err, link)
		}
	}
	s := NewSandbox(t, repo)

	s.Pacman(t, "-Syw", "alpha", "beta")
	if !bytes.Equal(readFile(t, s.SyncDBPath("core")), readFile(t, repo.DB)) {
		t.Errorf("%s differs from %s", s.SyncDBPath("core"), repo.DB)
	}
	want := []string{pkgs[0].FileName(), pkgs[1].FileName()}
	if got := dirNames(t, s.CacheDir); !slices.Equal(got, want) {
		t.Fatalf("cache holds %q, want %q", got, want)
	}
	for _, name := range want {
		if !bytes.Equal(readFile(t, filepath.Join(s.CacheDir, name)), readFile(t, repo.Files[name])) {
			t.Errorf("cached %s differs from the repo's", name)
		}
	}
	if _, err := os.Stat(s.Path(pkgs[1].PayloadPath())); err == nil {
		t.Error("-Syw installed beta")
	}

	s.Pacman(t, "-S", "beta")
	if got, want := readFile(t, s.Path(pkgs[1].PayloadPath())), readAll(t, pkgs[1].Payload()); !bytes.Equal(got, want) {
		t.Errorf("installed payload is %d bytes, not Pkg.Payload's %d", len(got), len(want))
	}
	if out := s.Pacman(t, "-Q"); strings.TrimSpace(out) != "beta 1:2.0-3" {
		t.Errorf("pacman -Q = %q, want beta 1:2.0-3", out)
	}
	// pacman logged to the sandbox's LogFile, not the host's.
	if log := string(readFile(t, s.LogFile)); !strings.Contains(log, "installed beta (1:2.0-3)") {
		t.Errorf("%s lacks the install:\n%s", s.LogFile, log)
	}
}

func TestRepoAddRemove(t *testing.T) {
	Require(t, "pacman", "repo-add", "repo-remove", "bsdtar")
	repo := MakeRepo(t, "extra", Pkg{Name: "alpha"}, Pkg{Name: "beta"})
	s := NewSandbox(t, repo)
	s.Pacman(t, "-Sy")
	old := readFile(t, s.SyncDBPath("extra"))

	repo.Add(t, Pkg{Name: "alpha", Version: "1.1-1"})
	repo.Remove(t, "beta")
	if len(repo.Files) != 3 || len(repo.Pkgs) != 1 || repo.Pkgs["alpha"].Version != "1.1-1" {
		t.Fatalf("repo has files %v, pkgs %v", repo.Files, repo.Pkgs)
	}
	// -Syy: a plain -Sy may keep the old database when the new one has the
	// same mtime second, which is likely in a fast test.
	s.Pacman(t, "-Syy")
	if bytes.Equal(old, readFile(t, s.SyncDBPath("extra"))) {
		t.Fatal("-Syy kept the old database")
	}
	if out := s.Pacman(t, "-Sl", "extra"); strings.TrimSpace(out) != "extra alpha 1.1-1" {
		t.Errorf("pacman -Sl extra = %q", out)
	}
	if out, err := s.PacmanErr("-Si", "beta"); err == nil {
		t.Errorf("beta still in the database:\n%s", out)
	}
	e := repo.Entries(t)
	if len(e) != 1 || e[0].FileName != "alpha-1.1-1-x86_64.pkg.tar.gz" {
		t.Errorf("Entries = %+v", e)
	}
}

func TestEmptyRepo(t *testing.T) {
	Require(t, "pacman")
	repo := MakeRepo(t, "empty")
	s := NewSandbox(t, repo)
	s.Pacman(t, "-Sy")
	if out := s.Pacman(t, "-Sl"); strings.TrimSpace(out) != "" {
		t.Errorf("pacman -Sl = %q, want nothing", out)
	}
}

func TestSandboxServers(t *testing.T) {
	Require(t, "pacman", "repo-add", "bsdtar")
	repo := MakeRepo(t, "core", Pkg{Name: "alpha"})
	s := NewSandbox(t, repo)
	// A dead server first, then the real one: pacman falls through in order.
	s.Servers["core"] = []string{"file://" + t.TempDir(), "file://" + repo.Dir}
	s.Options = []string{"ParallelDownloads = 2"}
	s.WriteConf(t)
	conf := string(readFile(t, s.Conf))
	for _, want := range []string{"SigLevel = Never\n", "ParallelDownloads = 2\n", "[core]\nServer = file://"} {
		if !strings.Contains(conf, want) {
			t.Errorf("%s lacks %q:\n%s", s.Conf, want, conf)
		}
	}
	s.Pacman(t, "-Syw", "alpha")
	if got := dirNames(t, s.CacheDir); !slices.Equal(got, []string{"alpha-1.0-1-x86_64.pkg.tar.gz"}) {
		t.Errorf("cache holds %q", got)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readAll(t testing.TB, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dirNames lists dir, sorted, including anything pacman might leave there.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
