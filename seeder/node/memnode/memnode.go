package memnode

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	bsrv "github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	chunker "github.com/ipfs/boxo/chunker"
	offline "github.com/ipfs/boxo/exchange/offline"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

var _ node.Node = (*Node)(nil)

// Node keeps blocks and pins in memory. The zero value is not usable: call New.
type Node struct {
	mu     sync.Mutex
	dag    ipld.DAGService
	pins   map[cid.Cid]string
	blocks map[cid.Cid][]cid.Cid // the blocks of each pinned DAG, for Unpin
	adds   int
	// FailWith, when set, makes every call fail with it (a node that went away).
	FailWith error
}

// New returns an empty node.
func New() *Node {
	return &Node{dag: memDAG(), pins: map[cid.Cid]string{}, blocks: map[cid.Cid][]cid.Cid{}}
}

// Import builds the UnixFS DAG of r with the seeder's import parameters into dag and returns its root.
// With a nil dag it only computes the CID.
func Import(ctx context.Context, dag ipld.DAGService, r io.Reader) (cid.Cid, error) {
	if dag == nil {
		dag = memDAG()
	}
	prefix, err := merkledag.PrefixForCidVersion(node.Import().CIDVersion)
	if err != nil {
		return cid.Undef, err
	}
	prefix.MhType = mh.SHA2_256
	params := helpers.DagBuilderParams{
		Maxlinks:   node.Import().MaxLinks,
		RawLeaves:  node.Import().RawLeaves,
		CidBuilder: &prefix,
		Dagserv:    dag,
	}
	db, err := params.New(chunker.NewSizeSplitter(r, int64(node.Import().ChunkSize)))
	if err != nil {
		return cid.Undef, err
	}
	root, err := balanced.Layout(db)
	if err != nil {
		return cid.Undef, err
	}
	return root.Cid(), nil
}

// Add implements node.Node.
func (n *Node) Add(ctx context.Context, f node.File) (cid.Cid, error) {
	if err := n.failed(); err != nil {
		return cid.Undef, err
	}
	c, err := Import(ctx, n.dag, io.LimitReader(f.Content, f.Size))
	if err != nil {
		return cid.Undef, fmt.Errorf("add %s: %w", f.Path, err)
	}
	var all []cid.Cid
	if err := merkledag.Walk(ctx, merkledag.GetLinksWithDAG(n.dag), c, func(k cid.Cid) bool {
		all = append(all, k)
		return true
	}); err != nil {
		return cid.Undef, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.adds++
	if _, ok := n.pins[c]; !ok {
		n.pins[c] = f.PinName
	}
	n.blocks[c] = all
	return c, nil
}

// Pins implements node.Node.
func (n *Node) Pins(ctx context.Context, prefix string) (map[cid.Cid]string, error) {
	if err := n.failed(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[cid.Cid]string)
	for c, name := range n.pins {
		if strings.HasPrefix(name, prefix) {
			out[c] = name
		}
	}
	return out, nil
}

// Unpin implements node.Node: the pin goes, and so do the blocks no other pin holds.
func (n *Node) Unpin(ctx context.Context, c cid.Cid) error {
	if err := n.failed(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.pins, c)
	held := make(map[cid.Cid]bool)
	for root := range n.pins {
		for _, b := range n.blocks[root] {
			held[b] = true
		}
	}
	for _, b := range n.blocks[c] {
		if !held[b] {
			_ = n.dag.Remove(ctx, b)
		}
	}
	delete(n.blocks, c)
	return nil
}

// Has says whether the node holds the block c.
func (n *Node) Has(ctx context.Context, c cid.Cid) bool {
	_, err := n.dag.Get(ctx, c)
	return err == nil
}

// Adds counts the calls to Add that reached the node.
func (n *Node) Adds() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.adds
}

func (n *Node) failed() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.FailWith
}

// memDAG is an in-memory, thread-safe DAG service that fetches nothing: where DAG nodes are built before
// they go anywhere. (boxo's merkledag/test.Mock is the same, from a test package.)
func memDAG() ipld.DAGService {
	bs := blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	return merkledag.NewDAGService(bsrv.New(bs, offline.Exchange(bs)))
}
