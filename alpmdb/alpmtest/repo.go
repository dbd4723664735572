package alpmtest

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Repo is a package repository made by repo-add, laid out as a mirror serves
// it: packages, <name>.db.tar.gz with its <name>.db symlink, and the files
// database <name>.files.tar.gz with its <name>.files symlink.
type Repo struct {
	Name string // e.g. "core"
	Dir  string // directory with the packages and the databases
	DB   string // <Dir>/<name>.db.tar.gz
	// Files maps every package file name built into Dir to its path. Files
	// stay on disk (and here) when a newer version replaces them or Remove
	// drops them from the database, as they do on a real mirror.
	Files map[string]string
	// Pkgs maps each package name to the Pkg the database currently lists.
	Pkgs map[string]Pkg
	// NoDBSigs makes Add leave %PGPSIG% out of the database although packages have a .sig beside
	// them: what pacman 7's repo-add does without --include-sigs. By default the database carries the
	// signatures, as pacman 6's repo-add always did (pacman 7 is given --include-sigs).
	NoDBSigs bool
	// Signer, when set, signs every package Add builds with a real key (a .sig beside it), as makepkg
	// --sign does; Pkg.Sig's made-up signature is not written then.
	Signer *Signer
}

// MakeRepo builds pkgs into a fresh temp dir and runs the real
// `repo-add <name>.db.tar.gz pkgs...`. Without pkgs it writes an empty
// database, as repo-add does once the last package is removed.
func MakeRepo(t testing.TB, name string, pkgs ...Pkg) *Repo {
	t.Helper()
	dir := t.TempDir()
	r := &Repo{
		Name:  name,
		Dir:   dir,
		DB:    filepath.Join(dir, name+".db.tar.gz"),
		Files: map[string]string{},
		Pkgs:  map[string]Pkg{},
	}
	if len(pkgs) == 0 {
		// repo-add will not run without a package, so build its empty form ourselves.
		for _, db := range []string{"db", "files"} {
			WriteDB(t, filepath.Join(dir, name+"."+db+".tar.gz"), nil)
			link := filepath.Join(dir, name+"."+db)
			if err := os.Symlink(name+"."+db+".tar.gz", link); err != nil {
				t.Fatalf("alpmtest: linking %s: %v", link, err)
			}
		}
		return r
	}
	r.Add(t, pkgs...)
	return r
}

// Add builds pkgs into the repo and re-runs repo-add with them, which
// replaces older versions in the database: the "newer database" scenario.
func (r *Repo) Add(t testing.TB, pkgs ...Pkg) {
	t.Helper()
	if len(pkgs) == 0 {
		return
	}
	args := []string{"--nocolor"}
	if !r.NoDBSigs && PacmanMajor() >= 7 {
		args = append(args, "--include-sigs")
	}
	args = append(args, r.DB)
	var sigs []string
	for _, p := range pkgs {
		p = p.withDefaults()
		if r.Signer != nil {
			p.Sig = false
		}
		path := BuildPackage(t, r.Dir, p)
		r.Files[p.FileName()] = path
		args = append(args, path)
		if r.Signer != nil {
			r.Signer.Sign(t, path)
			p.Sig = true
		}
		if p.Sig {
			sigs = append(sigs, path+".sig")
		}
	}
	if r.NoDBSigs && PacmanMajor() < 7 {
		defer hideSigs(t, sigs)()
	}
	if _, err := run(r.Dir, "repo-add", args...); err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	for _, p := range pkgs {
		p = p.withDefaults()
		r.Pkgs[p.Name] = p
	}
}

// hideSigs moves signatures aside while pacman 6's repo-add runs (it embeds every .sig it finds) and
// returns what puts them back.
func hideSigs(t testing.TB, sigs []string) func() {
	t.Helper()
	for _, sig := range sigs {
		if err := os.Rename(sig, sig+".hidden"); err != nil {
			t.Fatalf("alpmtest: %v", err)
		}
	}
	return func() {
		for _, sig := range sigs {
			if err := os.Rename(sig+".hidden", sig); err != nil {
				t.Errorf("alpmtest: %v", err)
			}
		}
	}
}

// Remove runs repo-remove for the named packages. Their files stay in Dir.
func (r *Repo) Remove(t testing.TB, names ...string) {
	t.Helper()
	if len(names) == 0 {
		return
	}
	if _, err := run(r.Dir, "repo-remove", append([]string{"--nocolor", r.DB}, names...)...); err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	for _, name := range names {
		delete(r.Pkgs, name)
	}
}

// Path is where p's package file is (or would be) in the repo.
func (r *Repo) Path(p Pkg) string {
	return filepath.Join(r.Dir, p.FileName())
}

// Entries returns what the database should say about each package it lists,
// computed from the package files, sorted by name.
func (r *Repo) Entries(t testing.TB) []Entry {
	t.Helper()
	var entries []Entry
	for _, p := range r.Pkgs {
		e, err := entryOf(r.Path(p), p, !r.NoDBSigs)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return entries
}

// entryOf computes the database entry repo-add writes for package file path: %MD5SUM% only where
// repo-add still writes it (pacman 6), %PGPSIG% when withSig and a .sig lies beside the package.
func entryOf(path string, p Pkg, withSig bool) (Entry, error) {
	p = p.withDefaults()
	f, err := os.Open(path)
	if err != nil {
		return Entry{}, fmt.Errorf("alpmtest: %w", err)
	}
	defer f.Close()
	sha, md := sha256.New(), md5.New()
	n, err := io.Copy(io.MultiWriter(sha, md), f)
	if err != nil {
		return Entry{}, fmt.Errorf("alpmtest: reading %s: %w", path, err)
	}
	e := Entry{
		FileName:  filepath.Base(path),
		Name:      p.Name,
		Version:   p.Version,
		Arch:      p.Arch,
		CSize:     n,
		SHA256:    hex.EncodeToString(sha.Sum(nil)),
		Base:      p.Name,
		Desc:      p.Desc(),
		ISize:     int64(p.Size),
		URL:       p.URL(),
		License:   License,
		BuildDate: BuildDate,
		Packager:  Packager,
	}
	if PacmanMajor() < 7 {
		e.MD5 = hex.EncodeToString(md.Sum(nil))
	}
	if !withSig {
		return e, nil
	}
	// repo-add embeds whatever <file>.sig holds, so read it rather than assume p.Sig.
	sig, err := os.ReadFile(path + ".sig")
	switch {
	case err == nil:
		e.PGPSig = base64.StdEncoding.EncodeToString(sig)
	case !errors.Is(err, fs.ErrNotExist):
		return Entry{}, fmt.Errorf("alpmtest: %w", err)
	}
	return e, nil
}
