package alpmdb_test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	alpm "github.com/Jguer/go-alpm/v2"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
)

// benchPackages is about the size of Arch's [extra].
const benchPackages = 15000

// minRounds is how many times each of Load and the bare walk runs at least, so the medians mean
// something even with -benchtime 1x.
const minRounds = 5

// BenchmarkLoad15000 times Load of a 15,000-package db against the floor for it: a bare go-alpm walk
// of the same db reading only each package's file name. Both run alternately, so drift (page cache,
// CPU frequency) hits both alike; the ratio of the medians is what the project holds to <= 1.5.
func BenchmarkLoad15000(b *testing.B) {
	dbPath := b.TempDir()
	// libalpm wants the dbpath to exist; local/ is where it looks for the local db.
	for _, dir := range []string{"sync", "local"} {
		if err := os.Mkdir(filepath.Join(dbPath, dir), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	alpmtest.WriteSyntheticDB(b, filepath.Join(dbPath, "sync", "big.db"), benchPackages)
	cfg := &alpmdb.Config{
		Path: "bench", RootDir: "/", DBPath: dbPath + "/",
		CacheDirs: []string{b.TempDir()}, Repos: []alpmdb.Repo{{Name: "big"}},
	}
	ctx := context.Background()

	var loads, walks []time.Duration
	b.ResetTimer()
	// One round per b.N, but never fewer than minRounds: ns/op is then of one Load plus one walk.
	for range max(b.N, minRounds) {
		// Collect the previous round's garbage first, so neither side pays for the other's.
		runtime.GC()
		start := time.Now()
		ix, err := alpmdb.Load(ctx, cfg)
		loads = append(loads, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if ix.Len() != benchPackages {
			b.Fatalf("Load indexed %d packages, want %d", ix.Len(), benchPackages)
		}

		runtime.GC()
		start = time.Now()
		n := bareWalk(b, dbPath+"/", "big")
		walks = append(walks, time.Since(start))
		if n != benchPackages {
			b.Fatalf("bare walk saw %d packages, want %d", n, benchPackages)
		}
	}
	b.StopTimer()

	load, walk := ms(alpmtest.Median(loads)), ms(alpmtest.Median(walks))
	b.ReportMetric(load, "load-ms")
	b.ReportMetric(walk, "bare-walk-ms")
	b.ReportMetric(load/walk, "x-bare")
	b.Logf("%d packages, %d rounds: Load median %.1f ms, bare walk median %.1f ms, ratio %.2f (goal <= 1.5)",
		benchPackages, len(loads), load, walk, load/walk)
}

// bareWalk is the least a reader of the db through go-alpm can do: open it, walk it, close it.
func bareWalk(b *testing.B, dbPath, repo string) int {
	h, err := alpm.Initialize("/", dbPath)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Release()
	db, err := h.RegisterSyncDB(repo, 0)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	_ = db.PkgCache().ForEach(func(p alpm.IPackage) error {
		if p.FileName() != "" {
			n++
		}
		return nil
	})
	return n
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
