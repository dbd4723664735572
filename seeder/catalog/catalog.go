package catalog

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

// Catalog is built first and shared by the agent (which loads the dbs and seeds), the endpoint (which
// reads it on every request) and the prefetcher. It is safe for concurrent use.
type Catalog struct {
	cfg *alpmdb.Config
	log *slog.Logger

	loadMu sync.Mutex // one load of the sync dbs at a time
	index  atomic.Pointer[alpmdb.Index]

	mu       sync.RWMutex
	seeded   map[[sha256.Size]byte]cid.Cid // what the agent's last pass seeded
	checked  map[[sha256.Size]byte]cid.Cid // checked whole here: trusted from now on
	listings map[string]*Listing           // index root -> what it lists
	refuted  map[cid.Cid]bool              // claimed CIDs that proved to be other content
	liars    map[string]time.Time          // roots that listed a refuted CID -> not followed until then
}

// distrustTime is how long an index root that listed a package as other content is not followed: one
// lie costs the liar every claim it makes, so a neighbour cannot send this machine after a new bad CID
// each time it refreshes its index.
const distrustTime = time.Hour

// New returns a Catalog of the sync dbs cfg names; nil cfg: the index is only what SetIndex gives.
func New(cfg *alpmdb.Config, log *slog.Logger) *Catalog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Catalog{cfg: cfg, log: log, seeded: map[[sha256.Size]byte]cid.Cid{}, checked: map[[sha256.Size]byte]cid.Cid{},
		listings: map[string]*Listing{}, refuted: map[cid.Cid]bool{}, liars: map[string]time.Time{}}
}

// Index returns the index of the sync dbs as they are on disk now: a package must never be judged by an
// older db (pacman -Syu downloads packages right after replacing the dbs). A changed db is reloaded here,
// at once (a stat of each db file when none changed); when no db can be read, the last good index (or
// nil).
func (c *Catalog) Index() *alpmdb.Index {
	ix, err := c.LoadIndex(context.Background())
	if err != nil {
		c.log.Warn("sync dbs unreadable; the endpoint proxies everything", "err", err)
		return c.index.Load()
	}
	return ix
}

// LoadIndex returns the current index, loading the sync dbs again only when one changed on disk since
// (inode, size, mtime): the agent's passes and the endpoint share one load.
func (c *Catalog) LoadIndex(ctx context.Context) (*alpmdb.Index, error) {
	if c.cfg == nil {
		return c.index.Load(), nil
	}
	if ix := c.index.Load(); ix != nil && !ix.Stale(c.cfg) {
		return ix, nil
	}
	c.loadMu.Lock()
	defer c.loadMu.Unlock()
	if ix := c.index.Load(); ix != nil && !ix.Stale(c.cfg) {
		return ix, nil
	}
	fresh, err := alpmdb.Load(ctx, c.cfg)
	if err != nil {
		return nil, err
	}
	for _, p := range fresh.Problems() {
		c.log.Warn("sync db skipped", "err", p)
	}
	c.index.Store(fresh)
	return fresh, nil
}

// SetIndex replaces the index (a catalog without a Config: tests, tools).
func (c *Catalog) SetIndex(ix *alpmdb.Index) { c.index.Store(ix) }

// Architectures are the ones pacman.conf names (the <arch> directories an index is listed under).
func (c *Catalog) Architectures() []string {
	if c.cfg == nil {
		return nil
	}
	return c.cfg.Architectures
}

// Repos are the repositories pacman.conf names (without a Config: those of the index). A root is
// listed for these only; they are known before any sync db is.
func (c *Catalog) Repos() []string {
	if c.cfg != nil {
		out := make([]string, 0, len(c.cfg.Repos))
		for _, r := range c.cfg.Repos {
			out = append(out, r.Name)
		}
		return out
	}
	if ix := c.index.Load(); ix != nil {
		return ix.Repos()
	}
	return nil
}

// SetSeeded records what the agent's last pass seeded: sha256 -> CID.
func (c *Catalog) SetSeeded(m map[[sha256.Size]byte]cid.Cid) {
	c.mu.Lock()
	c.seeded = m
	c.mu.Unlock()
}

// Seeded returns the CID of a file this machine seeds with that sha256, if any.
func (c *Catalog) Seeded(sum [sha256.Size]byte) (cid.Cid, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	k, ok := c.seeded[sum]
	return k, ok
}

// Trust records that k is the package with that sha256: its bytes were checked whole here.
func (c *Catalog) Trust(sum [sha256.Size]byte, k cid.Cid) {
	c.mu.Lock()
	c.checked[sum] = k
	delete(c.refuted, k)
	c.mu.Unlock()
}

// Refute records that a claimed CID proved to be other content than the package it was claimed for: no
// index is followed to it again while this catalog lives, and the roots that listed it are not followed
// at all for distrustTime (their listings are dropped now).
func (c *Catalog) Refute(k cid.Cid) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refuted[k] = true
	for root, l := range c.listings {
		for _, v := range l.Files {
			if v.Equals(k) {
				c.log.Warn("an index root listed a package as other content: not followed for a while", "root", root, "cid", k.String(), "for", distrustTime)
				c.liars[root] = time.Now().Add(distrustTime)
				delete(c.listings, root)
				break
			}
		}
	}
}

// distrusted says whether root is not to be followed now (it listed a refuted CID lately).
func (c *Catalog) distrusted(root string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return time.Now().Before(c.liars[root])
}

