// Package mirror is a pacman mirror on loopback that fetches packages over IPFS and races the real
// mirrors, verifying every byte against the sync db.
//
// pacman asks it for /<repo>/os/<arch>/<file>, as it would ask any mirror. Databases, their signatures
// and files no sync db knows are proxied unchanged to the real mirrors, in mirrorlist order. A package
// is answered from its sync-db entry: its CID is derived from the sha256 for a package of at most 1 MiB,
// and otherwise found among what this machine seeds or under the index roots the user follows. IPFS
// starts first; if it has not delivered its first bytes within the hedge delay the mirrors start too,
// and the first source to deliver wins. Whatever the source, the bytes stream to pacman through a check
// of size and sha256 that holds back the file's tail: a mismatch aborts the response, so pacman never
// receives a wrong file as a success and moves on to its next server.
package mirror

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
)

// Fetcher is the IPFS side: kubo's RPC API implements it.
type Fetcher interface {
	// Cat streams the file c.
	Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error)
	// Resolve resolves an IPFS path (/ipfs/…, /ipns/…, with a path below) to the CID it names.
	Resolve(ctx context.Context, path string) (cid.Cid, error)
}

// Options configure a Server.
type Options struct {
	// Index returns the current sync-db index; nil until one is loaded.
	Index func() *alpmdb.Index
	Node  Fetcher
	// Seeded returns the CID of a file this machine seeds with that sha256, if any.
	Seeded func(sum [sha256.Size]byte) (cid.Cid, bool)
	// Mirrors are Server templates ($repo, $arch), tried in order.
	Mirrors []string
	// Indexes are roots laid out like a mirror (/ipfs/…, /ipns/…, a DNSLink name) to look larger
	// packages up in.
	Indexes []string
	// Hedge is how long IPFS has to deliver first bytes before the mirrors start too. Default 300 ms.
	Hedge  time.Duration
	Client *http.Client
	Log    *slog.Logger
	// Signatures returns what checks a detached signature the sync db does not carry against pacman's
	// keyring (nil when there is none). With it, such a signature is taken from a peer that seeds it,
	// found under the followed indexes, once it proved valid over the package; else from the mirrors.
	Signatures func() seeder.SigVerifier
}

// Server is the mirror endpoint. It is an http.Handler.
type Server struct {
	opts Options
	log  *slog.Logger
}

// New returns a Server.
func New(opts Options) *Server {
	if opts.Hedge <= 0 {
		opts.Hedge = 300 * time.Millisecond
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 0}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: opts.Log}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	req, err := ParsePath(r.URL.Path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	var entry alpmdb.Entry
	known := false
	if ix := s.index(); ix != nil && isPackage(req.File) {
		entry, known = ix.Lookup(strings.TrimSuffix(req.File, ".sig"))
	}
	switch {
	case !known || r.Header.Get("Range") != "":
		// Not ours to vouch for (or a resumed download, which only a mirror can answer in part).
		s.proxy(w, r, req)
	case strings.HasSuffix(req.File, ".sig"):
		s.signature(w, r, req, entry)
	default:
		s.pkg(w, r, req, entry)
	}
}

func (s *Server) index() *alpmdb.Index {
	if s.opts.Index == nil {
		return nil
	}
	return s.opts.Index()
}

// signature serves a package's detached signature from the sync db itself when it carries one, else
// from a peer when it can be checked, else from the mirrors.
func (s *Server) signature(w http.ResponseWriter, r *http.Request, req Request, e alpmdb.Entry) {
	sig := e.Signature()
	if sig == nil {
		sig = s.peerSignature(r.Context(), req, e)
	}
	if sig == nil {
		s.proxy(w, r, req)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(sig)))
	w.Header().Set("Content-Type", "application/octet-stream")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(sig)
}

// sigCheckTime bounds the check of a peer's signature: the package is normally read back from the
// node's own blocks (pacman fetched it a moment ago), and anything slower is the mirrors' job.
const sigCheckTime = 5 * time.Second

