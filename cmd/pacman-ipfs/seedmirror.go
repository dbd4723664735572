package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/units"
)

// DefaultMirrorStateDir is where seed-mirror keeps its hash results and last report: apart from the
// agent's, whose pass would otherwise forget the tree's files (StateDirectory=pacman-ipfs-seed-mirror).
const DefaultMirrorStateDir = "/var/lib/pacman-ipfs-seed-mirror"

// MirrorPinPrefix starts the names of seed-mirror's pins. It is not node.PinPrefix: an agent seeding
// the pacman cache on the same node would take the tree's pins for its own, and unpin them.
const MirrorPinPrefix = "pacman-ipfs-mirror:"

// DefaultKeepDays is how long a package stays pinned after it left the tree: downgrades are what users
// of an IPFS mirror ask for most.
const DefaultKeepDays = 14

// mirrorFlags are seed-mirror's own flags.
type mirrorFlags struct {
	root     string
	keepDays int
	gpgDir   string
}

func (m *mirrorFlags) register(fs *flag.FlagSet, c *common) {
	c.registerNode(fs)
	setDefault(fs, "state-dir", envOr("STATE_DIRECTORY", DefaultMirrorStateDir), "`dir`ectory for the tree's hash results and last report, one per tree, not the agent's ($STATE_DIRECTORY, set by systemd's StateDirectory=)")
	c.registerCluster(fs)
	fs.StringVar(&m.root, "root", "", "the mirror tree, as rsync keeps it: <root>/<repo>/os/<arch>/<repo>.db beside (or linking into <root>/pool/) the packages (required)")
	fs.IntVar(&m.keepDays, "keep-days", DefaultKeepDays, "keep packages pinned this many `days` after they left the tree (0: unpin them on the run that sees them gone)")
	fs.StringVar(&m.gpgDir, "gpg-dir", "/etc/pacman.d/gnupg", "pacman keyring `dir`ectory, to check the .sig files a db does not carry (pacman 7's repo-add); without one they are refused")
	fs.BoolVar(&c.verbose, "v", false, "log every file seeded, refused and unpinned")
	fs.StringVar(&c.indexDir, "index-dir", "/pacman-ipfs-mirror", "the node's MFS `dir`ectory that mirrors the tree as <repo>/os/<arch>/<file> (\"\" for none)")
	fs.StringVar(&c.publishKey, "publish-index", "", "publish the index root under this IPNS `key` (kubo: ipfs key gen KEY) and print the DNSLink record to set")
}

// setDefault changes a registered flag's default and usage (a command whose default differs from the
// shared one, environment included).
func setDefault(fs *flag.FlagSet, name, value, usage string) {
	f := fs.Lookup(name)
	_ = f.Value.Set(value)
	f.DefValue, f.Usage = value, usage
}

const seedMirrorSynopsis = `Seed an Arch mirror tree kept with rsync: every package that matches the db beside it (name, size,
sha256) is added and pinned, .sig files when they match too; a re-run touches only what changed. A
package that left the tree stays pinned for --keep-days. The tree is mirrored in the node's MFS as
<repo>/os/<arch>/<file>, published with --publish-index. Prints one summary line; exits 0 when the
node holds exactly the verified tree.`

func runSeedMirror(ctx context.Context, args []string) error {
	var c common
	var m mirrorFlags
	if err := parse("seed-mirror", seedMirrorSynopsis, args, func(fs *flag.FlagSet) { m.register(fs, &c) }); err != nil {
		return err
	}
	if m.root == "" || m.keepDays < 0 {
		fmt.Fprintln(os.Stderr, "pacman-ipfs seed-mirror: --root DIR is required, and --keep-days is 0 or more")
		return exitError(2)
	}
	if err := c.checkCluster(); err != nil {
		return err
	}
	log := c.logger(slog.LevelWarn)
	root, err := filepath.Abs(m.root)
	if err != nil {
		return err
	}
	dbs, err := alpmdb.FindTree(root)
	if err != nil {
		return err // before the state directory is made: a mistyped --root leaves nothing behind
	}
	unlock, err := lockState(c.stateDir)
	if err != nil {
		return err
	}
	defer unlock()
	t, err := loadMirrorTree(ctx, root, dbs, c.stateDir, log)
	if err != nil {
		return err
	}
	opts, err := m.seederOptions(ctx, &c, t, log)
	if err != nil {
		return err
	}
	rep, err := reconcile.New(opts).Sync(ctx, t.ix)
	fmt.Println(mirrorSummary(m.root, t, rep))
	logNotes(log, rep, m.gpgDir)
	return passResult(ctx, "seed-mirror", rep, err)
}

