package reconcile

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

func TestClassify(t *testing.T) {
	pkg := []byte("package bytes")
	sig := []byte("signature bytes")
	sum := sha256.Sum256(pkg)
	ix := alpmdb.NewIndex([]alpmdb.Entry{
		{Repo: "core", Name: "a", FileName: "a-1-1-x86_64.pkg.tar.zst", Size: int64(len(pkg)), SHA256: sum, PGPSig: base64.StdEncoding.EncodeToString(sig)},
		{Repo: "extra", Name: "b", FileName: "b-1-1-x86_64.pkg.tar.zst", Size: int64(len(pkg)), SHA256: sum},
	})
	st := func(size int, mode fs.FileMode) fileStat {
		return fileStat{Dev: 1, Ino: 2, Size: int64(size), Mtime: 3, Ctime: 4, Mode: mode}
	}
	hashed := func(s [32]byte, repo string) *record {
		return &record{Dev: 1, Ino: 2, Size: int64(len(pkg)), Mtime: 3, Ctime: 4, Hashed: true, SHA256: s, Repo: repo}
	}
	tests := []struct {
		name     string
		file     string
		stat     fileStat
		rec      *record
		want     verdictKind
		repo     string
		reasonIs string
	}{
		{name: "symlink", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), fs.ModeSymlink), want: refused, reasonIs: "symlink"},
		{name: "fifo", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(0, fs.ModeNamedPipe), want: refused, reasonIs: "fifo"},
		{name: "device", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(0, fs.ModeDevice|fs.ModeCharDevice), want: refused, reasonIs: "character device"},
		{name: "unknown name", file: "secret.txt", stat: st(10, 0), want: refused, reasonIs: reasonNotInDB},
		{name: "size mismatch reads nothing", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg)+1, 0), want: refused, reasonIs: reasonSize},
		{name: "matching name and size must be hashed", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), want: needHash, repo: "core"},
		{name: "hash cache vouches", file: "b-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), rec: hashed(sum, ""), want: verified, repo: "extra"},
		{name: "hash cache says tampered", file: "a-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), rec: hashed([32]byte{9}, ""), want: refused, reasonIs: reasonChecksum},
		{name: "stale hash record is ignored", file: "a-1-1-x86_64.pkg.tar.zst", stat: fileStat{Dev: 1, Ino: 2, Size: int64(len(pkg)), Mtime: 99, Ctime: 4}, rec: hashed([32]byte{9}, ""), want: needHash, repo: "core"},
		{name: "verified earlier, dropped by the db", file: "old-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), rec: hashed(sum, "core"), want: verified, repo: "core"},
		{name: "dropped by the db, never verified", file: "old-1-1-x86_64.pkg.tar.zst", stat: st(len(pkg), 0), rec: hashed(sum, ""), want: refused, reasonIs: reasonNotInDB},
		{name: "signature", file: "a-1-1-x86_64.pkg.tar.zst.sig", stat: fileStat{Dev: 1, Ino: 2, Size: int64(len(sig))}, want: needHash, repo: "core"},
		{name: "signature of wrong size", file: "a-1-1-x86_64.pkg.tar.zst.sig", stat: st(3, 0), want: refused, reasonIs: reasonSize},
		{name: "signature the db does not carry", file: "b-1-1-x86_64.pkg.tar.zst.sig", stat: st(3, 0), want: refused, reasonIs: ReasonNoSig},
		{name: "signature of unknown package", file: "z.pkg.tar.zst.sig", stat: st(3, 0), want: refused, reasonIs: reasonNotInDB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := classify(candidate{Dir: "/c", Name: tt.file, Path: "/c/" + tt.file, Stat: tt.stat}, ix, tt.rec, false)
			if v.Kind != tt.want || v.Repo != tt.repo || !strings.Contains(v.Reason, tt.reasonIs) {
				t.Errorf("classify = %+v, want kind %d repo %q reason containing %q", v, tt.want, tt.repo, tt.reasonIs)
			}
		})
	}
}

