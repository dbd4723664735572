package alpmdb

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	alpm "github.com/Jguer/go-alpm/v2"
)

// Entry is what a sync database says about one package file.
type Entry struct {
	Repo     string
	Name     string
	Version  string
	Arch     string
	FileName string
	Size     int64    // compressed size (%CSIZE%): the size of the file in the cache
	SHA256   [32]byte // %SHA256SUM%
	PGPSig   string   // %PGPSIG%, base64, empty when the db carries none
}

// Signature returns the detached signature the db carries for the package, or nil.
func (e Entry) Signature() []byte {
	if e.PGPSig == "" {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(e.PGPSig)
	if err != nil {
		return nil
	}
	return b
}

// DB reports how one sync database loaded.
type DB struct {
	Repo     string
	Path     string
	Packages int
	Err      error // nil when it loaded; a *DBError otherwise
}

// stamp identifies a version of a db file: pacman replaces a db by renaming a new file into place.
type stamp struct {
	ino, size, mtime int64
}

func stampOf(path string) stamp {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return stamp{}
	}
	return stamp{ino: int64(st.Ino), size: st.Size, mtime: st.Mtim.Nano()}
}

// Stale says whether any sync db cfg names is not the file this index was loaded from (replaced by
// pacman -Sy, appeared, vanished), or cfg names other repositories. It only stats the files.
func (ix *Index) Stale(cfg *Config) bool {
	if len(ix.dbs) != len(cfg.Repos) || len(ix.stamps) != len(ix.dbs) {
		return true
	}
	for i, r := range cfg.Repos {
		if ix.dbs[i].Repo != r.Name || stampOf(cfg.SyncDBPath(r.Name)) != ix.stamps[i] {
			return true
		}
	}
	return false
}

// DBError says why a sync database could not be used.
type DBError struct {
	Repo   string
	Path   string
	Reason string
}

func (e *DBError) Error() string {
	return fmt.Sprintf("sync db %s (%s): %s", e.Repo, e.Path, e.Reason)
}

// ErrNoDB is returned by Load when not a single sync database could be read.
var ErrNoDB = errors.New("no readable sync database")

// Index maps package file names to their sync-db entries. It is immutable once loaded.
type Index struct {
	byFile map[string]Entry
	dbs    []DB
	stamps []stamp // of each db, when it was read
}

// Lookup returns the entry for a package file name, from the first repository (in pacman.conf order)
// that lists it.
func (ix *Index) Lookup(fileName string) (Entry, bool) {
	e, ok := ix.byFile[fileName]
	return e, ok
}

// Len is the number of distinct package files indexed.
func (ix *Index) Len() int { return len(ix.byFile) }

// Repos names the repositories of the index, in pacman.conf order (for an index made by NewIndex,
// those of its entries, sorted).
func (ix *Index) Repos() []string {
	var out []string
	for _, d := range ix.dbs {
		out = append(out, d.Repo)
	}
	if len(ix.dbs) == 0 {
		for _, e := range ix.byFile {
			if !slices.Contains(out, e.Repo) {
				out = append(out, e.Repo)
			}
		}
		slices.Sort(out)
	}
	return out
}

// DBs reports each sync database, in pacman.conf order.
func (ix *Index) DBs() []DB { return ix.dbs }

// Problems returns the errors of the databases that did not load.
func (ix *Index) Problems() []error {
	var errs []error
	for _, d := range ix.dbs {
		if d.Err != nil {
			errs = append(errs, d.Err)
		}
	}
	return errs
}

// NewIndex builds an index from entries, for tests and tools that already have them.
func NewIndex(entries []Entry) *Index {
	ix := &Index{byFile: make(map[string]Entry, len(entries))}
	for _, e := range entries {
		if _, dup := ix.byFile[e.FileName]; !dup {
			ix.byFile[e.FileName] = e
		}
	}
	return ix
}

// alpmMu serialises all use of libalpm: see the package comment.
var alpmMu sync.Mutex

// Load reads every sync database cfg names. A database that is missing, empty, not an archive or
// unreadable is reported in the index's DBs with the reason, and the others still load. Load fails only
// when the context is done or no database could be read at all (ErrNoDB).
func Load(ctx context.Context, cfg *Config) (ix *Index, err error) {
	err = withHandle(ctx, cfg, func(h *alpm.Handle) error {
		ix, err = load(ctx, cfg, h)
		return err
	})
	return ix, err
}

// withHandle runs fn with a libalpm handle on cfg's root and dbpath (newHandle), under alpmMu.
func withHandle(ctx context.Context, cfg *Config, fn func(*alpm.Handle) error) error {
	alpmMu.Lock()
	defer alpmMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	h, release, err := newHandle(cfg)
	if err != nil {
		return err
	}
	defer release()
	return fn(h)
}

