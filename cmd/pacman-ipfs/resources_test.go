package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

// procFigures reads a process's resident memory (KiB) and open descriptors.
func procFigures(t testing.TB, pid int) (rssKiB, fds int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return rssKiB, len(ents)
}

func agentState(t testing.TB, socket string) agent.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := agent.AskStatus(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// tryAgentState asks the agent for its status. The socket file appears at bind(), before listen(): on a
// busy machine a connection may still be refused then, so tests wait for an answer, not for the file.
func tryAgentState(socket string) (agent.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return agent.AskStatus(ctx, socket)
}

// syntheticCache is a pacman configuration whose one repo vouches for n small files already in the cache,
// as after a `pacman -Sw` (written directly: building n real packages would take minutes).
func syntheticCache(t testing.TB, n int) (conf string) {
	t.Helper()
	root := t.TempDir()
	cache, dbPath := filepath.Join(root, "pkg"), filepath.Join(root, "db")
	for _, d := range []string{cache, filepath.Join(dbPath, "sync"), filepath.Join(dbPath, "local")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var entries []alpmtest.Entry
	for i := range n {
		data := nodetest.Bytes(uint64(i)+7, 1<<10+i%4096)
		e := alpmtest.Entry{Name: fmt.Sprintf("res%05d", i), Version: "1.0-1", Arch: "x86_64", CSize: int64(len(data))}
		e.FileName = e.Name + "-1.0-1-x86_64.pkg.tar.zst"
		e.SHA256 = fmt.Sprintf("%x", sha256Sum(data))
		if err := os.WriteFile(filepath.Join(cache, e.FileName), data, 0o644); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	alpmtest.WriteDB(t, filepath.Join(dbPath, "sync", "core.db"), entries)
	conf = filepath.Join(root, "pacman.conf")
	if err := os.WriteFile(conf, []byte("[options]\nDBPath = "+dbPath+"/\nCacheDir = "+cache+"/\nArchitecture = x86_64\n[core]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// No goroutine or descriptor growth across 1,000 notify calls from the real hook client.
func TestNoGrowthAcross1000NotifyCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubo and the agent")
	}
	conf := syntheticCache(t, 20)
	kn := kubotest.Start(t, kubotest.Options{})
	socket := filepath.Join(t.TempDir(), "c.sock")
	startAgent(t, "--pacman-conf", conf, "--api", kn.APIAddr, "--state-dir", t.TempDir(), "--listen", socket, "--quiet", "50ms")
	alpmtest.Eventually(t, 30*time.Second, "the first pass", func() bool {
		st, err := tryAgentState(socket)
		return err == nil && st.Passes >= 1
	})
	settle := func() agent.Status {
		time.Sleep(500 * time.Millisecond) // past the quiet period and the pass it triggers
		alpmtest.Eventually(t, 30*time.Second, "idle", func() bool { return agentState(t, socket).State == "idle" })
		return agentState(t, socket)
	}
	before := settle()
	_, fdsBefore := procFigures(t, before.PID)
	bin := notifyBinary(t)
	for i := range 1000 {
		cmd := exec.Command(bin, "--socket", socket)
		cmd.Stdin = strings.NewReader("linux\nglibc\n")
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Fatalf("notify %d: %v %q", i, err, out)
		}
	}
	after := settle()
	rss, fdsAfter := procFigures(t, after.PID)
	t.Logf("1,000 notify calls: goroutines %d → %d, open fds %d → %d, passes %d → %d, RSS %d KiB",
		before.Goroutines, after.Goroutines, fdsBefore, fdsAfter, before.Passes, after.Passes, rss)
	if after.Goroutines > before.Goroutines+2 || fdsAfter > fdsBefore+2 {
		t.Errorf("growth: goroutines %d → %d, fds %d → %d", before.Goroutines, after.Goroutines, fdsBefore, fdsAfter)
	}
}

// BenchmarkAgentResources: the agent's resident memory and open descriptors idle and during a first
// seeding of 10,000 files into a real kubo node, beside the same figures for that kubo daemon.
func BenchmarkAgentResources(b *testing.B) {
	alpmtest.Require(b)
	conf := syntheticCache(b, 10000)
	kn := kubotest.Start(b, kubotest.Options{})
	client := kn.Client(b)
	socket := filepath.Join(b.TempDir(), "c.sock")
	startAgent(b, "--pacman-conf", conf, "--api", kn.APIAddr, "--state-dir", b.TempDir(), "--listen", socket, "--quiet", "50ms")
	alpmtest.Eventually(b, 30*time.Second, "the agent", func() bool { _, err := tryAgentState(socket); return err == nil })
	pid := agentState(b, socket).PID
	kuboPID := 0
	if out, err := exec.Command("pgrep", "-f", "IPFS_PATH="+kn.RepoDir).Output(); err == nil {
		kuboPID, _ = strconv.Atoi(strings.Fields(string(out))[0])
	}
	var peakRSS, peakFDs int
	start := time.Now()
	for {
		rss, fds := procFigures(b, pid)
		peakRSS, peakFDs = max(peakRSS, rss), max(peakFDs, fds)
		pins, err := client.Pins(context.Background(), node.PinPrefix)
		if err != nil {
			b.Fatal(err)
		}
		if len(pins) == 10000 {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%d of 10,000 seeded after 5 minutes", len(pins))
		}
		time.Sleep(100 * time.Millisecond)
	}
	seeding := time.Since(start)
	alpmtest.Eventually(b, time.Minute, "idle", func() bool { return agentState(b, socket).State == "idle" })
	time.Sleep(time.Second)
	idleRSS, idleFDs := procFigures(b, pid)
	b.ReportMetric(float64(peakRSS)/1024, "seeding-RSS-MiB")
	b.ReportMetric(float64(peakFDs), "seeding-fds")
	b.ReportMetric(float64(idleRSS)/1024, "idle-RSS-MiB")
	b.ReportMetric(float64(idleFDs), "idle-fds")
	msg := fmt.Sprintf("agent seeding 10,000 files (%s): peak RSS %.1f MiB, %d fds; idle after: RSS %.1f MiB, %d fds",
		seeding.Round(time.Second), float64(peakRSS)/1024, peakFDs, float64(idleRSS)/1024, idleFDs)
	if kuboPID > 0 {
		krss, kfds := procFigures(b, kuboPID)
		b.ReportMetric(float64(krss)/1024, "kubo-RSS-MiB")
		msg += fmt.Sprintf("; the kubo daemon beside it: RSS %.1f MiB, %d fds", float64(krss)/1024, kfds)
	}
	b.Log(msg)
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }
