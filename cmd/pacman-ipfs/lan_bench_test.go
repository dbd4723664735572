package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
)

// BenchmarkLAN is the forum thread's office: machines on one LAN (network namespaces on a bridge), each
// with the node packaging/ sets up and the agent as the units start it, and the mirror behind a 20 Mbit/s
// uplink shared by all of them. Every figure is `pacman -Sw` of about 200 MB (eight 25 MiB packages):
// what the uplink and the LAN change is the download; pacman.conf has Arch's ParallelDownloads = 5. Beside each, the baseline from the same run: one
// machine alone, straight from the mirror.
//
//	(a) one machine holds the set, another downloads it through its endpoint: at least 20x faster;
//	(b) five machines download another set at the same moment, nobody has it: the mirror sends it at
//	    most 1.2 times, and the slowest machine takes at most 1.3 times the baseline;
//	(c) the uplink is down: a sixth machine downloads the second set from its neighbours.
func BenchmarkLAN(b *testing.B) {
	alpmtest.Require(b, "pacman", "repo-add", "bsdtar", "ip", "tc", "systemd-socket-activate")
	alpmtest.RequireRoot(b)
	set := func(prefix string) ([]alpmtest.Pkg, []string) {
		var pkgs []alpmtest.Pkg
		var names []string
		for i := range 8 {
			p := alpmtest.Pkg{Name: fmt.Sprintf("%s%d", prefix, i), Size: 25 << 20, Ext: ".pkg.tar"}
			pkgs, names = append(pkgs, p), append(names, p.Name)
		}
		return pkgs, names
	}
	set1, names1 := set("one")
	set2, names2 := set("two")
	repo := alpmtest.MakeRepo(b, "core", append(set1, set2...)...)
	size := func(pkgs []alpmtest.Pkg) int64 {
		var n int64
		for _, p := range pkgs {
			fi, err := os.Stat(repo.Path(p))
			if err != nil {
				b.Fatal(err)
			}
			n += fi.Size()
		}
		return n
	}
	size1, size2 := size(set1), size(set2)
	lan := newLAN(b, repo, 6)
	m := lan.addMirror(b, repo, "20mbit")
	template := m.url + "/$repo/os/$arch"
	mirrors := mirrorlist(b, template)
	h := lan.hosts
	for _, x := range h {
		alpmtest.CopyFile(b, repo.DB, x.sb.SyncDBPath("core"), 0o644)
		// As in Arch's pacman.conf.
		x.sb.Options = append(x.sb.Options, "ParallelDownloads = 5")
		x.sb.WriteConf(b)
	}
	download := func(x *lanHost, names []string) time.Duration {
		start := time.Now()
		x.sb.Pacman(b, append([]string{"-Sw", "--noconfirm"}, names...)...)
		return time.Since(start)
	}
	mb := func(n int64) float64 { return float64(n) / 1e6 }

	// Baseline: F alone, plain pacman straight from the mirror.
	f := h[5]
	f.sb.Servers = map[string][]string{"core": {template}}
	f.sb.WriteConf(b)
	baseline := download(f, names1)
	b.Logf("baseline: one machine alone, %d packages, %.0f MB straight from the mirror behind 20 Mbit/s: %s (%.2f MB/s)",
		len(names1), mb(size1), baseline.Round(time.Millisecond), mb(size1)/baseline.Seconds())

	// (a) A holds set 1 (from a local copy of the repo); B downloads it through its endpoint.
	a, bb := h[0], h[1]
	wrap := a.sb.Wrap
	a.sb.Wrap = nil
	a.sb.Pacman(b, append([]string{"-Sw", "--noconfirm"}, names1...)...)
	a.sb.Wrap = wrap
	// Each machine gets the packaged node and the agent, as the units start them, when it joins: A and B
	// for (a), the three others for (b), F for (c). (Six machines share this box's two cores: a
	// machine not in a figure yet stays off.)
	join := func(xs ...*lanHost) {
		for _, x := range xs {
			x.startKubo(b)
			x.sb.Servers = map[string][]string{"core": {"http://127.0.0.1:7878/$repo/os/$arch"}}
			x.sb.WriteConf(b)
			x.startAgent(b, "--mirrorlist", mirrors)
			x.status(b) // the first connection starts it, as pacman's hook would
		}
	}
	join(a, bb)
	alpmtest.Eventually(b, 5*time.Minute, "A seeds set 1", func() bool { return a.status(b).Node.Pins == len(set1) })
	ids := waitAgents(b, h[:2])
	alpmtest.Eventually(b, 2*time.Minute, "B finds A's index", func() bool {
		logs, _ := os.ReadFile(bb.logs)
		return listedIndexOf(string(logs), ids[a])
	})
	m.sent.Store(0)
	oneSeeder := download(bb, names1)
	b.Logf("(a) 1 seeder, 1 downloader through its endpoint: %s (%.1f MB/s), %.1fx the baseline's speed (goal: 20x); the mirror sent %.1f MB",
		oneSeeder.Round(time.Millisecond), mb(size1)/oneSeeder.Seconds(), baseline.Seconds()/oneSeeder.Seconds(), mb(m.sent.Load()))
	b.ReportMetric(baseline.Seconds()/oneSeeder.Seconds(), "a-x-faster")
	b.Logf("(a) B's endpoint served: %v", servedBy(b, bb.logs))

	// (b) A to E download set 2 at the same moment; nobody has it.
	join(h[2:5]...)
	ids = waitAgents(b, h[:5])
	alpmtest.Eventually(b, 5*time.Minute, "B seeds set 1", func() bool { return bb.status(b).Node.Pins == len(set1) })
	m.sent.Store(0)
	took := pacmanAll(b, h[:5], append([]string{"-Sw", "--noconfirm"}, names2...)...)
	var slowest time.Duration
	var each []string
	for _, x := range h[:5] {
		slowest = max(slowest, took[x])
		each = append(each, fmt.Sprintf("%s %s", x.name, took[x].Round(100*time.Millisecond)))
	}
	sent := m.sent.Load()
	b.Logf("(b) 5 machines at once, %.0f MB nobody had: the mirror sent %.0f MB (%.2fx one copy, goal <= 1.2x); slowest %s = %.2fx the baseline (goal <= 1.3x); %s",
		mb(size2), mb(sent), float64(sent)/float64(size2), slowest.Round(time.Millisecond), slowest.Seconds()/baseline.Seconds(), strings.Join(each, ", "))
	b.ReportMetric(float64(sent)/float64(size2), "b-mirror-copies")
	b.ReportMetric(slowest.Seconds()/baseline.Seconds(), "b-slowest-vs-baseline")

	// (c) The uplink goes down; F, with its node and agent now, downloads set 2 from its neighbours.
	ip(b, "-n", "pi-m-"+lan.tag, "link", "set", "eth0", "down")
	join(f)
	alpmtest.Eventually(b, 2*time.Minute, "F finds the indexes of the five others", func() bool {
		logs, _ := os.ReadFile(f.logs)
		return strings.Count(string(logs), "index found on the LAN") >= 5 && strings.Count(string(logs), "index root listed") >= 5
	})
	offline := download(f, names2)
	var from []string
	for _, x := range h[:5] {
		out, err := f.ipfs("bitswap", "ledger", ids[x])
		if err != nil {
			continue
		}
		if mm := regexp.MustCompile(`Bytes received:\s+(\d+)`).FindStringSubmatch(out); mm != nil {
			n, _ := strconv.ParseInt(mm[1], 10, 64)
			from = append(from, fmt.Sprintf("%s %.0f MB", x.name, mb(n)))
		}
	}
	b.Logf("(c) uplink down: F downloaded %.0f MB from its neighbours in %s (%.1f MB/s); bitswap received from %s",
		mb(size2), offline.Round(time.Millisecond), mb(size2)/offline.Seconds(), strings.Join(from, ", "))
	b.ReportMetric(offline.Seconds(), "c-offline-s")
}

// servedBy counts the packages an agent's log says its endpoint served, by source.
func servedBy(t testing.TB, logs string) map[string]int {
	b, err := os.ReadFile(logs)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range regexp.MustCompile(`msg="package served" .*?source=(\S+)`).FindAllStringSubmatch(string(b), -1) {
		out[m[1]]++
	}
	return out
}
