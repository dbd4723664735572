package endpoint

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
)

// A flight is one download of a package from upstream into a spool file, shared by every request for
// it while it runs: pacman's own (ParallelDownloads, a retry, a second pacman) and the LAN neighbours'
// (ServeLAN). So when several machines of a LAN want the same package at the same moment and no peer
// has it yet, it crosses the uplink once: the machine elected for it (Options.Owner) fetches it from its
// mirrors and streams it to the others as it arrives (cut-through), and every machine still checks the
// whole file against its own sync db.
//
// Upstream is the elected neighbour first when it is not this machine, then the mirrors in order. A
// source whose bytes do not match the db is dropped and the next one starts a new spool (a new
// generation: readers of the old one fail). A finished flight stays a while (flightKeep) for requests
// that come a little later: a neighbour that saw the LAN differently, pacman's next package.
type flight struct {
	s   *Server
	key flightKey // key.check, when defined, makes this an IPFS check (check.go)
	e   alpmdb.Entry
	req Request

	mu       sync.Mutex
	cond     *sync.Cond
	file     *os.File // the spool of the current generation
	gen      int
	n        int64  // bytes in file
	source   string // where the current generation comes from
	modified string // the Last-Modified its source sent
	lan      bool   // the current generation is a neighbour's: no byte of it is streamed unchecked
	// relay: the flight is asking a neighbour; deciding: it has not decided yet whether to. Such a
	// flight is not passed on to neighbours: two machines that elected each other would wait on each
	// other.
	relay    bool
	deciding bool
	done     bool
	err      error // why the flight failed; nil once done means the spool is the package
	finished time.Time
	refs     int
	cancel   context.CancelFunc
	expire   *time.Timer
}

// flightKey names a flight: the package, and the CID of an IPFS check (undefined for the download
// from upstream). A check's one source is the node, under that CID that only an index claims; nothing
// is read of its spool before it is done and right.
type flightKey struct {
	sum   [sha256.Size]byte
	check cid.Cid
}

// flightKeep is how long a finished flight's spool is kept for requests that come after it.
const flightKeep = 2 * time.Minute

// stallTimeout is how long a source may send nothing before the next one is tried.
const stallTimeout = 15 * time.Second

// join returns the flight for e, started if none runs, with a reference the caller must release with
// leave. viaPeer says whether the flight may ask the elected neighbour (not for a neighbour's request:
// that one asks the mirrors itself, so that two machines that elected each other cannot wait on each
// other). It fails with errBusy only when maxFlights downloads are running: finished ones do not count,
// the oldest of them is dropped to make room.
func (s *Server) join(req Request, e alpmdb.Entry, viaPeer bool) (*flight, error) {
	return s.joinKey(flightKey{sum: e.SHA256}, req, e, viaPeer)
}

func (s *Server) joinKey(key flightKey, req Request, e alpmdb.Entry, viaPeer bool) (*flight, error) {
	s.flightsMu.Lock()
	defer s.flightsMu.Unlock()
	if f := s.flights[key]; f != nil {
		f.mu.Lock()
		failed := f.done && f.err != nil
		if !failed {
			f.refs++
			if f.expire != nil {
				f.expire.Stop()
				f.expire = nil
			}
		}
		f.mu.Unlock()
		if !failed {
			return f, nil
		}
		delete(s.flights, key)
	}
	if s.runningLocked() >= maxFlights {
		return nil, errBusy
	}
	s.evictLocked()
	if s.life.Err() != nil {
		return nil, errors.New("the endpoint is stopping")
	}
	// A flight outlives the request that started it (others join it), never the endpoint.
	ctx, cancel := context.WithCancel(s.life)
	if key.check.Defined() {
		ctx, cancel = context.WithTimeout(s.life, checkTime(e.Size))
	}
	f := &flight{s: s, key: key, e: e, req: req, refs: 1, cancel: cancel}
	f.deciding = viaPeer && s.opts.Owner != nil
	f.cond = sync.NewCond(&f.mu)
	s.flights[key] = f
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		f.run(ctx)
	}()
	return f, nil
}

