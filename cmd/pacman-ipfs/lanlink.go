package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/endpoint"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/lanindex"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
)

// lanLink joins this agent to its LAN neighbours' agents through the node's stream mounting
// (Experimental.Libp2pStreamMounting, which pacman-ipfs-kubo-init turns on): the node hands streams of
// lanindex.Protocol to a loopback listener of the agent's, and carries the agent's requests to a
// neighbour over its connection to that peer. The agent itself never listens on the network.
type lanLink struct {
	api    *lazyKubo
	x      *lanindex.Exchange
	ln     net.Listener
	hello  *http.Client
	log    *slog.Logger
	warned bool
}

// maxLANConns bounds the neighbours' connections to the LAN listener.
const maxLANConns = 64

// newLANLink opens the LAN listener and makes the link the exchange asks whether a peer runs an agent.
func newLANLink(api *lazyKubo, x *lanindex.Exchange, log *slog.Logger) (*lanLink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("LAN listener: %w", err)
	}
	l := &lanLink{api: api, x: x, ln: ln, hello: endpoint.NewLANClient(), log: log}
	x.SetProbe(l.probe)
	return l, nil
}

// run serves h (the endpoint's ServeLAN) on the LAN listener and keeps it registered with the node
// until ctx ends; then it unregisters it: the node must not hand neighbours' streams to a port nobody
// listens on. A neighbour's download in flight is work, as pacman's are (busy).
func (l *lanLink) run(ctx context.Context, h http.HandlerFunc, busy func() (done func())) error {
	g := newGroup(ctx, l.log)
	srv := boundedServer(h, busy, l.log)
	srv.ConnContext = peerContext // each neighbour gets a bounded share (endpoint.ServeLAN)
	g.Go("LAN listener", func(ctx context.Context) error {
		return serveBounded(ctx, srv, peerListener{l.ln}, maxLANConns)
	})
	g.Go("LAN registration", func(ctx context.Context) error { l.keep(ctx); return nil })
	err := g.Wait()
	cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, cerr := l.api.client(cctx); cerr == nil {
		if cerr := c.P2PClose(cctx, lanindex.Protocol); cerr != nil {
			l.log.Warn("the LAN protocol is still mounted on the node", "err", cerr)
		}
	}
	return err
}

// keep registers the listener with the node, and again whenever the node lost it (a restarted node).
func (l *lanLink) keep(ctx context.Context) {
	target := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.ln.Addr().(*net.TCPAddr).Port)
	registered := false
	for {
		if c, err := l.api.client(ctx); err == nil {
			registered = l.register(ctx, c, target, registered)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// register mounts the LAN protocol on the node unless it is mounted already, and says whether it has
// been registered (now or before).
func (l *lanLink) register(ctx context.Context, c *kubo.Client, target string, registered bool) bool {
	if ok, _ := c.P2PListening(ctx, lanindex.Protocol, target); ok {
		return registered
	}
	if err := c.P2PListen(ctx, lanindex.Protocol, target); err != nil {
		if !l.warned {
			l.log.Warn("neighbours cannot fetch through this machine, nor it through them: the node refused to mount the LAN protocol (is Experimental.Libp2pStreamMounting on?)", "err", err)
			l.warned = true
		}
		return registered
	}
	l.log.Info("serving the LAN through the node", "protocol", lanindex.Protocol, "listener", target, "again", registered)
	if why, _ := c.BitswapStartRace(ctx); why != "" {
		l.log.Warn(why)
	}
	return true
}

// owner elects the LAN machine that downloads the package with this sha256 from its mirrors for the
// whole LAN: of this node and the neighbours whose agents serve the LAN protocol, the one whose peer ID
// hashed with the package's sha256 is highest (rendezvous hashing). Every machine that sees the same
// neighbours elects the same one, the packages of an upgrade spread over the machines, and a machine
// leaving moves only its own share. It returns the base URL of the node's forward to the elected
// neighbour, or "" when it is this machine, nobody else, or the forward fails.
func (l *lanLink) owner(ctx context.Context, sum [sha256.Size]byte) (base, peer string) {
	self, agents := l.x.Agents()
	if self == "" || len(agents) == 0 {
		return "", ""
	}
	best, bestScore := self, score(self, sum)
	for _, p := range agents {
		if s := score(p, sum); bytes.Compare(s[:], bestScore[:]) > 0 {
			best, bestScore = p, s
		}
	}
	if best == self {
		return "", ""
	}
	base, err := l.forward(ctx, best)
	if err != nil {
		l.log.Info("no forward to the neighbour elected for a package: the mirrors it is", "peer", best, "err", err)
		return "", ""
	}
	return base, best
}

// forward returns the base URL of the node's forward to peer's agent.
func (l *lanLink) forward(ctx context.Context, peer string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := l.api.client(ctx)
	if err != nil {
		return "", err
	}
	addr, err := c.P2PForward(ctx, lanindex.Protocol, peer)
	if err != nil {
		return "", err
	}
	return "http://" + addr, nil
}

// probe says whether peer's agent answers the LAN protocol.
func (l *lanLink) probe(ctx context.Context, peer string) bool {
	base, err := l.forward(ctx, peer)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return endpoint.Hello(ctx, l.hello, base)
}

func score(peer string, sum [sha256.Size]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(peer))
	h.Write(sum[:])
	return [sha256.Size]byte(h.Sum(nil))
}

// peerListener accepts the connections the node opens for neighbours' streams (p2p listen
// --report-peer-id): each starts with "<peer ID>\n", read off before the stream's own bytes.
type peerListener struct{ net.Listener }

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &peerConn{Conn: c}, nil
}

// peerConn is such a connection. The peer ID is read at the first Read (the HTTP server's, in the
// connection's own goroutine), so that Accept never waits on a neighbour.
type peerConn struct {
	net.Conn
	once sync.Once
	mu   sync.Mutex
	peer string
	err  error
}

// maxPeerIDLine bounds the line the node writes (a peer ID is about 52 characters).
const maxPeerIDLine = 128

func (c *peerConn) Read(p []byte) (int, error) {
	c.once.Do(c.readPeer)
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// readPeer reads the first line a byte at a time: nothing of the stream itself is consumed.
func (c *peerConn) readPeer() {
	var b [1]byte
	id := make([]byte, 0, 64)
	for len(id) <= maxPeerIDLine {
		if _, err := io.ReadFull(c.Conn, b[:]); err != nil {
			c.err = err
			return
		}
		if b[0] == '\n' {
			c.mu.Lock()
			c.peer = string(id)
			c.mu.Unlock()
			return
		}
		id = append(id, b[0])
	}
	c.err = errors.New("the node reported no peer ID for this stream")
}

// Peer is the neighbour the stream comes from ("" before the first Read).
func (c *peerConn) Peer() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer
}

// peerContext is the LAN server's ConnContext: its requests carry the neighbour they come from.
func peerContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*peerConn); ok {
		return endpoint.WithPeer(ctx, pc.Peer)
	}
	return ctx
}
