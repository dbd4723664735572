package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster/clustertest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

func dial(t testing.TB, p *clustertest.Peer) (*kubo.Client, *cluster.Client) {
	t.Helper()
	k := p.Kubo.Client(t)
	c, err := cluster.Dial(context.Background(), p.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	return k, c
}

// The cluster-backed node passes the same conformance suite as kubo and the in-memory node.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an IPFS Cluster")
	}
	cl := clustertest.Start(t, 1, kubotest.Options{})
	k, c := dial(t, cl.Peers[0])
	// Each case wants a node with no pins of ours: the previous case's go first.
	nodetest.Run(t, func(t *testing.T) node.Node {
		n, err := cluster.NewNode(context.Background(), k, c, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		pins, err := n.Pins(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		for p := range pins {
			if err := n.Unpin(context.Background(), p); err != nil {
				t.Fatal(err)
			}
		}
		return n
	})
}

func TestClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an IPFS Cluster")
	}
	cl := clustertest.Start(t, 1, kubotest.Options{})
	k, c := dial(t, cl.Peers[0])
	ctx := context.Background()
	data := nodetest.Bytes(1, 1000)
	f := node.File{Path: "/x/a.pkg.tar.zst", PinName: node.PinPrefix + "core/a.pkg.tar.zst", Size: int64(len(data)), Content: bytes.NewReader(data)}
	a, err := k.Add(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	origins, err := k.Addresses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Pin(ctx, a, cluster.PinOptions{Name: f.PinName, Origins: origins, Metadata: map[string]string{cluster.MetaKey: "1"}}); err != nil {
		t.Fatalf("Pin: %v", err)
	}
	pins, err := c.Allocations(ctx)
	if err != nil || len(pins) != 1 || pins[0].Name != f.PinName || pins[0].CID != a.String() || pins[0].Metadata[cluster.MetaKey] != "1" || len(pins[0].Origins) == 0 {
		t.Fatalf("Allocations = %+v, %v", pins, err)
	}
	waitStatus(t, c, a, "pinned", 1)
	if err := c.Unpin(ctx, a); err != nil {
		t.Fatalf("Unpin: %v", err)
	}
	if err := c.Unpin(ctx, a); err != nil {
		t.Fatalf("second Unpin: %v", err)
	}
	if pins, err := c.Allocations(ctx); err != nil || len(pins) != 0 {
		t.Fatalf("Allocations after unpin = %+v, %v", pins, err)
	}
	bad, _ := cid.Decode("bafkqaaa")
	var ae *cluster.APIError
	if _, err := cluster.Dial(ctx, "http://127.0.0.1:1"); !errors.Is(err, cluster.ErrUnreachable) {
		t.Errorf("Dial of nothing: %v", err)
	}
	if err := c.Pin(ctx, bad, cluster.PinOptions{Origins: []string{"/ip4/127.0.0.1/tcp/1"}}); !errors.As(err, &ae) || ae.Code != 400 {
		t.Errorf("Pin with an origin lacking /p2p/: %v, want a 400", err)
	}
}

func TestDialKeepsCredentialsOut(t *testing.T) {
	_, err := cluster.Dial(context.Background(), "http://admin:s3cret@127.0.0.1:1")
	if err == nil || strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "admin") {
		t.Errorf("Dial error shows the credentials or none: %v", err)
	}
	_, err = cluster.Dial(context.Background(), "ftp://admin:s3cret@host")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Dial error shows the credentials or none: %v", err)
	}
}

// waitStatus waits until want peers report status for c.
func waitStatus(t *testing.T, c *cluster.Client, k cid.Cid, status string, want int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	got := 0
	for time.Now().Before(deadline) {
		st, err := c.Status(context.Background(), []cid.Cid{k})
		if err == nil && len(st) == 1 {
			got = 0
			for _, ps := range st[0].PeerMap {
				if ps.Status == status {
					got++
				}
			}
			if got >= want {
				return
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: %d peers %s after 90 s, want %d", k, got, status, want)
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"http://admin:s3cret@127.0.0.1:9094": "http://xxxxx@127.0.0.1:9094",
		"http://127.0.0.1:9094":              "http://127.0.0.1:9094",
		"https://u:p@h/path@x":               "https://xxxxx@h/path@x",
		"not a url":                          "not a url",
		"http://u:pa/ss@h:9094":              "http://xxxxx@h:9094",
	} {
		if got := cluster.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// The cluster peer --cluster names must be the one whose IPFS node --api names: else the cluster could
// place a pin on other peers only and unpin it from the node that seeded it. A mismatch is refused,
// naming the peer's node.
func TestNewNodeWantsTheLocalPeer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an IPFS Cluster")
	}
	cl := clustertest.Start(t, 2, kubotest.Options{})
	k, _ := dial(t, cl.Peers[0])
	_, other := dial(t, cl.Peers[1])
	_, err := cluster.NewNode(context.Background(), k, other, 0, 0)
	if err == nil || !strings.Contains(err.Error(), "not the local node") {
		t.Fatalf("NewNode with another peer's REST API: %v", err)
	}
}