// errBusy: maxFlights downloads are running; pacman's request goes to its mirrors unshared.
var errBusy = fmt.Errorf("%d downloads running already", maxFlights)

// runningLocked counts the flights still downloading. s.flightsMu is held.
func (s *Server) runningLocked() int {
	n := 0
	for _, f := range s.flights {
		if !f.isDone() {
			n++
		}
	}
	return n
}

// evictLocked drops the oldest finished flights nobody reads while more than maxKept are kept: a
// finished flight is only a convenience for a request that comes a little later. s.flightsMu is held.
func (s *Server) evictLocked() {
	for {
		var kept []*flight
		for _, f := range s.flights {
			f.mu.Lock()
			if f.done && f.refs == 0 {
				kept = append(kept, f)
			}
			f.mu.Unlock()
		}
		if len(kept) < maxKept {
			return
		}
		oldest := kept[0]
		for _, f := range kept[1:] {
			if f.finished.Before(oldest.finished) {
				oldest = f
			}
		}
		oldest.mu.Lock()
		oldest.closeLocked()
		oldest.mu.Unlock()
		delete(s.flights, oldest.key)
	}
}

// closeLocked lets go of a finished flight's keep timer and spool: it is being dropped. f.mu is held.
func (f *flight) closeLocked() {
	if f.expire != nil {
		f.expire.Stop()
		f.expire = nil
	}
	if f.file != nil {
		f.file.Close()
		f.file = nil
	}
}

// maxFlights bounds the downloads running at once (each holds a spool file and an upstream connection);
// maxKept the finished ones kept for requests that come after them (each holds its spool).
const (
	maxFlights = 64
	maxKept    = 16
)

// leave releases a reference. The last one out of a running flight stops it; a finished flight is kept
// for flightKeep.
func (f *flight) leave() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	if last && f.done && f.err == nil {
		f.expire = time.AfterFunc(flightKeep, f.forget)
	}
	f.mu.Unlock()
	if last {
		switch {
		case !f.isDone() && !f.key.check.Defined():
			f.cancel()
		case f.failed():
			f.forget()
		}
		// A running check goes on without readers, within its own bound: what it checks is trusted
		// from then on, for the next request and the next machine.
	}
}

func (f *flight) isDone() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.done }
func (f *flight) failed() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.done && f.err != nil }

// forget removes a flight nobody holds and closes its spool.
func (f *flight) forget() {
	f.s.flightsMu.Lock()
	f.mu.Lock()
	if f.refs == 0 {
		if f.s.flights[f.key] == f {
			delete(f.s.flights, f.key)
		}
		if f.file != nil {
			f.file.Close()
			f.file = nil
		}
	}
	f.mu.Unlock()
	f.s.flightsMu.Unlock()
}

// run downloads the package from the first source whose copy is right: the elected neighbour, if
// another machine is, then the mirrors in order.
func (f *flight) run(ctx context.Context) {
	if f.key.check.Defined() {
		f.runCheck(ctx)
		return
	}
	var errs []error
	ok := f.viaNeighbour(ctx, &errs)
	for _, m := range f.s.opts.Mirrors {
		if ok || ctx.Err() != nil {
			break
		}
		u := Expand(m, f.req.Repo, f.req.Arch) + "/" + f.req.File
		ok = f.try(ctx, hostOf(u), false, &errs, func(ctx context.Context) (*http.Response, error) {
			return f.s.upstream(ctx, http.MethodGet, u, nil)
		})
	}
	f.finish(ok, f.outcome(ctx, ok, errs))
}