// peerSignature returns the signature a peer seeds for the package, found under the followed indexes,
// once pacman's keyring says it is valid over the package (read back from the node and checked against
// the db's sha256). nil when there is none, or it cannot be checked in time.
func (s *Server) peerSignature(ctx context.Context, req Request, e alpmdb.Entry) []byte {
	if s.opts.Signatures == nil || len(s.opts.Indexes) == 0 {
		return nil
	}
	kr := s.opts.Signatures()
	if kr == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, sigCheckTime)
	defer cancel()
	c := s.fromIndexes(ctx, req)
	if !c.Defined() {
		return nil
	}
	sig, err := s.catAtMost(ctx, c, sigcheck.MaxSize)
	if err != nil {
		s.log.Debug("peer signature unavailable", "file", req.File, "err", err)
		return nil
	}
	pkgReq := req
	pkgReq.File = strings.TrimSuffix(req.File, ".sig")
	pc := s.cidOf(ctx, pkgReq, e)
	if !pc.Defined() {
		return nil
	}
	body, err := s.opts.Node.Cat(ctx, pc)
	if err != nil {
		return nil
	}
	defer body.Close()
	h := sha256.New()
	data := io.TeeReader(io.LimitReader(body, e.Size), h)
	err = kr.Verify(ctx, sig, data)
	_, _ = io.Copy(h, data)
	if err != nil || [sha256.Size]byte(h.Sum(nil)) != e.SHA256 {
		s.log.Warn("a peer's signature was refused", "file", req.File, "cid", c.String(), "err", err)
		return nil
	}
	s.log.Info("signature served", "file", req.File, "source", "ipfs")
	return sig
}

// catAtMost reads file c, which must not be larger than limit.
func (s *Server) catAtMost(ctx context.Context, c cid.Cid, limit int64) ([]byte, error) {
	body, err := s.opts.Node.Cat(ctx, c)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("%s is larger than %d bytes", c, limit)
	}
	return b, err
}

