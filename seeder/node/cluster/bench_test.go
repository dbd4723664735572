package cluster_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster/clustertest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

// BenchmarkSecondReplica: a 200 MB package added on one peer of a 3-peer cluster and pinned with
// replication 2, until the second replica is PINNED; beside it, in the same run, the raw transfer: a
// fourth kubo node connected to the first pins the same CID (`ipfs pin add`).
func BenchmarkSecondReplica(b *testing.B) {
	cl := clustertest.Start(b, 3, kubotest.Options{})
	ctx := context.Background()
	local := cl.Peers[0]
	k, c := dial(b, local)
	n, err := cluster.NewNode(ctx, k, c, 2, 2)
	if err != nil {
		b.Fatal(err)
	}
	data := nodetest.Bytes(99, 200<<20)
	start := time.Now()
	root, err := n.Add(ctx, node.File{Path: "/x/big-1-1-x86_64.pkg.tar.zst", PinName: node.PinPrefix + "extra/big-1-1-x86_64.pkg.tar.zst", Size: int64(len(data)), Content: bytes.NewReader(data)})
	if err != nil {
		b.Fatal(err)
	}
	added := time.Since(start)
	for pinned := 0; pinned < 2; {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("the second replica is not pinned after 5 minutes")
		}
		time.Sleep(100 * time.Millisecond)
		st, err := c.Status(ctx, nil)
		if err != nil || len(st) != 1 {
			continue
		}
		pinned = 0
		for _, ps := range st[0].PeerMap {
			if ps.Status == "pinned" {
				pinned++
			}
		}
	}
	replica := time.Since(start) - added

	other := kubotest.Start(b, kubotest.Options{})
	other.Connect(b, local.Kubo)
	t0 := time.Now()
	other.IPFS(b, "pin", "add", "--progress=false", root.String())
	raw := time.Since(t0)
	b.ReportMetric(added.Seconds(), "add-s")
	b.ReportMetric(replica.Seconds(), "second-replica-s")
	b.ReportMetric(raw.Seconds(), "ipfs-pin-add-s")
	b.Logf("200 MB, replication 2 on 3 peers: added and cluster-pinned in %s, second replica PINNED %s later; "+
		"a plain kubo node pinning the same CID from the first: %s (%.2fx)", added.Round(time.Millisecond),
		replica.Round(time.Millisecond), raw.Round(time.Millisecond), replica.Seconds()/raw.Seconds())
}