// viaNeighbour asks the machine elected for this package, when it is another one that has not failed
// lately.
func (f *flight) viaNeighbour(ctx context.Context, errs *[]error) bool {
	if !f.deciding {
		return false
	}
	base, peer := f.s.opts.Owner(ctx, f.e.SHA256)
	if base != "" && f.s.isBenched(peer) {
		f.s.log.Debug("the neighbour elected for the package failed lately: the mirrors", "peer", peer, "file", f.e.FileName)
		base = ""
	}
	f.decide(base != "")
	if base == "" {
		return false
	}
	start := time.Now()
	ok := f.fromNeighbour(ctx, base, peer, errs)
	if ok {
		f.s.metrics.relayed.Add(1)
	} else if err := (*errs)[len(*errs)-1]; ctx.Err() == nil && !refusal(err, time.Since(start)) {
		f.s.log.Warn("a neighbour failed a package: not asked again for a while", "peer", peer, "file", f.e.FileName, "for", benchTime, "err", err)
		f.s.bench(peer)
	}
	f.decide(false) // on to the mirrors, which neighbours may share
	return ok
}

// fromNeighbour is the attempt at the neighbour's copy. The neighbour has as long as a check of its copy would,
// and must keep a pace (a trickle that never stalls included).
func (f *flight) fromNeighbour(ctx context.Context, base, peer string, errs *[]error) bool {
	ctx, cancel := context.WithTimeoutCause(ctx, checkTime(f.e.Size), fmt.Errorf("not done within %s", checkTime(f.e.Size)))
	defer cancel()
	ctx, slow := context.WithCancelCause(ctx)
	paced := make(chan struct{})
	go func() { defer close(paced); f.pace(ctx, time.Now(), slow) }()
	defer func() { slow(nil); <-paced }() // the pace keeper ends with the attempt
	return f.try(ctx, "lan:"+shortPeer(peer), true, errs, func(ctx context.Context) (*http.Response, error) {
		return f.s.fromNeighbour(ctx, base, f.req, f.e)
	})
}

// A neighbour relaying a package must have sent minNeighbourRate bytes a second since neighbourGrace
// after it was asked: slower, it is no help to pacman (its mirrors are), and a trickle that never stalls
// would hold the download for checkTime.
const (
	minNeighbourRate = 512 << 10
	neighbourGrace   = 2 * time.Second
)

// pace cancels the relay (through cancel) when the neighbour falls behind minNeighbourRate; it returns
// when ctx ends.
func (f *flight) pace(ctx context.Context, start time.Time, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		late := time.Since(start) - neighbourGrace
		f.mu.Lock()
		n := f.n
		f.mu.Unlock()
		if late > 0 && n < f.e.Size && n < int64(late.Seconds()*minNeighbourRate) {
			cancel(fmt.Errorf("slower than %d KiB/s", minNeighbourRate>>10))
			return
		}
	}
}

// try makes one attempt and says whether it brought the right copy; a failure is logged and kept.
func (f *flight) try(ctx context.Context, name string, relay bool, errs *[]error, get func(context.Context) (*http.Response, error)) bool {
	err := f.attempt(ctx, name, get)
	if err == nil {
		return true
	}
	if errors.Is(err, ErrMismatch) {
		f.s.metrics.verifyFailed.Add(1)
	}
	if ctx.Err() == nil {
		what := "mirror failed"
		switch {
		case relay:
			what = "neighbour failed"
		case f.key.check.Defined():
			what = "IPFS check failed"
		}
		f.s.log.Warn(what, "source", name, "file", f.e.FileName, "err", err)
	}
	*errs = append(*errs, fmt.Errorf("%s: %w", name, err))
	return false
}

// outcome is the flight's error: nil when a copy was right.
func (f *flight) outcome(ctx context.Context, ok bool, errs []error) error {
	switch {
	case ok:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("download abandoned: nobody waits for it any more")
	case len(errs) == 0:
		return errors.New("no mirror configured")
	}
	return errors.Join(errs...)
}

