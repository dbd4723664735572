package kubotest

import (
	"bytes"
	"crypto/rand"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeRandom(t *testing.T, path string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// Not parallel: it uses t.Setenv to check that a user's IPFS_PATH and log
// level don't leak into the node.
func TestAddCat(t *testing.T) {
	skipShort(t)
	t.Setenv("IPFS_PATH", filepath.Join(t.TempDir(), "not-this-repo"))
	t.Setenv("GOLOG_LOG_LEVEL", "debug")

	n := Start(t, Options{Config: map[string]string{"Datastore.StorageMax": `"1GB"`}})
	if !strings.HasPrefix(n.APIURL, "http://127.0.0.1:") || !strings.HasPrefix(n.GatewayURL, "http://127.0.0.1:") {
		t.Fatalf("API %q, gateway %q: want loopback", n.APIURL, n.GatewayURL)
	}
	if len(n.SwarmAddrs) == 0 || !strings.HasPrefix(n.SwarmAddrs[0], "/ip4/127.0.0.1/tcp/") ||
		!strings.HasSuffix(n.SwarmAddrs[0], "/p2p/"+n.PeerID) {
		t.Fatalf("swarm addrs %q", n.SwarmAddrs)
	}
	if _, err := os.Stat(os.Getenv("IPFS_PATH")); err == nil {
		t.Fatalf("user's IPFS_PATH %s was used", os.Getenv("IPFS_PATH"))
	}
	for key, want := range map[string]string{
		"Datastore.StorageMax":               "1GB", // from Options.Config
		"Routing.Type":                       "dht",
		"AutoConf.Enabled":                   "false",
		"Bootstrap":                          "[]",
		"Plugins.Plugins.telemetry.Disabled": "true",
		"Experimental.FilestoreEnabled":      "false",
		// Import.* must stay at kubo's defaults (unset).
		"Import.CidVersion":      "null",
		"Import.UnixFSChunker":   "null",
		"Import.UnixFSRawLeaves": "null",
	} {
		if got := n.IPFS(t, "config", key); got != want {
			t.Errorf("config %s = %s, want %s", key, got, want)
		}
	}

	file := filepath.Join(t.TempDir(), "hello.bin")
	want := writeRandom(t, file, 100_000)
	cid := n.IPFS(t, "add", "-Q", "--cid-version=1", file)
	if !strings.HasPrefix(cid, "baf") { // bafk… (raw leaf) or bafy…
		t.Fatalf("add returned %q, want a CIDv1", cid)
	}
	if got := n.IPFS(t, "cat", cid); got != strings.TrimSpace(string(want)) {
		t.Fatalf("cat %s: got %d bytes, want %d", cid, len(got), len(want))
	}

	// The same through the gateway, checking it serves this node's blocks.
	resp, err := http.Get(n.GatewayURL + "/ipfs/" + cid)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body) // what arrived is what the test shows
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("gateway GET /ipfs/%s: %s, %d bytes", cid, resp.Status, buf.Len())
	}

	// --nocopy without the filestore.
	_, err = n.TryIPFS(t, "add", "-Q", "--nocopy", file)
	if err == nil || !strings.Contains(err.Error(), "either the filestore or the urlstore must be enabled") {
		t.Fatalf("add --nocopy without filestore: %v", err)
	}
	t.Logf("nocopy with filestore disabled: %v", err)

	n.Stop(t)
	n.Stop(t) // idempotent
}

func TestTwoNodesBitswap(t *testing.T) {
	skipShort(t)
	t.Parallel()
	a := Start(t, Options{})
	b := Start(t, Options{})
	b.Connect(t, a)

	file := filepath.Join(t.TempDir(), "big.bin")
	want := writeRandom(t, file, 3<<20)
	cid := a.IPFS(t, "add", "-Q", "--cid-version=1", file)

	// IPFS trims stdout; compare via a file to keep the bytes exact.
	out := filepath.Join(t.TempDir(), "out.bin")
	b.IPFS(t, "get", "--timeout=30s", "-o", out, cid)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("B got %d bytes, want %d identical bytes", len(got), len(want))
	}
	if cat := b.IPFS(t, "cat", "--timeout=30s", cid); cat != strings.TrimSpace(string(want)) {
		t.Fatalf("cat on B: %d bytes differ", len(cat))
	}
}

