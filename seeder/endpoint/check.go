package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
)

// An IPFS check fetches a package from the node under a CID that only an index claims (a neighbour's
// word), whole, into a spool, hashing it; once it matched the db, the spool is served and the CID
// trusted from then on (catalog.Trust); a CID that proved other content is refuted. It is a flight (one
// per package and CID, shared by every request that wants it), and it outlives the request that started
// it, within checkTime: a large package a neighbour holds takes longer to check than pacman waits for a
// first byte, so the request meanwhile gets the mirror's bytes, and switches to the checked spool once
// it is there (switcher). Nothing of the neighbour's bytes is read before the whole matched.

// checkTime bounds a check: a minute, and a second for each MiB (a LAN that moves less is no help).
func checkTime(size int64) time.Duration {
	return time.Minute + time.Duration(size>>20)*time.Second
}

// runCheck is the flight of an IPFS check.
func (f *flight) runCheck(ctx context.Context) {
	var errs []error
	ok := f.try(ctx, "ipfs", false, &errs, func(ctx context.Context) (*http.Response, error) {
		rc, err := f.s.opts.Node.Cat(ctx, f.key.check)
		if err != nil {
			return nil, err
		}
		return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{}, Body: rc}, nil
	})
	switch err := errors.Join(errs...); {
	case ok:
		f.s.cat.Trust(f.e.SHA256, f.key.check)
		f.s.log.Info("a neighbour's copy checked: trusted from now on", "file", f.e.FileName, "cid", f.key.check.String())
	case errors.Is(err, ErrMismatch):
		f.s.log.Warn("an index maps the package to other content", "file", f.e.FileName, "cid", f.key.check.String())
		f.s.cat.Refute(f.key.check)
	}
	if !ok {
		f.s.dropBlocks(f.key.check)
	}
	f.finish(ok, f.outcome(ctx, ok, errs))
}

// BlockDropper is implemented by a Node that can remove blocks it fetched (kubo's RPC API): what a
// check fetched of a CID it refused is removed, so that a neighbour's index cannot fill this machine's
// disk (the packaged node collects no garbage).
type BlockDropper interface {
	Blocks(ctx context.Context, root cid.Cid) ([]cid.Cid, error)
	DropBlocks(ctx context.Context, blocks []cid.Cid) error
}

func (s *Server) dropBlocks(c cid.Cid) {
	d, ok := s.opts.Node.(BlockDropper)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bs, err := d.Blocks(ctx, c)
	if err == nil {
		err = d.DropBlocks(ctx, bs)
	}
	if err != nil {
		s.log.Debug("blocks of a refused IPFS check kept", "cid", c.String(), "err", err)
	}
}

// errNotChecked: the check did not finish by the request's deadline; it goes on.
var errNotChecked = errors.New("not fetched and checked in time")

// fromCheck gets the package through the IPFS check of c: from its spool once it is whole and right, by
// the deadline. progress is told when the check has its first bytes (a peer is sending).
func (s *Server) fromCheck(ctx context.Context, req Request, e alpmdb.Entry, c cid.Cid, deadline time.Time, progress chan<- struct{}) (*body, error) {
	f, err := s.joinKey(flightKey{sum: e.SHA256, check: c}, req, e, false)
	if err != nil {
		return nil, err
	}
	if f.sending(ctx, deadline) {
		progress <- struct{}{}
	}
	if !f.wait(ctx, deadline) {
		f.leave() // it goes on: see leave
		return nil, fmt.Errorf("%s: %w (the check goes on)", c, errNotChecked)
	}
	f.mu.Lock()
	err = f.err
	f.mu.Unlock()
	if err != nil {
		f.leave()
		return nil, err
	}
	return &body{source: "ipfs", r: f.reader(ctx), verified: true, spooled: true, cid: c}, nil
}

// sending waits until the flight has its first bytes, is done, or the deadline passes, and says whether
// bytes came.
func (f *flight) sending(ctx context.Context, deadline time.Time) bool {
	f.waitFor(ctx, deadline, func() bool { return f.n > 0 || f.done })
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n > 0
}

// runningCheck returns the IPFS check of e under c with a reference, if one runs or is done and right.
func (s *Server) runningCheck(e alpmdb.Entry, c cid.Cid) *flight {
	s.flightsMu.Lock()
	defer s.flightsMu.Unlock()
	f := s.flights[flightKey{sum: e.SHA256, check: c}]
	if f == nil || f.failed() {
		return nil
	}
	f.mu.Lock()
	f.refs++
	if f.expire != nil {
		f.expire.Stop()
		f.expire = nil
	}
	f.mu.Unlock()
	return f
}

// switcher streams a mirror's bytes while the IPFS check of the same package runs, and the rest from the
// check's spool once it is whole and right: most of a large package comes from the neighbour, none of it
// before it was checked. The bytes pacman gets are the same either way, and still all hashed by the
// handler on the way.
type switcher struct {
	ctx     context.Context
	r       io.ReadCloser
	check   *flight // with a reference; nil once switched, or when it failed
	off     int64
	sources []string
	// switchedAt is the offset from which the bytes came from the check's spool (-1: they did not).
	switchedAt int64
}

func newSwitcher(ctx context.Context, mirror *body, check *flight) *switcher {
	return &switcher{ctx: ctx, r: mirror.r, check: check, sources: []string{mirror.source}, switchedAt: -1}
}

func (w *switcher) Read(p []byte) (int, error) {
	if f := w.check; f != nil && f.isDone() {
		w.check = nil
		if f.failed() {
			f.leave()
		} else {
			w.r.Close()
			t := f.reader(w.ctx).(*tail)
			t.off = w.off
			w.r = t // its Close releases the reference
			w.sources = append(w.sources, "ipfs")
			w.switchedAt = w.off
		}
	}
	n, err := w.r.Read(p)
	w.off += int64(n)
	return n, err
}

func (w *switcher) Close() error {
	err := w.r.Close()
	if w.check != nil {
		w.check.leave()
		w.check = nil
	}
	return err
}