// finish marks the flight done and wakes its readers. A good download is kept a while for those who
// ask next; a failed one nobody holds is forgotten now.
func (f *flight) finish(ok bool, err error) {
	f.mu.Lock()
	f.done, f.err, f.finished = true, err, time.Now()
	f.cond.Broadcast()
	nobody := f.refs == 0
	if nobody && ok {
		f.expire = time.AfterFunc(flightKeep, f.forget)
	}
	f.mu.Unlock()
	f.cancel()
	if nobody && !ok {
		f.forget()
	}
}

// decide records whether the flight is asking a neighbour now, and wakes those waiting to know.
func (f *flight) decide(relay bool) {
	f.mu.Lock()
	f.relay, f.deciding = relay, false
	f.cond.Broadcast()
	f.mu.Unlock()
}

// relaying waits for the flight to decide whether it asks a neighbour, and says whether it does now.
func (f *flight) relaying(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, func() { f.mu.Lock(); f.cond.Broadcast(); f.mu.Unlock() })
	defer stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.deciding && ctx.Err() == nil {
		f.cond.Wait()
	}
	return f.deciding || f.relay
}

// attempt spools the package from one source as a new generation, and checks it.
func (f *flight) attempt(ctx context.Context, name string, get func(context.Context) (*http.Response, error)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	resp, err := get(ctx)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &statusError{resp.Status}
	}
	spool, err := f.s.newSpool()
	if err != nil {
		return err
	}
	f.newGeneration(spool, name, resp.Header.Get("Last-Modified"))
	// A source that sends nothing for stallTimeout is given up.
	stall := time.AfterFunc(stallTimeout, func() { cancel(fmt.Errorf("nothing for %s", stallTimeout)) })
	defer stall.Stop()
	h := sha256.New()
	n, err := f.spoolBody(resp.Body, io.MultiWriter(h, offsetWriter(spool)), stall)
	switch {
	case err != nil && ctx.Err() != nil && n < f.e.Size:
		return fmt.Errorf("given up after %d bytes: %w", n, context.Cause(ctx))
	case err != nil:
		return err
	case n != f.e.Size || [sha256.Size]byte(h.Sum(nil)) != f.e.SHA256:
		return fmt.Errorf("%w: %d bytes, sha256 differs", ErrMismatch, n)
	}
	return nil
}

// newGeneration makes spool the flight's file: readers of an earlier attempt's file start over.
func (f *flight) newGeneration(spool *os.File, source, modified string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.file != nil {
		f.file.Close()
	}
	f.file, f.n, f.source, f.modified = spool, 0, source, modified
	f.lan = strings.HasPrefix(source, "lan:")
	if f.lan {
		f.modified = "" // nothing a neighbour says goes to pacman, its headers included
	}
	f.gen++
	f.cond.Broadcast()
}