// pkg serves a package the sync db describes.
func (s *Server) pkg(w http.ResponseWriter, r *http.Request, req Request, e alpmdb.Entry) {
	w.Header().Set("Content-Length", strconv.FormatInt(e.Size, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	if r.Method == http.MethodHead {
		return
	}
	ctx := r.Context()
	c := s.cidOf(ctx, req, e)
	src, err := s.race(ctx, req, c)
	if err != nil {
		s.log.Warn("no source could serve the package", "file", req.File, "err", err)
		w.Header().Del("Content-Length")
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer src.body.Close()
	v := newVerifier(w, e.Size, e.SHA256)
	start := time.Now()
	_, err = v.Write(src.first)
	if err == nil {
		_, err = io.Copy(v, src.body)
	}
	if err == nil {
		err = v.Finish()
	}
	if err != nil {
		s.log.Warn("package not delivered", "file", req.File, "source", src.name, "err", err)
		// Headers and most bytes are out: abort the connection so the transfer ends short. pacman then
		// discards it and moves on to its next server.
		panic(http.ErrAbortHandler)
	}
	s.log.Info("package served", "file", req.File, "source", src.name, "bytes", e.Size, "took", time.Since(start))
}

// cidOf finds the package's CID: derived, seeded here, or under a followed index. Undef when unknown.
func (s *Server) cidOf(ctx context.Context, req Request, e alpmdb.Entry) cid.Cid {
	if e.Size <= int64(seeder.Import.ChunkSize) {
		return seeder.RawCID(e.SHA256)
	}
	if s.opts.Seeded != nil {
		if c, ok := s.opts.Seeded(e.SHA256); ok {
			return c
		}
	}
	return s.fromIndexes(ctx, req)
}

// fromIndexes looks the file up under each followed index root in turn. Undef when none has it.
func (s *Server) fromIndexes(ctx context.Context, req Request) cid.Cid {
	for _, root := range s.opts.Indexes {
		// An index that takes longer than the hedge delay to answer has lost the race already.
		rctx, cancel := context.WithTimeout(ctx, s.opts.Hedge)
		c, err := s.opts.Node.Resolve(rctx, indexPath(root, req))
		cancel()
		if err == nil {
			return c
		}
		s.log.Debug("not in index", "root", root, "file", req.File, "err", err)
	}
	return cid.Undef
}

func indexPath(root string, req Request) string {
	root = strings.TrimRight(root, "/")
	if !strings.HasPrefix(root, "/ipfs/") && !strings.HasPrefix(root, "/ipns/") {
		root = "/ipns/" + root // a DNSLink name
	}
	return fmt.Sprintf("%s/%s/os/%s/%s", root, req.Repo, req.Arch, req.File)
}

// source is a body that has delivered its first bytes.
type source struct {
	name  string
	first []byte
	body  io.ReadCloser
	err   error
}

// race starts IPFS (when the CID is known) and, after the hedge delay or at once when IPFS fails, the
// mirrors; the first to deliver bytes wins and the other is cancelled.
func (s *Server) race(ctx context.Context, req Request, c cid.Cid) (*source, error) {
	ctx, cancelAll := context.WithCancel(ctx)
	results := make(chan *source, 2)
	cancels := map[string]context.CancelFunc{}
	start := func(name string, open func(context.Context) (io.ReadCloser, error)) {
		sctx, cancel := context.WithCancel(ctx)
		cancels[name] = cancel
		go func() {
			body, err := open(sctx)
			if err != nil {
				results <- &source{name: name, err: err}
				return
			}
			buf := make([]byte, 32<<10)
			n, err := io.ReadAtLeast(body, buf, 1)
			if err != nil {
				body.Close()
				results <- &source{name: name, err: err}
				return
			}
			results <- &source{name: name, first: buf[:n], body: body}
		}()
	}
	mirrors := func(ctx context.Context) (io.ReadCloser, error) { return s.fromMirrors(ctx, req) }
	running := 0
	var hedge <-chan time.Time
	if c.Defined() {
		start("ipfs", func(ctx context.Context) (io.ReadCloser, error) { return s.opts.Node.Cat(ctx, c) })
		hedge = time.After(s.opts.Hedge)
	} else {
		start("mirror", mirrors)
	}
	running++
	var errs []error
	for running > 0 {
		select {
		case <-hedge:
			hedge = nil
			if cancels["mirror"] == nil {
				start("mirror", mirrors)
				running++
			}
		case res := <-results:
			running--
			if res.err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", res.name, res.err))
				if res.name == "ipfs" && cancels["mirror"] == nil {
					hedge = nil
					start("mirror", mirrors) // IPFS gave up early: no point waiting out the hedge
					running++
				}
				continue
			}
			// The winner. Cancel the others and close whatever they still deliver.
			for name, cancel := range cancels {
				if name != res.name {
					cancel()
				}
			}
			go func(left int) {
				for ; left > 0; left-- {
					if r := <-results; r.body != nil {
						r.body.Close()
					}
				}
			}(running)
			winner := res
			winner.body = &cancelOnClose{ReadCloser: res.body, cancel: cancelAll}
			return winner, nil
		}
	}
	cancelAll()
	return nil, errors.Join(errs...)
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// fromMirrors GETs the file from the first mirror that has it.
func (s *Server) fromMirrors(ctx context.Context, req Request) (io.ReadCloser, error) {
	var errs []error
	for _, m := range s.opts.Mirrors {
		u := Expand(m, req.Repo, req.Arch) + "/" + req.File
		hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp, err := s.opts.Client.Do(hr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			errs = append(errs, fmt.Errorf("%s: %s", u, resp.Status))
			continue
		}
		return resp.Body, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("no mirror configured")
	}
	return nil, errors.Join(errs...)
}

// proxy passes a request to the mirrors unchanged, and the first useful answer back.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request, req Request) {
	var last *http.Response
	for _, m := range s.opts.Mirrors {
		u := Expand(m, req.Repo, req.Arch) + "/" + req.File
		hr, err := http.NewRequestWithContext(r.Context(), r.Method, u, nil)
		if err != nil {
			continue
		}
		for _, h := range []string{"If-Modified-Since", "If-None-Match", "Range", "User-Agent"} {
			if v := r.Header.Get(h); v != "" {
				hr.Header.Set(h, v)
			}
		}
		resp, err := s.opts.Client.Do(hr)
		if err != nil {
			s.log.Debug("mirror failed", "url", u, "err", err)
			continue
		}
		if resp.StatusCode >= 400 {
			if last != nil {
				last.Body.Close()
			}
			last = resp
			continue
		}
		s.relay(w, resp)
		return
	}
	if last != nil {
		s.relay(w, last)
		return
	}
	http.Error(w, "no mirror answered", http.StatusBadGateway)
}

func (s *Server) relay(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	for _, h := range []string{"Content-Length", "Content-Type", "Last-Modified", "ETag", "Content-Range", "Accept-Ranges"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