// planWorld is a small cache and db for plan tables: "a" (one block, in core), "big" (two blocks, in
// extra), "sig" a signature the db carries for a.
type planWorld struct {
	ix                  Index
	pkg, sig            []byte
	sum, sigSum, bigSum [32]byte
	bigSize             int64
}

func newPlanWorld() planWorld {
	w := planWorld{pkg: []byte("package bytes"), sig: []byte("signature bytes"), bigSize: 3 << 20}
	w.sum, w.sigSum, w.bigSum = sha256.Sum256(w.pkg), sha256.Sum256(w.sig), [32]byte{7}
	w.ix = alpmdb.NewIndex([]alpmdb.Entry{
		{Repo: "core", Name: "a", FileName: "a-1-1-x86_64.pkg.tar.zst", Size: int64(len(w.pkg)), SHA256: w.sum, PGPSig: base64.StdEncoding.EncodeToString(w.sig)},
		{Repo: "extra", Name: "big", FileName: "big-1-1-any.pkg.tar.zst", Size: w.bigSize, SHA256: w.bigSum},
	})
	return w
}

func (w planWorld) entry(dir, name string, size int64, ino uint64) candidate {
	return candidate{Dir: dir, Name: name, Path: dir + "/" + name, Stat: fileStat{Dev: 1, Ino: ino, Size: size, Mtime: 3, Ctime: 4}}
}

func rec(c candidate, sum [32]byte, repo string) *record {
	return &record{Dev: c.Stat.Dev, Ino: c.Stat.Ino, Size: c.Stat.Size, Mtime: c.Stat.Mtime, Ctime: c.Stat.Ctime, Hashed: true, SHA256: sum, Repo: repo}
}