// newHandle returns a libalpm handle on cfg's root that reads cfg's sync and local dbs, and its release.
// libalpm is never handed pacman's dbpath itself: it creates <dbpath>/local when that is missing, and
// writes a version file into an empty one, so a handle there would write pacman's files, and race pacman
// creating them on a fresh root ("could not create database"). It gets a dbpath of this process's own
// instead, whose sync, and local once pacman has made it, are links to pacman's.
func newHandle(cfg *Config) (*alpm.Handle, func(), error) {
	dbpath, err := os.MkdirTemp("", "pacman-ipfs-dbpath-*")
	if err != nil {
		return nil, nil, fmt.Errorf("libalpm's dbpath: %w", err)
	}
	for _, sub := range []string{"sync", "local"} {
		real := filepath.Join(cfg.DBPath, sub)
		if _, err := os.Stat(filepath.Join(real, "ALPM_DB_VERSION")); sub == "local" && err != nil {
			continue // no local db pacman made: libalpm makes an empty one here
		}
		if err := os.Symlink(real, filepath.Join(dbpath, sub)); err != nil {
			os.RemoveAll(dbpath)
			return nil, nil, fmt.Errorf("libalpm's dbpath: %w", err)
		}
	}
	h, err := alpm.Initialize(cfg.RootDir, dbpath+"/")
	if err != nil {
		os.RemoveAll(dbpath)
		return nil, nil, fmt.Errorf("libalpm init (root %s, dbpath %s): %w", cfg.RootDir, cfg.DBPath, err)
	}
	return h, func() {
		_ = h.Release() // a read-only handle: nothing to do about a failed release
		os.RemoveAll(dbpath)
	}, nil
}

func load(ctx context.Context, cfg *Config, h *alpm.Handle) (*Index, error) {
	ix := &Index{byFile: make(map[string]Entry)}
	loaded := 0
	for _, r := range cfg.Repos {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d := DB{Repo: r.Name, Path: cfg.SyncDBPath(r.Name)}
		// Stamped before reading: a db replaced while it is read makes the index stale, never falsely fresh.
		ix.stamps = append(ix.stamps, stampOf(d.Path))
		d.Packages, d.Err = loadDB(h, cfg, ix, d)
		if d.Err == nil {
			loaded++
		}
		ix.dbs = append(ix.dbs, d)
	}
	if loaded == 0 {
		if len(cfg.Repos) == 0 {
			return ix, fmt.Errorf("%w: %s names no repositories", ErrNoDB, cfg.Path)
		}
		return ix, fmt.Errorf("%w: %w", ErrNoDB, errors.Join(ix.Problems()...))
	}
	return ix, nil
}

// A db that yields no package but is larger than an archive of zero entries is damaged in a way libalpm
// did not log. Compressed empty archives are a few dozen bytes (a one-package db is over 300); an
// uncompressed tar of zero entries is its 10 KiB of end-of-archive padding.
const (
	emptyCompressedMax = 128
	emptyTarMax        = 10240
)

// entryOf is a package of a sync db as plain values; without a file name and a checksum nothing can be
// verified against it, and it is left out.
func entryOf(repo string, p alpm.IPackage) (Entry, bool) {
	e := Entry{
		Repo:     repo,
		Name:     p.Name(),
		Version:  p.Version(),
		Arch:     p.Architecture(),
		FileName: p.FileName(),
		Size:     p.Size(),
		PGPSig:   p.Base64Signature(),
	}
	sum, err := hex.DecodeString(p.SHA256Sum())
	if err != nil || len(sum) != len(e.SHA256) || e.FileName == "" {
		return Entry{}, false
	}
	copy(e.SHA256[:], sum)
	return e, true
}

