package alpmdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	alpm "github.com/Jguer/go-alpm/v2"
)

// TreeDB is the sync database of one repository and architecture of an Arch mirror tree:
// <root>/<repo>/os/<arch>/<repo>.db, beside (or linking into pool/) the package files it lists.
type TreeDB struct {
	Repo, Arch string
	Dir        string // <root>/<repo>/os/<arch>
	Path       string // <Dir>/<repo>.db
}

// FindTree lists the sync databases of a mirror tree, sorted by repository and architecture. A
// directory that is not <repo>/os/<arch> with <repo>.db in it is not a repository of the tree.
func FindTree(root string) ([]TreeDB, error) {
	repos, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("mirror tree: %w", err)
	}
	var out []TreeDB
	for _, r := range repos {
		if !r.IsDir() || r.Name() == "pool" || strings.HasPrefix(r.Name(), ".") {
			continue
		}
		if err := RealDir(root, r.Name(), "os"); errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, err
		}
		arches, err := os.ReadDir(filepath.Join(root, r.Name(), "os"))
		if err != nil {
			return nil, fmt.Errorf("mirror tree: %w", err)
		}
		for _, a := range arches {
			dir := filepath.Join(root, r.Name(), "os", a.Name())
			db := filepath.Join(dir, r.Name()+".db")
			if st, err := os.Stat(db); a.IsDir() && err == nil && st.Mode().IsRegular() {
				out = append(out, TreeDB{Repo: r.Name(), Arch: a.Name(), Dir: dir, Path: db})
			}
		}
	}
	slices.SortFunc(out, func(a, b TreeDB) int { return strings.Compare(a.Repo+"/"+a.Arch, b.Repo+"/"+b.Arch) })
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no <repo>/os/<arch>/<repo>.db under %s", ErrNoDB, root)
	}
	return out, nil
}

// ErrLink means a directory of a mirror tree is a symbolic link: never followed, so that nothing outside
// the tree is ever read.
var ErrLink = errors.New("is a symbolic link: not followed (nothing outside the tree is read)")

// RealDir says whether root/parts... is a directory reached without a symbolic link: every component
// below root is lstat'ed. An error wraps os.ErrNotExist when it is not there, ErrLink when a component
// is a link, and names the path.
func RealDir(root string, parts ...string) error {
	p := root
	for _, part := range parts {
		p = filepath.Join(p, part)
		st, err := os.Lstat(p)
		switch {
		case err != nil:
			return fmt.Errorf("mirror tree: %w", err)
		case st.Mode()&os.ModeSymlink != 0:
			return fmt.Errorf("mirror tree: %s %w", p, ErrLink)
		case !st.IsDir():
			return fmt.Errorf("mirror tree: %s is not a directory", p)
		}
	}
	return nil
}

// LoadTree reads every database of a mirror tree into one index, through libalpm like Load. Each is
// read with a handle of its own on a scratch dbpath under scratch, where sync/<repo>.db names it: the
// same repository name comes once per architecture. A file listed by more than one database (an "any"
// package) is the first one's.
func LoadTree(ctx context.Context, dbs []TreeDB, scratch string) (*Index, error) {
	ix := &Index{byFile: make(map[string]Entry)}
	loaded := 0
	for i, t := range dbs {
		cfg, err := scratchConfig(filepath.Join(scratch, fmt.Sprint(i)), t)
		if err != nil {
			return nil, err
		}
		d := DB{Repo: t.Repo, Path: t.Path}
		ix.stamps = append(ix.stamps, stampOf(t.Path))
		err = withHandle(ctx, cfg, func(h *alpm.Handle) error {
			d.Packages, d.Err = loadDB(h, cfg, ix, DB{Repo: t.Repo, Path: cfg.SyncDBPath(t.Repo)})
			return nil
		})
		if err != nil {
			return nil, err
		}
		if d.Err == nil {
			loaded++
		}
		ix.dbs = append(ix.dbs, d)
	}
	if loaded == 0 {
		return ix, fmt.Errorf("%w: %w", ErrNoDB, errors.Join(ix.Problems()...))
	}
	return ix, nil
}

// scratchConfig makes dir a dbpath whose sync/<repo>.db is a link to the tree's database.
func scratchConfig(dir string, t TreeDB) (*Config, error) {
	sync := filepath.Join(dir, "sync")
	if err := os.MkdirAll(sync, 0o755); err != nil {
		return nil, fmt.Errorf("mirror tree scratch: %w", err)
	}
	abs, err := filepath.Abs(t.Path)
	if err != nil {
		return nil, err
	}
	link := filepath.Join(sync, t.Repo+".db")
	_ = os.Remove(link)
	if err := os.Symlink(abs, link); err != nil {
		return nil, fmt.Errorf("mirror tree scratch: %w", err)
	}
	return &Config{Path: t.Path, RootDir: "/", DBPath: dir + "/", Repos: []Repo{{Name: t.Repo}}}, nil
}
