package endpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
)

// pacman 6.0 keeps what a failed download wrote (<file>.part) and resumes it from its next server with
// "Range: bytes=N-": a wrong byte that reaches pacman cannot be taken back, even when the transfer is
// aborted before the end. So a peer's bytes go to pacman only once they are known to be right:
//
//   - from IPFS under a trusted CID, as they arrive: kubo checks every block against its CID, and the CID
//     follows from the db's sha256 (one block, at most 1 MiB), or this machine computed it from a file it
//     verified (it seeds the package), or a check here found it right (see below);
//   - from IPFS under a CID that only an index claims: an IPFS check (check.go) fetches the whole file,
//     spools and hashes it first, then serves the spool; the CID is trusted from then on;
//   - from the LAN machine elected for the package: spooled and hashed whole first (flight.go).
//
// pacman gives up on a server that sends nothing for 10 seconds, so checking a peer's copy has a budget
// (Budget, default 6 s from the request); past it pacman gets its mirrors' bytes, and a check still
// running goes on (and may take over the stream: switcher). A mirror's bytes are pacman's own trust:
// they stream as they arrive, as pacman would have fetched them from that mirror itself, unless
// MirrorCheck holds them back to be checked whole first. Every stream goes through a check of size and
// sha256 that holds back its last 64 KiB: pacman never gets a wrong file as a success.

// body is a package's bytes from one source, ready for pacman.
type body struct {
	source   string // "ipfs", or the mirror's host
	r        io.ReadCloser
	verified bool // known right before the first byte is sent; false only for a mirror streamed past the budget
	// spooled: r reads a spool file this endpoint wrote and hashed whole: hashing it again on the way
	// to pacman would check nothing new.
	spooled bool
	cid     cid.Cid // the IPFS file it came from; undefined for a mirror
	// modified is the Last-Modified the mirror sent with it ("" for IPFS, or a mirror that sent none).
	modified string
	// sw, when set, is a mirror's stream that may switch to an IPFS check's spool (r reads through it).
	sw *switcher
}

// sourceNow names where the bytes came from once they are out: a switched stream came from the peer
// for the most part.
func (b *body) sourceNow() string {
	if b.sw != nil && len(b.sw.sources) > 1 {
		return "ipfs"
	}
	return b.source
}

// result is what a source goroutine of the race reports.
type result struct {
	name string
	b    *body
	err  error
}

// race gets the package from IPFS and, unless peersOnly, from the mirrors: IPFS starts first; the
// mirrors start when IPFS has delivered nothing within the hedge delay, or fails. The first body ready
// to go to pacman wins and the other source is cancelled.
func (s *Server) race(ctx context.Context, req Request, e alpmdb.Entry, peersOnly bool) (*body, error) {
	r := s.newRace(ctx, req, e, peersOnly)
	defer r.late.Stop()
	for r.running > 0 {
		var b *body
		var err error
		done := false
		select {
		case <-r.late.C:
			// Past the budget only a mirror already streaming may still win; IPFS, or a peer still
			// being looked for, has lost.
			b, done, err = nil, true, r.lose(fmt.Errorf("nothing ready within %s", s.opts.Budget))
		case <-r.hedge:
			done, err = r.hedged()
		case <-r.progress:
			r.hedge = nil // IPFS is delivering: no second download unless it fails
			r.ipfsProgress = true
			if r.check.Defined() && !s.opts.PacmanWaits {
				// A check under way may not be done by the deadline: the mirrors then start a little
				// before it, so that pacman has their bytes when the budget runs out (and the rest from
				// the check's copy once that is whole and right).
				r.hedge = time.After(time.Until(r.deadline) - mirrorHeadStart)
			}
		case res := <-r.results:
			b, done, err = r.finished(res)
		}
		if done {
			return b, err
		}
	}
	r.cancelAll()
	if len(r.errs) == 0 {
		return nil, errNoSource
	}
	return nil, errors.Join(r.errs...)
}