func loadDB(h *alpm.Handle, cfg *Config, ix *Index, d DB) (int, error) {
	fail := func(format string, args ...any) (int, error) {
		return 0, &DBError{Repo: d.Repo, Path: d.Path, Reason: fmt.Sprintf(format, args...)}
	}
	emptyMax, err := checkArchive(d.Path)
	if err != nil {
		return fail("%s", err)
	}
	db, err := h.RegisterSyncDB(d.Repo, 0)
	if err != nil {
		return fail("libalpm cannot register it: %s", err)
	}
	// Unregister keeps the handle's memory bounded by one db at a time, not all of them.
	defer func() { _ = db.(*alpm.DB).Unregister() }()

	n, usable := 0, 0
	_ = db.PkgCache().ForEach(func(p alpm.IPackage) error {
		n++
		if e, ok := entryOf(d.Repo, p); ok {
			usable++
			if _, dup := ix.byFile[e.FileName]; !dup {
				ix.byFile[e.FileName] = e
			}
		}
		return nil
	})
	// libalpm hands back no package at all when it fails to parse or read a db (it drops a partial
	// cache), so only a db that yields none can be damaged. Only then is the reason worth asking for.
	if n == 0 {
		if logged := whyUnreadable(cfg, d.Repo); len(logged) > 0 {
			return fail("unreadable: %s", strings.Join(logged, "; "))
		}
		if emptyMax < 0 {
			return fail("no package could be read: truncated or corrupt")
		}
	}
	// libalpm makes a package of every "<name>-<version>/" entry, desc or not: a db in which not one
	// has a file name and checksum is not a sync db pacman could download anything from.
	if n > 0 && usable == 0 {
		return fail("none of its %d packages has a file name and a sha256sum (no desc files?)", n)
	}
	return n, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func collectLog(ctx interface{}, lvl alpm.LogLevel, msg string) {
	if lvl&(alpm.LogError|alpm.LogWarning) != 0 {
		p := ctx.(*[]string)
		*p = append(*p, strings.TrimSpace(msg))
	}
}

// whyUnreadable reads repo's db again, on a handle of its own with libalpm's log callback set, and
// returns the errors and warnings libalpm logged: it says why a db could not be read only there. The
// callback is not set for every db because libalpm calls it for every debug line too, two per package,
// each a cgo round trip through go-alpm: it made Load of a healthy 15,000-package db 20-25% slower.
// The callback must be a top-level func: go-alpm hands a pointer to it to C, and a closure would carry
// Go pointers there (cgocheck rejects that). Its state travels in go-alpm's context instead.
func whyUnreadable(cfg *Config, repo string) []string {
	h, release, err := newHandle(cfg)
	if err != nil {
		return []string{err.Error()}
	}
	defer release()
	var logged []string
	h.SetLogCallback(collectLog, &logged)
	db, err := h.RegisterSyncDB(repo, 0)
	if err != nil {
		return append(logged, err.Error())
	}
	db.PkgCache()
	return logged
}

// archiveMagic lists the formats libalpm reads sync dbs in (repo-add writes gzip by default, and
// zstd, xz, bzip2, lz4, lzip, compress or none on request).
var archiveMagic = [][]byte{
	{0x1f, 0x8b},                  // gzip
	{0x28, 0xb5, 0x2f, 0xfd},      // zstd
	{0xfd, '7', 'z', 'X', 'Z', 0}, // xz
	{'B', 'Z', 'h'},               // bzip2
	{0x04, 0x22, 0x4d, 0x18},      // lz4
	{'L', 'Z', 'I', 'P'},          // lzip
	{0x1f, 0x9d},                  // compress
}

// checkArchive rejects what libalpm would silently read as an empty db: a missing file, an empty one,
// or one that is not an archive. It returns how many bytes an archive of zero entries could have left
// over: negative when the file is too large to be empty.
func checkArchive(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, errors.New("missing (has pacman -Sy run?)")
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if fi.Size() == 0 {
		return 0, errors.New("empty file")
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return 0, err
	}
	head = head[:n]
	for _, m := range archiveMagic {
		if bytes.HasPrefix(head, m) {
			return emptyCompressedMax - fi.Size(), nil
		}
	}
	if n >= 262 && bytes.Equal(head[257:262], []byte("ustar")) || n == 512 && allZero(head) {
		return emptyTarMax - fi.Size(), nil
	}
	return 0, errors.New("not an archive")
}

// Upgrades lists the file names of the packages of the sync dbs that `pacman -Su` would download: for
// each installed package, the newer version the first sync db that has it offers (libalpm's own rule,
// IgnorePkg aside). It reads the local db and the sync dbs and takes no lock, as Load.
func Upgrades(ctx context.Context, cfg *Config) (files []string, err error) {
	err = withHandle(ctx, cfg, func(h *alpm.Handle) error {
		for _, r := range cfg.Repos {
			if _, err := checkArchive(cfg.SyncDBPath(r.Name)); err != nil {
				continue // unreadable: Load reports it
			}
			if _, err := h.RegisterSyncDB(r.Name, 0); err != nil {
				return fmt.Errorf("sync db %s: %w", r.Name, err)
			}
		}
		syncs, err := h.SyncDBs()
		if err != nil {
			return fmt.Errorf("sync dbs: %w", err)
		}
		local, err := h.LocalDB()
		if err != nil {
			return fmt.Errorf("local db in %s: %w", cfg.DBPath, err)
		}
		return local.PkgCache().ForEach(func(p alpm.IPackage) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if n := p.SyncNewVersion(syncs); n != nil && n.FileName() != "" {
				files = append(files, n.FileName())
			}
			return nil
		})
	})
	return files, err
}