// Source says where a Hit's CID comes from.
type Source string

// The sources of a CID, from the most trusted down.
const (
	FromSeeded  Source = "seeded"  // this machine seeds the package
	FromChecked Source = "checked" // checked whole here (a download, a prefetch)
	FromDerived Source = "derived" // at most one chunk: the raw CID of the db's sha256
	FromIndex   Source = "index"   // claimed by an index: where to look, not what to trust
)

// Hit is what the catalog knows of one package.
type Hit struct {
	CID cid.Cid // undefined when no CID is known
	// Trusted: bytes read under CID are the package (the node checks every block against CID); else
	// they must be hashed whole before any of them is used.
	Trusted bool
	// Held: some peer, this machine's node included, is known to hold it (it seeds it, checked it, or an
	// index lists it). A package nobody is known to hold goes to the mirrors at once.
	Held   bool
	Source Source
	Roots  int // how many index roots list it
}

// Lookup says what is known of package e, from memory only: no lookup on the network.
func (c *Catalog) Lookup(e alpmdb.Entry) Hit {
	c.mu.RLock()
	defer c.mu.RUnlock()
	derived := cid.Undef
	if e.Size <= int64(node.Import().ChunkSize) {
		derived = node.RawCID(e.SHA256)
	}
	claim, roots := c.claimLocked(e.FileName, derived)
	if k, ok := c.seeded[e.SHA256]; ok {
		return Hit{CID: k, Trusted: true, Held: true, Source: FromSeeded, Roots: roots}
	}
	if k, ok := c.checked[e.SHA256]; ok {
		return Hit{CID: k, Trusted: true, Held: true, Source: FromChecked, Roots: roots}
	}
	switch {
	case derived.Defined():
		return Hit{CID: derived, Trusted: true, Held: roots > 0, Source: FromDerived, Roots: roots}
	case claim.Defined():
		return Hit{CID: claim, Held: true, Source: FromIndex, Roots: roots}
	}
	return Hit{}
}

// Claimed returns the CID the indexes list for a file that no sync db describes itself (a detached
// signature), and how many roots list it. Undefined when none does.
func (c *Catalog) Claimed(file string) (cid.Cid, int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.claimLocked(file, cid.Undef)
}

// claimLocked is the CID most roots list for file, ties going to the root first in order; roots that
// list a refuted CID, or another CID than want when want is defined, do not count.
func (c *Catalog) claimLocked(file string, want cid.Cid) (cid.Cid, int) {
	votes := map[cid.Cid]int{}
	var order []cid.Cid
	for _, root := range slices.Sorted(maps.Keys(c.listings)) {
		k, ok := c.listings[root].Files[file]
		if !ok || c.refuted[k] || want.Defined() && !k.Equals(want) {
			continue
		}
		if votes[k] == 0 {
			order = append(order, k)
		}
		votes[k]++
	}
	best, n, total := cid.Undef, 0, 0
	for _, k := range order {
		total += votes[k]
		if votes[k] > n {
			best, n = k, votes[k]
		}
	}
	return best, total
}

// Listing is what one index root lists, as of its last refresh.
type Listing struct {
	Root     string             // as followed: /ipfs/…, /ipns/… or a DNSLink name
	CID      cid.Cid            // what Root resolved to
	Files    map[string]cid.Cid // file name -> CID, over the directories of this machine's repos and arches
	Complete bool               // false: the root lists more than MaxFiles, or a directory failed to list
	Updated  time.Time          // when Files was listed
	Tried    time.Time          // when the root was last resolved
	Err      string             // why the last refresh failed; the listing before it is kept
}

// SetListing stores l as its root's listing: the Refresher's, and tests' and tools' that list a root
// themselves.
func (c *Catalog) SetListing(l *Listing) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Now().Before(c.liars[l.Root]) {
		return // refuted while it was being listed
	}
	c.listings[l.Root] = l
}

// listing returns root's listing, or nil.
func (c *Catalog) listing(root string) *Listing {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.listings[root]
}

// keepRoots forgets the listings of roots no longer followed (a neighbour gone).
func (c *Catalog) keepRoots(roots []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for r := range c.listings {
		if !slices.Contains(roots, r) {
			delete(c.listings, r)
		}
	}
	now := time.Now()
	for r, until := range c.liars {
		if now.After(until) {
			delete(c.liars, r) // a liar gone and back within distrustTime is still one
		}
	}
}

// RootState is one followed root, for status.
type RootState struct {
	Root     string    `json:"root"`
	CID      string    `json:"cid,omitempty"`
	Files    int       `json:"files"`
	Complete bool      `json:"complete"`
	Updated  time.Time `json:"updated"`
	Err      string    `json:"error,omitempty"`
}

// Roots reports every root the catalog follows, sorted.
func (c *Catalog) Roots() []RootState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]RootState, 0, len(c.listings))
	for _, r := range slices.Sorted(maps.Keys(c.listings)) {
		l := c.listings[r]
		st := RootState{Root: r, Files: len(l.Files), Complete: l.Complete, Updated: l.Updated, Err: l.Err}
		if l.CID.Defined() {
			st.CID = l.CID.String()
		}
		out = append(out, st)
	}
	for _, r := range slices.Sorted(maps.Keys(c.liars)) {
		if until := c.liars[r]; time.Now().Before(until) {
			out = append(out, RootState{Root: r, Err: "listed a package as other content: not followed until " + until.Format(time.RFC3339)})
		}
	}
	return out
}