// spoolBody copies a source's body into w (the hash and the spool), telling the readers how far it
// got and resetting the stall timer at every read that brought bytes. More than the db's size is a
// mismatch at once.
func (f *flight) spoolBody(body io.Reader, w io.Writer, stall *time.Timer) (int64, error) {
	var n int64
	buf := make([]byte, 64<<10)
	for {
		k, rerr := body.Read(buf)
		if n+int64(k) > f.e.Size {
			return n, fmt.Errorf("%w: more than the %d bytes it lists", ErrMismatch, f.e.Size)
		}
		if k > 0 {
			stall.Reset(stallTimeout)
			if _, err := w.Write(buf[:k]); err != nil {
				return n, fmt.Errorf("spool: %w", err)
			}
			n += int64(k)
			f.mu.Lock()
			f.n = n
			f.cond.Broadcast()
			f.mu.Unlock()
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// offsetWriter writes a spool from its start with WriteAt, so that readers reading it with ReadAt
// never share a file offset with the writer.
func offsetWriter(f *os.File) io.Writer { return io.NewOffsetWriter(f, 0) }

// wait blocks until the flight is done, ctx ends or the deadline passes, and says whether it is done.
func (f *flight) wait(ctx context.Context, deadline time.Time) bool {
	return f.waitFor(ctx, deadline, func() bool { return f.done })
}

// waitFor blocks until ready (called with f.mu held) says yes, ctx ends or the deadline passes, and
// returns what ready says then.
func (f *flight) waitFor(ctx context.Context, deadline time.Time, ready func() bool) bool {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { f.mu.Lock(); f.cond.Broadcast(); f.mu.Unlock() })
	defer stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	for !ready() && ctx.Err() == nil {
		f.cond.Wait()
	}
	return ready()
}

// reader reads the spool from its start, following the download as it grows. It fails when the
// generation it started on is dropped, and when the flight fails. Closing it releases the reference the
// caller holds.
func (f *flight) reader(ctx context.Context) io.ReadCloser { return f.newTail(ctx, false) }

// mirrorReader is reader for a stream to pacman before the flight is done: it never reads what a
// neighbour sends (that is read only once the flight is done and right), only a mirror's generation.
func (f *flight) mirrorReader(ctx context.Context) io.ReadCloser { return f.newTail(ctx, true) }

func (f *flight) newTail(ctx context.Context, mirrorsOnly bool) *tail {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &tail{f: f, ctx: ctx, mirrorsOnly: mirrorsOnly}
	if t.may() {
		t.gen = f.gen
	}
	return t
}

type tail struct {
	f           *flight
	ctx         context.Context
	gen         int // the generation read; 0 until one it may read is there
	off         int64
	mirrorsOnly bool
	closed      sync.Once
}

// may says whether the tail may read the flight's current generation. f.mu is held.
func (t *tail) may() bool {
	f := t.f
	return !t.mirrorsOnly || !f.lan || f.done && f.err == nil
}

func (t *tail) Read(p []byte) (int, error) {
	f := t.f
	stop := context.AfterFunc(t.ctx, func() { f.mu.Lock(); f.cond.Broadcast(); f.mu.Unlock() })
	defer stop()
	f.mu.Lock()
	for {
		switch {
		case t.ctx.Err() != nil:
			f.mu.Unlock()
			return 0, t.ctx.Err()
		case t.gen != f.gen && t.gen != 0:
			f.mu.Unlock()
			return 0, fmt.Errorf("%w: the download from %s was dropped", ErrMismatch, f.source)
		case t.gen == 0 && f.gen > 0 && t.may():
			t.gen = f.gen // the first source (it may read) had not answered when the reader was made
		case t.gen != 0 && t.off < f.n:
			file, n := f.file, min(int64(len(p)), f.n-t.off)
			f.mu.Unlock()
			k, err := file.ReadAt(p[:n], t.off)
			t.off += int64(k)
			if err == io.EOF {
				err = nil
			}
			return k, err
		case f.done && f.err != nil:
			f.mu.Unlock()
			return 0, f.err
		case f.done && t.gen != 0:
			f.mu.Unlock()
			return 0, io.EOF
		default:
			f.cond.Wait()
		}
	}
}

// origin is implemented by a stream that knows its source only once it has read from it.
type origin interface {
	origin() (source, modified string)
}

// origin names the source of the generation the tail reads, and the Last-Modified it sent.
func (t *tail) origin() (string, string) {
	f := t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.gen == 0 || t.gen != f.gen {
		return "mirror", ""
	}
	return cmp.Or(f.source, "mirror"), f.modified
}

func (t *tail) Close() error {
	t.closed.Do(t.f.leave)
	return nil
}

// fromMirrors gets the package through the flight for it. A neighbour's bytes only once the flight has
// them whole and checked (by the deadline; then pacman gets its mirrors' bytes, unshared). A mirror's
// bytes as they arrive, as pacman would take them from that mirror itself, unless the flight is done and
// checked within Options.MirrorCheck (then from the spool, and a tampered mirror was replaced by the next
// one before pacman saw a byte); the handler's verifier holds back the end until the whole file matched.
func (s *Server) fromMirrors(ctx context.Context, req Request, e alpmdb.Entry, deadline time.Time) (*body, error) {
	f, err := s.join(req, e, true)
	if errors.Is(err, errBusy) {
		// Every download slot is taken (by neighbours, or a huge upgrade): pacman is not refused for the
		// agent's bookkeeping; it gets the mirror's bytes as it would have fetched them itself.
		s.metrics.busy.Add(1)
		return s.passThrough(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	if f.checkedFirst(ctx, deadline, s.opts.MirrorCheck) {
		f.mu.Lock()
		err, source, modified := f.err, f.source, f.modified
		f.mu.Unlock()
		if err != nil {
			f.leave()
			return nil, err
		}
		return &body{source: source, r: f.reader(ctx), verified: true, spooled: true, modified: modified}, nil
	}
	if ctx.Err() != nil {
		f.leave()
		return nil, ctx.Err()
	}
	if f.relaying(ctx) {
		// Still on the elected neighbour, whose bytes never reach pacman unchecked: pacman gets its
		// mirrors' bytes as it would have fetched them itself; the download goes on for the LAN.
		f.leave()
		s.metrics.unchecked.Add(1)
		s.log.Info("the neighbour elected for the package is too slow to check first: the mirrors, unshared", "file", e.FileName)
		return s.passThrough(ctx, req)
	}
	f.mu.Lock()
	source, n, modified := cmp.Or(f.source, "mirror"), f.n, f.modified
	f.mu.Unlock()
	s.metrics.unchecked.Add(1)
	s.log.Debug("a mirror's bytes streamed as they arrive", "source", source, "file", e.FileName, "spooled", n, "of", e.Size)
	return &body{source: source, r: f.mirrorReader(ctx), modified: modified}, nil
}

// passThrough streams the package from the first mirror that sends it, unshared and unspooled (the
// handler's verifier still holds back its end until the whole file matched).
func (s *Server) passThrough(ctx context.Context, req Request) (*body, error) {
	var errs []error
	for _, m := range s.opts.Mirrors {
		u := Expand(m, req.Repo, req.Arch) + "/" + req.File
		resp, err := s.upstream(ctx, http.MethodGet, u, nil)
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			err = fmt.Errorf("%s", resp.Status)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", hostOf(u), err))
			continue
		}
		return &body{source: hostOf(u), r: resp.Body, modified: resp.Header.Get("Last-Modified")}, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("no mirror configured")
	}
	return nil, errors.Join(errs...)
}

// checkedFirst waits while the flight asks the neighbour elected for the package (by the deadline), then
// while it downloads from the mirrors for at most mirrorCheck more (by the deadline too), and says
// whether it is done.
func (f *flight) checkedFirst(ctx context.Context, deadline time.Time, mirrorCheck time.Duration) bool {
	f.waitFor(ctx, deadline, func() bool { return f.done || !f.relay && !f.deciding })
	f.mu.Lock()
	done, onMirrors := f.done, !f.relay && !f.deciding
	f.mu.Unlock()
	if done || !onMirrors || mirrorCheck <= 0 || ctx.Err() != nil {
		return done
	}
	until := time.Now().Add(mirrorCheck)
	if deadline.Before(until) {
		until = deadline
	}
	return f.wait(ctx, until)
}

// newSpool makes an unlinked file in the spool directory: gone with its descriptor, whatever happens.
func (s *Server) newSpool() (*os.File, error) {
	f, err := os.CreateTemp(s.opts.SpoolDir, "spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	os.Remove(f.Name())
	return f, nil
}

func shortPeer(id string) string {
	if len(id) > 12 {
		return id[len(id)-12:]
	}
	return id
}