// mirrorHeadStart is how long before the deadline the mirrors start when an IPFS check is still running.
const mirrorHeadStart = 2 * time.Second

// racing is the state of one race; only the goroutine running the race touches it.
type racing struct {
	s            *Server
	req          Request
	e            alpmdb.Entry
	peersOnly    bool
	deadline     time.Time
	ctx          context.Context
	cancelAll    context.CancelFunc
	results      chan result
	progress     chan struct{}
	running      int
	cancels      map[string]context.CancelFunc
	hedge        <-chan time.Time
	late         *time.Timer
	errs         []error
	ipfsProgress bool
	check        cid.Cid // the CID an IPFS check runs for: a mirror that wins may switch to it
}

func (s *Server) newRace(ctx context.Context, req Request, e alpmdb.Entry, peersOnly bool) *racing {
	r := &racing{s: s, req: req, e: e, peersOnly: peersOnly, deadline: time.Now().Add(s.opts.Budget),
		results: make(chan result, 2), progress: make(chan struct{}, 1), cancels: map[string]context.CancelFunc{}}
	r.ctx, r.cancelAll = context.WithCancel(ctx)
	r.late = time.NewTimer(time.Until(r.deadline) + time.Second)
	// Decided from what is known already: a package no peer is known to hold goes to the mirrors at once
	// (or, for peersOnly, gets its "no" at once); only a package some peer holds makes them wait.
	if h := s.cat.Lookup(e); h.Held && h.CID.Defined() {
		if s.opts.PacmanWaits {
			// pacman waits for a first byte as long as it takes: a peer gets the time it needs to
			// deliver a package of any size, checked, before the mirrors are asked.
			r.deadline = time.Now().Add(checkTime(e.Size))
			r.late.Reset(time.Until(r.deadline) + time.Second)
		}
		if !h.Trusted {
			r.check = h.CID
		}
		r.start("ipfs", func(ctx context.Context) (*body, error) {
			if h.Trusted {
				return s.fromIPFS(ctx, h.CID, r.progress)
			}
			return s.fromCheck(ctx, req, e, h.CID, r.deadline, r.progress)
		})
		r.hedge = time.After(s.opts.Hedge)
	} else {
		s.metrics.direct.Add(1)
		r.startMirrors()
	}
	return r
}

func (r *racing) start(name string, get func(context.Context) (*body, error)) {
	sctx, cancel := context.WithCancel(r.ctx)
	r.cancels[name] = cancel
	r.running++
	r.s.races.Go(func() {
		b, err := get(sctx)
		r.results <- result{name, b, err}
	})
}

// drainRest closes, in the background, what the sources still running deliver: the race is decided.
func (r *racing) drainRest() {
	results, left := r.results, r.running
	r.s.races.Go(func() { drain(results, left) })
}

func (r *racing) startMirrors() {
	if !r.peersOnly && r.cancels["mirror"] == nil {
		r.start("mirror", func(ctx context.Context) (*body, error) { return r.s.fromMirrors(ctx, r.req, r.e, r.deadline) })
	}
}

// lose ends the race without a winner.
func (r *racing) lose(err error) error {
	r.cancelAll()
	r.drainRest()
	return errors.Join(append(r.errs, err)...)
}

// hedged: IPFS delivered nothing within the hedge delay.
func (r *racing) hedged() (done bool, err error) {
	r.hedge = nil
	if r.peersOnly {
		// Nothing from any peer within the hedge delay: a fast "no", so pacman moves on.
		r.cancelAll()
		r.drainRest()
		return true, errNoSource
	}
	if r.cancels["mirror"] == nil {
		r.s.metrics.hedges.Add(1)
	}
	r.startMirrors()
	return false, nil
}

