package prefetch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

// PinPrefix names the prefetched pins. It is not node.PinPrefix: the seeder's passes must not take
// them for pins of files that left the cache.
const PinPrefix = "pacman-ipfs-prefetch:"

// Node is what prefetching needs of the IPFS node (kubo's RPC API).
type Node interface {
	Resolve(ctx context.Context, path string) (cid.Cid, error)
	PinAdd(ctx context.Context, c cid.Cid, name string) error
	Pins(ctx context.Context, prefix string) (map[cid.Cid]string, error)
	Unpin(ctx context.Context, c cid.Cid) error
	Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error)
}

// Options configure a Prefetcher.
type Options struct {
	Node func(context.Context) (Node, error)
	// Index is the current sync-db index.
	Index func() *alpmdb.Index
	// Upgrades lists the file names `pacman -Su` would download now.
	Upgrades func(context.Context) ([]string, error)
	// Roots lists the LAN neighbours' index roots.
	Roots func() []string
	// Seeded says whether this machine seeds a file with that sha256 already (its cache has it).
	Seeded func([sha256.Size]byte) (cid.Cid, bool)
	// Trust tells the endpoint that c is the package with that sha256: checked here, whole.
	Trust func([sha256.Size]byte, cid.Cid)
	// Architectures are pacman's, for the <arch> directory of an "any" package in an index.
	Architectures []string
	// MaxBytes bounds what one round fetches. Default 4 GiB.
	MaxBytes int64
	Log      *slog.Logger
}

// Prefetcher runs rounds when kicked, one at a time.
type Prefetcher struct {
	opts Options
	kick chan struct{}

	mu      sync.Mutex
	trusted map[cid.Cid]bool // prefetched pins checked and trusted in this run
	bad     map[cid.Cid]bool // CIDs an index gave that turned out not to be the package: not asked again
	gone    map[cid.Cid]bool // released: handed to pacman, which installs it; not fetched again
	last    Report
}

// Report says what the last round did.
type Report struct {
	Wanted, Fetched, Held, Unpinned, Failed int
	Bytes                                   int64
	Finished                                time.Time
}

// New returns a Prefetcher.
func New(opts Options) *Prefetcher {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 4 << 30
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Prefetcher{opts: opts, kick: make(chan struct{}, 1), trusted: map[cid.Cid]bool{}, bad: map[cid.Cid]bool{}, gone: map[cid.Cid]bool{}}
}

// Kick asks for a round (after a pass: new sync dbs, or packages installed).
func (p *Prefetcher) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Last returns the report of the last round.
func (p *Prefetcher) Last() Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// Run runs a round whenever kicked, and every interval (the neighbours' indexes change too), until ctx
// ends.
func (p *Prefetcher) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-t.C:
		}
		rep, err := p.Round(ctx)
		if err != nil && ctx.Err() == nil {
			p.opts.Log.Warn("prefetch round failed", "err", err)
		}
		p.mu.Lock()
		p.last = rep
		p.mu.Unlock()
	}
}

// perPackage bounds the fetch of one package: at 1 MB/s, a 600 MB package.
const perPackage = 10 * time.Minute

// Round fetches what is wanted and not held, and unpins what is held and no longer wanted.
func (p *Prefetcher) Round(ctx context.Context) (Report, error) {
	rep := Report{}
	defer func() { rep.Finished = time.Now() }()
	ix := p.opts.Index()
	if ix == nil {
		return rep, nil
	}
	n, err := p.opts.Node(ctx)
	if err != nil {
		return rep, err
	}
	files, err := p.opts.Upgrades(ctx)
	if err != nil {
		return rep, fmt.Errorf("upgrades: %w", err)
	}
	held, err := n.Pins(ctx, PinPrefix)
	if err != nil {
		return rep, err
	}
	keep := map[cid.Cid]bool{}
	roots := p.opts.Roots()
	for _, f := range files {
		e, ok := ix.Lookup(f)
		if !ok {
			continue
		}
		if _, seeded := p.opts.Seeded(e.SHA256); seeded {
			continue // in pacman's cache already
		}
		c := p.find(ctx, n, roots, e)
		if !c.Defined() {
			continue // no neighbour has it: the mirrors, at -Su
		}
		keep[c] = true
		p.want(ctx, n, c, e, held, &rep)
	}
	p.unpinUnwanted(ctx, n, held, keep, &rep)
	if rep.Wanted+rep.Unpinned > 0 {
		p.opts.Log.Info("prefetch round", "wanted", rep.Wanted, "fetched", rep.Fetched, "held", rep.Held,
			"unpinned", rep.Unpinned, "failed", rep.Failed, "bytes", rep.Bytes)
	}
	return rep, nil
}

