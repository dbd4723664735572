package endpoint_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/catalog"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/endpoint"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

func dial(b *testing.B, n *kubotest.Node) *kubo.Client {
	c := n.Client(b)
	return c
}

// benchCatalog is a catalog of ix in which this machine seeds seeded (sha256 -> CID) and root (when
// not "") is listed through n, as the agent's refresher lists it before any request.
func benchCatalog(b *testing.B, ix *alpmdb.Index, seeded map[[32]byte]cid.Cid, root string, n *kubotest.Node) *catalog.Catalog {
	cat := catalog.New(nil, nil)
	cat.SetIndex(ix)
	cat.SetSeeded(seeded)
	if root != "" {
		r := &catalog.Refresher{Catalog: cat, Followed: []string{root},
			Node: func(context.Context) (catalog.Lister, error) { return dial(b, n), nil }}
		r.Refresh(context.Background())
		if st := cat.Roots(); len(st) != 1 || st[0].Files == 0 {
			b.Fatalf("the index %s was not listed: %+v", root, st)
		}
	}
	return cat
}

// BenchmarkRawPathCost: a package fetched from a peer through the endpoint, against a plain `ipfs cat`
// of the same CID between the same two loopback nodes (kubo's bitswap is the ceiling). Each measurement
// uses a fresh downloading node, so nothing is cached. Goal: at least 0.9x of ipfs cat.
func BenchmarkRawPathCost(b *testing.B) {
	alpmtest.Require(b)
	seederNode := kubotest.Start(b, kubotest.Options{})
	a := dial(b, seederNode)
	for _, mib := range []int{1, 20, 200} {
		data := nodetest.Bytes(uint64(mib), mib<<20)
		name := fmt.Sprintf("p%d-1-1-x86_64.pkg.tar.zst", mib)
		c, err := a.Add(context.Background(), node.File{Path: "/c/" + name, PinName: node.PinPrefix + "core/" + name, Size: int64(len(data)), Content: bytes.NewReader(data)})
		if err != nil {
			b.Fatal(err)
		}
		ix := alpmdb.NewIndex([]alpmdb.Entry{{Repo: "core", FileName: name, Size: int64(len(data)), SHA256: sha256.Sum256(data)}})
		// An index that names the package, as a neighbour's MFS index does: its CID is checked first.
		seederNode.IPFS(b, "files", "mkdir", "-p", "/ix/core/os/x86_64")
		seederNode.IPFS(b, "files", "cp", "/ipfs/"+c.String(), "/ix/core/os/x86_64/"+name)
		index := "/ipfs/" + strings.TrimSpace(seederNode.IPFS(b, "files", "stat", "--hash", "/ix"))
		var viaCat, viaEndpoint, viaIndex []time.Duration
		for i := 0; i < max(b.N, 3); i++ {
			cat := kubotest.Start(b, kubotest.Options{})
			cat.Connect(b, seederNode)
			start := time.Now()
			rc, err := dial(b, cat).Cat(context.Background(), c)
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, rc)
			rc.Close()
			viaCat = append(viaCat, time.Since(start))
			cat.Stop(b)
			if n != int64(len(data)) {
				b.Fatalf("cat: %d bytes", n)
			}

			down := kubotest.Start(b, kubotest.Options{})
			down.Connect(b, seederNode)
			srv := httptest.NewServer(endpoint.New(endpoint.Options{
				Catalog: benchCatalog(b, ix, map[[32]byte]cid.Cid{sha256.Sum256(data): c}, "", down),
				Node:    dial(b, down),
				Hedge:   time.Hour, // no mirror to race here
			}))
			start = time.Now()
			resp, err := http.Get(srv.URL + "/core/os/x86_64/" + name)
			if err != nil {
				b.Fatal(err)
			}
			n, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			viaEndpoint = append(viaEndpoint, time.Since(start))
			srv.Close()
			down.Stop(b)
			if err != nil || n != int64(len(data)) {
				b.Fatalf("endpoint: %d bytes, %v", n, err)
			}
			if mib == 1 {
				continue // one block: its CID follows from the sha256, no index is asked
			}
			down = kubotest.Start(b, kubotest.Options{})
			down.Connect(b, seederNode)
			srv = httptest.NewServer(endpoint.New(endpoint.Options{
				Catalog: benchCatalog(b, ix, nil, index, down),
				Node:    dial(b, down),
				Hedge:   time.Hour,
				Budget:  time.Minute,
			}))
			start = time.Now()
			resp, err = http.Get(srv.URL + "/core/os/x86_64/" + name)
			if err != nil {
				b.Fatal(err)
			}
			n, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			viaIndex = append(viaIndex, time.Since(start))
			srv.Close()
			down.Stop(b)
			if err != nil || n != int64(len(data)) {
				b.Fatalf("endpoint via an index: %d bytes, %v", n, err)
			}
		}
		if len(viaIndex) > 0 {
			ie, ce := alpmtest.Median(viaIndex), alpmtest.Median(viaCat)
			b.ReportMetric(float64(ie.Milliseconds()), fmt.Sprintf("endpoint-index-%dMiB-ms", mib))
			b.ReportMetric(ce.Seconds()/ie.Seconds(), fmt.Sprintf("x-cat-index-%dMiB", mib))
			b.Logf("%3d MiB from a peer, CID from an index (checked before the first byte): endpoint %s, ipfs cat %s: %.2fx",
				mib, ie.Round(time.Millisecond), ce.Round(time.Millisecond), ce.Seconds()/ie.Seconds())
		}
		ce, ee := alpmtest.Median(viaCat), alpmtest.Median(viaEndpoint)
		b.ReportMetric(float64(ce.Milliseconds()), fmt.Sprintf("ipfs-cat-%dMiB-ms", mib))
		b.ReportMetric(float64(ee.Milliseconds()), fmt.Sprintf("endpoint-%dMiB-ms", mib))
		b.ReportMetric(ce.Seconds()/ee.Seconds(), fmt.Sprintf("x-cat-%dMiB", mib))
		b.Logf("%3d MiB from a peer: endpoint %s, ipfs cat %s: %.2fx", mib, ee.Round(time.Millisecond), ce.Round(time.Millisecond), ce.Seconds()/ee.Seconds())
	}
}

