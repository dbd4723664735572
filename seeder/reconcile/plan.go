package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
)

// Index is what the seeder needs of the sync databases (alpmdb.Index provides it).
type Index interface {
	Lookup(fileName string) (alpmdb.Entry, bool)
}

// fileStat is what lstat says of a cache entry: enough to tell whether its bytes may have changed since
// they were hashed. ctime is there because nobody can set it: a rewrite that restores mtime still shows.
type fileStat struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64 // nanoseconds
	Mode         fs.FileMode
}

// candidate is one entry of a CacheDir.
type candidate struct {
	Dir, Name, Path string
	Stat            fileStat
}

type verdictKind int

const (
	refused  verdictKind = iota // never published; Reason says why
	needHash                    // name and size match an entry: its bytes must be hashed
	verified                    // name, size and sha256 match an entry (now or earlier)
)

// verdict is what the sync dbs and the hash cache say of a candidate, before any byte is read.
type verdict struct {
	Kind   verdictKind
	Reason string
	Repo   string
	SHA256 [sha256.Size]byte // what the file's bytes must hash to
	Size   int64
	// Unvouched marks a detached signature whose db carries none to compare it with: it is checked
	// against pacman's keyring over its verified package instead (SHA256 and Size are the package's).
	Unvouched bool
}

// Refusal reasons, as the summary and status print them.
const (
	reasonNotRegular = "not a regular file"
	reasonNotInDB    = "not in any sync db"
	// ReasonNoSig is exported for seed-mirror, which warns of it: normal in a cache, not in a tree.
	ReasonNoSig    = "sync db carries no signature for this package, and no keyring to check it with"
	reasonSize     = "size mismatch"
	reasonChecksum = "sha256 mismatch"
	reasonBadSig   = "signature not valid"
)

// classify decides what a candidate is from the index and its hash record (nil when it has none).
// It reads no file.
// sigs says whether signatures the db does not carry can be checked against a keyring.
func classify(c candidate, ix Index, rec *record, sigs bool) verdict {
	if !c.Stat.Mode.IsRegular() {
		return verdict{Kind: refused, Reason: fmt.Sprintf("%s (%s)", reasonNotRegular, typeName(c.Stat.Mode))}
	}
	known := rec != nil && rec.matches(c.Stat)
	want, ok := expect(c.Name, ix, sigs)
	if !ok {
		// A file verified earlier stays seeded after a newer db drops it: peers with the older db want it.
		if known && rec.Repo != "" {
			return verdict{Kind: verified, Repo: rec.Repo, SHA256: [sha256.Size]byte(rec.SHA256), Size: c.Stat.Size}
		}
		if want.Reason != "" {
			return want
		}
		return verdict{Kind: refused, Reason: reasonNotInDB}
	}
	if want.Unvouched {
		return classifyUnvouched(c, want, known, rec)
	}
	if c.Stat.Size != want.Size {
		return verdict{Kind: refused, Reason: fmt.Sprintf("%s: %d bytes, the %s db says %d", reasonSize, c.Stat.Size, want.Repo, want.Size)}
	}
	if !known || !rec.Hashed {
		want.Kind = needHash
		return want
	}
	if [sha256.Size]byte(rec.SHA256) != want.SHA256 {
		return verdict{Kind: refused, Reason: fmt.Sprintf("%s against the %s db", reasonChecksum, want.Repo)}
	}
	want.Kind = verified
	return want
}

// classifyUnvouched decides on a signature the db does not carry: its hash record says whether it
// passed the keyring check over its package (rec.Repo set) or why not.
func classifyUnvouched(c candidate, want verdict, known bool, rec *record) verdict {
	switch {
	case c.Stat.Size > sigcheck.MaxSize:
		return verdict{Kind: refused, Reason: fmt.Sprintf("%s: %d bytes, more than a signature", reasonBadSig, c.Stat.Size)}
	case !known || !rec.Hashed:
		want.Kind = needHash
		return want
	case rec.Repo == "":
		return verdict{Kind: refused, Reason: rec.Why}
	}
	return verdict{Kind: verified, Repo: rec.Repo, SHA256: [sha256.Size]byte(rec.SHA256), Size: c.Stat.Size}
}

