package reconcile

import (
	"crypto/sha256"
	"fmt"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"io/fs"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
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
	reasonNoSig      = "sync db carries no signature for this package, and no keyring to check it with"
	reasonSize       = "size mismatch"
	reasonChecksum   = "sha256 mismatch"
	reasonBadSig     = "signature not valid"
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
			return verdict{Kind: refused, Reason: reasonNoSig}, false
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

// seed is a verified file that must be pinned.
type seed struct {
	Path, Name, Repo string
	Size             int64
	SHA256           [sha256.Size]byte
	CID              cid.Cid // cid.Undef until known: derived for one-block files, learned by adding others
	NoCopy           bool
}

// pinName is how a seed's pin reads in `ipfs pin ls --names`.
func (s seed) pinName() string { return node.PinPrefix + s.Repo + "/" + s.Name }

// plan is what one reconcile does to the node.
type plan struct {
	Add    []seed // not known to be pinned: add (and pin) them
	Seeded []seed // already pinned under their CID
}

// makePlan splits the verified files into those already pinned and those to add. Several files with the
// same CID are one pin; the first (in CacheDir order) is the one added.
func makePlan(seeds []seed, pins map[cid.Cid]string) plan {
	var p plan
	adding := make(map[cid.Cid]bool)
	for _, s := range seeds {
		switch {
		case !s.CID.Defined():
			p.Add = append(p.Add, s)
		case pins[s.CID] != "":
			p.Seeded = append(p.Seeded, s)
		case adding[s.CID]:
			p.Seeded = append(p.Seeded, s)
		default:
			adding[s.CID] = true
			p.Add = append(p.Add, s)
		}
	}
	return p
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
