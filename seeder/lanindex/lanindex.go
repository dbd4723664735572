package lanindex

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"golang.org/x/sync/errgroup"
)

// Node is what the exchange needs of the IPFS node (kubo's RPC API).
type Node interface {
	// LANPeerIDs lists the peers connected over LAN addresses.
	LANPeerIDs(ctx context.Context) ([]string, error)
	// PublishName points the IPNS name of key at root.
	PublishName(ctx context.Context, key string, root cid.Cid) (string, error)
	// Resolve resolves an IPFS path (here /ipns/<peer ID>) to the CID it names.
	Resolve(ctx context.Context, path string) (cid.Cid, error)
	// PeerProtocols lists the protocols a connected peer speaks.
	PeerProtocols(ctx context.Context, peer string) ([]string, error)
	// ID is the node's own peer ID.
	ID(ctx context.Context) (string, error)
}

// Protocol is the libp2p protocol the agents serve each other packages over (see endpoint.Server.ServeLAN),
// through kubo's stream mounting. A LAN peer that speaks it runs an agent now.
const Protocol = "/x/pacman-ipfs/lan/1"

// Limits of one round of lookups.
const (
	MaxPeers       = 32
	ResolveTimeout = 10 * time.Second
	PublishTimeout = 2 * time.Minute
)

// Exchange publishes this machine's index and keeps the indexes of its LAN neighbours.
type Exchange struct {
	node  func(context.Context) (Node, error)
	log   *slog.Logger
	every time.Duration
	// resolveTimeout bounds each question to one neighbour (ResolveTimeout).
	resolveTimeout time.Duration

	mu        sync.Mutex
	roots     map[string]string // peer ID -> /ipfs/<root>
	agents    []string          // LAN peers whose agent serves Protocol, sorted
	probe     func(ctx context.Context, peer string) bool
	self      string        // this node's peer ID
	lanPeers  int           // peers connected over LAN addresses, at the last round
	published string        // the root last published
	pending   string        // the root to publish next ("" or published: nothing to do)
	kick      chan struct{} // wakes the publisher
}

// New returns an Exchange that looks its neighbours up every interval (and at once when woken).
func New(node func(context.Context) (Node, error), every time.Duration, log *slog.Logger) *Exchange {
	return &Exchange{node: node, log: log, every: every, resolveTimeout: ResolveTimeout, roots: map[string]string{},
		kick: make(chan struct{}, 1)}
}

// Publish asks for this machine's name to point at root (an /ipfs/ path). Run's publisher does it, in
// the background; a root handed over while a publish runs is published after it (the newest wins).
func (x *Exchange) Publish(root string) {
	x.mu.Lock()
	if root == "" || root == x.published {
		x.mu.Unlock()
		return
	}
	x.pending = root
	x.mu.Unlock()
	select {
	case x.kick <- struct{}{}:
	default: // a kick is waiting already; it will see the newest root
	}
}

// publishLoop publishes the pending root whenever Publish asks, one publish at a time, until ctx ends.
func (x *Exchange) publishLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-x.kick:
		}
		x.mu.Lock()
		root := x.pending
		x.mu.Unlock()
		if root == "" || root == x.lastPublished() {
			continue
		}
		if x.publish(ctx, root) {
			x.mu.Lock()
			x.published = root
			x.mu.Unlock()
		}
	}
}

func (x *Exchange) lastPublished() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.published
}

func (x *Exchange) publish(ctx context.Context, root string) bool {
	c, err := cid.Decode(root[len("/ipfs/"):])
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, PublishTimeout)
	defer cancel()
	n, err := x.node(ctx)
	if err != nil {
		return false
	}
	name, err := n.PublishName(ctx, "self", c)
	if err != nil {
		x.log.Info("index not published for the LAN", "err", err)
		return false
	}
	x.log.Info("index published for the LAN", "name", name, "root", root)
	return true
}

