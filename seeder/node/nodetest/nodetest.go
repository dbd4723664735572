package nodetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/memnode"
)

// Run runs the suite. newNode returns a fresh node with no pins of its own.
func Run(t *testing.T, newNode func(t *testing.T) node.Node) {
	for _, c := range []struct {
		name string
		run  func(t *testing.T, n node.Node)
	}{
		{"one block is the raw CID of its sha256", oneBlockIsRaw},
		{"larger files use the unixfs-v1-2025 DAG", largerFilesUseTheDAG},
		{"pins are named and listed by prefix", pinsAreNamed},
		{"adding twice is one pin", addingTwiceIsOnePin},
		{"unpin removes the pin and is idempotent", unpinIsIdempotent},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, newNode(t)) })
	}
}

func add(t *testing.T, n node.Node, name string, data []byte) cid.Cid {
	t.Helper()
	c, err := n.Add(context.Background(), node.File{Path: "/var/cache/pacman/pkg/" + name, PinName: node.PinPrefix + "test/" + name, Size: int64(len(data)), Content: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("Add %s: %v", name, err)
	}
	return c
}

func pins(t *testing.T, n node.Node) map[cid.Cid]string {
	t.Helper()
	p, err := n.Pins(context.Background(), node.PinPrefix)
	if err != nil {
		t.Fatalf("Pins: %v", err)
	}
	return p
}

func oneBlockIsRaw(t *testing.T, n node.Node) {
	for _, size := range []int{1, 100 << 10, node.Import().ChunkSize} {
		data := Bytes(uint64(size), size)
		got := add(t, n, "small.pkg.tar.zst", data)
		if want := node.RawCID(sha256.Sum256(data)); !got.Equals(want) {
			t.Errorf("%d bytes: CID %s, want %s", size, got, want)
		}
	}
}

func largerFilesUseTheDAG(t *testing.T, n node.Node) {
	data := Bytes(7, 3<<20+5)
	got := add(t, n, "large.pkg.tar.zst", data)
	want, err := memnode.Import(context.Background(), nil, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equals(want) || got.Prefix().Codec != cid.DagProtobuf || got.Version() != 1 {
		t.Errorf("CID %s, want %s (CIDv1 dag-pb)", got, want)
	}
}

func pinsAreNamed(t *testing.T, n node.Node) {
	a := add(t, n, "a.pkg.tar.zst", Bytes(1, 1000))
	if _, err := n.Add(context.Background(), node.File{Path: "/tmp/other", PinName: "someone-else", Size: 10, Content: bytes.NewReader(Bytes(2, 10))}); err != nil {
		t.Fatal(err)
	}
	got := pins(t, n)
	if len(got) != 1 || got[a] != node.PinPrefix+"test/a.pkg.tar.zst" {
		t.Errorf("Pins = %v, want only %s named %q", got, a, node.PinPrefix+"test/a.pkg.tar.zst")
	}
}

func addingTwiceIsOnePin(t *testing.T, n node.Node) {
	data := Bytes(3, 2<<20)
	a, b := add(t, n, "x.pkg.tar.zst", data), add(t, n, "x.pkg.tar.zst", data)
	if !a.Equals(b) || len(pins(t, n)) != 1 {
		t.Errorf("two adds gave %s and %s, pins %v", a, b, pins(t, n))
	}
}

func unpinIsIdempotent(t *testing.T, n node.Node) {
	a := add(t, n, "a.pkg.tar.zst", Bytes(4, 2<<20))
	b := add(t, n, "b.pkg.tar.zst", Bytes(5, 100))
	for range 2 {
		if err := n.Unpin(context.Background(), a); err != nil {
			t.Fatalf("Unpin: %v", err)
		}
	}
	got := pins(t, n)
	if _, ok := got[a]; ok || got[b] == "" || len(got) != 1 {
		t.Errorf("after unpinning %s: pins %v", a, got)
	}
}

// Bytes returns n pseudo-random bytes, the same for the same seed.
func Bytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x70ac))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}
