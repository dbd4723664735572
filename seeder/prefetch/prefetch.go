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
	"github.com/pacman-ipfs/pacman-ipfs/seeder/catalog"
)

// PinPrefix names the prefetched pins. It is not node.PinPrefix: the seeder's passes must not take
// them for pins of files that left the cache.
const PinPrefix = "pacman-ipfs-prefetch:"

// Node is what prefetching needs of the IPFS node (kubo's RPC API).
type Node interface {
	PinAdd(ctx context.Context, c cid.Cid, name string) error
	Pins(ctx context.Context, prefix string) (map[cid.Cid]string, error)
	Unpin(ctx context.Context, c cid.Cid) error
	// Cat streams c, fetching its blocks into the node as they are read (and no further ahead than
	// the node's own read-ahead).
	Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error)
	// Blocks lists c and the blocks below it that the node holds; DropBlocks removes those no pin holds.
	Blocks(ctx context.Context, c cid.Cid) ([]cid.Cid, error)
	DropBlocks(ctx context.Context, bs []cid.Cid) error
}

// Options configure a Prefetcher.
type Options struct {
	Node func(context.Context) (Node, error)
	// Catalog has the current sync-db index, what this machine seeds (its cache has it) and what the
	// neighbours' indexes claim; a package checked here is recorded there as trusted.
	Catalog *catalog.Catalog
	// Upgrades lists the file names `pacman -Su` would download now.
	Upgrades func(context.Context) ([]string, error)
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
	ix := p.opts.Catalog.Index()
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
	for _, f := range files {
		e, ok := ix.Lookup(f)
		if !ok {
			continue
		}
		if _, seeded := p.opts.Catalog.Seeded(e.SHA256); seeded {
			continue // in pacman's cache already
		}
		c := p.find(e)
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
	// Read first, no further than the db's size: a neighbour's index that maps the package to a huge
	// DAG costs at most that; pin only what matched, from the blocks now here.
	pctx, cancel := context.WithTimeout(ctx, perPackage)
	read, err := p.verify(pctx, n, c, e)
	rep.Bytes += read
	if err == nil {
		err = n.PinAdd(pctx, c, PinPrefix+e.Repo+"/"+e.FileName)
	}
	cancel()
	if err != nil {
		p.drop(ctx, n, c, e, err)
		rep.Failed++
		return
	}
	rep.Fetched++
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

// find is the CID a neighbour's index lists for the package, from the catalog (which follows no index
// to other content than a package of at most one chunk is), unless it proved wrong or was handed over.
func (p *Prefetcher) find(e alpmdb.Entry) cid.Cid {
	h := p.opts.Catalog.Lookup(e)
	if !h.Held || h.Roots == 0 || !h.CID.Defined() {
		return cid.Undef
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bad[h.CID] || p.gone[h.CID] {
		return cid.Undef
	}
	return h.CID
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

// check reads c back from the node (its own blocks, for a package held) and compares it with the db.
func (p *Prefetcher) check(ctx context.Context, n Node, c cid.Cid, e alpmdb.Entry) error {
	p.mu.Lock()
	done := p.trusted[c]
	p.mu.Unlock()
	if done {
		return nil
	}
	_, err := p.verify(ctx, n, c, e)
	return err
}

// verify reads c through the node, at most the db's size and one byte more, and compares it with the
// db; once it matches, the endpoint trusts c for the package (the catalog records it). It returns the
// bytes read.
func (p *Prefetcher) verify(ctx context.Context, n Node, c cid.Cid, e alpmdb.Entry) (int64, error) {
	r, err := n.Cat(ctx, c)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	h := sha256.New()
	got, err := io.Copy(h, io.LimitReader(r, e.Size+1))
	if err != nil {
		return got, err
	}
	if got != e.Size || [sha256.Size]byte(h.Sum(nil)) != e.SHA256 {
		return got, fmt.Errorf("%w: %s is not %s: %d bytes or more, sha256 differs from the sync db", errNotThePackage, c, e.FileName, got)
	}
	p.mu.Lock()
	p.trusted[c] = true
	p.mu.Unlock()
	p.opts.Catalog.Trust(e.SHA256, c)
	return got, nil
}

func (p *Prefetcher) drop(ctx context.Context, n Node, c cid.Cid, e alpmdb.Entry, why error) {
	p.opts.Log.Warn("prefetch failed", "file", e.FileName, "cid", c.String(), "err", why)
	if errors.Is(why, errNotThePackage) {
		p.mu.Lock()
		p.bad[c] = true
		p.mu.Unlock()
		p.opts.Catalog.Refute(c)
	}
	if err := n.Unpin(ctx, c); err != nil {
		p.opts.Log.Debug("prefetch: unpin after a failure", "cid", c.String(), "err", err)
	}
	// What was fetched of it goes too: the packaged node collects no garbage, and a neighbour must not
	// fill this machine's disk with refused blocks.
	bs, err := n.Blocks(ctx, c)
	if err == nil {
		err = n.DropBlocks(ctx, bs)
	}
	if err != nil {
		p.opts.Log.Debug("prefetch: blocks of a refused package kept", "cid", c.String(), "err", err)
	}
}