// expect returns what the sync dbs say a file of this name must be. A detached signature must equal the
// %PGPSIG% its db carries for the package; where the db carries none (pacman 7's repo-add) and sigs is
// set, it must be a valid signature over the verified package by a key in pacman's keyring.
func expect(name string, ix Index, sigs bool) (verdict, bool) {
	if base, ok := strings.CutSuffix(name, ".sig"); ok {
		e, ok := ix.Lookup(base)
		if !ok {
			return verdict{}, false
		}
		sig := e.Signature()
		if sig == nil && sigs {
			return verdict{Repo: e.Repo, SHA256: e.SHA256, Size: e.Size, Unvouched: true}, true
		}
		if sig == nil {
			return verdict{Kind: refused, Reason: ReasonNoSig}, false
		}
		return verdict{Repo: e.Repo, SHA256: sha256.Sum256(sig), Size: int64(len(sig))}, true
	}
	e, ok := ix.Lookup(name)
	if !ok {
		return verdict{}, false
	}
	return verdict{Repo: e.Repo, SHA256: e.SHA256, Size: e.Size}, true
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m.IsDir():
		return "directory"
	}
	return "irregular"
}

// seed is a verified file that must be pinned, with the hash record it was verified under: the add
// reopens the file only if it is still that file.
type seed struct {
	Path, Name, Repo string
	CID              cid.Cid // cid.Undef until known: derived for one-block files, learned by adding others
	NoCopy           bool
	Rec              record
}

func (s seed) size() int64      { return s.Rec.Size }
func (s seed) multiBlock() bool { return s.size() > int64(node.Import().ChunkSize) }
func (s seed) pinName(prefix string) string {
	return prefix + s.Repo + "/" + s.Name
}

// listing is one CacheDir as it was found: its entries, lstat'ed, or why it could not be read.
type listing struct {
	Dir     string
	NoCopy  bool   // the node can reference its files in place
	Why     string // why or why not
	Entries []candidate
	Err     error
}

// inputs is everything a plan is made from, as plain values. Nothing in it is changed by planning.
type inputs struct {
	Index   Index
	Dirs    []listing
	Records map[string]*record // hash results of earlier passes, by path
	CIDs    map[string]string  // sha256 (hex) to CID, learned by adding files of more than one block
	Pins    map[cid.Cid]string // the node's pins of ours (named with the seeder's pin prefix), by CID
	Sigs    bool               // signatures the dbs do not carry can be checked against a keyring
	// Gone is when each pin no file accounted for was first missed (CID to Unix seconds); Now is the
	// time of this pass.
	Gone map[string]int64
	Now  time.Time
}

// plan is what a reconcile must do, decided before any file is read: what to hash, to add, to keep, and
// what is refused and why. Hash results are judged by judge; the end of the pass by unpins and
// indexFiles; all of them pure.
type plan struct {
	Dirs    []DirReport
	Hash    []candidate // name and size match an entry: read them, then judge
	Add     []seed      // verified, not pinned: add and pin
	Seeded  []seed      // verified and pinned (or the twin of a file being added)
	Refused []FileNote
	// Keep holds the paths whose hash records outlive the pass; Claimed the CIDs it keeps pinned so far.
	Keep    map[string]bool
	Claimed map[cid.Cid]bool
}

// makePlan decides what one reconcile does from what the caches hold, what the dbs vouch for, what was
// hashed before and what the node has pinned. It reads no file and talks to no node.
func makePlan(in inputs) plan {
	p := plan{Keep: map[string]bool{}, Claimed: map[cid.Cid]bool{}}
	for _, d := range in.Dirs {
		dr := DirReport{Dir: d.Dir, NoCopy: d.NoCopy, Why: d.Why, Files: len(d.Entries)}
		if d.Err != nil {
			// Not knowing what the dir holds is no reason to unpin it: keep what was verified there.
			dr.Err = d.Err.Error()
			for _, sd := range in.remembered(d) {
				p.Keep[sd.Path] = true
				p.place(sd, in.Pins)
			}
		}
		p.Dirs = append(p.Dirs, dr)
		for _, c := range d.Entries {
			p.Keep[c.Path] = true
			v := classify(c, in.Index, in.Records[c.Path], in.Sigs)
			switch v.Kind {
			case refused:
				p.Refused = append(p.Refused, FileNote{Path: c.Path, Reason: v.Reason})
			case needHash:
				p.Hash = append(p.Hash, c)
			case verified:
				p.place(in.seed(c, v, *in.Records[c.Path], d.NoCopy), in.Pins)
			}
		}
	}
	return p
}

// place puts a verified file into Add or Seeded.
func (p *plan) place(sd seed, pins map[cid.Cid]string) {
	if claim(sd, pins, p.Claimed) {
		p.Add = append(p.Add, sd)
	} else {
		p.Seeded = append(p.Seeded, sd)
	}
}

