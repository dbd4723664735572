package catalog

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

func dagCID(s string) cid.Cid {
	h, _ := mh.Sum([]byte(s), mh.SHA2_256, -1)
	return cid.NewCidV1(cid.DagProtobuf, h)
}

func entry(name string, size int64) alpmdb.Entry {
	return alpmdb.Entry{Repo: "core", FileName: name, Size: size, SHA256: sha256.Sum256([]byte(name))}
}

func TestLookup(t *testing.T) {
	small, large := entry("small-1-1-x86_64.pkg.tar.zst", 300<<10), entry("large-1-1-x86_64.pkg.tar.zst", 3<<20)
	derived := node.RawCID(small.SHA256)
	tests := []struct {
		name     string
		e        alpmdb.Entry
		seeded   map[[32]byte]cid.Cid
		checked  map[[32]byte]cid.Cid
		listings map[string]map[string]cid.Cid // root -> file -> CID
		refuted  []cid.Cid
		want     Hit
	}{
		{name: "small, nobody holds it", e: small,
			want: Hit{CID: derived, Trusted: true, Source: FromDerived}},
		{name: "small, an index lists its raw CID", e: small,
			listings: map[string]map[string]cid.Cid{"/ipfs/a": {small.FileName: derived}},
			want:     Hit{CID: derived, Trusted: true, Held: true, Source: FromDerived, Roots: 1}},
		{name: "small, an index lists another CID: not followed", e: small,
			listings: map[string]map[string]cid.Cid{"/ipfs/a": {small.FileName: dagCID("x")}},
			want:     Hit{CID: derived, Trusted: true, Source: FromDerived}},
		{name: "large, nobody holds it", e: large, want: Hit{}},
		{name: "large, seeded here", e: large, seeded: map[[32]byte]cid.Cid{large.SHA256: dagCID("l")},
			want: Hit{CID: dagCID("l"), Trusted: true, Held: true, Source: FromSeeded}},
		{name: "large, checked here", e: large, checked: map[[32]byte]cid.Cid{large.SHA256: dagCID("l")},
			want: Hit{CID: dagCID("l"), Trusted: true, Held: true, Source: FromChecked}},
		{name: "large, claimed by an index: held, not trusted", e: large,
			listings: map[string]map[string]cid.Cid{"/ipfs/a": {large.FileName: dagCID("l")}},
			want:     Hit{CID: dagCID("l"), Held: true, Source: FromIndex, Roots: 1}},
		{name: "large, two roots against one: the majority", e: large,
			listings: map[string]map[string]cid.Cid{
				"/ipfs/a": {large.FileName: dagCID("lie")},
				"/ipfs/b": {large.FileName: dagCID("l")},
				"/ipfs/c": {large.FileName: dagCID("l")},
			},
			want: Hit{CID: dagCID("l"), Held: true, Source: FromIndex, Roots: 3}},
		{name: "large, a refuted claim is not followed", e: large,
			listings: map[string]map[string]cid.Cid{"/ipfs/a": {large.FileName: dagCID("lie")}, "/ipfs/b": {large.FileName: dagCID("l")}},
			refuted:  []cid.Cid{dagCID("lie")},
			want:     Hit{CID: dagCID("l"), Held: true, Source: FromIndex, Roots: 1}},
		{name: "large, only refuted claims", e: large,
			listings: map[string]map[string]cid.Cid{"/ipfs/a": {large.FileName: dagCID("lie")}},
			refuted:  []cid.Cid{dagCID("lie")},
			want:     Hit{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(nil, nil)
			c.SetSeeded(tt.seeded)
			for sum, k := range tt.checked {
				c.Trust(sum, k)
			}
			for root, files := range tt.listings {
				c.SetListing(&Listing{Root: root, Files: files, Complete: true})
			}
			for _, k := range tt.refuted {
				c.Refute(k)
			}
			if got := c.Lookup(tt.e); got != tt.want {
				t.Errorf("Lookup = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fakeLister is a node whose index roots are a map, with roots that answer slowly or never, and that
// counts what it is asked.
type fakeLister struct {
	mu    sync.Mutex
	roots map[string]cid.Cid       // root path -> CID; missing: never resolves
	dirs  map[string][]node.Link   // "/ipfs/<cid>/<dir>" -> entries
	slow  map[string]time.Duration // root path -> time to resolve
	lists map[string]int           // listings asked, by path
}

func (f *fakeLister) Resolve(ctx context.Context, p string) (cid.Cid, error) {
	f.mu.Lock()
	k, ok := f.roots[p]
	d := f.slow[p]
	f.mu.Unlock()
	if !ok {
		<-ctx.Done() // a withheld name: nobody answers
		return cid.Undef, ctx.Err()
	}
	select {
	case <-time.After(d):
		return k, nil
	case <-ctx.Done():
		return cid.Undef, ctx.Err()
	}
}

func (f *fakeLister) List(ctx context.Context, p string, max int) ([]node.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists[p]++
	links, ok := f.dirs[p]
	if !ok {
		return nil, errors.New("no link named " + p)
	}
	if len(links) > max {
		return links[:max], fmt.Errorf("%w: more than %d", node.ErrTooMany, max)
	}
	return links, nil
}

func TestRefresh(t *testing.T) {
	good, huge := dagCID("good"), dagCID("huge")
	ix := alpmdb.NewIndex([]alpmdb.Entry{entry("big-1-1-x86_64.pkg.tar.zst", 3<<20)})
	many := make([]node.Link, MaxFiles+10)
	for i := range many {
		many[i] = node.Link{Name: fmt.Sprintf("junk-%d-1-1-x86_64.pkg.tar.zst", i), CID: dagCID(fmt.Sprint(i))}
	}
	f := &fakeLister{
		roots: map[string]cid.Cid{"/ipfs/good": good, "/ipns/huge": huge},
		dirs: map[string][]node.Link{
			"/ipfs/" + good.String() + "/core/os/x86_64": {{Name: "big-1-1-x86_64.pkg.tar.zst", CID: dagCID("big")}},
			"/ipfs/" + huge.String() + "/core/os/x86_64": many,
			// A directory of a repository or architecture this machine does not use is never listed.
			"/ipfs/" + good.String() + "/ZZattacker/os/i686": {{Name: "x", CID: dagCID("x")}},
		},
		lists: map[string]int{},
	}
	c := New(nil, nil)
	c.SetIndex(ix)
	r := &Refresher{Catalog: c, Node: func(context.Context) (Lister, error) { return f, nil }, RootTimeout: 300 * time.Millisecond,
		Followed: []string{"/ipfs/good", "withheld.example"}, Discovered: func() []string { return []string{"/ipns/huge"} }}
	ctx := context.Background()
	r.Refresh(ctx) // returns although a root is withheld: each is bounded
	if h := c.Lookup(entry("big-1-1-x86_64.pkg.tar.zst", 3<<20)); h.CID != dagCID("big") || h.Source != FromIndex {
		t.Errorf("big: %+v", h)
	}
	st := map[string]RootState{}
	for _, s := range c.Roots() {
		st[s.Root] = s
	}
	if s := st["/ipns/huge"]; s.Files != MaxFiles || s.Complete {
		t.Errorf("a root listing more than MaxFiles: %+v", s)
	}
	if s := st["withheld.example"]; s.Err == "" || !strings.Contains(s.Err, "resolve") {
		t.Errorf("a withheld root: %+v", s)
	}
	for p := range f.lists {
		if !strings.HasSuffix(p, "/core/os/x86_64") {
			t.Errorf("listed %s: not a directory of this machine's repositories and architectures", p)
		}
	}
	// Unchanged roots are not listed again; a root no longer followed is forgotten.
	before := f.lists["/ipfs/"+good.String()+"/core/os/x86_64"]
	r.Discovered = func() []string { return nil }
	r.Refresh(ctx)
	if after := f.lists["/ipfs/"+good.String()+"/core/os/x86_64"]; after != before {
		t.Errorf("an unchanged root was listed again (%d, then %d times)", before, after)
	}
	for _, s := range c.Roots() {
		if s.Root == "/ipns/huge" {
			t.Error("a root no longer discovered is still followed")
		}
	}
}

func TestRefreshBoundsTheRoots(t *testing.T) {
	f := &fakeLister{roots: map[string]cid.Cid{}, dirs: map[string][]node.Link{}, lists: map[string]int{}}
	var found []string
	for i := range MaxRoots + 20 {
		root := fmt.Sprintf("/ipfs/peer%03d", i)
		found = append(found, root)
		f.roots[root] = dagCID(root)
	}
	c := New(nil, nil)
	c.SetIndex(alpmdb.NewIndex(nil))
	r := &Refresher{Catalog: c, Node: func(context.Context) (Lister, error) { return f, nil }, Discovered: func() []string { return found }}
	r.Refresh(context.Background())
	if n := len(c.Roots()); n != MaxRoots {
		t.Errorf("%d roots followed, want at most %d", n, MaxRoots)
	}
}

// A root that listed a CID which proved to be other content loses every claim it makes and is not
// followed again for distrustTime, whatever it lists next (a new bad CID every refresh included); the
// other roots are untouched, and status says why the liar is not followed.
func TestALyingRootIsNotFollowed(t *testing.T) {
	liar, honest := dagCID("liar-root"), dagCID("honest-root")
	big := entry("big-1-1-x86_64.pkg.tar.zst", 3<<20)
	other := entry("other-1-1-x86_64.pkg.tar.zst", 5<<20)
	f := &fakeLister{
		roots: map[string]cid.Cid{"/ipns/liar": liar, "/ipns/honest": honest},
		dirs: map[string][]node.Link{
			"/ipfs/" + liar.String() + "/core/os/x86_64": {
				{Name: big.FileName, CID: dagCID("junk")}, {Name: other.FileName, CID: dagCID("other")}},
			"/ipfs/" + honest.String() + "/core/os/x86_64": {{Name: big.FileName, CID: dagCID("big")}},
		},
		lists: map[string]int{},
	}
	c := New(nil, nil)
	c.SetIndex(alpmdb.NewIndex([]alpmdb.Entry{big, other}))
	r := &Refresher{Catalog: c, Node: func(context.Context) (Lister, error) { return f, nil }, Every: time.Nanosecond,
		Discovered: func() []string { return []string{"/ipns/liar", "/ipns/honest"} }}
	ctx := context.Background()
	r.Refresh(ctx)
	if h := c.Lookup(other); h.CID != dagCID("other") {
		t.Fatalf("other before the lie: %+v", h)
	}
	c.Refute(dagCID("junk"))
	if h := c.Lookup(big); h.CID != dagCID("big") || h.Roots != 1 {
		t.Errorf("big after the lie: %+v, want the honest root's CID", h)
	}
	if h := c.Lookup(other); h.Held {
		t.Errorf("other after the lie: %+v, want nothing (the liar lists it alone)", h)
	}
	// The liar lists a new bad CID: it is not even resolved again.
	f.mu.Lock()
	liar2 := dagCID("liar-root-2")
	f.roots["/ipns/liar"] = liar2
	f.dirs["/ipfs/"+liar2.String()+"/core/os/x86_64"] = []node.Link{{Name: big.FileName, CID: dagCID("junk2")}}
	f.mu.Unlock()
	r.Refresh(ctx)
	if n := f.lists["/ipfs/"+liar2.String()+"/core/os/x86_64"]; n != 0 {
		t.Errorf("the liar's new root was listed %d times", n)
	}
	if h := c.Lookup(big); h.CID != dagCID("big") {
		t.Errorf("big after the liar's new root: %+v", h)
	}
	var said string
	for _, s := range c.Roots() {
		if s.Root == "/ipns/liar" {
			said = s.Err
		}
	}
	if !strings.Contains(said, "other content") {
		t.Errorf("status of the liar: %q", said)
	}
}
