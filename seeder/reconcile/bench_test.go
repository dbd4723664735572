package reconcile_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// benchCache writes a cache of n package files with sizes drawn like a pacman cache's (most under a
// MiB, a tail of large ones), and a real sync db (gzip'd tar in repo-add's layout) that vouches for them.
// It returns the pacman config to load it with and the total size.
func benchCache(b *testing.B, root string, n int, sizeOf func(r *rand.Rand) int) (*alpmdb.Config, int64) {
	b.Helper()
	cacheDir := filepath.Join(root, "pacman", "pkg")
	dbPath := filepath.Join(root, "lib")
	for _, d := range []string{cacheDir, filepath.Join(dbPath, "sync"), filepath.Join(dbPath, "local")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(uint64(n), 1))
	entries := make([]alpmtest.Entry, 0, n)
	var total int64
	for i := range n {
		size := sizeOf(r)
		data := nodetest.Bytes(uint64(i), size)
		e := alpmtest.Entry{Name: fmt.Sprintf("bench%05d", i), Version: "1.0-1", Arch: "x86_64", CSize: int64(size)}
		e.FileName = e.Name + "-1.0-1-x86_64.pkg.tar.zst"
		sum := sha256.Sum256(data)
		e.SHA256 = hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(cacheDir, e.FileName), data, 0o644); err != nil {
			b.Fatal(err)
		}
		entries = append(entries, e)
		total += int64(size)
	}
	alpmtest.WriteDB(b, filepath.Join(dbPath, "sync", "bench.db"), entries)
	return &alpmdb.Config{Path: "bench", RootDir: "/", DBPath: dbPath + "/", CacheDirs: []string{cacheDir}, Repos: []alpmdb.Repo{{Name: "bench"}}}, total
}

// cacheLike draws package sizes: 70% below 1 MiB, 25% 1-16 MiB, 5% 16-96 MiB.
func cacheLike(r *rand.Rand) int {
	switch p := r.IntN(100); {
	case p < 70:
		return 20<<10 + r.IntN(1<<20-20<<10)
	case p < 95:
		return 1<<20 + r.IntN(15<<20)
	default:
		return 16<<20 + r.IntN(80<<20)
	}
}

func loadAndSync(b *testing.B, cfg *alpmdb.Config, s *reconcile.Seeder) *reconcile.Report {
	b.Helper()
	ix, err := alpmdb.Load(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	rep, err := s.Sync(context.Background(), ix)
	if err != nil {
		b.Fatal(err)
	}
	return rep
}

// BenchmarkFirstSeeding: a first seeding of a cache-like set of files (every sha256 verified, zero copy)
// against the baseline of a plain `ipfs add --nocopy` of the same files on a twin node, same parameters.
// Goal: at least 0.8x the baseline's throughput.
func BenchmarkFirstSeeding(b *testing.B) {
	alpmtest.Require(b)
	top := b.TempDir()
	cfg, total := benchCache(b, top, 300, cacheLike)
	b.SetBytes(total)
	var ours, plain []float64
	for i := 0; i < b.N; i++ {
		// Each round starts from fresh nodes, so both sides really write every block.
		base := kubotest.Start(b, kubotest.Options{Filestore: true, RepoDir: filepath.Join(top, fmt.Sprintf("base%d", i))})
		start := time.Now()
		base.IPFS(b, "add", "-Q", "-r", "--nocopy", "--cid-version=1", "--chunker=size-1048576", "--max-file-links=1024", cfg.CacheDirs[0])
		plain = append(plain, time.Since(start).Seconds())
		base.Stop(b)

		node := kubotest.Start(b, kubotest.Options{Filestore: true, RepoDir: filepath.Join(top, fmt.Sprintf("ours%d", i))})
		client := node.Client(b)
		s := reconcile.New(reconcile.Options{CacheDirs: cfg.CacheDirs, StateDir: b.TempDir(), Node: client, IndexDir: "/pacman-ipfs"})
		start = time.Now()
		rep := loadAndSync(b, cfg, s)
		ours = append(ours, time.Since(start).Seconds())
		if rep.Added != 300 || rep.HashedBytes != total || !rep.Dirs[0].NoCopy {
			b.Fatalf("seeding: added %d, hashed %d of %d, zero copy %v", rep.Added, rep.HashedBytes, total, rep.Dirs[0].NoCopy)
		}
		node.Stop(b)
	}
	mb := float64(total) / (1 << 20)
	o, p := alpmtest.Median(ours), alpmtest.Median(plain)
	b.ReportMetric(mb/o, "seed-MiB/s")
	b.ReportMetric(mb/p, "ipfs-add-nocopy-MiB/s")
	b.ReportMetric(p/o, "x-baseline")
	b.Logf("first seeding of 300 files, %.0f MiB: pacman-ipfs %.2fs (%.0f MiB/s, every sha256 verified) vs ipfs add --nocopy %.2fs (%.0f MiB/s): %.2fx",
		mb, o, mb/o, p, mb/p, p/o)
}

// BenchmarkResyncUnchanged10000: a pass over an unchanged cache of 10,000 files (load the sync db, stat
// every file, list the node's pins), against the baseline of kubo's own `pin ls --names` of the same
// pins. Goal: at most 1 s and no file read.
func BenchmarkResyncUnchanged10000(b *testing.B) {
	alpmtest.Require(b)
	top := b.TempDir()
	cfg, _ := benchCache(b, top, 10000, func(r *rand.Rand) int { return 1<<10 + r.IntN(4<<10) })
	kn := kubotest.Start(b, kubotest.Options{Filestore: true, RepoDir: filepath.Join(top, "ipfs")})
	client := kn.Client(b)
	state := b.TempDir()
	start := time.Now()
	first := loadAndSync(b, cfg, reconcile.New(reconcile.Options{CacheDirs: cfg.CacheDirs, StateDir: state, Node: client, IndexDir: "/pacman-ipfs"}))
	firstTook := time.Since(start)
	if first.Added != 10000 {
		b.Fatalf("first pass added %d", first.Added)
	}
	b.ResetTimer()
	var ours, pinls []float64
	for i := 0; i < max(b.N, 5); i++ {
		start := time.Now()
		// A new Seeder each round reads the state from disk, as `pacman-ipfs sync` does.
		rep := loadAndSync(b, cfg, reconcile.New(reconcile.Options{CacheDirs: cfg.CacheDirs, StateDir: state, Node: client, IndexDir: "/pacman-ipfs"}))
		ours = append(ours, time.Since(start).Seconds())
		if rep.HashedBytes != 0 || rep.Added != 0 || rep.Seeded != 10000 {
			b.Fatalf("re-sync read %d bytes, added %d, seeded %d", rep.HashedBytes, rep.Added, rep.Seeded)
		}
		start = time.Now()
		if _, err := client.Pins(context.Background(), node.PinPrefix); err != nil {
			b.Fatal(err)
		}
		pinls = append(pinls, time.Since(start).Seconds())
	}
	b.StopTimer()
	b.ReportMetric(alpmtest.Median(ours)*1000, "resync-ms")
	b.ReportMetric(alpmtest.Median(pinls)*1000, "kubo-pin-ls-ms")
	b.ReportMetric(0, "bytes-read")
	b.Logf("re-sync of 10,000 unchanged files: %.0f ms (0 bytes read); kubo's pin ls of the same pins alone: %.0f ms; the first pass took %s",
		alpmtest.Median(ours)*1000, alpmtest.Median(pinls)*1000, firstTook.Round(time.Millisecond))
}
