package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// upgradeSet is n packages the size of an ordinary upgrade's: most a few KiB to a few hundred, every
// 25th a few MiB.
func upgradeSet(n int) []alpmtest.Pkg {
	pkgs := make([]alpmtest.Pkg, n)
	for i := range pkgs {
		size := 8<<10 + (i%7)*40<<10
		if i%25 == 24 {
			size = 3 << 20
		}
		pkgs[i] = alpmtest.Pkg{Name: fmt.Sprintf("up%03d", i), Size: size}
	}
	return pkgs
}

func pkgNames(pkgs []alpmtest.Pkg) []string {
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = p.Name
	}
	return names
}

// An upgrade of 300 packages no neighbour holds, through the endpoint as pacman's only Server, in
// parallel (ParallelDownloads = 5) and one after another: every package arrives, from the mirror at once
// (the agent's own bookkeeping refuses nothing: a finished download takes no slot), and pacman sees no
// error at all.
func TestEndpointThroughABigUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: real pacman, kubo and 300 packages")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	pkgs := upgradeSet(300)
	repo := alpmtest.MakeRepo(t, "core", pkgs...)
	m := startMirror(t, repo)
	node := kubotest.Start(t, kubotest.Options{})
	for _, parallel := range []int{5, 1} {
		t.Run(fmt.Sprintf("ParallelDownloads=%d", parallel), func(t *testing.T) {
			b := alpmtest.NewSandbox(t, repo)
			port := freePort(t)
			base := "http://127.0.0.1:" + strconv.Itoa(port)
			b.Servers = map[string][]string{"core": {base + "/$repo/os/$arch"}}
			b.Options = []string{"ParallelDownloads = " + strconv.Itoa(parallel)}
			b.WriteConf(t)
			logs := startAgent(t, "--pacman-conf", b.Conf, "--api", node.APIAddr, "--state-dir", t.TempDir(),
				"--listen", filepath.Join(t.TempDir(), "control.sock"), "--http", "127.0.0.1:"+strconv.Itoa(port),
				"--mirrorlist", mirrorlist(t, m.template()), "--quiet", "200ms")
			waitListening(t, port)
			m.reset()
			start := time.Now()
			b.Pacman(t, "-Sy")
			out := b.Pacman(t, append([]string{"-Sw"}, pkgNames(pkgs)...)...)
			took := time.Since(start)
			if got := len(b.CachedPackages(t)); got != len(pkgs) {
				t.Errorf("%d of %d packages in the cache", got, len(pkgs))
			}
			for _, bad := range []string{"error", "502", "too many errors", "failed"} {
				if strings.Contains(strings.ToLower(out), bad) {
					t.Errorf("pacman's output has %q:\n%s", bad, out)
					break
				}
			}
			if got := len(m.packageRequests()); got != len(pkgs) {
				t.Errorf("the mirror was asked for %d packages, want each of the %d once", got, len(pkgs))
			}
			if v := metricValue(t, base, "pacman_ipfs_endpoint_direct_total"); v != float64(len(pkgs)) {
				t.Errorf("%v packages went to the mirror at once, want all %d (no peer holds any)", v, len(pkgs))
			}
			if v := metricValue(t, base, "pacman_ipfs_endpoint_passed_through_total"); v != 0 {
				t.Errorf("%v packages found every download slot taken", v)
			}
			if b, _ := os.ReadFile(logs); strings.Contains(string(b), "no source could serve") {
				t.Errorf("the agent refused a package:\n%s", b)
			}
			t.Logf("%d packages through the endpoint with ParallelDownloads = %d in %s", len(pkgs), parallel, took.Round(time.Millisecond))
		})
	}
}

// A download that takes longer than --idle-exit (a large package from a slow mirror) is work: the
// agent stays up until it is delivered, and exits idle only after.
func TestLongDownloadKeepsTheAgentUp(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: real pacman and kubo")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	big := alpmtest.Pkg{Name: "big", Size: 3 << 20}
	repo := alpmtest.MakeRepo(t, "core", big)
	m := startMirror(t, repo)
	node := kubotest.Start(t, kubotest.Options{})
	b := alpmtest.NewSandbox(t, repo)
	port := freePort(t)
	b.Servers = map[string][]string{"core": {"http://127.0.0.1:" + strconv.Itoa(port) + "/$repo/os/$arch"}}
	b.WriteConf(t)
	logs := startAgent(t, "--pacman-conf", b.Conf, "--api", node.APIAddr, "--state-dir", t.TempDir(),
		"--listen", filepath.Join(t.TempDir(), "control.sock"), "--http", "127.0.0.1:"+strconv.Itoa(port),
		"--mirrorlist", mirrorlist(t, m.template()), "--quiet", "100ms", "--idle-exit", "2s")
	waitListening(t, port)
	b.Pacman(t, "-Sy")
	m.mu.Lock()
	m.rate = 400 << 10 // about 8 s for the package: four times the idle exit
	m.mu.Unlock()
	start := time.Now()
	b.Pacman(t, "-Sw", "big")
	took := time.Since(start)
	if got := b.CachedPackages(t); len(got) != 1 {
		t.Fatalf("cached: %v", got)
	}
	alpmtest.Eventually(t, 30*time.Second, "the agent exits idle after the download", func() bool {
		out, _ := os.ReadFile(logs)
		return strings.Contains(string(out), "idle, exiting")
	})
	t.Logf("a %d-byte download took %s through an agent with --idle-exit 2s; it exited idle after", big.Size, took.Round(time.Millisecond))
}
