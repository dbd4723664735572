package alpmdb_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
)

// Packages of the two repos the integration tests sync. Several, so that half a db is still a
// partial gzip stream rather than just its header; one signed, one with an epoch, various compressions.
var (
	corePkgs = []alpmtest.Pkg{
		{Name: "alpha", Size: 2048},
		{Name: "beta", Version: "1:2.0-3", Size: 4096, Ext: ".pkg.tar.zst"},
		{Name: "gamma", Arch: "any", Sig: true},
	}
	extraPkgs = []alpmtest.Pkg{
		{Name: "delta", Size: 1000, Sig: true},
		{Name: "epsilon", Version: "0.9-2", Ext: ".pkg.tar.xz"},
		{Name: "zeta", Size: 300},
		{Name: "eta", Size: 100, Ext: ".pkg.tar"},
		{Name: "theta", Size: 5000},
	}
)

// requireIntegration skips tests that run pacman and repo-add in -short mode or without the tools.
func requireIntegration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs pacman and repo-add")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
}

// syncedSandbox is a sandbox with core and extra, synced by the real pacman -Sy, and its config.
func syncedSandbox(t *testing.T, core, extra *alpmtest.Repo) (*alpmtest.Sandbox, *alpmdb.Config) {
	t.Helper()
	sb := alpmtest.NewSandbox(t, core, extra)
	sb.Pacman(t, "-Sy")
	cfg, err := alpmdb.ReadConfig(sb.Conf)
	if err != nil {
		t.Fatal(err)
	}
	return sb, cfg
}

