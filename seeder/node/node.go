package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// Node is the IPFS node the seeder publishes to. seeder/node/kubo talks to kubo's RPC API, seeder/node/memnode keeps
// everything in memory for tests, and seeder/node/nodetest checks that both behave alike.
type Node interface {
	// Add imports f.Content with the Import parameters below, whatever the node's own configuration, and
	// pins the result recursively under f.PinName. Adding what is already pinned is not an error.
	Add(ctx context.Context, f File) (cid.Cid, error)
	// Pins lists the recursive pins whose name starts with prefix, with their names.
	Pins(ctx context.Context, prefix string) (map[cid.Cid]string, error)
	// Unpin removes the recursive pin on c, then drops the blocks of c that no other pin holds, filestore
	// references included, so that nothing of a file that left the cache stays referenced. Unpinning
	// what is not pinned is not an error.
	Unpin(ctx context.Context, c cid.Cid) error
}

// File is one verified cache file on its way into the node.
type File struct {
	Path    string    // absolute path; with NoCopy the node references the file there instead of copying it
	PinName string    // a name a person can read: PinPrefix + repo + "/" + file name
	Size    int64     // exactly the number of bytes Content yields
	Content io.Reader // read from the descriptor that was verified, never reopened by name
	NoCopy  bool
}

// Referencer is implemented by nodes that can reference files in place (kubo's filestore) instead of
// storing a second copy of their bytes.
type Referencer interface {
	// CanReference says whether files under dir can be added with NoCopy and, either way, why.
	CanReference(ctx context.Context, dir string) (bool, string)
}

// FileReferencer is implemented by nodes that hold blocks by reference to files (kubo's filestore). A
// block's reference points at one file, the first that was added with it: when that file leaves the cache
// while another file still has the same block (the same package in two CacheDirs, or two packages that
// share a chunk), the block stays pinned but cannot be read. The seeder finds and repairs such references.
type FileReferencer interface {
	// FileRefs maps every block held by reference to the absolute path of the file it is read from. It
	// reads no file.
	FileRefs(ctx context.Context) (map[cid.Cid]string, error)
	// Blocks lists root and every block below it.
	Blocks(ctx context.Context, root cid.Cid) ([]cid.Cid, error)
	// DropBlocks removes the given blocks where no pin holds them; others are left, without an error.
	DropBlocks(ctx context.Context, blocks []cid.Cid) error
}

// Indexer is implemented by nodes that can keep a mirror-shaped tree of what is seeded (kubo's MFS), so
// that peers can look up the CIDs of packages larger than one block.
type Indexer interface {
	// SetIndex makes the directory dir hold exactly files (paths relative to dir) and returns its CID.
	SetIndex(ctx context.Context, dir string, files map[string]cid.Cid) (cid.Cid, error)
}

// NamePublisher is implemented by nodes that can point an IPNS name at the index.
type NamePublisher interface {
	PublishName(ctx context.Context, key string, root cid.Cid) (string, error)
}

// GarbageCollector is implemented by nodes that can drop unpinned blocks (kubo's repo gc). The seeder
// asks for it once when the node's disk is full: adds that failed half-way leave blocks nothing pins.
type GarbageCollector interface {
	CollectGarbage(ctx context.Context) error
}

// ErrNoSpace is wrapped by a node's error when its disk is full.
var ErrNoSpace = errors.New("the node's disk is full")

// PinPrefix starts the name of every pin the seeder owns; pins without it are never touched.
const PinPrefix = "pacman-ipfs:"

// ImportParams are the parameters of an add.
type ImportParams struct {
	CIDVersion int
	RawLeaves  bool
	Hash       string
	ChunkSize  int
	Chunker    string
	MaxLinks   int
	Trickle    bool // false: balanced layout
}

// Import returns the IPIP-499 "unixfs-v1-2025" import parameters. Every add passes all of them
// explicitly, so that every seeder in the world derives the same CID from the same package whatever its
// node's Import.* configuration says (kubo still defaults to CIDv0, 256 KiB chunks and 174 links per
// node). A function, not a variable: nothing may change them.
func Import() ImportParams {
	return ImportParams{
		CIDVersion: 1,
		RawLeaves:  true,
		Hash:       "sha2-256",
		ChunkSize:  1 << 20,
		Chunker:    "size-1048576",
		MaxLinks:   1024,
		Trickle:    false,
	}
}

// RawCID is the CID of a package of at most Import.ChunkSize bytes with the given sha256: such a file is
// a single raw block, so its CID follows from the sync db alone (bafkrei…).
func RawCID(sum [sha256.Size]byte) cid.Cid {
	h, err := mh.Encode(sum[:], mh.SHA2_256)
	if err != nil {
		panic(err) // sha2-256 with a 32-byte digest always encodes
	}
	return cid.NewCidV1(cid.Raw, h)
}

// Link is one entry of a directory in the node (an index's).
type Link struct {
	Name string
	CID  cid.Cid
}

// ErrTooMany means a directory lists more entries than the caller asked for.
var ErrTooMany = errors.New("too many entries")
