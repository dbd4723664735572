package reconcile_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// Zero copy when files share blocks: kubo's filestore points each block at one file, the first added
// with it. Removing that file must leave every other pin of ours readable, and sync must not say it
// converged while one is not.
func TestZeroCopySharedBlocksSurviveRemoval(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: real kubo")
	}
	chunk := int(node.Import().ChunkSize)
	shared := randBytes(1, chunk) // one identical 1 MiB chunk at offset 0 of two different packages
	tests := []struct {
		name string
		// files by CacheDir (0 or 1): name -> content
		files [2]map[string][]byte
	}{
		{
			name: "the same package in two CacheDirs",
			files: [2]map[string][]byte{
				{"twin-1-1-x86_64.pkg.tar": randBytes(2, 3*chunk+100)},
				{"twin-1-1-x86_64.pkg.tar": nil}, // the same bytes
			},
		},
		{
			name: "two packages sharing a chunk at the same offset",
			files: [2]map[string][]byte{
				{
					"a-1-1-x86_64.pkg.tar": append(bytes.Clone(shared), randBytes(3, chunk+7)...),
					"b-1-1-x86_64.pkg.tar": append(bytes.Clone(shared), randBytes(4, chunk+9)...),
				},
				{},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "cache"), 0o755); err != nil {
				t.Fatal(err)
			}
			kn := kubotest.Start(t, kubotest.Options{Filestore: true, RepoDir: filepath.Join(root, "cache", "ipfs")})
			client := kn.Client(t)
			dirs := []string{filepath.Join(root, "cache", "pkg"), filepath.Join(root, "cache", "pkg2")}
			var entries []alpmtest.Entry
			content := map[string][]byte{}
			for i, files := range tt.files {
				if err := os.MkdirAll(dirs[i], 0o755); err != nil {
					t.Fatal(err)
				}
				for name, b := range files {
					if b == nil {
						b = content[name]
					} else {
						content[name] = b
						sum := sha256.Sum256(b)
						entries = append(entries, alpmtest.Entry{FileName: name, Name: strings.SplitN(name, "-", 2)[0],
							Version: "1-1", Arch: "x86_64", CSize: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
					}
					if err := os.WriteFile(filepath.Join(dirs[i], name), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			dbpath := filepath.Join(root, "db")
			if err := os.MkdirAll(filepath.Join(dbpath, "sync"), 0o755); err != nil {
				t.Fatal(err)
			}
			alpmtest.WriteDB(t, filepath.Join(dbpath, "sync", "core.db"), entries)
			conf := filepath.Join(root, "pacman.conf")
			text := fmt.Sprintf("[options]\nDBPath = %s\nCacheDir = %s\nCacheDir = %s\n[core]\n", dbpath, dirs[0], dirs[1])
			if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := alpmdb.ReadConfig(conf)
			if err != nil {
				t.Fatal(err)
			}
			s := reconcile.New(reconcile.Options{CacheDirs: cfg.CacheDirs, StateDir: t.TempDir(), Node: client})
			sync := func() *reconcile.Report {
				t.Helper()
				ix, err := alpmdb.Load(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := s.Sync(context.Background(), ix)
				if err != nil {
					t.Fatalf("Sync: %v", err)
				}
				return rep
			}
			if rep := sync(); !rep.Converged() || rep.Added == 0 || !rep.Dirs[0].NoCopy || !rep.Dirs[1].NoCopy {
				t.Fatalf("first sync: %+v", rep)
			}
			// Remove the file the shared block is read from: whichever was added first.
			refs, err := client.FileRefs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			sharedCID := node.RawCID(sha256.Sum256(shared))
			victim := refs[sharedCID]
			if tt.files[1]["twin-1-1-x86_64.pkg.tar"] == nil && victim == "" {
				for _, p := range refs {
					victim = p // every block of the twin comes from one of the two copies
					break
				}
			}
			if victim == "" {
				t.Fatalf("no filestore reference to the shared block; refs %v", refs)
			}
			if err := os.Remove(victim); err != nil {
				t.Fatal(err)
			}
			rep := sync()
			if !rep.Converged() || rep.BrokenRefs != 0 || rep.RepairedRefs != 1 {
				t.Errorf("after removing %s: converged %v, broken %d, repaired %d, failed %v",
					filepath.Base(victim), rep.Converged(), rep.BrokenRefs, rep.RepairedRefs, rep.Failed)
			}
			// Every file still in the cache is pinned and readable from the node, byte for byte.
			byName := map[string]string{}
			after, err := client.Pins(context.Background(), node.PinPrefix)
			if err != nil {
				t.Fatal(err)
			}
			for c, name := range after {
				byName[name[strings.LastIndex(name, "/")+1:]] = c.String()
			}
			for name, want := range content {
				if _, err := os.Stat(filepath.Join(dirs[0], name)); err != nil && !strings.HasPrefix(name, "twin") {
					continue // the removed package
				}
				c, err := cid.Decode(byName[name])
				if err != nil {
					t.Errorf("%s is in the cache but not pinned (pins %v)", name, after)
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				got, err := catAll(ctx, client, c)
				cancel()
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s (%s) unreadable after the removal: %d of %d bytes, %v", name, c, len(got), len(want), err)
				}
			}
			if out, _ := kn.TryIPFS(t, "filestore", "verify"); strings.Contains(out, "no-file") || strings.Contains(out, "error") {
				t.Errorf("filestore verify after the removal:\n%s", out)
			}
			// An unchanged cache next: no reference check, nothing to repair.
			if rep := sync(); !rep.Converged() || rep.RepairedRefs != 0 {
				t.Errorf("third sync: %+v", rep)
			}
		})
	}
}

func catAll(ctx context.Context, client *kubo.Client, c cid.Cid) ([]byte, error) {
	rc, err := client.Cat(ctx, c)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return b
}
