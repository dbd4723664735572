package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// realUpgrade is the size mix of a weekly Arch upgrade of n packages: most a few hundred KiB, some a
// few MiB, a handful tens of MiB (about 160 MB for 70).
func realUpgrade(n int) []alpmtest.Pkg {
	pkgs := make([]alpmtest.Pkg, n)
	for i := range pkgs {
		var size int
		switch {
		case i%35 == 34:
			size = 20 << 20
		case i%9 == 8:
			size = 5<<20 + (i%4)*(1<<20)
		case i%3 == 2:
			size = 1<<20 + (i%5)*(600<<10)
		default:
			size = 20<<10 + (i%11)*(35<<10)
		}
		pkgs[i] = alpmtest.Pkg{Name: fmt.Sprintf("wk%02d", i), Size: size, Ext: ".pkg.tar"}
	}
	return pkgs
}

// BenchmarkUpgradeMissCost: pacman 6 -Sw of a 70-package upgrade that no neighbour holds, with
// ParallelDownloads = 5 and a mirror 30 ms away at 10 MB/s a connection: through the endpoint (first
// Server line, the mirror second, as the README's recipe) against straight from the mirror, in turns,
// three times each; the medians. Goal: at most 1.05x. Then a CacheServer miss (a package of at most
// 1 MiB no peer holds: pacman 7 asks, gets 404, goes on to its Server) 60 times: p50 and p99 beside a
// request the endpoint answers with a 404 without looking anything up. Goal: p99 under 25 ms.
func BenchmarkUpgradeMissCost(b *testing.B) {
	alpmtest.Require(b, "pacman", "repo-add", "bsdtar")
	pkgs := realUpgrade(70)
	repo := alpmtest.MakeRepo(b, "core", pkgs...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	m := serveMirror(b, repo, ln)
	node := kubotest.Start(b, kubotest.Options{})
	direct, via := alpmtest.NewSandbox(b, repo), alpmtest.NewSandbox(b, repo)
	direct.Servers = map[string][]string{"core": {m.template()}}
	for _, sb := range []*alpmtest.Sandbox{direct, via} {
		sb.Options = []string{"ParallelDownloads = 5"}
		sb.WriteConf(b)
		sb.Pacman(b, "-Sy")
	}
	m.mu.Lock()
	m.latency, m.rate = 30*time.Millisecond, 10_000_000
	m.mu.Unlock()
	names := pkgNames(pkgs)
	run := func(sb *alpmtest.Sandbox) time.Duration {
		for _, f := range sb.CachedPackages(b) {
			os.Remove(filepath.Join(sb.CacheDir, f))
		}
		start := time.Now()
		sb.Pacman(b, append([]string{"-Sw"}, names...)...)
		took := time.Since(start)
		if n := len(sb.CachedPackages(b)); n != len(pkgs) {
			b.Fatalf("%d of %d packages downloaded", n, len(pkgs))
		}
		return took
	}
	// Each run through the endpoint gets an agent of its own, as after a boot: none has the packages
	// of the run before in its finished downloads, and none seeds pacman's cache (its pacman.conf names
	// another CacheDir), so no peer, this machine included, holds any package.
	var base string
	fresh := func() {
		port := freePort(b)
		base = "http://127.0.0.1:" + strconv.Itoa(port)
		via.Servers = map[string][]string{"core": {base + "/$repo/os/$arch", m.template()}}
		via.WriteConf(b)
		conf := filepath.Join(b.TempDir(), "pacman.conf")
		text := strings.Replace(via.ConfText(), "CacheDir = "+via.CacheDir, "CacheDir = "+b.TempDir(), 1)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
		startAgent(b, "--pacman-conf", conf, "--api", node.APIAddr, "--state-dir", b.TempDir(),
			"--listen", filepath.Join(b.TempDir(), "control.sock"), "--http", "127.0.0.1:"+strconv.Itoa(port),
			"--mirrorlist", mirrorlist(b, m.template()))
		waitListening(b, port)
	}
	var ds, vs []time.Duration
	for range max(b.N, 3) {
		ds = append(ds, run(direct))
		fresh()
		vs = append(vs, run(via))
	}
	d, v := alpmtest.Median(ds), alpmtest.Median(vs)
	var mb float64
	for _, p := range pkgs {
		mb += float64(p.Size) / 1e6
	}
	b.ReportMetric(v.Seconds(), "endpoint-s")
	b.ReportMetric(d.Seconds(), "mirror-s")
	b.ReportMetric(v.Seconds()/d.Seconds(), "x-mirror")
	b.Logf("a %d-package upgrade (%.0f MB) no neighbour holds, ParallelDownloads = 5, mirror 30 ms away at 10 MB/s a connection: through the endpoint %s (runs %v), straight from the mirror %s (runs %v): %.3fx (goal: at most 1.05x)",
		len(pkgs), mb, v.Round(time.Millisecond), roundAll(vs), d.Round(time.Millisecond), roundAll(ds), v.Seconds()/d.Seconds())

	// CacheServer misses: packages of at most 1 MiB, none held by a peer.
	var small []string
	for _, p := range pkgs {
		if p.Size <= 1<<20 {
			small = append(small, p.FileName())
		}
	}
	get := func(path string) (time.Duration, int) {
		start := time.Now()
		resp, err := http.Get(base + path)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		return time.Since(start), resp.StatusCode
	}
	var miss, floor []time.Duration
	for i := range 60 {
		took, code := get("/cache/core/os/x86_64/" + small[i%len(small)])
		if code != http.StatusNotFound {
			b.Fatalf("a CacheServer miss answered %d", code)
		}
		miss = append(miss, took)
		took, _ = get("/cache/core/os/x86_64/not-a-package")
		floor = append(floor, took)
	}
	p50, p99 := alpmtest.Percentile(miss, 50), alpmtest.Percentile(miss, 99)
	b.ReportMetric(float64(p50.Microseconds())/1000, "cacheserver-miss-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "cacheserver-miss-p99-ms")
	b.Logf("CacheServer miss (60 packages no peer holds): p50 %s, p99 %s; a 404 without a lookup: p50 %s, p99 %s (goal: p99 under 25 ms)",
		p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), alpmtest.Percentile(floor, 50).Round(10*time.Microsecond), alpmtest.Percentile(floor, 99).Round(10*time.Microsecond))
}

func roundAll(d []time.Duration) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, x := range d {
		out[i] = x.Round(time.Millisecond)
	}
	return out
}