// claim says whether a verified file must be added: its CID is unknown, or neither pinned nor claimed
// by a file before it (the same bytes in two CacheDirs are one pin; the first is the one added). A
// known CID is claimed.
func claim(sd seed, pins map[cid.Cid]string, claimed map[cid.Cid]bool) bool {
	switch {
	case !sd.CID.Defined():
		return true
	case pins[sd.CID] != "" || claimed[sd.CID]:
		claimed[sd.CID] = true
		return false
	}
	claimed[sd.CID] = true
	return true
}

// remembered are the files verified earlier in a CacheDir that cannot be listed now.
func (in *inputs) remembered(d listing) []seed {
	var out []seed
	for path, rec := range in.Records {
		if rec.Repo != "" && filepath.Dir(path) == filepath.Clean(d.Dir) {
			out = append(out, seed{Path: path, Name: filepath.Base(path), Repo: rec.Repo, NoCopy: d.NoCopy, Rec: *rec,
				CID: knownCID(rec.SHA256, rec.Size, in.CIDs)})
		}
	}
	slices.SortFunc(out, func(a, b seed) int { return strings.Compare(a.Path, b.Path) })
	return out
}

func (in *inputs) seed(c candidate, v verdict, rec record, noCopy bool) seed {
	rec.Repo = v.Repo
	return seed{Path: c.Path, Name: c.Name, Repo: v.Repo, NoCopy: noCopy, Rec: rec, CID: knownCID(rec.SHA256, rec.Size, in.CIDs)}
}

// knownCID is the CID of a file with this sha256 and size when it is known without adding it: derived
// for a single block, remembered from an earlier add for more.
func knownCID(sum digest, size int64, cids map[string]string) cid.Cid {
	if size <= int64(node.Import().ChunkSize) {
		return node.RawCID(sum)
	}
	if c, err := cid.Decode(cids[hex.EncodeToString(sum[:])]); err == nil {
		return c
	}
	return cid.Undef
}

// hashed is one file as the executor's hasher read it.
type hashed struct {
	c    candidate
	st   fileStat // the stat its bytes were read under
	sum  [sha256.Size]byte
	err  error
	gone bool // err, and the file is no longer in the cache
	// For a signature the db does not carry: the repo of its package when it passed the keyring check,
	// else why not, and whether that answer holds for as long as the signature file is unchanged (gpgv
	// refused it over the right package) or depends on its package (not there yet, say) and must be
	// asked again.
	sigRepo, sigWhy string
	sigRetry        bool
}

// judgement is what a hash result means for the pass.
type judgement struct {
	Seed     seed // when Verified
	Verified bool
	Record   *record   // what to remember of the file (nil: nothing)
	Note     *FileNote // why it is not seeded
	Failed   bool      // Note is a failure (retried next pass), not a refusal
	Forget   bool      // the file left the cache while it was read: gone is gone
}

// judge decides on a file whose bytes were just read, as classify does on one whose record vouches for
// it. Like makePlan it reads no file.
func judge(in *inputs, h hashed) judgement {
	c := h.c
	switch {
	case h.err != nil && h.gone:
		return judgement{Forget: true}
	case errors.Is(h.err, context.Canceled):
		return judgement{}
	case errors.Is(h.err, ErrChanged):
		return judgement{Failed: true, Note: &FileNote{Path: c.Path, Reason: "changed while being verified; retried next pass"}}
	case h.err != nil:
		return judgement{Failed: true, Note: &FileNote{Path: c.Path, Reason: h.err.Error()}}
	case h.sigRetry:
		// No record: the next pass (its package landing is an event) checks the signature again.
		return judgement{Note: &FileNote{Path: c.Path, Reason: h.sigWhy}}
	}
	rec := &record{Dev: h.st.Dev, Ino: h.st.Ino, Size: h.st.Size, Mtime: h.st.Mtime, Ctime: h.st.Ctime, Hashed: true,
		SHA256: h.sum, Repo: h.sigRepo, Why: h.sigWhy}
	c.Stat = h.st
	v := classify(c, in.Index, rec, in.Sigs)
	if v.Kind != verified {
		return judgement{Record: rec, Note: &FileNote{Path: c.Path, Reason: v.Reason}}
	}
	rec.Repo = v.Repo
	return judgement{Record: rec, Verified: true, Seed: in.seed(c, v, *rec, in.noCopy(c.Dir))}
}