func load(t *testing.T, cfg *alpmdb.Config) *alpmdb.Index {
	t.Helper()
	ix, err := alpmdb.Load(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return ix
}

// wantEntry is what Load must say about p, from p's package file in r.
func wantEntry(t *testing.T, r *alpmtest.Repo, p alpmtest.Pkg) alpmdb.Entry {
	t.Helper()
	data, err := os.ReadFile(r.Files[p.FileName()])
	if err != nil {
		t.Fatal(err)
	}
	e := alpmdb.Entry{
		Repo:     r.Name,
		Name:     p.Name,
		Version:  r.Pkgs[p.Name].Version,
		Arch:     r.Pkgs[p.Name].Arch,
		FileName: p.FileName(),
		Size:     int64(len(data)),
		SHA256:   sha256.Sum256(data),
	}
	if p.Sig {
		sig, err := os.ReadFile(r.Files[p.FileName()] + ".sig")
		if err != nil {
			t.Fatal(err)
		}
		e.PGPSig = base64.StdEncoding.EncodeToString(sig)
	}
	return e
}

// checkRepo checks that every package of r is in ix as its file says.
func checkRepo(t *testing.T, ix *alpmdb.Index, r *alpmtest.Repo, pkgs []alpmtest.Pkg) {
	t.Helper()
	for _, p := range pkgs {
		want := wantEntry(t, r, p)
		got, ok := ix.Lookup(p.FileName())
		if !ok {
			t.Errorf("Lookup(%q): not found", p.FileName())
			continue
		}
		if got != want {
			t.Errorf("Lookup(%q) =\n%+v\nwant\n%+v", p.FileName(), got, want)
		}
	}
}

func TestLoadEntries(t *testing.T) {
	requireIntegration(t)
	core := alpmtest.MakeRepo(t, "core", corePkgs...)
	extra := alpmtest.MakeRepo(t, "extra", extraPkgs...)
	sb, cfg := syncedSandbox(t, core, extra)

	before := snapshot(t, sb.DBPath)
	ix := load(t, cfg)
	if diff := before.diff(snapshot(t, sb.DBPath)); diff != "" {
		t.Errorf("Load changed %s:\n%s", sb.DBPath, diff)
	}

	checkRepo(t, ix, core, corePkgs)
	checkRepo(t, ix, extra, extraPkgs)
	if got, want := ix.Len(), len(corePkgs)+len(extraPkgs); got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
	wantDBs := []alpmdb.DB{
		{Repo: "core", Path: sb.SyncDBPath("core"), Packages: len(corePkgs)},
		{Repo: "extra", Path: sb.SyncDBPath("extra"), Packages: len(extraPkgs)},
	}
	if got := ix.DBs(); !reflect.DeepEqual(got, wantDBs) {
		t.Errorf("DBs = %+v, want %+v", got, wantDBs)
	}
	if p := ix.Problems(); len(p) != 0 {
		t.Errorf("Problems = %v", p)
	}
	if e, ok := ix.Lookup("nosuch-1.0-1-x86_64.pkg.tar.zst"); ok {
		t.Errorf("Lookup of an unknown file = %+v", e)
	}

	// The signature comes back as the .sig file's bytes; unsigned packages have none.
	for _, p := range append(append([]alpmtest.Pkg{}, corePkgs...), extraPkgs...) {
		e, _ := ix.Lookup(p.FileName())
		switch sig := e.Signature(); {
		case p.Sig && !bytes.Equal(sig, p.Signature()):
			t.Errorf("%s: Signature() = %x, want %x", p.Name, sig, p.Signature())
		case !p.Sig && (sig != nil || e.PGPSig != ""):
			t.Errorf("%s: unsigned, but Signature() = %x, PGPSig %q", p.Name, sig, e.PGPSig)
		}
	}
}

// TestLoadFirstRepoWins: a file both repos list is core's, the first in pacman.conf.
func TestLoadFirstRepoWins(t *testing.T) {
	requireIntegration(t)
	shared := alpmtest.Pkg{Name: "shared", Size: 64}
	core := alpmtest.MakeRepo(t, "core", shared)
	extra := alpmtest.MakeRepo(t, "extra", shared, alpmtest.Pkg{Name: "other"})
	_, cfg := syncedSandbox(t, core, extra)
	ix := load(t, cfg)
	if e, ok := ix.Lookup(shared.FileName()); !ok || e.Repo != "core" {
		t.Errorf("Lookup(%q) = %+v, %v; want core's", shared.FileName(), e, ok)
	}
	if ix.Len() != 2 {
		t.Errorf("Len = %d, want 2", ix.Len())
	}
}

// TestLoadEmptyRepo: an empty db (what repo-add leaves once the last package is removed) is not damage.
func TestLoadEmptyRepo(t *testing.T) {
	requireIntegration(t)
	core := alpmtest.MakeRepo(t, "core", corePkgs...)
	empty := alpmtest.MakeRepo(t, "empty")
	sb, cfg := syncedSandbox(t, core, empty)
	ix := load(t, cfg)
	want := []alpmdb.DB{
		{Repo: "core", Path: sb.SyncDBPath("core"), Packages: len(corePkgs)},
		{Repo: "empty", Path: sb.SyncDBPath("empty")},
	}
	if got := ix.DBs(); !reflect.DeepEqual(got, want) {
		t.Errorf("DBs = %+v, want %+v", got, want)
	}
	checkRepo(t, ix, core, corePkgs)
}

// damage breaks the file at path in one way.
type damage struct {
	name string
	do   func(t *testing.T, path string)
}

var damages = []damage{
	{name: "missing", do: func(t *testing.T, path string) { remove(t, path) }},
	{name: "empty file", do: func(t *testing.T, path string) { write(t, path, nil) }},
	{name: "truncated to half", do: func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "not an archive", do: func(t *testing.T, path string) {
		write(t, path, []byte("<html><body>404 Not Found</body></html>\n"))
	}},
	{name: "directory", do: func(t *testing.T, path string) {
		remove(t, path)
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "gzip of random bytes", do: func(t *testing.T, path string) {
		write(t, path, gzipped(t, randomBytes(4096)))
	}},
	{name: "small gzip of random bytes", do: func(t *testing.T, path string) {
		write(t, path, gzipped(t, randomBytes(16)))
	}},
	{name: "gzip of text", do: func(t *testing.T, path string) {
		write(t, path, gzipped(t, []byte("not a tar\n")))
	}},
	{name: "tar.gz with no desc files", do: func(t *testing.T, path string) {
		write(t, path, gzipped(t, tarOf(t, map[string]string{"README": "hello\n"})))
	}},
	{name: "tar.gz of package dirs without desc", do: func(t *testing.T, path string) {
		write(t, path, gzipped(t, tarOf(t, map[string]string{"foo-1.0-1/": "", "foo-1.0-1/notes": "x", "bar-2-1/files": "%FILES%\n"})))
	}},
	{name: "tar.gz of empty package dirs", do: func(t *testing.T, path string) {
		dirs := map[string]string{}
		for i := range 50 {
			dirs[fmt.Sprintf("pkg%d-1.0-1/", i)] = ""
		}
		write(t, path, gzipped(t, tarOf(t, dirs)))
	}},
	{name: "valid entries and a stray file", do: func(t *testing.T, path string) {
		// libalpm drops the packages it did read when one entry fails: nothing of it may be indexed.
		files := map[string]string{"zz-stray": "x\n"}
		for _, e := range alpmtest.SyntheticEntries(3) {
			files[e.DirName()+"/"], files[e.DirName()+"/desc"] = "", e.DescText()
		}
		write(t, path, gzipped(t, tarOf(t, files)))
	}},
	{name: "plain tar with no desc files", do: func(t *testing.T, path string) {
		write(t, path, tarOf(t, map[string]string{"README": strings.Repeat("hello\n", 100)}))
	}},
}

func TestLoadDamagedDB(t *testing.T) {
	requireIntegration(t)
	core := alpmtest.MakeRepo(t, "core", corePkgs...)
	extra := alpmtest.MakeRepo(t, "extra", extraPkgs...)
	for _, tt := range damages {
		t.Run(tt.name, func(t *testing.T) {
			sb, cfg := syncedSandbox(t, core, extra)
			tt.do(t, sb.SyncDBPath("extra"))

			before := snapshot(t, sb.DBPath)
			ix := load(t, cfg)
			if diff := before.diff(snapshot(t, sb.DBPath)); diff != "" {
				t.Errorf("Load changed %s:\n%s", sb.DBPath, diff)
			}
			checkRepo(t, ix, core, corePkgs)
			dbs := ix.DBs()
			if len(dbs) != 2 {
				t.Fatalf("DBs = %+v, want core and extra", dbs)
			}
			if dbs[0].Err != nil || dbs[0].Packages != len(corePkgs) {
				t.Errorf("core: %+v, want %d packages and no error", dbs[0], len(corePkgs))
			}
			checkDBError(t, dbs[1].Err, "extra", sb.SyncDBPath("extra"))
			if got := ix.Problems(); len(got) != 1 || got[0] != dbs[1].Err {
				t.Errorf("Problems = %v, want extra's error only", got)
			}
			if ix.Len() != len(corePkgs) {
				t.Errorf("Len = %d, want core's %d", ix.Len(), len(corePkgs))
			}
			for _, p := range extraPkgs {
				if e, ok := ix.Lookup(p.FileName()); ok {
					t.Errorf("Lookup(%q) = %+v from a damaged db", p.FileName(), e)
				}
			}

			// With core broken the same way, nothing is readable.
			tt.do(t, sb.SyncDBPath("core"))
			_, err := alpmdb.Load(context.Background(), cfg)
			if !errors.Is(err, alpmdb.ErrNoDB) {
				t.Fatalf("Load with every db broken: %v, want ErrNoDB", err)
			}
			// The error carries each db's reason.
			checkDBError(t, err, "core", sb.SyncDBPath("core"))
			if !strings.Contains(err.Error(), sb.SyncDBPath("extra")) {
				t.Errorf("error %q does not name extra's db", err)
			}
		})
	}
}

// checkDBError checks err is a *DBError naming repo, path and a reason.
func checkDBError(t *testing.T, err error, repo, path string) {
	t.Helper()
	var dbErr *alpmdb.DBError
	if !errors.As(err, &dbErr) {
		t.Errorf("%s: error %v (%T), want a *DBError", repo, err, err)
		return
	}
	if dbErr.Repo != repo || dbErr.Path != path || strings.TrimSpace(dbErr.Reason) == "" {
		t.Errorf("%s: DBError %+v, want repo %s, path %s and a reason", repo, *dbErr, repo, path)
	}
	for _, s := range []string{repo, path, dbErr.Reason} {
		if !strings.Contains(dbErr.Error(), s) {
			t.Errorf("%s: %q does not contain %q", repo, dbErr.Error(), s)
		}
	}
	t.Logf("%s: %v", repo, dbErr)
}

// TestLoadConcurrent runs Loads at once on one config: libalpm is serialised inside Load (go test -race).
func TestLoadConcurrent(t *testing.T) {
	requireIntegration(t)
	core := alpmtest.MakeRepo(t, "core", corePkgs...)
	extra := alpmtest.MakeRepo(t, "extra", extraPkgs...)
	sb, cfg := syncedSandbox(t, core, extra)
	// Half the Loads see a copy of the dbpath whose extra is broken, so the failure path (libalpm's log
	// callback) runs concurrently too.
	extraCfg := *cfg
	extraCfg.DBPath = copyDir(t, sb.DBPath) + "/"
	write(t, extraCfg.SyncDBPath("extra"), []byte("not an archive\n"))

	before := snapshot(t, sb.DBPath)
	const n = 8
	ixs := make([]*alpmdb.Index, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := cfg
			if i%2 == 1 {
				c = &extraCfg
			}
			ixs[i], errs[i] = alpmdb.Load(context.Background(), c)
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Load %d: %v", i, errs[i])
			continue
		}
		checkRepo(t, ixs[i], core, corePkgs)
		want := len(corePkgs) + len(extraPkgs)
		if i%2 == 1 {
			want = len(corePkgs)
			checkDBError(t, ixs[i].DBs()[1].Err, "extra", extraCfg.SyncDBPath("extra"))
		} else {
			checkRepo(t, ixs[i], extra, extraPkgs)
		}
		if ixs[i].Len() != want {
			t.Errorf("Load %d: Len = %d, want %d", i, ixs[i].Len(), want)
		}
	}
	if diff := before.diff(snapshot(t, sb.DBPath)); diff != "" {
		t.Errorf("Load changed %s:\n%s", sb.DBPath, diff)
	}
}

// TestLoadSynthetic checks the entries of a db written in repo-add's format without repo-add, so it
// runs everywhere libalpm does.
func TestLoadSynthetic(t *testing.T) {
	dbPath := t.TempDir()
	for _, dir := range []string{"sync", "local"} {
		if err := os.Mkdir(filepath.Join(dbPath, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries := alpmtest.WriteSyntheticDB(t, filepath.Join(dbPath, "sync", "synth.db"), 300)
	cfg := &alpmdb.Config{Path: "test", RootDir: "/", DBPath: dbPath + "/", Repos: []alpmdb.Repo{{Name: "synth"}}}
	ix := load(t, cfg)
	if ix.Len() != len(entries) {
		t.Errorf("Len = %d, want %d", ix.Len(), len(entries))
	}
	for _, e := range entries {
		got, ok := ix.Lookup(e.FileName)
		if !ok {
			t.Errorf("Lookup(%q): not found", e.FileName)
			continue
		}
		want := alpmdb.Entry{Repo: "synth", Name: e.Name, Version: e.Version, Arch: e.Arch, FileName: e.FileName,
			Size: e.CSize, SHA256: sha256FromHex(t, e.SHA256), PGPSig: e.PGPSig}
		if got != want {
			t.Errorf("Lookup(%q) =\n%+v\nwant\n%+v", e.FileName, got, want)
		}
	}
}

// TestLoadTruncatedSynthetic: libalpm reads many packages of a big db before it meets the truncation,
// and none of them may be indexed.
func TestLoadTruncatedSynthetic(t *testing.T) {
	dbPath := t.TempDir()
	if err := os.Mkdir(filepath.Join(dbPath, "sync"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dbPath, "sync", "synth.db")
	alpmtest.WriteSyntheticDB(t, path, 2000)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	cfg := &alpmdb.Config{Path: "test", RootDir: "/", DBPath: dbPath + "/", Repos: []alpmdb.Repo{{Name: "synth"}}}
	ix, err := alpmdb.Load(context.Background(), cfg)
	if !errors.Is(err, alpmdb.ErrNoDB) {
		t.Fatalf("Load: %v, want ErrNoDB", err)
	}
	checkDBError(t, err, "synth", path)
	if ix.Len() != 0 {
		t.Errorf("Len = %d, want 0", ix.Len())
	}
}

func TestLoadNoRepos(t *testing.T) {
	cfg := &alpmdb.Config{Path: "test.conf", RootDir: "/", DBPath: t.TempDir() + "/"}
	if _, err := alpmdb.Load(context.Background(), cfg); !errors.Is(err, alpmdb.ErrNoDB) {
		t.Errorf("Load with no repos: %v, want ErrNoDB", err)
	}
}

func TestLoadMissingDBPath(t *testing.T) {
	cfg := &alpmdb.Config{Path: "test.conf", RootDir: "/", DBPath: filepath.Join(t.TempDir(), "nosuch") + "/",
		Repos: []alpmdb.Repo{{Name: "core"}}}
	if _, err := alpmdb.Load(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), cfg.DBPath) {
		t.Errorf("Load with a missing DBPath: %v, want an error naming it", err)
	}
}

func TestLoadCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg := &alpmdb.Config{Path: "test.conf", RootDir: "/", DBPath: t.TempDir() + "/", Repos: []alpmdb.Repo{{Name: "core"}}}
	if _, err := alpmdb.Load(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with a canceled context: %v, want context.Canceled", err)
	}
}

func TestEntrySignature(t *testing.T) {
	tests := []struct {
		name   string
		pgpSig string
		want   []byte
	}{
		{name: "none", pgpSig: "", want: nil},
		{name: "base64", pgpSig: base64.StdEncoding.EncodeToString([]byte{0xc2, 1, 2}), want: []byte{0xc2, 1, 2}},
		{name: "not base64", pgpSig: "!!!", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (alpmdb.Entry{PGPSig: tt.pgpSig}).Signature(); !bytes.Equal(got, tt.want) {
				t.Errorf("Signature() = %x, want %x", got, tt.want)
			}
		})
	}
}

// fileState is what Load must not change about a file.
type fileState struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
}

type tree map[string]fileState

// snapshot records every file and directory under root.
func snapshot(t *testing.T, root string) tree {
	t.Helper()
	s := tree{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		s[path] = fileState{mode: fi.Mode(), size: fi.Size(), mtime: fi.ModTime()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s tree) diff(after tree) string {
	var b strings.Builder
	for path, was := range s {
		if now, ok := after[path]; !ok {
			b.WriteString("removed " + path + "\n")
		} else if now != was {
			b.WriteString("changed " + path + "\n")
		}
	}
	for path := range after {
		if _, ok := s[path]; !ok {
			b.WriteString("added " + path + "\n")
		}
	}
	return b.String()
}

// copyDir copies the regular files and directories under src into a new temp dir.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{'d', 'a', 'm', 'a', 'g', 'e'}).Read(b)
	return b
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// tarOf is a ustar archive of files (a name ending in "/" is a directory), in name order.
func tarOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var names []string
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, name := range names {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
		if strings.HasSuffix(name, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sha256FromHex(t *testing.T, s string) [32]byte {
	t.Helper()
	var sum [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(sum) {
		t.Fatalf("bad sha256 %q: %v", s, err)
	}
	copy(sum[:], b)
	return sum
}

// libalpm creates <dbpath>/local when it is missing and writes a version file into an empty one: Load and
// Upgrades never hand it pacman's dbpath, so neither writes anything there (and neither races pacman
// creating its local db on a fresh root), whether pacman has made its local db or not.
func TestLoadWritesNothingOfPacmans(t *testing.T) {
	requireIntegration(t)
	core := alpmtest.MakeRepo(t, "core", corePkgs...)
	for _, local := range []string{"missing", "empty"} {
		t.Run(local, func(t *testing.T) {
			dbpath := t.TempDir()
			alpmtest.CopyFile(t, core.DB, filepath.Join(dbpath, "sync", "core.db"), 0o644)
			if local == "empty" {
				if err := os.Mkdir(filepath.Join(dbpath, "local"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cfg := &alpmdb.Config{Path: "test.conf", RootDir: "/", DBPath: dbpath + "/", Repos: []alpmdb.Repo{{Name: "core"}}}
			before := snapshot(t, dbpath)
			checkRepo(t, load(t, cfg), core, corePkgs)
			if files, err := alpmdb.Upgrades(context.Background(), cfg); err != nil || len(files) != 0 {
				t.Errorf("Upgrades with nothing installed: %v, %v", files, err)
			}
			if diff := before.diff(snapshot(t, dbpath)); diff != "" {
				t.Errorf("Load and Upgrades changed pacman's dbpath:\n%s", diff)
			}
		})
	}
}
