package reconcile_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// pinNames lists our pins by file name, sorted.
func (r *rig) pinNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, n := range r.pins(t) {
		names = append(names, n[strings.LastIndexByte(n, '/')+1:])
	}
	slices.Sort(names)
	return names
}

// kubo killed (SIGKILL) in the middle of adding a large package, then restarted: the pass fails with an
// error naming the node, nothing is half-pinned, and the next pass converges.
func TestFaultKuboKilledMidAdd(t *testing.T) {
	big := alpmtest.Pkg{Name: "huge", Size: 400 << 20, Ext: ".pkg.tar"}
	small := alpmtest.Pkg{Name: "small", Size: 30 << 10}
	r := newRig(t, true, []alpmtest.Pkg{big, small}, "huge", "small")
	ix, err := alpmdb.Load(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Kill kubo once the add of the large file is under way (it takes a couple of seconds).
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if out, err := r.node.TryIPFS(t, "filestore", "ls"); err == nil && strings.Contains(out, big.FileName()) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		r.node.Kill(t)
	}()
	_, err = r.s.Sync(context.Background(), ix)
	<-killed
	if err == nil {
		t.Log("the pass finished before kubo died; the rest of the test still checks convergence")
	} else if !strings.Contains(err.Error(), "add") && !strings.Contains(err.Error(), "pin") {
		t.Errorf("error does not say what failed: %v", err)
	}
	r.node.Restart(t)
	client := r.node.Client(t)
	r.client = client
	r.s = reconcile.New(reconcile.Options{CacheDirs: r.cfg.CacheDirs, StateDir: r.state, Node: client})
	rep := r.sync(t)
	if !rep.Converged() || !slices.Equal(r.pinNames(t), r.sb.CachedPackages(t)) {
		t.Errorf("after kubo's restart: converged %v, pins %v, cache %v", rep.Converged(), r.pinNames(t), r.sb.CachedPackages(t))
	}
	// The large file is complete in the node.
	for c, name := range r.pins(t) {
		if out, err := r.node.TryIPFS(t, "refs", "-r", "--offline", c.String()); err != nil {
			t.Errorf("%s is incomplete after the restart: %v %s", name, err, out)
		}
	}
}

// A file removed while it is being hashed or added: the pass goes on, the file is not seeded, and
// nothing of it stays pinned.
func TestFaultFileRemovedMidPass(t *testing.T) {
	var pkgs []alpmtest.Pkg
	var names []string
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		p := alpmtest.Pkg{Name: n, Size: 60 << 20, Ext: ".pkg.tar"}
		pkgs, names = append(pkgs, p), append(names, n)
	}
	r := newRig(t, true, pkgs, names...)
	ix, err := alpmdb.Load(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(r.sb.CacheDir, pkgs[len(pkgs)-1].FileName())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Remove the last file while the pass is busy with the first ones.
		time.Sleep(150 * time.Millisecond)
		os.Remove(victim)
	}()
	_, err = r.s.Sync(context.Background(), ix)
	<-done
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	rep := r.sync(t) // whatever the first pass saw, the next one converges
	if !rep.Converged() || !slices.Equal(r.pinNames(t), r.sb.CachedPackages(t)) || len(r.sb.CachedPackages(t)) != len(pkgs)-1 {
		t.Errorf("pins %v, cache %v", r.pinNames(t), r.sb.CachedPackages(t))
	}
}

// A sync db that turns corrupt, truncated or missing is named, and what it vouched for before stays
// pinned while it stays in the cache.
func TestFaultBrokenDBKeepsVerifiedPins(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(path string) error
	}{
		{name: "truncated", break_: func(p string) error { return os.Truncate(p, 40) }},
		{name: "corrupt", break_: func(p string) error { return os.WriteFile(p, []byte("\x1f\x8bnot really gzip"), 0o644) }},
		{name: "missing", break_: os.Remove},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := alpmtest.Pkg{Name: "kept", Size: 80 << 10}
			r := newRig(t, true, []alpmtest.Pkg{p}, "kept")
			r.sync(t)
			before := r.pinNames(t)
			if err := tt.break_(r.sb.SyncDBPath("core")); err != nil {
				t.Fatal(err)
			}
			ix, err := alpmdb.Load(context.Background(), r.cfg)
			if err == nil || !strings.Contains(err.Error(), r.sb.SyncDBPath("core")) {
				t.Fatalf("Load of a %s db: %v", tt.name, err)
			}
			// The only db is broken: a pass still runs on what was verified before.
			rep, err := r.s.Sync(context.Background(), ix)
			if err != nil || rep.Unpinned != 0 || !slices.Equal(r.pinNames(t), before) {
				t.Errorf("pass with a %s db: %v, unpinned %d, pins %v (before %v)", tt.name, err, rep.Unpinned, r.pinNames(t), before)
			}
		})
	}
}

