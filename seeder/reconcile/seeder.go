package reconcile

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sort"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
)

// Options configure a Seeder.
type Options struct {
	CacheDirs []string
	StateDir  string       // where hash results and the last report are kept
	Node      node.Node    // the IPFS node
	Log       *slog.Logger // nil: discard
	Progress  io.Writer    // nil: quiet; a terminal gets a progress line during long passes
	// IndexDir is the node's MFS directory that mirrors what is seeded as <repo>/os/<arch>/<file>, the
	// layout of an Arch mirror ("" for none). Architectures say where "any" packages go.
	IndexDir      string
	Architectures []string
	// PublishKey, when set, names the IPNS key the index root is published under. Off by default: it
	// tells the world what this machine holds.
	PublishKey string
	// Signatures returns what checks the detached signatures a sync db does not carry (pacman 7's
	// repo-add leaves %PGPSIG% out) against pacman's keyring. It is asked at the start of every pass, so
	// a keyring made later (pacman-key --init) is used from then on; nil (or a nil result) refuses them.
	Signatures func() sigcheck.Verifier
	// Ignore, when set, names the entries of a directory that its layout says are not packages (a
	// mirror tree's databases, its links into pool/): neither seeded nor refused.
	Ignore func(path string, mode fs.FileMode) bool
	// Copy, when set, says why files are copied into the node even where it could reference them in
	// place: a pin kept after its file is gone (Retain) needs its blocks in the node's own store.
	Copy string
	// Retain keeps the pins of files that left the directories for this long after the first pass that
	// missed them (0: unpinned by that pass).
	Retain time.Duration
	// PinPrefix starts the names of the pins this seeder owns ("": node.PinPrefix, the cache's). A
	// mirror tree's seeder has its own: each touches only its pins, on a node both use.
	PinPrefix string
	// Root, when set (a mirror tree's --root), holds every one of CacheDirs: each is opened beneath it
	// through no symbolic link (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), and its entries are
	// looked at through that descriptor, so a directory swapped for a link since the tree was checked
	// is refused and nothing outside Root is listed or opened.
	Root string
}

// Seeder runs reconcile passes. Its methods must not be called concurrently.
type Seeder struct {
	opts  Options
	log   *slog.Logger
	state *state
	buf   []byte
	prog  progress
}

// New returns a Seeder with the state found in opts.StateDir. A damaged state file is logged and
// replaced: it only costs a re-hash.
func New(opts Options) *Seeder {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := loadState(opts.StateDir)
	if err != nil {
		log.Warn("state unreadable, starting afresh", "err", err)
	}
	return &Seeder{opts: opts, log: log, state: st, buf: make([]byte, 1<<20)}
}

// Sync runs one reconcile pass against ix: collect, plan, execute, save. It returns an error, with the
// report so far, when the node cannot be reached or fails; files that cannot be seeded are listed in the
// report instead.
func (s *Seeder) Sync(ctx context.Context, ix *alpmdb.Index) (*Report, error) {
	rep := &Report{Started: time.Now(), Repos: map[string]RepoCount{}, DBs: dbReports(ix), PinPrefix: s.opts.PinPrefix}
	defer func() { rep.Duration = time.Since(rep.Started) }()
	var sigs sigcheck.Verifier
	if s.opts.Signatures != nil {
		sigs = s.opts.Signatures()
	}
	in, err := s.collect(ctx, ix, sigs != nil)
	p := makePlan(in)
	rep.Dirs, rep.Refused = p.Dirs, p.Refused
	if err != nil {
		return rep, err // the node never answered: leave the state as it was
	}
	for _, d := range in.Dirs {
		if d.Err != nil {
			s.log.Error("cache dir unreadable; its pins are kept", "dir", d.Dir, "err", d.Err)
		}
	}
	ps := newPass(s, &in, p, rep, sigs)
	err = ps.run(ctx)
	s.save(rep, ps.plan.Keep)
	return rep, err
}

func dbReports(ix *alpmdb.Index) []DBReport {
	var out []DBReport
	for _, d := range ix.DBs() {
		dr := DBReport{Repo: d.Repo, Path: d.Path, Packages: d.Packages}
		if d.Err != nil {
			dr.Err = d.Err.Error()
		}
		out = append(out, dr)
	}
	return out
}

// collect gathers what a plan is made from: the CacheDirs' entries (lstat only) while the node lists its
// pins of ours, which takes kubo a while on a large cache. No byte of any file is read.
func (s *Seeder) collect(ctx context.Context, ix *alpmdb.Index, sigs bool) (inputs, error) {
	type pinList struct {
		pins map[cid.Cid]string
		err  error
	}
	listed := make(chan pinList, 1)
	go func() {
		pins, err := s.opts.Node.Pins(ctx, s.pinPrefix())
		listed <- pinList{pins, err}
	}()
	in := inputs{Index: ix, Records: s.state.Files, CIDs: s.state.CIDs, Sigs: sigs, Gone: s.state.Gone, Now: time.Now()}
	for _, dir := range s.opts.CacheDirs {
		l := listing{Dir: dir, Why: "the node cannot reference files in place"}
		switch r, ok := s.opts.Node.(node.Referencer); {
		case s.opts.Copy != "":
			l.Why = s.opts.Copy
		case ok:
			l.NoCopy, l.Why = r.CanReference(ctx, dir)
		}
		l.Entries, l.Err = scanDir(s.opts.Root, dir, s.opts.Ignore)
		in.Dirs = append(in.Dirs, l)
	}
	pl := <-listed
	if pl.err != nil {
		return in, fmt.Errorf("list pins: %w", pl.err)
	}
	in.Pins = pl.pins
	return in, nil
}

func (s *Seeder) pinPrefix() string {
	if s.opts.PinPrefix != "" {
		return s.opts.PinPrefix
	}
	return node.PinPrefix
}

// save records the pass, and forgets the files that left the cache.
func (s *Seeder) save(rep *Report, keep map[string]bool) {
	prune(s.state, keep)
	sort.Slice(rep.Refused, func(i, j int) bool { return rep.Refused[i].Path < rep.Refused[j].Path })
	rep.Duration = time.Since(rep.Started)
	s.state.Last = rep
	s.state.BrokenRefs = rep.BrokenRefs
	if err := s.state.save(s.opts.StateDir); err != nil {
		s.log.Error("state not saved; the next pass re-hashes", "err", err)
	}
}

// SeededCIDs returns, for every file the last pass verified, its sha256 and CID (when known). It must
// not be called during a pass.
func (s *Seeder) SeededCIDs() map[[sha256.Size]byte]cid.Cid {
	out := make(map[[sha256.Size]byte]cid.Cid, len(s.state.Files))
	for _, rec := range s.state.Files {
		if rec.Repo == "" {
			continue
		}
		if c := knownCID(rec.SHA256, rec.Size, s.state.CIDs); c.Defined() {
			out[rec.SHA256] = c
		}
	}
	return out
}
