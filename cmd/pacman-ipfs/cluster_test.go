package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster/clustertest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// clusterPins is what the cluster's pinset holds of ours: name to CID.
func clusterPins(t testing.TB, c *cluster.Client) map[string]string {
	return clusterPinsNamed(t, c, node.PinPrefix)
}

// clusterPinsNamed is what the cluster's pinset holds under a pin prefix: name to CID.
func clusterPinsNamed(t testing.TB, c *cluster.Client, prefix string) map[string]string {
	t.Helper()
	pins, err := c.Allocations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pins {
		if strings.HasPrefix(p.Name, prefix) {
			out[p.Name] = p.CID
		}
	}
	return out
}

// pinnedOn counts, for every pin of ours, the cluster peers on which it is pinned.
func pinnedOn(t testing.TB, c *cluster.Client) map[string]int {
	return pinnedOnNamed(t, c, node.PinPrefix)
}

// pinnedOnNamed counts, for every pin under a prefix, the cluster peers on which it is pinned.
func pinnedOnNamed(t testing.TB, c *cluster.Client, prefix string) map[string]int {
	t.Helper()
	st, err := c.Status(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range st {
		if !strings.HasPrefix(s.Name, prefix) {
			continue
		}
		out[s.Name] += 0
		for _, ps := range s.PeerMap {
			if ps.Status == "pinned" {
				out[s.Name]++
			}
		}
	}
	return out
}

// A seeded cache pinned through a 3-peer cluster with replication 2 is pinned on exactly 2 peers, the
// other peers fetching from this machine's node (the pins' origins); a package paccache removes is
// unpinned cluster-wide by the next sync.
func TestSyncThroughACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: real pacman, kubo and IPFS Cluster")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	repo := alpmtest.MakeRepo(t, "core", alpmtest.Pkg{Name: "a", Size: 10 << 10}, alpmtest.Pkg{Name: "b", Size: 3 << 20}, alpmtest.Pkg{Name: "c", Size: 200 << 10})
	sb := alpmtest.NewSandbox(t, repo)
	sb.Pacman(t, "-Syw", "a", "b", "c")
	cl := clustertest.Start(t, 3, kubotest.Options{})
	// This machine's node is a cluster peer's IPFS node; the others are connected to it by the origins.
	local := cl.Peers[0]
	flags := []string{"--pacman-conf", sb.Conf, "--api", local.Kubo.APIAddr, "--state-dir", t.TempDir(),
		"--cluster", local.APIURL, "--replication", "2"}
	if r := cli(t, append([]string{"sync"}, flags...)...); r.code != 0 || !strings.Contains(r.stdout, "added 3") {
		t.Fatalf("sync through the cluster: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	c, err := cluster.Dial(context.Background(), local.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	if pins := clusterPins(t, c); len(pins) != 3 {
		t.Fatalf("cluster pinset: %v, want 3 of ours", pins)
	}
	alpmtest.Eventually(t, 2*time.Minute, "every pin on 2 peers", func() bool {
		on := pinnedOn(t, c)
		for _, n := range on {
			if n != 2 {
				return false
			}
		}
		return len(on) == 3
	})

	// paccache removes b: the next sync unpins it cluster-wide.
	if err := os.Remove(filepath.Join(sb.CacheDir, repo.Pkgs["b"].FileName())); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, append([]string{"sync"}, flags...)...); r.code != 0 || !strings.Contains(r.stdout, "unpinned 1") {
		t.Fatalf("sync after paccache: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if pins := clusterPins(t, c); len(pins) != 2 || pins[node.PinPrefix+"core/"+repo.Pkgs["b"].FileName()] != "" {
		t.Errorf("cluster pinset after paccache: %v", pins)
	}
}

// The agent pinning through a cluster: the cluster's REST API down for a minute is retried like a node
// that is down (nothing unpinned meanwhile, nothing forgotten) and the agent converges once it is back;
// a cluster peer killed while a package is added, and back, converges too. status shows the cluster's
// view per repository.
func TestAgentThroughAClusterOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: real pacman, kubo and IPFS Cluster")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	repo := alpmtest.MakeRepo(t, "core", alpmtest.Pkg{Name: "a", Size: 10 << 10}, alpmtest.Pkg{Name: "b", Size: 20 << 10},
		alpmtest.Pkg{Name: "d", Size: 2 << 20})
	sb := alpmtest.NewSandbox(t, repo)
	sb.Pacman(t, "-Syw", "a", "b")
	cl := clustertest.Start(t, 3, kubotest.Options{})
	local, other := cl.Peers[0], cl.Peers[1]
	socket := filepath.Join(t.TempDir(), "control.sock")
	startAgent(t, "--pacman-conf", sb.Conf, "--api", local.Kubo.APIAddr, "--state-dir", t.TempDir(), "--listen", socket,
		"--quiet", "50ms", "--lan-index=false", "--cluster", local.APIURL, "--replication", "2")
	c, err := cluster.Dial(context.Background(), other.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	alpmtest.Eventually(t, time.Minute, "a and b pinned through the cluster", func() bool { return len(clusterPins(t, c)) == 2 })

	// The REST API the agent talks to goes away for a minute; b leaves the cache meanwhile.
	local.Stop(t)
	bPin := node.PinPrefix + "core/" + repo.Pkgs["b"].FileName()
	if err := os.Remove(filepath.Join(sb.CacheDir, repo.Pkgs["b"].FileName())); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Minute)
	if pins := clusterPins(t, c); pins[bPin] == "" || len(pins) != 2 {
		t.Fatalf("with the agent's cluster API down the pinset changed: %v", pins)
	}
	cl.Restart(t, local)
	alpmtest.Eventually(t, time.Minute, "b unpinned once the API is back", func() bool {
		pins := clusterPins(t, c)
		return len(pins) == 1 && pins[bPin] == ""
	})

	// A cluster peer killed while d is added, and back.
	cl.Peers[2].Stop(t)
	sb.Pacman(t, "-Sw", "d")
	alpmtest.Eventually(t, time.Minute, "d pinned with a peer down", func() bool { return len(clusterPins(t, c)) == 2 })
	cl.Restart(t, cl.Peers[2])
	alpmtest.Eventually(t, 2*time.Minute, "every pin on 2 peers after the peer is back", func() bool {
		on := pinnedOn(t, c)
		return len(on) == 2 && on[node.PinPrefix+"core/"+repo.Pkgs["a"].FileName()] == 2 && on[node.PinPrefix+"core/"+repo.Pkgs["d"].FileName()] == 2
	})

	// status asks the peer the agent talks to; a restarted peer's pin tracker may still be re-checking
	// its pins there for a moment (the cluster's view converges, it is not one snapshot).
	var st status
	alpmtest.Eventually(t, time.Minute, "status's cluster counts: 2 pins, pinned 4 times", func() bool {
		r := cli(t, "status", "--json", "--socket", socket, "--api", local.Kubo.APIAddr, "--cluster", local.APIURL)
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Cluster == nil {
			t.Fatalf("status --json: %v\n%s%s", err, r.stdout, r.stderr)
		}
		core := st.Cluster.Repos["core"]
		return core.Pins == 2 && core.Pinned == 4 && st.Cluster.Error == ""
	})
}

