package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
)

// A package a neighbour holds under a CID only its index gives must be fetched whole and checked
// before any of it reaches pacman, which takes longer than pacman waits for a first byte when the
// package is large. --verify-budget 1ms stands for "larger than the budget" here, whatever the size.
func TestLargePackageFromANeighbour(t *testing.T) {
	big := alpmtest.Pkg{Name: "big", Size: 24 << 20, Ext: ".pkg.tar"}
	for _, tt := range []struct {
		name     string
		mirror   string // "up" (slow: 2 MB/s), "down"
		waits    bool   // pacman.conf has DisableDownloadTimeout
		wantPeer bool   // most of the bytes from the neighbour
	}{
		// The mirror's bytes keep pacman going while the neighbour's copy is checked; the rest is the
		// checked copy's.
		{"mirror up", "up", false, true},
		// pacman waits as long as it takes: the checked copy, all of it.
		{"mirror down, DisableDownloadTimeout", "down", true, true},
		// Nothing can serve within pacman's wait: a clean error, never an empty reply; the check goes
		// on, and the next try gets the package from the neighbour.
		{"mirror down", "down", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newEndpointWorld(t, []alpmtest.Pkg{big}, "big")
			mirror := w.m.template()
			if tt.mirror == "down" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				mirror = "http://" + ln.Addr().String() + "/$repo/os/$arch"
				ln.Close() // connection refused: the uplink is down
			} else {
				w.m.mu.Lock()
				w.m.rate = 2 << 20
				w.m.mu.Unlock()
			}
			// The dbs are synced while the uplink is up; then pacman's Servers are the recipe's: the
			// endpoint, then the mirror.
			w.b.Servers = map[string][]string{"core": {w.m.template()}}
			w.b.WriteConf(t)
			w.b.Pacman(t, "-Sy")
			w.b.Servers = map[string][]string{"core": {w.endpoint() + "/$repo/os/$arch", mirror}}
			if tt.waits {
				w.b.Options = []string{"DisableDownloadTimeout"}
			}
			w.b.WriteConf(t)
			w.m.sent.Store(0)
			w.startB(t, "--mirrorlist", mirrorlist(t, mirror), "--index", w.indexA, "--verify-budget", "1ms")
			out, err := w.b.PacmanErr("-Sw", "big")
			if tt.name == "mirror down" {
				if err == nil {
					t.Fatalf("pacman got the package within a 1 ms budget with no mirror: %s", out)
				}
				if strings.Contains(out, "Empty reply") || !strings.Contains(out, "502") {
					t.Errorf("want a clean 502, got:\n%s", out)
				}
				alpmtest.Eventually(t, time.Minute, "the check goes on and the neighbour's copy is trusted", func() bool {
					return strings.Contains(w.log(t), "a neighbour's copy checked")
				})
				out, err = w.b.PacmanErr("-Sw", "big")
			}
			if err != nil {
				t.Fatalf("pacman -Sw big: %v\n%s\nagent log:\n%s", err, out, w.log(t))
			}
			if got := w.b.CachedPackages(t); len(got) != 1 {
				t.Fatalf("cached: %v", got)
			}
			peer := metricValue(t, w.endpoint(), `pacman_ipfs_endpoint_bytes_total{source="peer"}`)
			sent := w.m.sent.Load()
			t.Logf("%s: bytes from the peer %v, the mirror sent %d of %d", tt.name, peer, sent, fileSize(t, w.repo.Path(big)))
			if tt.wantPeer && peer <= 0 {
				t.Errorf("the package did not come from the neighbour:\n%s", w.log(t))
			}
			if tt.mirror == "up" && sent >= int64(fileSize(t, w.repo.Path(big)))/2 {
				t.Errorf("the mirror sent %d bytes of %d: the neighbour's checked copy did not take over", sent, fileSize(t, w.repo.Path(big)))
			}
		})
	}
}
