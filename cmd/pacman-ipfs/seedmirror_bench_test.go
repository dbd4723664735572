package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster/clustertest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// mirrorPkgs are n packages of a synthetic repository: one in ten of 30 MiB, the others of 2.6 MiB,
// uncompressed (their payload is incompressible anyway).
func mirrorPkgs(prefix, version string, n int) []alpmtest.Pkg {
	var out []alpmtest.Pkg
	for i := range n {
		size := 2662 << 10
		if i%10 == 0 {
			size = 30 << 20
		}
		out = append(out, alpmtest.Pkg{Name: fmt.Sprintf("%s%03d", prefix, i), Version: version, Size: size, Ext: ".pkg.tar"})
	}
	return out
}

// BenchmarkSeedMirror: an Arch-shaped mirror tree of 300 packages (about 1.6 GB; core and extra, files
// in pool/ and links in os/x86_64/) seeded by `seed-mirror` into a 3-peer cluster with replication 2,
// until every pin is PINNED on 2 peers; beside it, in the same run, `ipfs-cluster-ctl add -r --wait` of
// the same files with the same CID parameters into a fresh 3-peer cluster. Then the day's rsync: 10
// packages replaced; the incremental run beside an unchanged run and `ipfs-cluster-ctl add --wait` of
// just the 10 new files.
func BenchmarkSeedMirror(b *testing.B) {
	alpmtest.Require(b, "repo-add", "bsdtar")
	core := alpmtest.MakeRepo(b, "core", mirrorPkgs("c", "1.0-1", 100)...)
	extra := alpmtest.MakeRepo(b, "extra", mirrorPkgs("x", "1.0-1", 200)...)
	root := b.TempDir()
	alpmtest.SyncMirror(b, root, "x86_64", true, core, extra)
	pool := filepath.Join(root, "pool", "packages")
	total := dirBytes(b, pool)

	cl := clustertest.Start(b, 3, kubotest.Options{})
	local := cl.Peers[0]
	c, err := cluster.Dial(context.Background(), local.APIURL)
	if err != nil {
		b.Fatal(err)
	}
	state := b.TempDir()
	seed := func() time.Duration {
		b.Helper()
		start := time.Now()
		r := cli(b, "seed-mirror", "--root", root, "--state-dir", state, "--api", local.Kubo.APIAddr, "--cluster", local.APIURL, "--replication", "2")
		if r.code != 0 {
			b.Fatalf("seed-mirror: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		return time.Since(start)
	}
	start := time.Now()
	ran := seed()
	alpmtest.Eventually(b, 10*time.Minute, "every pin on 2 peers", func() bool { return allOn(b, c, 300, 2) })
	ours := time.Since(start)

	base := clustertest.Start(b, 3, kubotest.Options{})
	ctlAdd := []string{"add", "--rmin", "2", "--rmax", "2", "--cid-version", "1", "--raw-leaves", "--chunker", "size-1048576", "--layout", "balanced", "--wait"}
	start = time.Now()
	out := base.Peers[0].Ctl(b, append(ctlAdd, "-r", pool)...)
	theirs := time.Since(start)
	same, compared := sameCIDs(b, out, clusterPinsNamed(b, c, MirrorPinPrefix))

	unchanged := seed()
	var changed []alpmtest.Pkg
	for i := 1; i <= 10; i++ { // 10 of the small ones get a new version
		p := core.Pkgs[fmt.Sprintf("c%03d", i)]
		p.Version = "1.1-1"
		changed = append(changed, p)
	}
	core.Add(b, changed...)
	alpmtest.SyncMirror(b, root, "x86_64", true, core, extra)
	incremental := seed()
	rep, err := reconcile.ReadLastReport(state)
	if err != nil || rep.Added != 10 {
		b.Fatalf("incremental run: %v, added %d, want 10", err, rep.Added)
	}
	var newFiles []string
	for _, p := range changed {
		newFiles = append(newFiles, filepath.Join(pool, p.FileName()))
	}
	start = time.Now()
	base.Peers[0].Ctl(b, append(ctlAdd, newFiles...)...)
	theirDelta := time.Since(start)

	mbps := func(d time.Duration) float64 { return float64(total) / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(ours), "seed-MB/s")
	b.ReportMetric(mbps(theirs), "ctl-add-MB/s")
	b.ReportMetric(incremental.Seconds(), "incremental-s")
	b.Logf("300 packages, %.2f GB, 3 peers, replication 2: seed-mirror verified, added and PINNED on 2 peers in %s (%.0f MB/s; the run itself %s) "+
		"vs ipfs-cluster-ctl add -r --wait %s (%.0f MB/s): %.2fx; CIDs equal on %d of %d files",
		float64(total)/1e9, ours.Round(time.Millisecond), mbps(ours), ran.Round(time.Millisecond), theirs.Round(time.Millisecond), mbps(theirs),
		theirs.Seconds()/ours.Seconds(), same, compared)
	b.Logf("10 packages changed: incremental run %s (unchanged run %s); ipfs-cluster-ctl add --wait of the 10 new files %s",
		incremental.Round(time.Millisecond), unchanged.Round(time.Millisecond), theirDelta.Round(time.Millisecond))
}

// allOn says whether n pins of ours are pinned on want peers each.
func allOn(t testing.TB, c *cluster.Client, n, want int) bool {
	on := pinnedOnNamed(t, c, MirrorPinPrefix)
	for _, k := range on {
		if k != want {
			return false
		}
	}
	return len(on) == n
}

// sameCIDs compares the CIDs `ipfs-cluster-ctl add` printed ("added <cid> <dir>/<file>") with our pins
// of the same files.
func sameCIDs(t testing.TB, ctlOut string, ours map[string]string) (same, compared int) {
	byFile := map[string]string{}
	for name, c := range ours {
		byFile[filepath.Base(strings.TrimPrefix(name, MirrorPinPrefix))] = c
	}
	for line := range strings.Lines(ctlOut) {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "added" {
			continue
		}
		if c, ok := byFile[filepath.Base(f[2])]; ok {
			compared++
			if c == f[1] {
				same++
			}
		}
	}
	return same, compared
}

func dirBytes(t testing.TB, dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}
