package reconcile_test

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// rig is a pacman sandbox whose cache was filled by real `pacman -Syw` from a repo built by real
// repo-add, and a real kubo daemon on loopback.
type rig struct {
	repo   *alpmtest.Repo
	sb     *alpmtest.Sandbox
	cfg    *alpmdb.Config
	node   *kubotest.Node
	client *kubo.Client
	state  string
	s      *reconcile.Seeder
}

// newRig downloads the packages named in download. With zeroCopy the kubo repo sits beside the cache
// (<root>/var/cache/pacman-ipfs), so that its filestore can reference the cache in place.
func newRig(t *testing.T, zeroCopy bool, pkgs []alpmtest.Pkg, download ...string) *rig {
	t.Helper()
	if testing.Short() {
		t.Skip("integration: real pacman and kubo")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	r := &rig{repo: alpmtest.MakeRepo(t, "core", pkgs...)}
	r.sb = alpmtest.NewSandbox(t, r.repo)
	r.sb.Pacman(t, append([]string{"-Syw"}, download...)...)
	opts := kubotest.Options{Filestore: true}
	if zeroCopy {
		opts.RepoDir = filepath.Join(r.sb.Root, "var", "cache", "pacman-ipfs")
	}
	r.node = kubotest.Start(t, opts)
	var err error
	if r.client, err = kubo.Dial(context.Background(), r.node.APIAddr); err != nil {
		t.Fatal(err)
	}
	if r.cfg, err = alpmdb.ReadConfig(r.sb.Conf); err != nil {
		t.Fatal(err)
	}
	r.state = t.TempDir()
	r.s = reconcile.New(reconcile.Options{CacheDirs: r.cfg.CacheDirs, StateDir: r.state, Node: r.client})
	return r
}

func (r *rig) sync(t *testing.T) *reconcile.Report {
	t.Helper()
	ix, err := alpmdb.Load(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.s.Sync(context.Background(), ix)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return rep
}

func (r *rig) pins(t *testing.T) map[cid.Cid]string {
	t.Helper()
	p, err := r.client.Pins(context.Background(), node.PinPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (r *rig) cached(p alpmtest.Pkg) string { return filepath.Join(r.sb.CacheDir, p.FileName()) }

// entry is what the sandbox's sync db says of p.
func (r *rig) entry(t *testing.T, p alpmtest.Pkg) alpmdb.Entry {
	t.Helper()
	ix, err := alpmdb.Load(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := ix.Lookup(p.FileName())
	if !ok {
		t.Fatalf("%s is not in the sync db", p.FileName())
	}
	return e
}

func fileCID(t *testing.T, path string) cid.Cid {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return node.RawCID(sha256.Sum256(b))
}

func TestIntegrationSeedsTheVerifiedCache(t *testing.T) {
	small := alpmtest.Pkg{Name: "small", Size: 200 << 10, Sig: true}
	medium := alpmtest.Pkg{Name: "medium", Size: 3 << 20, Ext: ".pkg.tar.zst"}
	tamperedPkg := alpmtest.Pkg{Name: "tampered", Size: 100 << 10}
	linkedPkg := alpmtest.Pkg{Name: "linked", Size: 100 << 10}
	partPkg := alpmtest.Pkg{Name: "partial", Size: 100 << 10}
	dlPkg := alpmtest.Pkg{Name: "indownload", Size: 100 << 10}
	r := newRig(t, true, []alpmtest.Pkg{small, medium, tamperedPkg, linkedPkg, partPkg, dlPkg}, "small", "medium")

	// Hostile and unfinished entries, none of which may reach kubo.
	tampered := r.cached(tamperedPkg)
	b, _ := os.ReadFile(r.repo.Path(tamperedPkg))
	b[len(b)/2] ^= 0xff // same name, same size, one byte off
	if err := os.WriteFile(tampered, b, 0o644); err != nil {
		t.Fatal(err)
	}
	notes := filepath.Join(r.sb.CacheDir, "notes.txt")
	if err := os.WriteFile(notes, []byte("a private file"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := r.cached(linkedPkg) // a symlink to a genuine package: still never followed
	if err := os.Symlink(r.repo.Path(linkedPkg), link); err != nil {
		t.Fatal(err)
	}
	alpmtest.CopyFile(t, r.repo.Path(partPkg), r.cached(partPkg)+".part", 0o644)
	alpmtest.CopyFile(t, r.repo.Path(dlPkg), filepath.Join(r.sb.CacheDir, "download-Xy12Ab", dlPkg.FileName()), 0o644)
	// A detached signature equal to the db's %PGPSIG% may be published.
	alpmtest.CopyFile(t, r.repo.Path(small)+".sig", r.cached(small)+".sig", 0o644)

	rep := r.sync(t)
	if rep.Added != 3 || !rep.Converged() {
		t.Fatalf("first sync: added %d, failed %v, refused %v", rep.Added, rep.Failed, rep.Refused)
	}
	if !rep.Dirs[0].NoCopy {
		t.Errorf("zero copy not used: %s", rep.Dirs[0].Why)
	}
	pins := r.pins(t)

	// A package of at most 1 MiB is the raw CID of its sync-db sha256.
	e := r.entry(t, small)
	want := node.RawCID(e.SHA256)
	if !strings.HasPrefix(want.String(), "bafkrei") || pins[want] != node.PinPrefix+"core/"+small.FileName() {
		t.Errorf("small package: want %s pinned as core/%s, pins %v", want, small.FileName(), pins)
	}
	if got := fileCID(t, r.cached(small)+".sig"); pins[got] == "" {
		t.Errorf("signature %s not pinned", got)
	}
	if len(pins) != 3 {
		t.Errorf("pins = %v, want small, its signature and medium", pins)
	}

	refused := map[string]string{}
	for _, n := range rep.Refused {
		refused[n.Path] = n.Reason
	}
	for path, why := range map[string]string{tampered: "sha256 mismatch", notes: "not in any sync db", link: "symlink"} {
		if !strings.Contains(refused[path], why) {
			t.Errorf("%s: refused for %q, want %q", filepath.Base(path), refused[path], why)
		}
	}
	local := r.node.IPFS(t, "refs", "local")
	for _, path := range []string{r.repo.Path(tamperedPkg), tampered, notes, r.repo.Path(linkedPkg), r.repo.Path(partPkg), r.repo.Path(dlPkg)} {
		if c := fileCID(t, path); strings.Contains(local, c.String()) {
			t.Errorf("%s (%s) reached the node", path, c)
		}
	}

	// A second node fetches the seeded package by CID and gets identical bytes.
	other := kubotest.Start(t, kubotest.Options{})
	other.Connect(t, r.node)
	got := other.IPFS(t, "cat", "--timeout=60s", want.String())
	orig, _ := os.ReadFile(r.cached(small))
	if got != string(orig) {
		t.Errorf("second node got %d bytes, want the %d of %s", len(got), len(orig), small.FileName())
	}

	// An unchanged cache: nothing read, nothing added.
	again := r.sync(t)
	if again.HashedBytes != 0 || again.Added != 0 || again.Seeded != 3 {
		t.Errorf("second sync hashed %d bytes, added %d, already seeded %d", again.HashedBytes, again.Added, again.Seeded)
	}

	// paccache -r (an rm) and paccache -m (a move) behind pacman's back: both unpinned, and no filestore
	// reference to them stays behind.
	if err := os.Remove(r.cached(small)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(r.cached(medium), filepath.Join(t.TempDir(), medium.FileName())); err != nil {
		t.Fatal(err)
	}
	rep = r.sync(t)
	if rep.Unpinned != 2 || len(r.pins(t)) != 1 {
		t.Errorf("after paccache: unpinned %d, pins %v", rep.Unpinned, r.pins(t))
	}
	if ls := r.node.IPFS(t, "filestore", "ls"); strings.Contains(ls, small.FileName()+" ") || strings.Contains(ls, medium.FileName()+" ") {
		t.Errorf("filestore still references removed files:\n%s", ls)
	}
	if out := r.node.IPFS(t, "filestore", "verify"); strings.Contains(out, "no-file") || strings.Contains(out, "error") {
		t.Errorf("filestore verify after removal:\n%s", out)
	}
}

// A package over 174 MiB gets the CID `ipfs add` gives it with the unixfs-v1-2025 flags, on a node whose
// own import settings are kubo's defaults (CIDv0, 256 KiB chunks, 174 links), and in copy mode.
func TestIntegrationLargePackageCIDIsDeterministic(t *testing.T) {
	big := alpmtest.Pkg{Name: "big", Size: 180 << 20, Ext: ".pkg.tar"}
	r := newRig(t, false, []alpmtest.Pkg{big}, "big")
	rep := r.sync(t)
	if rep.Added != 1 || rep.Dirs[0].NoCopy || rep.CopiedBytes != r.entry(t, big).Size {
		t.Fatalf("sync: added %d, zero copy %v (%s), copied %d bytes", rep.Added, rep.Dirs[0].NoCopy, rep.Dirs[0].Why, rep.CopiedBytes)
	}
	var got cid.Cid
	for c := range r.pins(t) {
		got = c
	}
	path := r.cached(big)
	want := r.node.IPFS(t, "add", "-Q", "--only-hash", "--cid-version=1", "--chunker=size-1048576", "--max-file-links=1024", path)
	if got.String() != want {
		t.Errorf("pinned CID %s, `ipfs add --cid-version=1 --chunker=size-1048576 --max-file-links=1024` says %s", got, want)
	}
	if dflt := r.node.IPFS(t, "add", "-Q", "--only-hash", path); dflt == want {
		t.Errorf("the node's default import settings give the same CID %s: this test proves nothing", dflt)
	}
	// One level of links under the root, one per MiB: 1024 links per node were honoured (174 would
	// have made a second level).
	size := r.entry(t, big).Size
	if links, want := strings.Count(r.node.IPFS(t, "refs", got.String()), "\n")+1, (size+1<<20-1)>>20; int64(links) != want {
		t.Errorf("root has %d links, want %d", links, want)
	}
	// The state remembers the large file's CID: an unchanged cache is recognised without re-adding.
	again := r.sync(t)
	if again.Added != 0 || again.Seeded != 1 || again.HashedBytes != 0 {
		t.Errorf("second sync: added %d, seeded %d, hashed %d", again.Added, again.Seeded, again.HashedBytes)
	}
}

// A newer sync db that no longer lists a verified file does not unpin it while it stays in the cache;
// a file the db never vouched for stays out.
func TestIntegrationVerifiedStaysAfterDBUpgrade(t *testing.T) {
	old := alpmtest.Pkg{Name: "tool", Version: "1.0-1", Size: 50 << 10}
	r := newRig(t, true, []alpmtest.Pkg{old}, "tool")
	r.sync(t)
	oldCID := node.RawCID(r.entry(t, old).SHA256)

	r.repo.Add(t, alpmtest.Pkg{Name: "tool", Version: "2.0-1", Size: 60 << 10})
	r.sb.Pacman(t, "-Syy")
	ix, err := alpmdb.Load(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, listed := ix.Lookup(old.FileName()); listed {
		t.Fatal("the new db still lists the old version")
	}
	rep, err := r.s.Sync(context.Background(), ix)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unpinned != 0 || r.pins(t)[oldCID] == "" {
		t.Errorf("old version unpinned after the db upgrade: unpinned %d, pins %v", rep.Unpinned, r.pins(t))
	}
	r.sb.Pacman(t, "-Sw", "tool")
	rep = r.sync(t)
	if rep.Added != 1 || len(r.pins(t)) != 2 {
		t.Errorf("after downloading 2.0: added %d, pins %v", rep.Added, r.pins(t))
	}
}