// Roots returns the index roots found on the LAN, sorted.
func (x *Exchange) Roots() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]string, 0, len(x.roots))
	for _, r := range x.roots {
		out = append(out, r)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// LANPeers is how many peers the node was connected to over LAN addresses at the last round.
func (x *Exchange) LANPeers() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.lanPeers
}

// SetProbe sets what asks a LAN peer's agent whether it serves Protocol; until it is set, no peer is
// taken for an agent.
func (x *Exchange) SetProbe(probe func(ctx context.Context, peer string) bool) {
	x.mu.Lock()
	x.probe = probe
	x.mu.Unlock()
}

// Agents returns this node's peer ID and the LAN peers whose agents serve Protocol, as last seen.
func (x *Exchange) Agents() (self string, peers []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.self, slices.Clone(x.agents)
}

// Run publishes this machine's index when asked (Publish) and looks the neighbours' names up until ctx
// is done, and returns when both have stopped: soon after the start (mDNS finds the
// neighbours within a second or so, and they publish after their first pass), then every interval.
func (x *Exchange) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait() // the publisher ends with Run
	wg.Go(func() { x.publishLoop(ctx) })
	wait := min(time.Second, x.every)
	for {
		x.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, x.every)
	}
}

// lookUpParallel is how many neighbours are asked at once: one that withholds its name (or its agent's
// answer) costs its own ResolveTimeout, not everybody's.
const lookUpParallel = 8

// lookUp asks every peer, in parallel, whether its agent answers and what its name resolves to.
func (x *Exchange) lookUp(ctx context.Context, n Node, probe func(context.Context, string) bool, peers []string) (map[string]string, []string) {
	var mu sync.Mutex
	found := map[string]string{}
	var agents []string
	var g errgroup.Group
	g.SetLimit(lookUpParallel)
	for _, p := range peers {
		g.Go(func() error {
			agent := x.isAgent(ctx, n, probe, p)
			rctx, cancel := context.WithTimeout(ctx, x.resolveTimeout)
			c, err := n.Resolve(rctx, "/ipns/"+p)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if agent {
				agents = append(agents, p)
			}
			if err == nil {
				found[p] = "/ipfs/" + c.String()
			} // else it publishes nothing (yet), or is not pacman-ipfs at all
			return nil
		})
	}
	_ = g.Wait() // nothing fails the round: a peer that does not answer is simply not found
	return found, agents
}

// isAgent says whether a peer runs an agent that answers the LAN protocol. kubo registers its stream
// mounting as one handler for every protocol under /x/, which is all a peer's node tells of it; whether
// its agent is there and answers is asked of the agent.
func (x *Exchange) isAgent(ctx context.Context, n Node, probe func(context.Context, string) bool, p string) bool {
	pctx, cancel := context.WithTimeout(ctx, x.resolveTimeout)
	protos, err := n.PeerProtocols(pctx, p)
	cancel()
	return err == nil && slices.Contains(protos, "/x/") && probe != nil && probe(ctx, p)
}

func (x *Exchange) round(ctx context.Context) {
	n, err := x.node(ctx)
	if err != nil {
		return
	}
	peers, err := n.LANPeerIDs(ctx)
	if err != nil {
		return
	}
	x.mu.Lock()
	x.lanPeers = len(peers)
	x.mu.Unlock()
	if len(peers) > MaxPeers {
		peers = peers[:MaxPeers]
	}
	self, _ := n.ID(ctx)
	x.mu.Lock()
	probe := x.probe
	x.mu.Unlock()
	found, agents := x.lookUp(ctx, n, probe, peers)
	x.mu.Lock()
	for p, r := range found {
		if x.roots[p] != r {
			x.log.Info("index found on the LAN", "peer", p, "root", r)
		}
	}
	x.roots = found // neighbours gone are forgotten
	slices.Sort(agents)
	if !slices.Equal(agents, x.agents) {
		x.log.Info("agents on the LAN", "peers", agents)
	}
	x.agents, x.self = agents, self
	x.mu.Unlock()
}