// BenchmarkFallback: the latency the endpoint adds when no peer is known to hold the package, against a
// direct GET from the same mirror: it goes to the mirror at once, the hedge plays no part. Goal: at most
// 10 ms more.
func BenchmarkFallback(b *testing.B) {
	alpmtest.Require(b)
	node := kubotest.Start(b, kubotest.Options{})
	data := nodetest.Bytes(99, 400<<10)
	name := "lonely-1-1-x86_64.pkg.tar.zst"
	dir := b.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "core", "os", "x86_64"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "core", "os", "x86_64", name), data, 0o644); err != nil {
		b.Fatal(err)
	}
	m := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer m.Close()
	ix := alpmdb.NewIndex([]alpmdb.Entry{{Repo: "core", FileName: name, Size: int64(len(data)), SHA256: sha256.Sum256(data)}})
	hedge := 300 * time.Millisecond
	srv := httptest.NewServer(endpoint.New(endpoint.Options{
		Catalog: benchCatalog(b, ix, nil, "", node), Node: dial(b, node),
		Mirrors: []string{m.URL + "/$repo/os/$arch"}, Hedge: hedge,
	}))
	defer srv.Close()
	get := func(url string) time.Duration {
		start := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(body, data) {
			b.Fatalf("%s: %d bytes, %v", url, len(body), err)
		}
		return time.Since(start)
	}
	var direct, via []time.Duration
	for i := 0; i < max(b.N, 10); i++ {
		direct = append(direct, get(m.URL+"/core/os/x86_64/"+name))
		via = append(via, get(srv.URL+"/core/os/x86_64/"+name))
	}
	extra := alpmtest.Median(via) - alpmtest.Median(direct)
	b.ReportMetric(float64(alpmtest.Median(via).Microseconds())/1000, "endpoint-ms")
	b.ReportMetric(float64(alpmtest.Median(direct).Microseconds())/1000, "direct-ms")
	b.ReportMetric(float64(extra.Microseconds())/1000, "extra-ms")
	b.Logf("no peer holds it: endpoint %s, straight from the mirror %s: %s extra with a %s hedge (goal: at most 10 ms)",
		alpmtest.Median(via).Round(time.Millisecond), alpmtest.Median(direct).Round(time.Millisecond), extra.Round(time.Millisecond), hedge)
}
