package lanindex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// fakeNode is the pure logic's double; TestLANPackagedNodesMeetAndShare (cmd/pacman-ipfs) runs the
// exchange between real kubo nodes on a namespace LAN.
type fakeNode struct {
	mu        sync.Mutex
	peers     []string
	names     map[string]cid.Cid // what /ipns/<peer> resolves to
	resolved  []string
	published []cid.Cid
	protos    map[string][]string
	withheld  map[string]bool // names that never resolve: the asker waits for its own timeout
}

func (f *fakeNode) PeerProtocols(_ context.Context, p string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.protos[p], nil
}

func (f *fakeNode) ID(context.Context) (string, error) { return "self", nil }

func (f *fakeNode) LANPeerIDs(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers), nil
}

func (f *fakeNode) PublishName(_ context.Context, key string, root cid.Cid) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.published = append(f.published, root)
	return "/ipns/self", nil
}

func (f *fakeNode) Resolve(ctx context.Context, p string) (cid.Cid, error) {
	f.mu.Lock()
	withheld := f.withheld[p[len("/ipns/"):]]
	f.mu.Unlock()
	if withheld {
		<-ctx.Done()
		return cid.Undef, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolved = append(f.resolved, p)
	if c, ok := f.names[p[len("/ipns/"):]]; ok {
		return c, nil
	}
	return cid.Undef, errors.New("not found")
}

func testCID(i int) cid.Cid {
	h, _ := mh.Sum([]byte{byte(i)}, mh.SHA2_256, -1)
	return cid.NewCidV1(cid.DagProtobuf, h)
}

func TestRoundBoundsForgetsAndSkipsNonPublishers(t *testing.T) {
	f := &fakeNode{names: map[string]cid.Cid{}, protos: map[string][]string{}}
	for i := range MaxPeers + 10 {
		p := fmt.Sprintf("peer%02d", i)
		f.peers = append(f.peers, p)
		if i%3 == 0 {
			f.protos[p] = []string{"/ipfs/bitswap/1.2.0", "/x/"}
		}
		if i%2 == 0 {
			f.names[p] = testCID(i)
		}
	}
	x := New(func(context.Context) (Node, error) { return f, nil }, time.Hour, slog.New(slog.DiscardHandler))
	// Every sixth peer mounts something under /x/ that is not an agent.
	x.SetProbe(func(_ context.Context, p string) bool { var i int; _, _ = fmt.Sscanf(p, "peer%d", &i); return i%6 != 3 })
	x.round(context.Background())
	if len(f.resolved) != MaxPeers {
		t.Errorf("resolved %d names in a round, want at most %d", len(f.resolved), MaxPeers)
	}
	if got := len(x.Roots()); got != MaxPeers/2 {
		t.Errorf("%d roots, want %d (the peers that publish one)", got, MaxPeers/2)
	}
	if self, agents := x.Agents(); self != "self" || len(agents) != (MaxPeers+5)/6 {
		t.Errorf("agents %s %v: want self and the %d peers of the round that answer the probe", self, agents, (MaxPeers+5)/6)
	}
	f.peers = f.peers[:2] // the others left the LAN
	x.round(context.Background())
	if got := x.Roots(); !slices.Equal(got, []string{"/ipfs/" + testCID(0).String()}) {
		t.Errorf("after the others left: %v", got)
	}
	if _, agents := x.Agents(); !slices.Equal(agents, []string{"peer00"}) {
		t.Errorf("agents after the others left: %v", agents)
	}
}

// Neighbours that withhold their names (many identities of one hostile machine) are asked in parallel,
// each within its own timeout: the others' indexes are found in the same round.
func TestRoundWithWithheldNames(t *testing.T) {
	f := &fakeNode{names: map[string]cid.Cid{}, protos: map[string][]string{}, withheld: map[string]bool{}}
	for i := range 24 {
		p := fmt.Sprintf("peer%02d", i)
		f.peers = append(f.peers, p)
		if i < 20 {
			f.withheld[p] = true
		} else {
			f.names[p] = testCID(i)
		}
	}
	x := New(func(context.Context) (Node, error) { return f, nil }, time.Hour, slog.New(slog.DiscardHandler))
	x.resolveTimeout = 200 * time.Millisecond
	start := time.Now()
	x.round(context.Background())
	if got := len(x.Roots()); got != 4 {
		t.Errorf("%d roots found, want the 4 that publish", got)
	}
	t.Logf("a round with 20 withheld names of 24 took %s (each withheld name costs %s, %d asked at once)",
		time.Since(start).Round(time.Millisecond), x.resolveTimeout, lookUpParallel)
}

// Publish asks; Run's publisher publishes each new root once, and ends with Run.
func TestPublishOnlyChanges(t *testing.T) {
	f := &fakeNode{}
	x := New(func(context.Context) (Node, error) { return f, nil }, time.Hour, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Run(ctx); close(done) }()
	published := func(root string) bool {
		deadline := time.Now().Add(5 * time.Second)
		for x.lastPublished() != root {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
		return true
	}
	root := "/ipfs/" + testCID(1).String()
	for range 3 {
		x.Publish(root)
		if !published(root) {
			t.Fatal("not published")
		}
	}
	x.Publish("")
	// A newer root is published too.
	root2 := "/ipfs/" + testCID(2).String()
	x.Publish(root2)
	if !published(root2) {
		t.Fatal("the newer root not published")
	}
	cancel()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.published) != 2 {
		t.Errorf("published %d times for two roots", len(f.published))
	}
}