func TestMakePlan(t *testing.T) {
	w := newPlanWorld()
	a := w.entry("/c", "a-1-1-x86_64.pkg.tar.zst", int64(len(w.pkg)), 10)
	a2 := w.entry("/d", "a-1-1-x86_64.pkg.tar.zst", int64(len(w.pkg)), 11)
	sig := w.entry("/c", "a-1-1-x86_64.pkg.tar.zst.sig", int64(len(w.sig)), 12)
	big := w.entry("/c", "big-1-1-any.pkg.tar.zst", w.bigSize, 13)
	link := a
	link.Name, link.Path, link.Stat.Mode = "l-1-1-x86_64.pkg.tar.zst", "/c/l-1-1-x86_64.pkg.tar.zst", fs.ModeSymlink
	aCID, bigCID, gone := node.RawCID(w.sum), node.RawCID([32]byte{42}), node.RawCID([32]byte{43})
	bigHex := hex.EncodeToString(w.bigSum[:])
	tests := []struct {
		name                    string
		dirs                    []listing
		records                 map[string]*record
		cids                    map[string]string
		pins                    map[cid.Cid]string
		sigs                    bool
		hash, add, seeded       []string // paths
		refused, keep, unpinned []string
	}{
		{name: "empty cache, nothing pinned"},
		{name: "a new file is hashed before anything else",
			dirs: []listing{{Dir: "/c", Entries: []candidate{a}}}, hash: []string{a.Path}, keep: []string{a.Path}},
		{name: "a file the record vouches for is added",
			dirs: []listing{{Dir: "/c", Entries: []candidate{a}}}, records: map[string]*record{a.Path: rec(a, w.sum, "core")},
			add: []string{a.Path}, keep: []string{a.Path}},
		{name: "a pinned file is kept as it is",
			dirs: []listing{{Dir: "/c", Entries: []candidate{a}}}, records: map[string]*record{a.Path: rec(a, w.sum, "core")},
			pins: map[cid.Cid]string{aCID: "pacman-ipfs:core/a"}, seeded: []string{a.Path}, keep: []string{a.Path}},
		{name: "the same bytes in two CacheDirs are one add",
			dirs:    []listing{{Dir: "/c", Entries: []candidate{a}}, {Dir: "/d", Entries: []candidate{a2}}},
			records: map[string]*record{a.Path: rec(a, w.sum, "core"), a2.Path: rec(a2, w.sum, "core")},
			add:     []string{a.Path}, seeded: []string{a2.Path}, keep: []string{a.Path, a2.Path}},
		{name: "a pin no file accounts for goes",
			pins: map[cid.Cid]string{gone: "pacman-ipfs:core/gone"}, unpinned: []string{"pacman-ipfs:core/gone"}},
		{name: "a large file whose CID is unknown is added; its old pin waits for the add",
			dirs: []listing{{Dir: "/c", Entries: []candidate{big}}}, records: map[string]*record{big.Path: rec(big, w.bigSum, "extra")},
			pins: map[cid.Cid]string{bigCID: "pacman-ipfs:extra/big"}, add: []string{big.Path}, keep: []string{big.Path},
			unpinned: []string{"pacman-ipfs:extra/big"}},
		{name: "a large file whose CID was learned is seeded",
			dirs: []listing{{Dir: "/c", Entries: []candidate{big}}}, records: map[string]*record{big.Path: rec(big, w.bigSum, "extra")},
			cids: map[string]string{bigHex: bigCID.String()}, pins: map[cid.Cid]string{bigCID: "pacman-ipfs:extra/big"},
			seeded: []string{big.Path}, keep: []string{big.Path}},
		{name: "a symlink is refused and never read",
			dirs: []listing{{Dir: "/c", Entries: []candidate{link}}}, refused: []string{link.Path}, keep: []string{link.Path}},
		{name: "a record of other bytes refuses the file",
			dirs: []listing{{Dir: "/c", Entries: []candidate{a}}}, records: map[string]*record{a.Path: rec(a, [32]byte{9}, "")},
			refused: []string{a.Path}, keep: []string{a.Path}},
		{name: "a signature the db carries is hashed",
			dirs: []listing{{Dir: "/c", Entries: []candidate{sig}}}, hash: []string{sig.Path}, keep: []string{sig.Path}},
		{name: "an unreadable CacheDir keeps what was verified there",
			dirs:    []listing{{Dir: "/c", Err: fs.ErrPermission}},
			records: map[string]*record{a.Path: rec(a, w.sum, "core"), "/c/refused": rec(a, [32]byte{9}, "")},
			pins:    map[cid.Cid]string{aCID: "pacman-ipfs:core/a"}, seeded: []string{a.Path}, keep: []string{a.Path}},
	}
	paths := func(ss []seed) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Path)
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			records := tt.records
			if records == nil {
				records = map[string]*record{}
			}
			in := inputs{Index: w.ix, Dirs: tt.dirs, Records: records, CIDs: tt.cids, Pins: tt.pins, Sigs: tt.sigs}
			p := makePlan(in)
			var hash, refused []string
			for _, c := range p.Hash {
				hash = append(hash, c.Path)
			}
			for _, n := range p.Refused {
				refused = append(refused, n.Path)
			}
			var unpinned []string
			for _, c := range unpins(tt.pins, p.Claimed) {
				unpinned = append(unpinned, tt.pins[c])
			}
			check := func(what string, got, want []string) {
				t.Helper()
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			check("Hash", hash, tt.hash)
			check("Add", paths(p.Add), tt.add)
			check("Seeded", paths(p.Seeded), tt.seeded)
			check("Refused", refused, tt.refused)
			check("Keep", slices.Collect(maps.Keys(p.Keep)), tt.keep)
			check("unpins", unpinned, tt.unpinned)
			if len(records) != len(tt.records) {
				t.Errorf("makePlan changed the records it was given")
			}
		})
	}
}