// want makes sure a wanted package is held and right: held ones are checked again, others fetched
// within the round's limit and checked; a wrong one is dropped.
func (p *Prefetcher) want(ctx context.Context, n Node, c cid.Cid, e alpmdb.Entry, held map[cid.Cid]string, rep *Report) {
	rep.Wanted++
	if _, ok := held[c]; ok {
		rep.Held++
		if err := p.check(ctx, n, c, e); err != nil {
			p.drop(ctx, n, c, e, err)
			rep.Failed++
		}
		return
	}
	if rep.Bytes+e.Size > p.opts.MaxBytes {
		p.opts.Log.Info("prefetch: the round's limit is reached", "file", e.FileName, "limit", p.opts.MaxBytes)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, perPackage)
	err := n.PinAdd(pctx, c, PinPrefix+e.Repo+"/"+e.FileName)
	if err == nil {
		err = p.check(pctx, n, c, e)
	}
	cancel()
	if err != nil {
		p.drop(ctx, n, c, e, err)
		rep.Failed++
		return
	}
	rep.Fetched++
	rep.Bytes += e.Size
	p.opts.Log.Info("prefetched from the LAN", "file", e.FileName, "cid", c.String(), "bytes", e.Size)
}

// unpinUnwanted unpins what is held and no longer an upgrade, in a stable order.
func (p *Prefetcher) unpinUnwanted(ctx context.Context, n Node, held map[cid.Cid]string, keep map[cid.Cid]bool, rep *Report) {
	for _, c := range slices.SortedFunc(maps.Keys(held), func(a, b cid.Cid) int { return strings.Compare(a.KeyString(), b.KeyString()) }) {
		if keep[c] {
			continue
		}
		if err := n.Unpin(ctx, c); err != nil {
			p.opts.Log.Warn("prefetch: unpin failed", "pin", held[c], "err", err)
			continue
		}
		p.mu.Lock()
		delete(p.trusted, c)
		p.mu.Unlock()
		rep.Unpinned++
		p.opts.Log.Info("prefetched package no longer an upgrade: unpinned", "pin", held[c])
	}
}

// find looks the package up under the neighbours' index roots. A package of at most one chunk has one
// CID only, from its sha256: an index that says otherwise is not followed.
func (p *Prefetcher) find(ctx context.Context, n Node, roots []string, e alpmdb.Entry) cid.Cid {
	arch := alpmdb.ArchDirs(e.FileName, p.opts.Architectures)[0]
	for _, root := range roots {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := n.Resolve(rctx, fmt.Sprintf("%s/%s/os/%s/%s", strings.TrimRight(root, "/"), e.Repo, arch, e.FileName))
		cancel()
		if err != nil {
			continue
		}
		p.mu.Lock()
		skip := p.bad[c] || p.gone[c]
		p.mu.Unlock()
		if skip {
			continue
		}
		if e.Size <= int64(node.Import().ChunkSize) && !c.Equals(node.RawCID(e.SHA256)) {
			p.opts.Log.Warn("a neighbour's index maps a package to other content", "root", root, "file", e.FileName, "cid", c.String())
			continue
		}
		return c
	}
	return cid.Undef
}

// Release lets go of a prefetched package pacman has just been handed: its file lands in pacman's cache,
// where the seeder takes it (without a second copy once these blocks are gone), so its prefetch pin goes
// and it is not fetched again in this run. A c that is not prefetched is left alone.
func (p *Prefetcher) Release(ctx context.Context, c cid.Cid) error {
	n, err := p.opts.Node(ctx)
	if err != nil {
		return err
	}
	held, err := n.Pins(ctx, PinPrefix)
	if err != nil {
		return err
	}
	name, ok := held[c]
	if !ok {
		return nil
	}
	p.mu.Lock()
	p.gone[c] = true
	delete(p.trusted, c)
	p.mu.Unlock()
	if err := n.Unpin(ctx, c); err != nil {
		return err
	}
	p.opts.Log.Info("prefetched package handed to pacman: unpinned", "pin", name)
	return nil
}

var errNotThePackage = errors.New("not the package")

// check reads c back from the node (its own blocks now) and compares it with the db; once it matches,
// the endpoint trusts c for the package.
func (p *Prefetcher) check(ctx context.Context, n Node, c cid.Cid, e alpmdb.Entry) error {
	p.mu.Lock()
	done := p.trusted[c]
	p.mu.Unlock()
	if done {
		return nil
	}
	r, err := n.Cat(ctx, c)
	if err != nil {
		return err
	}
	defer r.Close()
	h := sha256.New()
	got, err := io.Copy(h, io.LimitReader(r, e.Size+1))
	if err != nil {
		return err
	}
	if got != e.Size || [sha256.Size]byte(h.Sum(nil)) != e.SHA256 {
		return fmt.Errorf("%w: %s is not %s: %d bytes, sha256 differs from the sync db", errNotThePackage, c, e.FileName, got)
	}
	p.mu.Lock()
	p.trusted[c] = true
	p.mu.Unlock()
	if p.opts.Trust != nil {
		p.opts.Trust(e.SHA256, c)
	}
	return nil
}

func (p *Prefetcher) drop(ctx context.Context, n Node, c cid.Cid, e alpmdb.Entry, why error) {
	p.opts.Log.Warn("prefetch failed", "file", e.FileName, "cid", c.String(), "err", why)
	if errors.Is(why, errNotThePackage) {
		p.mu.Lock()
		p.bad[c] = true
		p.mu.Unlock()
	}
	if err := n.Unpin(ctx, c); err != nil {
		p.opts.Log.Debug("prefetch: unpin after a failure", "cid", c.String(), "err", err)
	}
}