func TestFilestore(t *testing.T) {
	skipShort(t)
	t.Parallel()
	n := Start(t, Options{Filestore: true})

	inside := filepath.Join(filepath.Dir(n.RepoDir), "inside.bin")
	writeRandom(t, inside, 600_000)
	cid := n.IPFS(t, "add", "-Q", "--nocopy", inside)
	// Only the leaves live in the filestore (the root is a normal block),
	// so list everything rather than the root CID. Paths are relative to
	// the filestore root.
	if ls := n.IPFS(t, "filestore", "ls"); !strings.Contains(ls, " inside.bin ") {
		t.Fatalf("filestore ls = %q, want references to inside.bin", ls)
	}
	if got := n.IPFS(t, "cat", cid); len(got) == 0 {
		t.Fatalf("cat %s: empty", cid)
	}

	outside := filepath.Join(t.TempDir(), "outside.bin")
	writeRandom(t, outside, 1000)
	_, err := n.TryIPFS(t, "add", "-Q", "--nocopy", outside)
	if err == nil || !strings.Contains(err.Error(), "cannot add filestore references outside ipfs root") {
		t.Fatalf("add --nocopy %s: %v, want the outside-root error", outside, err)
	}
	t.Logf("nocopy outside root: %v", err)
}

func TestRestartAndKill(t *testing.T) {
	skipShort(t)
	t.Parallel()
	n := Start(t, Options{})
	file := filepath.Join(t.TempDir(), "pinned.bin")
	want := strings.TrimSpace(string(writeRandom(t, file, 300_000)))
	cid := n.IPFS(t, "add", "-Q", "--cid-version=1", file)

	n.Restart(t)
	if pins := n.IPFS(t, "pin", "ls", "--type=recursive", "-q"); !strings.Contains(pins, cid) {
		t.Fatalf("after Restart, pins %q lack %s", pins, cid)
	}
	if got := n.IPFS(t, "cat", "--offline", cid); got != want {
		t.Fatal("after Restart, content differs")
	}

	oldAPI, oldAddr := n.APIURL, n.APIAddr
	n.Kill(t)
	n.Kill(t) // idempotent
	if _, err := os.Stat(filepath.Join(n.RepoDir, "repo.lock")); err == nil {
		t.Logf("repo.lock left behind after SIGKILL (harmless: fcntl lock)")
	}
	// Normally "connection refused", but the other tests run in parallel
	// and may already have been given the freed port, so the only hard
	// requirement is that this node no longer answers.
	resp, err := http.Post(oldAPI+"/api/v0/id", "", nil)
	if err == nil {
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if strings.Contains(buf.String(), n.PeerID) {
			t.Fatalf("killed node still answers on %s", oldAPI)
		}
		t.Logf("HTTP API after Kill: port reused by another node")
	} else {
		t.Logf("HTTP API after Kill: %v", err)
	}
	if out, err := n.TryIPFS(t, "--api", oldAddr, "id", "-f", "<id>"); err == nil && out == n.PeerID {
		t.Fatalf("killed node still answers on %s", oldAddr)
	} else {
		t.Logf("CLI --api after Kill: %v", err)
	}

	n.Restart(t)
	if got := n.IPFS(t, "cat", "--offline", cid); got != want {
		t.Fatal("after Kill+Restart, content differs")
	}
	if pins := n.IPFS(t, "pin", "ls", "--type=recursive", "-q"); !strings.Contains(pins, cid) {
		t.Fatalf("after Kill+Restart, pins %q lack %s", pins, cid)
	}
}

// skipShort keeps `go test -short` (the PKGBUILD's check()) free of kubo daemons.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kubo")
	}
}