func TestJudge(t *testing.T) {
	w := newPlanWorld()
	a := w.entry("/c", "a-1-1-x86_64.pkg.tar.zst", int64(len(w.pkg)), 10)
	sig := w.entry("/c", "a-1-1-x86_64.pkg.tar.zst.sig", int64(len(w.sig)), 12)
	in := &inputs{Index: w.ix, Records: map[string]*record{}, Sigs: true, Dirs: []listing{{Dir: "/c", NoCopy: true}}}
	tests := []struct {
		name                     string
		h                        hashed
		verified, failed, forget bool
		record                   bool
		reason                   string
	}{
		{name: "the bytes match the db", h: hashed{c: a, st: a.Stat, sum: w.sum}, verified: true, record: true},
		{name: "other bytes are refused and remembered", h: hashed{c: a, st: a.Stat, sum: [32]byte{1}}, record: true, reason: reasonChecksum},
		{name: "the signature the db carries", h: hashed{c: sig, st: sig.Stat, sum: w.sigSum}, verified: true, record: true},
		{name: "a file that changed while read is retried", h: hashed{c: a, err: ErrChanged}, failed: true, reason: "changed while being verified"},
		{name: "a file that left while read is forgotten", h: hashed{c: a, err: ErrChanged, gone: true}, forget: true},
		{name: "a read error fails the file", h: hashed{c: a, err: fs.ErrPermission}, failed: true, reason: "permission"},
		{name: "a signature whose package is missing is asked again, unremembered",
			h: hashed{c: sig, st: sig.Stat, sum: w.sigSum, sigRetry: true, sigWhy: "its package is not in the cache"}, reason: "its package"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := judge(in, tt.h)
			reason := ""
			if j.Note != nil {
				reason = j.Note.Reason
			}
			if j.Verified != tt.verified || j.Failed != tt.failed || j.Forget != tt.forget || (j.Record != nil) != tt.record ||
				!strings.Contains(reason, tt.reason) || (tt.reason == "") != (j.Note == nil) {
				t.Errorf("judge = %+v (reason %q)", j, reason)
			}
			if j.Verified && (j.Seed.Repo != "core" || !j.Seed.NoCopy || j.Record.Repo != "core" || !j.Seed.CID.Defined()) {
				t.Errorf("verified seed = %+v, record %+v", j.Seed, j.Record)
			}
		})
	}
}

func TestIndexFiles(t *testing.T) {
	c1, c2 := node.RawCID([32]byte{1}), node.RawCID([32]byte{2})
	seeded := []seed{{Repo: "core", Name: "a-1-1-x86_64.pkg.tar.zst", CID: c1}, {Repo: "extra", Name: "b-1-1-any.pkg.tar.zst", CID: c2}}
	files, sum := indexFiles(seeded, []string{"x86_64", "aarch64"})
	want := map[string]cid.Cid{
		"core/os/x86_64/a-1-1-x86_64.pkg.tar.zst": c1,
		"extra/os/x86_64/b-1-1-any.pkg.tar.zst":   c2,
		"extra/os/aarch64/b-1-1-any.pkg.tar.zst":  c2,
	}
	if !maps.EqualFunc(files, want, cid.Cid.Equals) {
		t.Errorf("indexFiles = %v, want %v", files, want)
	}
	if _, again := indexFiles([]seed{seeded[1], seeded[0]}, []string{"x86_64", "aarch64"}); again != sum {
		t.Error("the fingerprint depends on the order of the seeds")
	}
	if _, other := indexFiles(seeded[:1], []string{"x86_64"}); other == sum {
		t.Error("a different index has the same fingerprint")
	}
}

