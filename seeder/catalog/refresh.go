package catalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"golang.org/x/sync/errgroup"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

// Lister is what a Refresher needs of the IPFS node (kubo's RPC API).
type Lister interface {
	// Resolve resolves an IPFS path (/ipfs/…, /ipns/…, a DNSLink name under /ipns/) to its CID.
	Resolve(ctx context.Context, path string) (cid.Cid, error)
	// List lists the directory at path, at most max entries; more is an error wrapping node.ErrTooMany.
	List(ctx context.Context, path string, max int) ([]node.Link, error)
}

// Bounds of one root's refresh: a neighbour is a stranger, and its index may be slow, huge or withheld.
const (
	// RootTimeout bounds the resolution and listing of one root.
	RootTimeout = 20 * time.Second
	// MaxFiles bounds the entries kept of one root (an Arch mirror lists about 15,000 packages and
	// their signatures per architecture).
	MaxFiles = 100_000
	// MaxRoots bounds the roots followed at once: the first ones in order (the followed ones, then the
	// LAN's, sorted), the rest ignored until others go.
	MaxRoots = 48
	// parallel is how many roots are refreshed at once.
	parallel = 8
)

// Refresher keeps a Catalog's index listings fresh.
type Refresher struct {
	Catalog *Catalog
	Node    func(context.Context) (Lister, error)
	// Followed are the roots the user configured; Discovered, when set, returns more found at run time
	// (the LAN neighbours').
	Followed   []string
	Discovered func() []string
	// Every is how often a mutable root (/ipns/…, a DNSLink name) is resolved again, and a root that
	// failed tried again. Default 20 s. A root never listed is listed at the next Tick (default 2 s);
	// an /ipfs/ root, once listed, never changes.
	Every, Tick time.Duration
	// RootTimeout bounds the resolution and listing of one root. Default: the constant RootTimeout.
	RootTimeout time.Duration
	Log         *slog.Logger

	once sync.Once
	kick chan struct{}
}

func (r *Refresher) init() {
	r.once.Do(func() {
		r.kick = make(chan struct{}, 1)
		if r.Every <= 0 {
			r.Every = 20 * time.Second
		}
		if r.Tick <= 0 {
			r.Tick = 2 * time.Second
		}
		if r.RootTimeout <= 0 {
			r.RootTimeout = RootTimeout
		}
		if r.Log == nil {
			r.Log = slog.New(slog.DiscardHandler)
		}
	})
}

// Kick asks for a refresh now (new roots found, new sync dbs).
func (r *Refresher) Kick() {
	r.init()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run refreshes at once, then every Tick and when kicked, until ctx ends.
func (r *Refresher) Run(ctx context.Context) {
	r.init()
	for {
		r.Refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-time.After(r.Tick):
		}
	}
}

// roots are the roots to follow now, bounded.
func (r *Refresher) roots() []string {
	roots := slices.Clone(r.Followed)
	if r.Discovered != nil {
		found := r.Discovered()
		slices.Sort(found)
		for _, f := range found {
			if !slices.Contains(roots, f) {
				roots = append(roots, f)
			}
		}
	}
	if len(roots) > MaxRoots {
		r.Log.Warn("more index roots than are followed at once: the last ones are ignored", "roots", len(roots), "followed", MaxRoots)
		roots = roots[:MaxRoots]
	}
	return roots
}

// Refresh resolves every root that is due, in parallel, and lists again those whose CID changed.
func (r *Refresher) Refresh(ctx context.Context) {
	r.init()
	all := r.roots()
	r.Catalog.keepRoots(all)
	var roots []string
	for _, root := range all {
		if !r.Catalog.distrusted(root) && r.due(root, r.Catalog.listing(root)) {
			roots = append(roots, root)
		}
	}
	if len(roots) == 0 {
		return
	}
	n, err := r.Node(ctx)
	if err != nil {
		return
	}
	dirs := r.dirs()
	var g errgroup.Group
	g.SetLimit(parallel)
	for _, root := range roots {
		g.Go(func() error {
			rctx, cancel := context.WithTimeout(ctx, r.RootTimeout)
			defer cancel()
			r.refreshRoot(rctx, n, root, dirs) // a root that fails keeps its error in its listing
			return nil
		})
	}
	_ = g.Wait()
}

// due says whether root must be resolved now: never tried, failed or mutable and last tried Every ago;
// an /ipfs/ root listed once is done.
func (r *Refresher) due(root string, old *Listing) bool {
	switch {
	case old == nil:
		return true
	case old.Err == "" && strings.HasPrefix(root, "/ipfs/"):
		return false
	}
	return time.Since(old.Tried) >= r.Every
}

// dirs are the index directories of this machine's repositories and architectures: nothing else of a
// root is ever listed.
func (r *Refresher) dirs() []string {
	arches := r.Catalog.Architectures()
	if len(arches) == 0 {
		arches = []string{"x86_64"}
	}
	var out []string
	for _, repo := range r.Catalog.Repos() {
		for _, a := range arches {
			out = append(out, path.Join(repo, "os", a))
		}
	}
	return out
}

// refreshRoot resolves root and, when it names another tree than last time, lists it.
func (r *Refresher) refreshRoot(ctx context.Context, n Lister, root string, dirs []string) {
	old := r.Catalog.listing(root)
	k, err := n.Resolve(ctx, rootPath(root))
	if err != nil {
		r.failed(old, root, fmt.Errorf("resolve: %w", err))
		return
	}
	if old != nil && old.CID.Equals(k) && old.Err == "" {
		cp := *old
		cp.Tried = time.Now()
		r.Catalog.SetListing(&cp)
		return
	}
	l := &Listing{Root: root, CID: k, Files: map[string]cid.Cid{}, Complete: true, Updated: time.Now(), Tried: time.Now()}
	for _, d := range dirs {
		links, err := n.List(ctx, "/ipfs/"+k.String()+"/"+d, MaxFiles-len(l.Files))
		switch {
		case errors.Is(err, node.ErrTooMany):
			l.Complete = false
		case err != nil && ctx.Err() != nil:
			r.failed(old, root, fmt.Errorf("list %s: %w", d, err))
			return
		case err != nil:
			continue // this root has no such directory
		}
		for _, ln := range links {
			l.Files[ln.Name] = ln.CID
		}
		if len(l.Files) >= MaxFiles {
			l.Complete = false
			break
		}
	}
	if old == nil || !old.CID.Equals(k) {
		r.Log.Info("index root listed", "root", root, "cid", k.String(), "files", len(l.Files), "complete", l.Complete)
	}
	r.Catalog.SetListing(l)
}

// failed keeps what the root listed before, with why it could not be refreshed.
func (r *Refresher) failed(old *Listing, root string, err error) {
	l := &Listing{Root: root, Files: map[string]cid.Cid{}, Err: err.Error(), Tried: time.Now()}
	if old != nil {
		cp := *old
		cp.Err, cp.Tried = err.Error(), time.Now()
		l = &cp
	}
	r.Log.Debug("index root not refreshed", "root", root, "err", err)
	r.Catalog.SetListing(l)
}

// rootPath is the IPFS path of a root: /ipfs/… and /ipns/… as they are, a DNSLink name under /ipns/.
func rootPath(root string) string {
	root = strings.TrimRight(root, "/")
	if strings.HasPrefix(root, "/ipfs/") || strings.HasPrefix(root, "/ipns/") {
		return root
	}
	return "/ipns/" + root
}
