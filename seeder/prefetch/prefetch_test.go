package prefetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/catalog"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

// fakeNode is the pure logic's double: TestLANPrefetchUpgrades (cmd/pacman-ipfs) prefetches between
// real kubo nodes on a namespace LAN.
type fakeNode struct {
	data    map[cid.Cid][]byte // what the LAN can deliver
	pins    map[cid.Cid]string
	read    map[cid.Cid]int64 // bytes fetched, by CID
	dropped map[cid.Cid]bool
}

func (f *fakeNode) PinAdd(_ context.Context, c cid.Cid, name string) error {
	if _, ok := f.data[c]; !ok {
		return errors.New("nobody has it")
	}
	f.pins[c] = name
	return nil
}

func (f *fakeNode) Pins(_ context.Context, prefix string) (map[cid.Cid]string, error) {
	out := map[cid.Cid]string{}
	for c, n := range f.pins {
		if strings.HasPrefix(n, prefix) {
			out[c] = n
		}
	}
	return out, nil
}

func (f *fakeNode) Unpin(_ context.Context, c cid.Cid) error { delete(f.pins, c); return nil }

func (f *fakeNode) Cat(_ context.Context, c cid.Cid) (io.ReadCloser, error) {
	return io.NopCloser(&counting{r: bytes.NewReader(f.data[c]), n: func(k int) { f.read[c] += int64(k) }}), nil
}

func (f *fakeNode) Blocks(_ context.Context, c cid.Cid) ([]cid.Cid, error) { return []cid.Cid{c}, nil }

func (f *fakeNode) DropBlocks(_ context.Context, bs []cid.Cid) error {
	for _, b := range bs {
		if _, pinned := f.pins[b]; !pinned {
			f.dropped[b] = true
		}
	}
	return nil
}

type counting struct {
	r io.Reader
	n func(int)
}

func (c *counting) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n(k)
	return k, err
}

func dagCID(i byte) cid.Cid {
	h, _ := mh.Sum([]byte{i}, mh.SHA2_256, -1)
	return cid.NewCidV1(cid.DagProtobuf, h)
}

