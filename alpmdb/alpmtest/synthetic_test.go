package alpmtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	alpm "github.com/Jguer/go-alpm/v2"
)

// dbMember is what a sync database says about one archive member, minus mtime
// (repo-add stamps its temp dir's, which is now).
type dbMember struct {
	Name         string
	Typeflag     byte
	Mode         int64
	Uid, Gid     int
	Uname, Gname string
	Body         string
}

func readDBMembers(t testing.TB, path string) []dbMember {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	// Plain POSIX ustar, as bsdtar writes by default; Go's Header.Format
	// cannot tell (it reports bsdtar's headers as unknown), so look at the magic.
	if len(raw) >= 512 && raw[0] != 0 && string(raw[257:265]) != "ustar\x0000" {
		t.Errorf("%s: first member is not ustar: magic %q", path, raw[257:265])
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	var members []dbMember
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return members
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		members = append(members, dbMember{h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Uname, h.Gname, string(body)})
	}
}

// wantMembers is the layout of a database with entries, given repo-add ran as root.
func wantMembers(entries []Entry) []dbMember {
	var m []dbMember
	for _, e := range entries {
		m = append(m,
			dbMember{e.DirName() + "/", tar.TypeDir, 0o755, 0, 0, "root", "root", ""},
			dbMember{e.DirName() + "/desc", tar.TypeReg, 0o644, 0, 0, "root", "root", e.DescText()})
	}
	return m
}

// TestSyntheticLayoutMatchesRepoAdd checks, byte for byte, that the desc files
// WriteDB writes are the ones repo-add writes, in the same archive layout.
func TestSyntheticLayoutMatchesRepoAdd(t *testing.T) {
	Require(t, "repo-add", "bsdtar")
	RequireRoot(t) // repo-add's members are owned by whoever runs it
	repo := MakeRepo(t, "real",
		Pkg{Name: "alpha", Size: 1000},
		Pkg{Name: "beta", Version: "1:2.0-3", Arch: "any", Size: 3000, Ext: ".pkg.tar.zst", Sig: true},
		Pkg{Name: "gamma", Size: 0, Ext: ".pkg.tar"})
	real := repo.Entries(t)
	if real[1].PGPSig == "" || real[0].PGPSig != "" {
		t.Fatalf("signatures: %+v", real)
	}
	if got, want := readDBMembers(t, repo.DB), wantMembers(real); !reflect.DeepEqual(got, want) {
		t.Errorf("repo-add wrote\n%+v\nwant\n%+v", got, want)
	}

	// The same entries through WriteDB give the same archive.
	mine := filepath.Join(t.TempDir(), "real.db.tar.gz")
	WriteDB(t, mine, real)
	if got, want := readDBMembers(t, mine), readDBMembers(t, repo.DB); !reflect.DeepEqual(got, want) {
		t.Errorf("WriteDB wrote\n%+v\nrepo-add wrote\n%+v", got, want)
	}

	synth := filepath.Join(t.TempDir(), "synth.db.tar.gz")
	entries := WriteSyntheticDB(t, synth, 100)
	if got, want := readDBMembers(t, synth), wantMembers(entries); !reflect.DeepEqual(got, want) {
		t.Errorf("WriteSyntheticDB wrote %d members unlike its entries", len(got))
	}
	if !reflect.DeepEqual(entries, SyntheticEntries(100)) {
		t.Error("SyntheticEntries is not deterministic")
	}
}

// TestSyntheticDBLoadsInLibalpm loads a repo-add database and a synthetic one
// with libalpm and checks every field written comes back.
func TestSyntheticDBLoadsInLibalpm(t *testing.T) {
	Require(t, "repo-add", "bsdtar")
	repo := MakeRepo(t, "real",
		Pkg{Name: "alpha", Size: 1000},
		Pkg{Name: "beta", Version: "1:2.0-3", Arch: "any", Size: 3000, Ext: ".pkg.tar.zst", Sig: true})
	synthPath := filepath.Join(t.TempDir(), "synth.db.tar.gz")
	const n = 15000 // the benchmark's size; writing and loading it takes well under a second
	want := map[string][]Entry{
		"real":  repo.Entries(t),
		"synth": WriteSyntheticDB(t, synthPath, n),
	}

	root, dbpath := t.TempDir(), t.TempDir()
	for name, src := range map[string]string{"real": repo.DB, "synth": synthPath} {
		copyFile(t, src, filepath.Join(dbpath, "sync", name+".db"))
	}
	h, err := alpm.Initialize(root, dbpath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Release() })

	for _, name := range []string{"real", "synth"} {
		db, err := h.RegisterSyncDB(name, 0)
		if err != nil {
			t.Fatalf("registering %s: %v", name, err)
		}
		got := map[string]Entry{}
		err = db.PkgCache().ForEach(func(p alpm.IPackage) error {
			got[p.Name()] = Entry{
				FileName:  p.FileName(),
				Name:      p.Name(),
				Version:   p.Version(),
				Arch:      p.Architecture(),
				CSize:     p.Size(),
				SHA256:    p.SHA256Sum(),
				PGPSig:    p.Base64Signature(),
				Base:      p.Base(),
				Desc:      p.Description(),
				ISize:     p.ISize(),
				MD5:       p.MD5Sum(),
				URL:       p.URL(),
				License:   p.Licenses().Slice()[0],
				BuildDate: p.BuildDate().Unix(),
				Packager:  p.Packager(),
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want[name]) {
			t.Errorf("%s: libalpm loaded %d packages, want %d", name, len(got), len(want[name]))
		}
		for _, e := range want[name] {
			if got[e.Name] != e {
				t.Errorf("%s: libalpm read\n%+v\nwant\n%+v", name, got[e.Name], e)
			}
		}
	}
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	b := readFile(t, src)
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
