package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent/control"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/memnode"
)

// BenchmarkHookNotify: the wall time of the hook's notify client, as pacman runs it (a new process,
// package names on stdin), with the agent up, against the baseline of running /bin/true the same way.
// Goal: a median of at most 20 ms.
func BenchmarkHookNotify(b *testing.B) {
	dir, err := os.MkdirTemp("", "pib")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"pkg", "db/sync", "db/local"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	socket := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		b.Fatal(err)
	}
	mn := memnode.New()
	a := agent.New(agent.Options{
		Config:   &alpmdb.Config{RootDir: "/", DBPath: filepath.Join(dir, "db") + "/", CacheDirs: []string{filepath.Join(dir, "pkg")}},
		StateDir: filepath.Join(dir, "state"),
		Dial:     func(context.Context) (node.Node, error) { return mn, nil },
		Auth:     control.Authorizer{GID: -1},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx, ln); close(done) }()
	defer func() { cancel(); <-done }()

	bin := notifyBinary(b)
	targets := strings.Repeat("linux\nlinux-headers\nglibc\nzlib\n", 75) // a 300-package -Syu
	run := func(name string, args ...string) time.Duration {
		cmd := exec.Command(name, args...)
		cmd.Stdin = strings.NewReader(targets)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		if err != nil || len(out) > 0 {
			b.Fatalf("%s: %v %q", name, err, out)
		}
		return took
	}
	var ours, base []time.Duration
	b.ResetTimer()
	for i := 0; i < max(b.N, 200); i++ {
		ours = append(ours, run(bin, "--socket", socket))
		base = append(base, run("/bin/true"))
	}
	b.StopTimer()
	med := func(d []time.Duration) float64 { slices.Sort(d); return float64(d[len(d)/2]) / 1e6 }
	p99 := func(d []time.Duration) float64 { slices.Sort(d); return float64(d[len(d)*99/100]) / 1e6 }
	b.ReportMetric(med(ours), "notify-median-ms")
	b.ReportMetric(p99(ours), "notify-p99-ms")
	b.ReportMetric(med(base), "bin-true-median-ms")
	b.Logf("hook notify with the agent up: median %.2f ms, p99 %.2f ms; exec of /bin/true: median %.2f ms (%d runs each)",
		med(ours), p99(ours), med(base), len(ours))
}