func TestRound(t *testing.T) {
	big, other, small := nodetest.Bytes(1, 3<<20), nodetest.Bytes(2, 3<<20), nodetest.Bytes(3, 300<<10)
	entries := []alpmdb.Entry{
		{Repo: "core", FileName: "big-2-1-x86_64.pkg.tar.zst", Size: int64(len(big)), SHA256: sha256.Sum256(big)},
		{Repo: "core", FileName: "liar-2-1-x86_64.pkg.tar.zst", Size: int64(len(big)), SHA256: sha256.Sum256(nodetest.Bytes(4, 3<<20))},
		{Repo: "core", FileName: "small-2-1-any.pkg.tar.zst", Size: int64(len(small)), SHA256: sha256.Sum256(small)},
		{Repo: "core", FileName: "fake-2-1-any.pkg.tar.zst", Size: int64(len(small)), SHA256: sha256.Sum256(small)},
		{Repo: "core", FileName: "nobody-2-1-any.pkg.tar.zst", Size: 10, SHA256: sha256.Sum256([]byte("0123456789"))},
		{Repo: "core", FileName: "bloat-2-1-x86_64.pkg.tar.zst", Size: 3 << 20, SHA256: sha256.Sum256(nodetest.Bytes(5, 3<<20))},
	}
	ix := alpmdb.NewIndex(entries)
	// What a neighbour's index lists, as the catalog's refresher found it.
	cat := catalog.New(nil, nil)
	cat.SetIndex(ix)
	// A root that lies loses all its claims (see catalog.Refute): the two liars are roots of their own.
	cat.SetListing(&catalog.Listing{Root: "/ipfs/bafyroot", Complete: true, Files: map[string]cid.Cid{
		"big-2-1-x86_64.pkg.tar.zst": dagCID(1),
		"small-2-1-any.pkg.tar.zst":  node.RawCID(sha256.Sum256(small)), // "any": under the machine's arch
		"fake-2-1-any.pkg.tar.zst":   dagCID(3),                         // one chunk has one CID only
	}})
	cat.SetListing(&catalog.Listing{Root: "/ipfs/bafyliar", Complete: true, Files: map[string]cid.Cid{
		"liar-2-1-x86_64.pkg.tar.zst": dagCID(2), // other content
	}})
	cat.SetListing(&catalog.Listing{Root: "/ipfs/bafybloat", Complete: true, Files: map[string]cid.Cid{
		"bloat-2-1-x86_64.pkg.tar.zst": dagCID(4), // a 3 MiB package mapped to 40 MiB
	}})
	n := &fakeNode{
		data: map[cid.Cid][]byte{dagCID(1): big, dagCID(2): other, node.RawCID(sha256.Sum256(small)): small, dagCID(3): small,
			dagCID(4): nodetest.Bytes(6, 40<<20)},
		read: map[cid.Cid]int64{}, dropped: map[cid.Cid]bool{},
		pins: map[cid.Cid]string{dagCID(9): PinPrefix + "core/old-1-1-x86_64.pkg.tar.zst", dagCID(8): node.PinPrefix + "core/seeded"},
	}
	upgrades := []string{}
	for _, e := range entries {
		upgrades = append(upgrades, e.FileName)
	}
	p := New(Options{
		Node:     func(context.Context) (Node, error) { return n, nil },
		Catalog:  cat,
		Upgrades: func(context.Context) ([]string, error) { return upgrades, nil },
	})
	rep, err := p.Round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// big and small are fetched and trusted; liar is fetched, found wrong and dropped; fake is never
	// asked for; nobody is not on the LAN; old is no longer an upgrade; the seeder's pin is not ours.
	if rep.Fetched != 2 || rep.Failed != 2 || rep.Unpinned != 1 || rep.Wanted != 4 {
		t.Errorf("report %+v: want 4 wanted, 2 fetched, 2 failed, 1 unpinned", rep)
	}
	// Nothing larger than the db's size is fetched for a package, the bytes fetched count against the
	// round's limit, and what was refused is removed from the node.
	if got := n.read[dagCID(4)]; got > 3<<20+1 {
		t.Errorf("%d bytes fetched for a 3 MiB package an index maps to 40 MiB", got)
	}
	if rep.Bytes != n.read[dagCID(1)]+n.read[dagCID(2)]+n.read[dagCID(4)]+n.read[node.RawCID(sha256.Sum256(small))] {
		t.Errorf("the round counts %d bytes, fetched %v", rep.Bytes, n.read)
	}
	for _, c := range []cid.Cid{dagCID(2), dagCID(4)} {
		if !n.dropped[c] {
			t.Errorf("the blocks of refused %s were left in the node", c)
		}
	}
	for _, e := range entries {
		h := cat.Lookup(e)
		checked := h.Source == catalog.FromChecked
		// fake has small's sha256: the catalog knows those bytes, whatever the file is called.
		if want := e.FileName != "liar-2-1-x86_64.pkg.tar.zst" && e.FileName != "nobody-2-1-any.pkg.tar.zst" && e.FileName != "bloat-2-1-x86_64.pkg.tar.zst"; checked != want {
			t.Errorf("%s: %+v, want checked: %v", e.FileName, h, want)
		}
		if e.FileName == "liar-2-1-x86_64.pkg.tar.zst" && h.Held {
			t.Errorf("the liar's CID is still followed: %+v", h)
		}
	}
	for c, name := range n.pins {
		if c == dagCID(2) || c == dagCID(9) || c == dagCID(3) {
			t.Errorf("still pinned: %s (%s)", name, c)
		}
	}
	if _, ok := n.pins[dagCID(8)]; !ok {
		t.Error("the seeder's pin was touched")
	}
	// Nothing new: a second round holds what it has and fetches nothing.
	rep, _ = p.Round(context.Background())
	if rep.Fetched != 0 || rep.Held != 2 || rep.Failed != 0 {
		t.Errorf("second round %+v: want 2 held, nothing fetched, the liars not asked again", rep)
	}
	// The round's limit: nothing over MaxBytes is fetched.
	n.pins = map[cid.Cid]string{}
	p.opts.MaxBytes = 1 << 20
	rep, _ = p.Round(context.Background())
	if rep.Bytes > 1<<20 || rep.Fetched != 1 {
		t.Errorf("limited round %+v: want only small", rep)
	}
}