// kubo's repo disk fills up in the middle of a seeding: the pass fails with the node's error, nothing
// half-added stays pinned, and once paccache has made room the next pass converges.
func TestFaultKuboDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs and starts kubo")
	}
	alpmtest.RequireRoot(t)
	repoDir := filepath.Join(t.TempDir(), "small-disk")
	if err := os.MkdirAll(repoDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", repoDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", repoDir).Run() })

	var pkgs []alpmtest.Pkg
	var names []string
	for _, n := range []string{"one", "two", "three"} {
		p := alpmtest.Pkg{Name: n, Size: 20 << 20, Ext: ".pkg.tar"}
		pkgs, names = append(pkgs, p), append(names, n)
	}
	r := newRig(t, false, pkgs, names...)
	// Move the node onto the small disk: copy mode, so every byte lands there.
	r.node.Stop(t)
	r.node = kubotest.Start(t, kubotest.Options{RepoDir: filepath.Join(repoDir, "ipfs")})
	var err error
	if r.client, err = kubo.Dial(context.Background(), r.node.APIAddr); err != nil {
		t.Fatal(err)
	}
	r.s = reconcile.New(reconcile.Options{CacheDirs: r.cfg.CacheDirs, StateDir: r.state, Node: r.client})
	ix, err := alpmdb.Load(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := r.s.Sync(context.Background(), ix)
	if err != nil || rep.Converged() || len(rep.Failed) == 0 || !strings.Contains(rep.Failed[0].Reason, "disk is full") {
		t.Fatalf("a full disk: %v, failed %v", err, rep.Failed)
	}
	t.Logf("with the disk full: %d pinned, failed: %s", len(r.pinNames(t)), rep.Failed[0].Reason)
	if n := len(r.pinNames(t)); n >= 3 {
		t.Fatalf("%d pins on a disk that cannot hold 3 packages", n)
	}
	// paccache removes two packages: the next passes unpin what went, collect the half-written garbage
	// and fit the rest. (Removing only one is not room enough for certain: two 20 MiB packages and
	// kubo's own datastore and half-written batch files do not always fit in 48 MiB.)
	for _, p := range pkgs[:2] {
		if err := os.Remove(filepath.Join(r.sb.CacheDir, p.FileName())); err != nil {
			t.Fatal(err)
		}
	}
	for pass := 1; ; pass++ {
		rep = r.sync(t)
		if rep.Converged() && slices.Equal(r.pinNames(t), r.sb.CachedPackages(t)) {
			t.Logf("converged after %d passes", pass)
			break
		}
		if pass == 3 {
			t.Fatalf("after making room: pins %v, cache %v, failed %v", r.pinNames(t), r.sb.CachedPackages(t), rep.Failed)
		}
	}
}

// A file rewritten in place while the pass hashes and adds it: whatever the pass saw, it ends with no pin
// for bytes the sync db does not vouch for.
func TestFaultFileRewrittenMidPass(t *testing.T) {
	p := alpmtest.Pkg{Name: "moving", Size: 200 << 20, Ext: ".pkg.tar"}
	r := newRig(t, true, []alpmtest.Pkg{p}, "moving")
	path := filepath.Join(r.sb.CacheDir, p.FileName())
	ix, err := alpmdb.Load(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		junk := make([]byte, 4096)
		for off := int64(0); ; off = (off + 7<<20) % (200 << 20) {
			select {
			case <-stop:
				return
			default:
			}
			junk[0]++
			if _, err := f.WriteAt(junk, off); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(20 * time.Millisecond)
	rep, err := r.s.Sync(context.Background(), ix)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("during the rewrite: added %d, refused %v, failed %v", rep.Added, rep.Refused, rep.Failed)
	rep = r.sync(t)
	if len(r.pinNames(t)) != 0 || len(rep.Refused) != 1 || !strings.Contains(rep.Refused[0].Reason, "sha256 mismatch") {
		t.Errorf("after the rewrite: pins %v, refused %v", r.pinNames(t), rep.Refused)
	}
}
