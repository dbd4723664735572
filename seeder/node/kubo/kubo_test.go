package kubo_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

func dial(t *testing.T, n *kubotest.Node) *kubo.Client {
	t.Helper()
	c, err := kubo.Dial(context.Background(), n.APIAddr)
	if err != nil {
		t.Fatalf("Dial %s: %v", n.APIAddr, err)
	}
	return c
}

// The kubo backend passes the same suite as the in-memory node, on a node with kubo's default import
// settings: the CIDs it produces are the unixfs-v1-2025 ones whatever the node's config says.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubo")
	}
	nodetest.Run(t, func(t *testing.T) node.Node {
		return dial(t, kubotest.Start(t, kubotest.Options{}))
	})
}

func TestDialUnreachableIsQuickAndSaysWhatToDo(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "/ip4/127.0.0.1/tcp/" + strings.TrimPrefix(l.Addr().String(), "127.0.0.1:")
	l.Close() // nothing listens there now
	start := time.Now()
	_, err = kubo.Dial(context.Background(), addr)
	if err == nil {
		t.Fatal("Dial of a closed port succeeded")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Dial took %s", took)
	}
	for _, want := range []string{addr, "ipfs daemon", "--api"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"/ip4/127.0.0.1/tcp/5001":          "/ip4/127.0.0.1/tcp/5001",
		"http://alice:s3cret@host:5001":    "http://xxxxx@host:5001",
		"https://token@ipfs.example:443/x": "https://xxxxx@ipfs.example:443/x",
		// url.Parse refuses these; the secret must go all the same.
		"http://admin:50%off@host:5001":      "http://xxxxx@host:5001",
		"http://admin:p@ss@w0rd@host:5001/a": "http://xxxxx@host:5001/a",
		"http://admin:s3cret@[::1]:5001":     "http://xxxxx@[::1]:5001",
		// '/', '?' or '#' in a password (even from the root-only credential file): hidden all the same.
		"http://admin:S3cr#etPW@host:5001": "http://xxxxx@host:5001",
		"http://admin:s3/cret@host:5001":   "http://xxxxx@host:5001",
		"http://admin:s3?cret@host:5001/a": "http://xxxxx@host:5001/a",
		// An '@' after the host: better to hide too much.
		"http://host:5001/path@x": "http://xxxxx@x",
	} {
		if got := kubo.Redact(in); got != want || strings.Contains(got, "s3") || strings.Contains(got, "off") || strings.Contains(got, "ss") || strings.Contains(got, "etPW") {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveAPI(t *testing.T) {
	repo := t.TempDir()
	t.Setenv("IPFS_PATH", repo)
	if got := kubo.ResolveAPI(""); got != kubo.DefaultAPI {
		t.Errorf("no api file: %q, want %q", got, kubo.DefaultAPI)
	}
	if err := os.WriteFile(filepath.Join(repo, "api"), []byte("/ip4/127.0.0.1/tcp/45001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := kubo.ResolveAPI(""); got != "/ip4/127.0.0.1/tcp/45001" {
		t.Errorf("api file: %q", got)
	}
	if got := kubo.ResolveAPI("/ip4/127.0.0.1/tcp/1"); got != "/ip4/127.0.0.1/tcp/1" {
		t.Errorf("flag: %q", got)
	}
}

// Zero copy applies exactly below the parent of the node's repo, and an unpin leaves no filestore
// reference behind.
func TestNoCopyAndUnpinLeavesNoFilestoreReference(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubo")
	}
	top := t.TempDir()
	n := kubotest.Start(t, kubotest.Options{RepoDir: filepath.Join(top, "pacman-ipfs"), Filestore: true})
	c := dial(t, n)
	ctx := context.Background()
	cache := filepath.Join(top, "pacman", "pkg")
	if ok, why := c.CanReference(ctx, cache); !ok {
		t.Fatalf("CanReference(%s) = false: %s", cache, why)
	}
	if ok, why := c.CanReference(ctx, t.TempDir()); ok || !strings.Contains(why, "IPFS_PATH") {
		t.Errorf("CanReference outside the repo's parent = %v, %q", ok, why)
	}

	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	data := nodetest.Bytes(11, 3<<20)
	path := filepath.Join(cache, "a-1-1-x86_64.pkg.tar.zst")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := c.Add(ctx, node.File{Path: path, PinName: node.PinPrefix + "core/a", Size: int64(len(data)), Content: bytes.NewReader(data), NoCopy: true})
	if err != nil {
		t.Fatal(err)
	}
	// filestore ls names files relative to its root, the parent of the repo.
	rel := "pacman/pkg/a-1-1-x86_64.pkg.tar.zst"
	if ls := n.IPFS(t, "filestore", "ls"); strings.Count(ls, rel) != 3 {
		t.Fatalf("filestore ls does not reference %s:\n%s", path, ls)
	}
	if got := n.IPFS(t, "cat", root.String()); got != string(data) {
		t.Fatal("cat of the nocopy add differs from the file")
	}
	if err := c.Unpin(ctx, root); err != nil {
		t.Fatal(err)
	}
	if ls := n.IPFS(t, "filestore", "ls"); strings.Contains(ls, rel) {
		t.Errorf("filestore still references %s after unpin:\n%s", path, ls)
	}
	if out, err := n.TryIPFS(t, "block", "stat", "--offline", root.String()); err == nil {
		t.Errorf("root block still present after unpin: %s", out)
	}
}

func TestSetIndex(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubo")
	}
	n := kubotest.Start(t, kubotest.Options{})
	c := dial(t, n)
	ctx := context.Background()
	add := func(name string, data []byte) cid.Cid {
		k, err := c.Add(ctx, node.File{Path: "/c/" + name, PinName: node.PinPrefix + "core/" + name, Size: int64(len(data)), Content: bytes.NewReader(data)})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	a, b := add("a", nodetest.Bytes(1, 1000)), add("b", nodetest.Bytes(2, 2<<20))
	set := func(files map[string]cid.Cid) string {
		t.Helper()
		root, err := c.SetIndex(ctx, "/pacman-ipfs", files)
		if err != nil {
			t.Fatalf("SetIndex: %v", err)
		}
		if root.Version() != 1 {
			t.Errorf("index root %s is not CIDv1", root)
		}
		return root.String()
	}
	r1 := set(map[string]cid.Cid{"core/os/x86_64/a": a, "extra/os/x86_64/b": b})
	if got := n.IPFS(t, "resolve", "/ipfs/"+r1+"/extra/os/x86_64/b"); got != "/ipfs/"+b.String() {
		t.Errorf("resolve through the index: %s, want /ipfs/%s", got, b)
	}
	if r2 := set(map[string]cid.Cid{"core/os/x86_64/a": a, "extra/os/x86_64/b": b}); r2 != r1 {
		t.Errorf("the same files gave another root: %s, %s", r1, r2)
	}
	r3 := set(map[string]cid.Cid{"core/os/x86_64/a": a})
	if out, err := n.TryIPFS(t, "resolve", "/ipfs/"+r3+"/extra/os/x86_64/b"); err == nil {
		t.Errorf("b still in the index after its removal: %s", out)
	}

	// An entry whose blocks are gone (dropped behind the index's back) does not wedge the index.
	set(map[string]cid.Cid{"core/os/x86_64/a": a, "extra/os/x86_64/b": b})
	if err := c.Unpin(ctx, b); err != nil {
		t.Fatal(err)
	}
	r4 := set(map[string]cid.Cid{"core/os/x86_64/a": a})
	if got := n.IPFS(t, "resolve", "/ipfs/"+r4+"/core/os/x86_64/a"); got != "/ipfs/"+a.String() {
		t.Errorf("after recovering from a dangling entry: %s", got)
	}
}

// An index directory is listed by name and CID without a block per entry, HAMT-sharded ones too, and no
// further than asked.
func TestList(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubo")
	}
	n := kubotest.Start(t, kubotest.Options{})
	c := dial(t, n)
	ctx := context.Background()
	files := map[string]cid.Cid{}
	for i := range 3000 { // past kubo's HAMT threshold
		files[fmt.Sprintf("core/os/x86_64/p%04d-1-1-x86_64.pkg.tar.zst", i)] = node.RawCID(sha256.Sum256([]byte{byte(i), byte(i >> 8)}))
	}
	root, err := c.SetIndex(ctx, "/pacman-ipfs", files)
	if err != nil {
		t.Fatal(err)
	}
	links, err := c.List(ctx, "/ipfs/"+root.String()+"/core/os/x86_64", 10000)
	if err != nil || len(links) != len(files) {
		t.Fatalf("List: %d entries, %v; want %d", len(links), err, len(files))
	}
	for _, l := range links {
		if want := files["core/os/x86_64/"+l.Name]; !l.CID.Equals(want) {
			t.Errorf("%s: %s, want %s", l.Name, l.CID, want)
		}
	}
	if _, err := c.List(ctx, "/ipfs/"+root.String()+"/core/os/x86_64", 100); !errors.Is(err, node.ErrTooMany) {
		t.Errorf("a listing past its bound: %v, want ErrTooMany", err)
	}
	if _, err := c.List(ctx, "/ipfs/"+root.String()+"/extra/os/x86_64", 100); err == nil {
		t.Error("a directory the index does not have was listed")
	}
}

// The index root can be published under an IPNS key, and a path below the name resolves to a file, as
// a follower's --index /ipns/<name> does.
func TestPublishIndexName(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubo")
	}
	n := kubotest.Start(t, kubotest.Options{})
	c := dial(t, n)
	ctx := context.Background()
	data := nodetest.Bytes(5, 3<<20)
	k, err := c.Add(ctx, node.File{Path: "/c/x", PinName: node.PinPrefix + "core/x", Size: int64(len(data)), Content: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	root, err := c.SetIndex(ctx, "/pacman-ipfs", map[string]cid.Cid{"core/os/x86_64/x-1-1-x86_64.pkg.tar.zst": k})
	if err != nil {
		t.Fatal(err)
	}
	name, err := c.PublishName(ctx, "self", root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Resolve(ctx, name+"/core/os/x86_64/x-1-1-x86_64.pkg.tar.zst")
	if err != nil || !got.Equals(k) {
		t.Errorf("resolve through %s: %s, %v; want %s", name, got, err, k)
	}
}

// An index the size of Arch's extra (a directory of 15,000 entries, sharded), built, then changed.
func TestSetIndexLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubo")
	}
	n := kubotest.Start(t, kubotest.Options{})
	c := dial(t, n)
	ctx := context.Background()
	data := nodetest.Bytes(9, 100)
	k, err := c.Add(ctx, node.File{Path: "/c/x", PinName: node.PinPrefix + "core/x", Size: 100, Content: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]cid.Cid{}
	for i := range 15000 {
		files[fmt.Sprintf("extra/os/x86_64/p%05d-1-1-x86_64.pkg.tar.zst", i)] = k
	}
	start := time.Now()
	if _, err := c.SetIndex(ctx, "/pacman-ipfs", files); err != nil {
		t.Fatalf("15,000 files: %v", err)
	}
	t.Logf("an index of 15,000 files built in %s", time.Since(start).Round(time.Millisecond))
	for i := range 300 {
		delete(files, fmt.Sprintf("extra/os/x86_64/p%05d-1-1-x86_64.pkg.tar.zst", i))
		files[fmt.Sprintf("core/os/x86_64/q%03d-1-1-x86_64.pkg.tar.zst", i)] = k
	}
	root, err := c.SetIndex(ctx, "/pacman-ipfs", files)
	if err != nil {
		t.Fatalf("300 removed, 300 added: %v", err)
	}
	if got := strings.Count(n.IPFS(t, "ls", "/ipfs/"+root.String()+"/core/os/x86_64"), "\n") + 1; got != 300 {
		t.Errorf("core holds %d entries, want 300", got)
	}
	if got := n.IPFS(t, "resolve", "/ipfs/"+root.String()+"/extra/os/x86_64/p14999-1-1-x86_64.pkg.tar.zst"); got != "/ipfs/"+k.String() {
		t.Errorf("resolve in the sharded directory: %s", got)
	}
}

// Two agents reach each other through their nodes' stream mounting: the other node sees that the node
// mounts something (kubo tells only "/x/", one handler for every mounted protocol), forwards a loopback port to it and carries an
// HTTP request over the nodes' connection.
func TestP2PListenForwardAndProtocols(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubo")
	}
	on := map[string]string{"Experimental.Libp2pStreamMounting": "true"}
	a := kubotest.Start(t, kubotest.Options{Config: on})
	b := kubotest.Start(t, kubotest.Options{Config: on})
	b.Connect(t, a)
	ca, cb := dial(t, a), dial(t, b)
	ctx := context.Background()
	// The kubo the tests build (go.mod's tool line) has boxo's bitswap fix.
	if why, err := ca.BitswapStartRace(ctx); err != nil || why != "" {
		t.Errorf("BitswapStartRace on the tests' kubo: %q, %v", why, err)
	}
	const proto = "/x/pacman-ipfs/test/1"
	// The node reports the remote peer's ID on a line of its own before the stream (P2PListen asks it
	// to): the target reads it off, then serves the stream.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reported := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(c)
			line, _ := r.ReadString('\n')
			reported <- strings.TrimSpace(line)
			if req, err := http.ReadRequest(r); err == nil {
				body := "hello " + req.URL.Path
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	target := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ln.Addr().(*net.TCPAddr).Port)
	if err := ca.P2PListen(ctx, proto, target); err != nil {
		t.Fatal(err)
	}
	if ok, err := ca.P2PListening(ctx, proto, target); !ok || err != nil {
		t.Errorf("P2PListening after P2PListen: %v, %v", ok, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		protos, err := cb.PeerProtocols(ctx, a.PeerID)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(protos, "/x/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/x/ not among A's protocols as B sees them: %v", protos)
		}
		time.Sleep(100 * time.Millisecond)
	}
	addr, err := cb.P2PForward(ctx, proto, a.PeerID)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := cb.P2PForward(ctx, proto, a.PeerID); err != nil || again != addr {
		t.Errorf("a second forward: %s, %v; want the first one, %s", again, err, addr)
	}
	resp, err := http.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello /x" {
		t.Errorf("through the forward: %q", body)
	}
	if got := <-reported; got != b.PeerID {
		t.Errorf("the node reported peer %q for B's stream, want %s", got, b.PeerID)
	}
	if err := ca.P2PClose(ctx, proto); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ca.P2PListening(ctx, proto, target); ok {
		t.Error("still listening after P2PClose")
	}
}