// mirrorTree is a mirror tree as found: its databases, read, and the directories holding its packages.
type mirrorTree struct {
	root   string
	dbs    []alpmdb.TreeDB
	ix     *alpmdb.Index
	dirs   []string // every <repo>/os/<arch>, then every pool/<dir>
	pools  []string
	arches []string
}

// loadMirrorTree reads the tree's dbs (found in root, an absolute path) and lists its package dirs.
func loadMirrorTree(ctx context.Context, root string, dbs []alpmdb.TreeDB, stateDir string, log *slog.Logger) (*mirrorTree, error) {
	// libalpm reads each db through a scratch dbpath of its own: kept under the state directory, which
	// is ours to write (the tree is the operator's, never written).
	scratch := filepath.Join(stateDir, "dbpath")
	if err := os.RemoveAll(scratch); err != nil {
		return nil, err
	}
	ix, err := alpmdb.LoadTree(ctx, dbs, scratch)
	if err != nil {
		return nil, err
	}
	for _, p := range ix.Problems() {
		log.Warn("sync db skipped", "err", p)
	}
	t := &mirrorTree{root: root, dbs: dbs, ix: ix}
	for _, d := range dbs {
		t.dirs = append(t.dirs, d.Dir)
		if !slices.Contains(t.arches, d.Arch) {
			t.arches = append(t.arches, d.Arch)
		}
	}
	t.pools, err = poolDirs(root)
	t.dirs = append(t.dirs, t.pools...)
	return t, err
}

// poolDirs are the directories of <root>/pool/, where a real Arch mirror keeps the package files its
// os/<arch>/ directories link to. A link there is not followed, and pool itself must not be one.
func poolDirs(root string) ([]string, error) {
	if err := alpmdb.RealDir(root, "pool"); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(root, "pool"))
	if err != nil {
		return nil, fmt.Errorf("mirror tree: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() { // DirEntry types come from lstat: a link to a directory is not one
			out = append(out, filepath.Join(root, "pool", e.Name()))
		}
	}
	return out, nil
}

// ignore says which entries of the tree's directories are not packages to seed: a repository's
// databases, and links into pool/, whose target is seeded there. Any other link is refused (never
// followed), whether it points inside the tree or out of it.
func (t *mirrorTree) ignore(path string, mode fs.FileMode) bool {
	dir, name := filepath.Split(path)
	dir = filepath.Clean(dir)
	for _, d := range t.dbs {
		if d.Dir == dir && isDBFile(name, d.Repo) {
			return true
		}
	}
	if mode&fs.ModeSymlink == 0 {
		return false
	}
	target, err := os.Readlink(path)
	if err != nil {
		return false
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(dir, target)
	}
	target = filepath.Clean(target)
	return slices.Contains(t.pools, filepath.Dir(target))
}

// isDBFile says whether name is one of the files repo-add and dbscripts keep beside the packages:
// <repo>.db, <repo>.files, <repo>.links, their archives, signatures and .old copies.
func isDBFile(name, repo string) bool {
	rest, ok := strings.CutPrefix(name, repo+".")
	if !ok {
		return false
	}
	kind, _, _ := strings.Cut(rest, ".")
	return kind == "db" || kind == "files" || kind == "links"
}