// noCopy says whether the node references the files of a CacheDir in place.
func (in *inputs) noCopy(dir string) bool {
	for _, d := range in.Dirs {
		if d.Dir == dir {
			return d.NoCopy
		}
	}
	return false
}

// unpins lists our pins that no file in the cache accounts for any more, in a stable order.
func unpins(pins map[cid.Cid]string, keep map[cid.Cid]bool) []cid.Cid {
	var out []cid.Cid
	for c := range pins {
		if !keep[c] {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b cid.Cid) int { return strings.Compare(pins[a], pins[b]) })
	return out
}

// retention splits the pins no file accounts for any more (gone, from unpins) into those to unpin now
// and those kept until keep has passed since the first pass that missed them. since is when each of
// them was first missed, to remember until its unpin is done: a failed unpin must not restart the clock.
func retention(gone []cid.Cid, pins map[cid.Cid]string, prefix string, missed map[string]int64, now time.Time, keep time.Duration) (unpin []cid.Cid, kept []seed, since map[string]int64) {
	since = make(map[string]int64, len(gone))
	for _, c := range gone {
		first, ok := missed[c.String()]
		if !ok {
			first = now.Unix()
		}
		since[c.String()] = first
		if keep <= 0 || !now.Before(time.Unix(first, 0).Add(keep)) {
			unpin = append(unpin, c)
			continue
		}
		if sd, ok := pinnedSeed(c, pins[c], prefix); ok {
			kept = append(kept, sd)
		}
	}
	return unpin, kept, since
}

// pinnedSeed is what a pin's name says of its file (<prefix><repo>/<file>): enough to list it in the
// index, where a pin kept after its file left is still found at the path it had.
func pinnedSeed(c cid.Cid, name, prefix string) (seed, bool) {
	repo, file, ok := strings.Cut(strings.TrimPrefix(name, prefix), "/")
	if !ok || repo == "" || file == "" || strings.Contains(file, "/") {
		return seed{}, false
	}
	return seed{Name: file, Repo: repo, CID: c}, true
}

// indexFiles is the mirror-shaped index of what is seeded (<repo>/os/<arch>/<file>), with the
// fingerprint that tells whether it changed since the last pass.
func indexFiles(seeded []seed, arches []string) (map[string]cid.Cid, string) {
	files := make(map[string]cid.Cid, len(seeded))
	for _, sd := range seeded {
		for _, arch := range alpmdb.ArchDirs(sd.Name, arches) {
			files[path.Join(sd.Repo, "os", arch, sd.Name)] = sd.CID
		}
	}
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%s %s\n", k, files[k])
	}
	return files, hex.EncodeToString(h.Sum(nil))
}

// dangling are the blocks referenced from files in the CacheDirs that no seeded file is: their file
// left the cache.
func dangling(refs map[cid.Cid]string, cacheDirs []string, seeded []seed) map[cid.Cid]string {
	live := make(map[string]bool, len(seeded))
	for _, sd := range seeded {
		live[sd.Path] = true
	}
	out := make(map[cid.Cid]string)
	for b, p := range refs {
		if inDir(p, cacheDirs) && !live[p] {
			out[b] = p
		}
	}
	return out
}

func inDir(p string, dirs []string) bool {
	for _, dir := range dirs {
		if rel, err := filepath.Rel(filepath.Clean(dir), p); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return true
		}
	}
	return false
}

// needing returns one seed for each pin that holds a dangling block; blocks lists the blocks of the
// multi-block ones (a single block is its own CID).
func needing(seeded []seed, blocks map[cid.Cid][]cid.Cid, dangling map[cid.Cid]string) []seed {
	var out []seed
	seen := make(map[cid.Cid]bool)
	for _, sd := range seeded {
		if seen[sd.CID] {
			continue
		}
		seen[sd.CID] = true
		bs := []cid.Cid{sd.CID}
		if sd.multiBlock() {
			bs = blocks[sd.CID]
		}
		if slices.ContainsFunc(bs, func(b cid.Cid) bool { _, ok := dangling[b]; return ok }) {
			out = append(out, sd)
		}
	}
	return out
}

// prune drops the records of files that left the cache, and the CIDs learned for content no cache file
// has any more.
func prune(st *state, keep map[string]bool) {
	live := make(map[string]bool)
	for p, rec := range st.Files {
		if !keep[p] {
			delete(st.Files, p)
			continue
		}
		live[hex.EncodeToString(rec.SHA256[:])] = true
	}
	for sum := range st.CIDs {
		if !live[sum] {
			delete(st.CIDs, sum)
		}
	}
}