// finished takes a source's result: the first body wins; a failed IPFS brings the mirrors in; failed
// mirrors with no peer sending end the race.
func (r *racing) finished(res result) (*body, bool, error) {
	r.running--
	if res.err == nil {
		for name, cancel := range r.cancels {
			if name != res.name {
				cancel()
			}
		}
		r.drainRest()
		if res.name == "mirror" && !res.b.verified && r.check.Defined() {
			if f := r.s.runningCheck(r.e, r.check); f != nil {
				res.b.sw = newSwitcher(r.ctx, res.b, f)
				res.b.r = res.b.sw
			}
		}
		res.b.r = &cancelOnClose{ReadCloser: res.b.r, cancel: r.cancelAll}
		return res.b, true, nil
	}
	r.errs = append(r.errs, fmt.Errorf("%s: %w", res.name, res.err))
	if res.name == "ipfs" {
		r.hedge = nil
		if !r.peersOnly && r.cancels["mirror"] == nil {
			r.s.metrics.fallbacks.Add(1)
		}
		r.startMirrors()
	}
	if res.name == "mirror" && !r.ipfsProgress {
		// Every mirror failed and no peer has sent a byte: nobody is coming.
		r.cancelAll()
		r.drainRest()
		return nil, true, errors.Join(r.errs...)
	}
	return nil, false, nil
}

// errNoSource: no peer is known to have the package, and the mirrors are not asked.
var errNoSource = errors.New("no peer is known to have it")

// drain closes what the losers of a race still deliver.
func drain(results <-chan result, left int) {
	for ; left > 0; left-- {
		if r := <-results; r.b != nil {
			r.b.r.Close()
		}
	}
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) origin() (string, string) {
	if o, ok := c.ReadCloser.(origin); ok {
		return o.origin()
	}
	return "", ""
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// fromIPFS gets the package from the node under a trusted CID: ready at its first bytes, which the node
// checked against the CID (a CID only an index claims goes through an IPFS check instead: check.go).
func (s *Server) fromIPFS(ctx context.Context, c cid.Cid, progress chan<- struct{}) (*body, error) {
	r, err := s.opts.Node.Cat(ctx, c)
	if err != nil {
		return nil, err
	}
	// kubo answers a cat once it holds the file's root block: a peer has the file and its blocks are
	// coming. That is progress enough to hold the mirrors back (a failure still brings them in); waiting
	// for the first bytes of a large file behind the other downloads of the same upgrade would start
	// mirror downloads that are thrown away.
	progress <- struct{}{}
	first := make([]byte, 32<<10)
	n, err := io.ReadAtLeast(r, first, 1)
	if err != nil {
		r.Close()
		return nil, err
	}
	return &body{source: "ipfs", r: prefixed(first[:n], r), verified: true, cid: c}, nil
}

// upstream sends a request to a mirror, with the headers of r that a mirror needs (none when r is nil),
// marked with the Via token.
func (s *Server) upstream(ctx context.Context, method, u string, r *http.Request) (*http.Response, error) {
	hr, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if s.opts.Forbidden != "" && !LoopbackHost(hr.URL.Host) {
		return nil, fmt.Errorf("%s: %s", hr.URL.Host, s.opts.Forbidden)
	}
	if r != nil {
		for _, h := range []string{"If-Modified-Since", "If-None-Match", "Range", "User-Agent"} {
			if v := r.Header.Get(h); v != "" {
				hr.Header.Set(h, v)
			}
		}
	}
	hr.Header.Add("Via", "1.1 "+viaToken)
	return s.opts.Client.Do(hr)
}

func hostOf(u string) string {
	if pu, err := url.Parse(u); err == nil {
		return pu.Host
	}
	return "?"
}

type joined struct {
	io.Reader
	closers []io.Closer
}

func (j *joined) Close() error {
	var errs []error
	for _, c := range j.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// prefixed is first, then the rest of r.
func prefixed(first []byte, r io.ReadCloser) io.ReadCloser {
	return &joined{Reader: io.MultiReader(bytes.NewReader(first), r), closers: []io.Closer{r}}
}