func (m *mirrorFlags) seederOptions(ctx context.Context, c *common, t *mirrorTree, log *slog.Logger) (reconcile.Options, error) {
	addr, err := c.apiAddr()
	if err != nil {
		return reconcile.Options{}, err
	}
	k, err := kubo.Dial(ctx, addr)
	if err != nil {
		return reconcile.Options{}, err
	}
	n, err := c.pinningNode(ctx, k)
	if err != nil {
		return reconcile.Options{}, err
	}
	opts := reconcile.Options{
		CacheDirs:     t.dirs,
		StateDir:      c.stateDir,
		Node:          n,
		Log:           log,
		Progress:      terminal(os.Stderr),
		IndexDir:      c.indexDir,
		Architectures: t.arches,
		PublishKey:    c.publishKey,
		Ignore:        t.ignore,
		Retain:        time.Duration(m.keepDays) * 24 * time.Hour,
		PinPrefix:     MirrorPinPrefix,
		Root:          t.root,
	}
	warnShared(ctx, n, log)
	if m.keepDays > 0 {
		// rsync deletes a package's file when it leaves the tree: blocks referenced in place would go
		// with it, and the pin kept for --keep-days would hold nothing.
		opts.Copy = "--keep-days keeps packages after rsync deletes them, so their blocks are stored in the node; --keep-days 0 allows zero copy"
	}
	opts.Signatures = func() sigcheck.Verifier {
		kr, err := sigcheck.Find(m.gpgDir)
		if err != nil {
			log.Info("signatures the dbs do not carry are refused", "err", err)
			return nil
		}
		return kr
	}
	return opts, nil
}

// warnShared warns when the node also seeds a pacman cache (an agent's pins): kubo and the cluster keep
// one pin per CID, so a package both hold is pinned under whichever name came first, and whichever
// unpins it first takes it from the other until the other's next run puts it back.
func warnShared(ctx context.Context, n node.Node, log *slog.Logger) {
	if pins, err := n.Pins(ctx, node.PinPrefix); err == nil && len(pins) > 0 {
		log.Warn("this node also holds a pacman cache's pins (an agent's): a package both hold is pinned once and may be re-added by each run; give seed-mirror a node of its own", "cache_pins", len(pins))
	}
}

// mirrorSummary is the one line a run leaves in the journal.
func mirrorSummary(root string, t *mirrorTree, r *reconcile.Report) string {
	var b strings.Builder
	files := 0
	for _, rc := range r.Repos {
		files += rc.Files
	}
	fmt.Fprintf(&b, "seed-mirror %s: %d dbs, %d files seeded; added %d (%s), hashed %s, retained %d, unpinned %d, refused %d, failed %d, in %s",
		root, len(t.dbs), files, r.Added, units.HumanBytes(r.AddedBytes), units.HumanBytes(r.HashedBytes), r.Retained, r.Unpinned,
		len(r.Refused), len(r.Failed), r.Duration.Round(time.Millisecond))
	if r.Index != "" {
		fmt.Fprintf(&b, "; index %s", r.Index)
	}
	if r.IndexName != "" {
		fmt.Fprintf(&b, "; DNSLink: TXT _dnslink.<your domain> \"dnslink=%s\"", r.IndexName)
	}
	return b.String()
}

// logNotes logs what was not seeded: a failure is a warning (the run did not converge), a refusal is
// normal in a tree (a package of a repository not mirrored, say) and shown with -v.
func logNotes(log *slog.Logger, r *reconcile.Report, gpgDir string) {
	for _, n := range r.Failed {
		log.Warn("not seeded", "file", n.Path, "why", n.Reason)
	}
	noKeyring := 0
	for _, n := range r.Refused {
		log.Info("refused", "file", n.Path, "why", n.Reason)
		if n.Reason == reconcile.ReasonNoSig {
			noKeyring++
		}
	}
	if noKeyring > 0 {
		// Not normal in a tree: every .sig of a db that carries none is refused until there is one.
		log.Warn("signatures refused: the dbs carry none and there is no keyring to check them with", "files", noKeyring, "gpg_dir", gpgDir)
	}
}

// lockState makes sure one run at a time uses a state directory (a timer's run and a manual one): the
// second fails at once, naming the directory.
func lockState(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("state dir %s is in use by another seed-mirror run (%w)", dir, err)
	}
	return func() { f.Close() }, nil
}
