package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
)

// MetaKey marks the cluster pins the seeder owns, beside their name prefix.
const MetaKey = "pacman-ipfs"

// Node adds through the local kubo node and pins through the cluster. It is a node.Node, and has the
// local node's other capabilities (zero copy, the index, IPNS, garbage collection) through it.
type Node struct {
	*kubo.Client
	cluster     *Client
	replication [2]int
	origins     []string
	self        string // the cluster peer whose REST API c talks to: every pin is allocated to it first
}

var _ node.Node = (*Node)(nil)

// NewNode returns a Node pinning through c with the given replication (0, 0: the cluster's default).
// The local node's addresses become every pin's origins, so that the cluster's other peers fetch from
// it at once. The cluster peer behind c must use the local node as its IPFS node: every pin is
// allocated to that peer first, for without it the cluster, placing a pin on other peers only, would
// unpin it from the node that seeded it.
func NewNode(ctx context.Context, local *kubo.Client, c *Client, replMin, replMax int) (*Node, error) {
	addrs, err := local.Addresses(ctx)
	if err != nil {
		return nil, fmt.Errorf("the local node's addresses, for the cluster's origins: %w", err)
	}
	id := c.Peer()
	if !slices.ContainsFunc(addrs, func(a string) bool { return strings.HasSuffix(a, "/p2p/"+id.IPFS.ID) }) {
		return nil, fmt.Errorf("cluster peer %s uses the IPFS node %s, not the local node: --cluster must name the REST API of the cluster peer whose IPFS node --api names", c.Addr(), id.IPFS.ID)
	}
	return &Node{Client: local, cluster: c, replication: [2]int{replMin, replMax}, origins: addrs, self: id.ID}, nil
}

// Add adds f to the local node (pinned there under its name, as without a cluster, so that this
// machine keeps what it seeds whatever the cluster allocates) and pins it across the cluster.
func (n *Node) Add(ctx context.Context, f node.File) (cid.Cid, error) {
	c, err := n.Client.Add(ctx, f)
	if err != nil {
		return cid.Undef, err
	}
	o := PinOptions{Name: f.PinName, ReplicationMin: n.replication[0], ReplicationMax: n.replication[1],
		Origins: n.origins, Metadata: map[string]string{MetaKey: "1"}, Allocations: []string{n.self}}
	if err := n.cluster.Pin(ctx, c, o); err != nil {
		return cid.Undef, fmt.Errorf("cluster pin %s (%s): %w", c, f.PinName, err)
	}
	return c, nil
}

// Pins lists the cluster's pins named with prefix: the cluster's pinset is the truth the reconcile
// compares the caches with.
func (n *Node) Pins(ctx context.Context, prefix string) (map[cid.Cid]string, error) {
	pins, err := n.cluster.Allocations(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[cid.Cid]string)
	for _, p := range pins {
		if !strings.HasPrefix(p.Name, prefix) {
			continue
		}
		c, err := cid.Decode(p.CID)
		if err != nil {
			return nil, fmt.Errorf("cluster pin %q: %w", p.CID, err)
		}
		out[c] = p.Name
	}
	return out, nil
}

// Unpin removes the cluster's pin, then the local one with its blocks.
func (n *Node) Unpin(ctx context.Context, c cid.Cid) error {
	if err := n.cluster.Unpin(ctx, c); err != nil {
		return fmt.Errorf("cluster unpin %s: %w", c, err)
	}
	return n.Client.Unpin(ctx, c)
}
