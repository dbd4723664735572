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
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

// fakeNode is the pure logic's double: TestLANPrefetchUpgrades (cmd/pacman-ipfs) prefetches between
// real kubo nodes on a namespace LAN.
type fakeNode struct {
	paths map[string]cid.Cid // what Resolve finds
	data  map[cid.Cid][]byte // what the LAN can deliver
	pins  map[cid.Cid]string
}

func (f *fakeNode) Resolve(_ context.Context, p string) (cid.Cid, error) {
	if c, ok := f.paths[p]; ok {
		return c, nil
	}
	return cid.Undef, errors.New("no link")
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
	return io.NopCloser(bytes.NewReader(f.data[c])), nil
}

func dagCID(i byte) cid.Cid {
	h, _ := mh.Sum([]byte{i}, mh.SHA2_256, -1)
	return cid.NewCidV1(cid.DagProtobuf, h)
}

func TestRound(t *testing.T) {
	big, other, small := nodetest.Bytes(1, 3<<20), nodetest.Bytes(2, 3<<20), nodetest.Bytes(3, 300<<10)
	entries := []alpmdb.Entry{
		{Repo: "core", FileName: "big-2-1-x86_64.pkg.tar.zst", Size: int64(len(big)), SHA256: sha256.Sum256(big)},
		{Repo: "core", FileName: "liar-2-1-x86_64.pkg.tar.zst", Size: int64(len(big)), SHA256: sha256.Sum256(big)},
		{Repo: "core", FileName: "small-2-1-any.pkg.tar.zst", Size: int64(len(small)), SHA256: sha256.Sum256(small)},
		{Repo: "core", FileName: "fake-2-1-any.pkg.tar.zst", Size: int64(len(small)), SHA256: sha256.Sum256(small)},
		{Repo: "core", FileName: "nobody-2-1-any.pkg.tar.zst", Size: 10, SHA256: sha256.Sum256([]byte("0123456789"))},
	}
	ix := alpmdb.NewIndex(entries)
	root := "/ipfs/bafyroot"
	n := &fakeNode{
		paths: map[string]cid.Cid{
			root + "/core/os/x86_64/big-2-1-x86_64.pkg.tar.zst":  dagCID(1),
			root + "/core/os/x86_64/liar-2-1-x86_64.pkg.tar.zst": dagCID(2),                         // other content
			root + "/core/os/x86_64/small-2-1-any.pkg.tar.zst":   node.RawCID(sha256.Sum256(small)), // "any": under the machine's arch
			root + "/core/os/x86_64/fake-2-1-any.pkg.tar.zst":    dagCID(3),                         // one chunk has one CID only
		},
		data: map[cid.Cid][]byte{dagCID(1): big, dagCID(2): other, node.RawCID(sha256.Sum256(small)): small, dagCID(3): small},
		pins: map[cid.Cid]string{dagCID(9): PinPrefix + "core/old-1-1-x86_64.pkg.tar.zst", dagCID(8): node.PinPrefix + "core/seeded"},
	}
	trusted := map[[32]byte]cid.Cid{}
	upgrades := []string{}
	for _, e := range entries {
		upgrades = append(upgrades, e.FileName)
	}
	p := New(Options{
		Node:          func(context.Context) (Node, error) { return n, nil },
		Index:         func() *alpmdb.Index { return ix },
		Upgrades:      func(context.Context) ([]string, error) { return upgrades, nil },
		Roots:         func() []string { return []string{root} },
		Seeded:        func([32]byte) (cid.Cid, bool) { return cid.Undef, false },
		Trust:         func(sum [32]byte, c cid.Cid) { trusted[sum] = c },
		Architectures: []string{"x86_64"},
	})
	rep, err := p.Round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// big and small are fetched and trusted; liar is fetched, found wrong and dropped; fake is never
	// asked for; nobody is not on the LAN; old is no longer an upgrade; the seeder's pin is not ours.
	if rep.Fetched != 2 || rep.Failed != 1 || rep.Unpinned != 1 || rep.Wanted != 3 {
		t.Errorf("report %+v: want 3 wanted, 2 fetched, 1 failed, 1 unpinned", rep)
	}
	if trusted[sha256.Sum256(big)] != dagCID(1) || len(trusted) != 2 {
		t.Errorf("trusted %v", trusted)
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
		t.Errorf("second round %+v: want 2 held, nothing fetched, the liar not asked again", rep)
	}
	// The round's limit: nothing over MaxBytes is fetched.
	n.pins = map[cid.Cid]string{}
	p.opts.MaxBytes = 1 << 20
	rep, _ = p.Round(context.Background())
	if rep.Bytes > 1<<20 || rep.Fetched != 1 {
		t.Errorf("limited round %+v: want only small", rep)
	}
}