func TestDanglingAndNeeding(t *testing.T) {
	small, big, shared, other := node.RawCID([32]byte{1}), node.RawCID([32]byte{2}), node.RawCID([32]byte{3}), node.RawCID([32]byte{4})
	seeded := []seed{
		{Path: "/c/small", CID: small, Rec: record{Size: 10}},
		{Path: "/c/big", CID: big, Rec: record{Size: 3 << 20}},
	}
	refs := map[cid.Cid]string{
		small:  "/c/small",   // live
		shared: "/c/removed", // its file left; big still needs the block
		other:  "/elsewhere/x",
	}
	lost := dangling(refs, []string{"/c/"}, seeded)
	if len(lost) != 1 || lost[shared] != "/c/removed" {
		t.Fatalf("dangling = %v, want only the block of /c/removed", lost)
	}
	got := needing(seeded, map[cid.Cid][]cid.Cid{big: {big, shared}}, lost)
	if len(got) != 1 || got[0].Path != "/c/big" {
		t.Errorf("needing = %v, want /c/big", got)
	}
}

func TestRetention(t *testing.T) {
	a, b, bad := node.RawCID([32]byte{1}), node.RawCID([32]byte{2}), node.RawCID([32]byte{3})
	pins := map[cid.Cid]string{a: node.PinPrefix + "core/a-1-1-x86_64.pkg.tar.zst", b: node.PinPrefix + "extra/b-1-1-any.pkg.tar.zst",
		bad: "pacman-ipfs:no-slash"}
	now := time.Unix(1_800_000_000, 0)
	day := 24 * time.Hour
	ago := func(d time.Duration) int64 { return now.Add(-d).Unix() }
	tests := []struct {
		name   string
		gone   []cid.Cid
		missed map[string]int64
		keep   time.Duration
		unpin  []cid.Cid
		kept   []string // file names
		since  map[string]int64
	}{
		{name: "no retention: unpinned by the pass that misses it", gone: []cid.Cid{a}, unpin: []cid.Cid{a},
			since: map[string]int64{a.String(): now.Unix()}},
		{name: "first missed now: kept, and the clock starts", gone: []cid.Cid{a}, keep: 14 * day,
			kept: []string{"a-1-1-x86_64.pkg.tar.zst"}, since: map[string]int64{a.String(): now.Unix()}},
		{name: "missed 13 days ago: still kept, the clock as it was", gone: []cid.Cid{a}, keep: 14 * day,
			missed: map[string]int64{a.String(): ago(13 * day)}, kept: []string{"a-1-1-x86_64.pkg.tar.zst"},
			since: map[string]int64{a.String(): ago(13 * day)}},
		{name: "missed 14 days ago: unpinned", gone: []cid.Cid{a, b}, keep: 14 * day,
			missed: map[string]int64{a.String(): ago(14 * day), b.String(): ago(day)}, unpin: []cid.Cid{a},
			kept: []string{"b-1-1-any.pkg.tar.zst"}, since: map[string]int64{a.String(): ago(14 * day), b.String(): ago(day)}},
		{name: "back in the tree: forgotten", gone: nil, keep: 14 * day, missed: map[string]int64{a.String(): ago(day)},
			since: map[string]int64{}},
		{name: "a pin name that says no file: kept pinned, not indexed", gone: []cid.Cid{bad}, keep: day,
			since: map[string]int64{bad.String(): now.Unix()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unpin, kept, since := retention(tt.gone, pins, node.PinPrefix, tt.missed, now, tt.keep)
			if !slices.EqualFunc(unpin, tt.unpin, cid.Cid.Equals) {
				t.Errorf("unpin = %v, want %v", unpin, tt.unpin)
			}
			var names []string
			for _, sd := range kept {
				names = append(names, sd.Name)
				if !sd.CID.Defined() || sd.Repo == "" {
					t.Errorf("kept %+v: no CID or repo", sd)
				}
			}
			if !slices.Equal(names, tt.kept) {
				t.Errorf("kept = %v, want %v", names, tt.kept)
			}
			if !maps.Equal(since, tt.since) {
				t.Errorf("since = %v, want %v", since, tt.since)
			}
		})
	}
}