func TestParseReplication(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi int
		err    bool
	}{
		{in: ""}, {in: "2", lo: 2, hi: 2}, {in: "2,3", lo: 2, hi: 3}, {in: " 1 , 4 ", lo: 1, hi: 4}, {in: "-1", lo: -1, hi: -1},
		{in: "-1,3", err: true}, {in: "3,2", err: true}, {in: "0", err: true}, {in: "x", err: true}, {in: "2,", err: true}, {in: "-2", err: true},
	}
	for _, tt := range tests {
		lo, hi, err := parseReplication(tt.in)
		if (err != nil) != tt.err || lo != tt.lo || hi != tt.hi {
			t.Errorf("parseReplication(%q) = %d, %d, %v", tt.in, lo, hi, err)
		}
	}
}

// The cluster's URL may hold a password: it comes from --cluster, else --cluster-file, else the systemd
// credential cluster-api, and an error names the file, never what it holds.
func TestClusterURLSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster")
	if err := os.WriteFile(file, []byte("\n  http://op:s3cret@127.0.0.1:9094  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, credentialCluster), []byte("http://cred@127.0.0.1:9094\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		c          *common
		creds      string
		want, fail string
	}{
		{name: "none", c: &common{}, want: ""},
		{name: "flag", c: &common{cluster: "http://a:9094"}, creds: creds, want: "http://a:9094"},
		{name: "file", c: &common{clusterFile: file}, creds: creds, want: "http://op:s3cret@127.0.0.1:9094"},
		{name: "credential", c: &common{}, creds: creds, want: "http://cred@127.0.0.1:9094"},
		{name: "empty file", c: &common{clusterFile: empty}, fail: "--cluster-file " + empty + ": empty"},
		{name: "missing file", c: &common{clusterFile: filepath.Join(dir, "nope")}, fail: "--cluster-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CREDENTIALS_DIRECTORY", tt.creds)
			got, err := tt.c.clusterURL()
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) || strings.Contains(err.Error(), "s3cret") {
					t.Errorf("clusterURL = %q, %v; want an error with %q", got, err, tt.fail)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("clusterURL = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
