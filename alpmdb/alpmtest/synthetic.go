package alpmtest

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Entry is one package of a sync database, i.e. one <name>-<version>/desc.
// Empty fields are left out of desc, as repo-add leaves them out.
type Entry struct {
	FileName, Name, Version, Arch string
	CSize                         int64  // size of the package file
	SHA256                        string // hex
	PGPSig                        string // base64 of the detached signature

	Base      string
	Desc      string
	ISize     int64  // installed size
	MD5       string // hex
	URL       string
	License   string
	BuildDate int64 // Unix seconds
	Packager  string
}

// DirName is the entry's directory in the database: "<name>-<version>".
func (e Entry) DirName() string { return e.Name + "-" + e.Version }

// DescText is the entry's desc file, byte for byte as repo-add 6.0 writes
// it: "%FIELD%\nvalue\n\n" per non-empty field, in repo-add's order.
func (e Entry) DescText() string {
	var b strings.Builder
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%%%s%%\n%s\n\n", name, value)
		}
	}
	field("FILENAME", e.FileName)
	field("NAME", e.Name)
	field("BASE", e.Base)
	field("VERSION", e.Version)
	field("DESC", e.Desc)
	field("CSIZE", strconv.FormatInt(e.CSize, 10))
	field("ISIZE", strconv.FormatInt(e.ISize, 10))
	field("MD5SUM", e.MD5)
	field("SHA256SUM", e.SHA256)
	field("PGPSIG", e.PGPSig)
	field("URL", e.URL)
	field("LICENSE", e.License)
	field("ARCH", e.Arch)
	if e.BuildDate != 0 {
		field("BUILDDATE", strconv.FormatInt(e.BuildDate, 10))
	}
	field("PACKAGER", e.Packager)
	return b.String()
}

// SyntheticEntries makes up n packages, the same ones for the same n:
// names synth-00000, synth-00001, ..., Arch-like versions, sizes spread from
// a few KiB to tens of MiB, random checksums and made-up signatures.
// None of the package files exist.
func SyntheticEntries(n int) []Entry {
	rng := rand.New(rand.NewPCG(0x616c706d, 0x74657374)) // "alpm", "test"
	width := max(5, len(strconv.Itoa(n-1)))
	entries := make([]Entry, n)
	for i := range entries {
		name := fmt.Sprintf("synth-%0*d", width, i)
		version := fmt.Sprintf("%d.%d.%d-%d", rng.IntN(10), rng.IntN(30), rng.IntN(100), 1+rng.IntN(3))
		arch := DefaultArch
		if rng.IntN(5) == 0 {
			arch = "any"
		}
		// Log-uniform between 4 KiB and 64 MiB, like a real repository's spread.
		csize := int64(math.Exp(math.Log(4<<10) + rng.Float64()*(math.Log(64<<20)-math.Log(4<<10))))
		var sha [32]byte
		var md [16]byte
		var sigSeed [32]byte
		fillRandom(rng, sha[:])
		fillRandom(rng, md[:])
		fillRandom(rng, sigSeed[:])
		entries[i] = Entry{
			FileName:  name + "-" + version + "-" + arch + ".pkg.tar.zst",
			Name:      name,
			Version:   version,
			Arch:      arch,
			CSize:     csize,
			SHA256:    hex.EncodeToString(sha[:]),
			PGPSig:    base64.StdEncoding.EncodeToString(fakeSignature(sigSeed)),
			Base:      name,
			Desc:      "synthetic package " + name,
			ISize:     csize * int64(2+rng.IntN(3)),
			MD5:       hex.EncodeToString(md[:]),
			URL:       "https://example.invalid/" + name,
			License:   License,
			BuildDate: BuildDate + int64(i),
			Packager:  Packager,
		}
	}
	return entries
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// WriteSyntheticDB writes a sync database describing SyntheticEntries(n) at
// path and returns the entries: for benchmarks with thousands of packages,
// where repo-add would take minutes.
func WriteSyntheticDB(t testing.TB, path string, n int) []Entry {
	t.Helper()
	entries := SyntheticEntries(n)
	WriteDB(t, path, entries)
	return entries
}

// WriteDB writes a sync database with entries at path, in repo-add's layout:
// a gzip'd ustar archive holding, sorted by name, a directory
// "<name>-<version>/" (0755) and its "desc" (0644) per entry, owned by root.
// repo-add writes nothing else into a .db (the files list goes only to the
// .files database). Tweak the entries of SyntheticEntries and call it again
// to make a newer database. It is gzip whatever path's extension says;
// pacman goes by content, not name.
func WriteDB(t testing.TB, path string, entries []Entry) {
	t.Helper()
	if err := writeDB(path, entries); err != nil {
		t.Fatal(err)
	}
}

func writeDB(path string, entries []Entry) error {
	entries = slices.Clone(entries)
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.DirName(), b.DirName()) })

	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("alpmtest: writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	bw := bufio.NewWriterSize(tmp, 1<<20)
	zw := gzip.NewWriter(bw)
	tw := tar.NewWriter(zw)
	mtime := time.Unix(BuildDate, 0)
	for _, e := range entries {
		desc := e.DescText()
		for _, h := range []*tar.Header{
			{Typeflag: tar.TypeDir, Name: e.DirName() + "/", Mode: 0o755},
			{Typeflag: tar.TypeReg, Name: e.DirName() + "/desc", Mode: 0o644, Size: int64(len(desc))},
		} {
			h.ModTime, h.Uname, h.Gname, h.Format = mtime, "root", "root", tar.FormatUSTAR
			if err := tw.WriteHeader(h); err != nil {
				tmp.Close()
				return fmt.Errorf("alpmtest: writing %s: %s: %w", path, h.Name, err)
			}
		}
		if _, err := tw.Write([]byte(desc)); err != nil {
			tmp.Close()
			return fmt.Errorf("alpmtest: writing %s: %w", path, err)
		}
	}
	for _, c := range []interface{ Close() error }{tw, zw} {
		if err := c.Close(); err != nil {
			tmp.Close()
			return fmt.Errorf("alpmtest: writing %s: %w", path, err)
		}
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("alpmtest: writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("alpmtest: writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("alpmtest: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("alpmtest: %w", err)
	}
	return nil
}
