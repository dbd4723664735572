package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// serveRepoIfAsked makes the test binary a plain mirror of one repo directory when the campus benchmark
// starts it inside its network namespace.
func serveRepoIfAsked() {
	dir, addr := os.Getenv("PACMAN_IPFS_BE_MIRROR_DIR"), os.Getenv("PACMAN_IPFS_BE_MIRROR_ADDR")
	if dir == "" || addr == "" {
		return
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(dir, filepath.Base(r.URL.Path)))
	})
	if err := http.ListenAndServe(addr, h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// shapedMirror runs a mirror of dir in a network namespace of its own, reached over a veth pair shaped
// with tc to rate in both directions: the slow uplink. It returns the mirror's base URL.
func shapedMirror(b *testing.B, dir, rate string) string {
	b.Helper()
	ns := fmt.Sprintf("pi-campus-%d", os.Getpid())
	hostIf, nsIf := fmt.Sprintf("pic%d", os.Getpid()%100000), fmt.Sprintf("pim%d", os.Getpid()%100000)
	// A /30 of the benchmarking range (RFC 2544) between our own two test hosts; refuse to run if the
	// machine already uses that range (its own network must never be shadowed).
	hostIP, nsIP := "198.18.213.1", "198.18.213.2"
	if out, _ := exec.Command("ip", "-br", "addr").Output(); strings.Contains(string(out), "198.18.") {
		b.Skipf("this machine already has addresses in 198.18.0.0/15:\n%s", out)
	}
	sh := func(args ...string) {
		b.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	sh("ip", "netns", "add", ns)
	b.Cleanup(func() {
		exec.Command("ip", "netns", "del", ns).Run()
		exec.Command("ip", "link", "del", hostIf).Run()
	})
	sh("ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	sh("ip", "link", "set", nsIf, "netns", ns)
	sh("ip", "addr", "add", hostIP+"/30", "dev", hostIf)
	sh("ip", "link", "set", hostIf, "up")
	sh("ip", "netns", "exec", ns, "ip", "addr", "add", nsIP+"/30", "dev", nsIf)
	sh("ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up")
	sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	sh("tc", "qdisc", "add", "dev", hostIf, "root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms")
	sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", nsIf, "root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms")

	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	addr := nsIP + ":8080"
	cmd := exec.Command("ip", "netns", "exec", ns, exe)
	cmd.Env = append(os.Environ(), "PACMAN_IPFS_BE_MIRROR_DIR="+dir, "PACMAN_IPFS_BE_MIRROR_ADDR="+addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			b.Fatal("the shaped mirror did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "http://" + addr
}

// BenchmarkCampus is the forum thread's case: the mirror sits behind a 20 Mbit/s uplink, a seeder peer on
// the fast local side. Installing about 200 MB of mixed-size packages on a second machine through its
// endpoint, against the same install straight from the mirror. Goal: at least 5x faster.
func BenchmarkCampus(b *testing.B) {
	alpmtest.Require(b, "pacman", "repo-add", "bsdtar", "ip", "tc")
	alpmtest.RequireRoot(b)
	var pkgs []alpmtest.Pkg
	var names []string
	add := func(n, size int, ext, prefix string) {
		for i := range n {
			p := alpmtest.Pkg{Name: fmt.Sprintf("%s%02d", prefix, i), Size: size, Ext: ext}
			pkgs, names = append(pkgs, p), append(names, p.Name)
		}
	}
	add(20, 500<<10, ".pkg.tar.gz", "small")
	add(8, 10<<20, ".pkg.tar", "medium")
	add(2, 55<<20, ".pkg.tar", "large")
	repo := alpmtest.MakeRepo(b, "core", pkgs...)
	var total int64
	for _, p := range pkgs {
		fi, err := os.Stat(repo.Path(p))
		if err != nil {
			b.Fatal(err)
		}
		total += fi.Size()
	}
	mirrorURL := shapedMirror(b, repo.Dir, "20mbit")
	template := mirrorURL + "/$repo/os/$arch"

	// The seeder on the fast side already has everything (from a local copy of the repo).
	a := alpmtest.NewSandbox(b, repo)
	a.Pacman(b, append([]string{"-Syw"}, names...)...)
	nodeA := kubotest.Start(b, kubotest.Options{Filestore: true, RepoDir: filepath.Join(a.Root, "var", "cache", "pacman-ipfs")})
	stateA := b.TempDir()
	if r := cli(b, "sync", "--pacman-conf", a.Conf, "--api", nodeA.APIAddr, "--state-dir", stateA); r.code != 0 {
		b.Fatalf("sync on the seeder: %s", r.stderr)
	}
	var st status
	r := cli(b, "status", "--json", "--api", nodeA.APIAddr, "--state-dir", stateA, "--socket", filepath.Join(b.TempDir(), "none"))
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Index == "" {
		b.Fatalf("seeder status: %v %s", err, r.stdout)
	}

	install := func(sb *alpmtest.Sandbox) time.Duration {
		sb.Pacman(b, "-Sy")
		start := time.Now()
		sb.Pacman(b, append([]string{"-S"}, names...)...)
		return time.Since(start)
	}

	// Baseline: straight from the mirror, through the uplink.
	direct := alpmtest.NewSandbox(b, repo)
	direct.Servers = map[string][]string{"core": {template}}
	direct.WriteConf(b)
	baseline := install(direct)

	// Through the endpoint of a second machine whose node knows the seeder.
	sb, _, _, _ := downloader(b, repo, nodeA, template, st.Index)
	ours := install(sb)

	mb := float64(total) / 1e6
	b.ReportMetric(ours.Seconds(), "endpoint-s")
	b.ReportMetric(baseline.Seconds(), "mirror-s")
	b.ReportMetric(baseline.Seconds()/ours.Seconds(), "x-faster")
	b.Logf("installing %d packages, %.0f MB, mirror behind a 20 Mbit/s uplink: through the endpoint %s (%.1f MB/s), straight from the mirror %s (%.1f MB/s): %.1fx faster",
		len(pkgs), mb, ours.Round(time.Millisecond), mb/ours.Seconds(), baseline.Round(time.Millisecond), mb/baseline.Seconds(), baseline.Seconds()/ours.Seconds())
}

func waitListening(t testing.TB, port int) {
	t.Helper()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			return
		}
		if i > 200 {
			t.Fatalf("nothing listens on port %d", port)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
