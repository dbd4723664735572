package endpoint

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
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
	// Discovered returns more index roots, found at run time (the LAN neighbours' indexes); may be nil.
	Discovered func() []string
	// Metrics, when set, adds to what /metrics answers (the agent's own figures).
	Metrics func(io.Writer)
	// Hedge is how long IPFS has to deliver first bytes before the mirrors start too. Default 300 ms.
	Hedge time.Duration
	// Budget is how long, from the request, a download may take to be checked before any of it goes to
	// pacman, which gives up on a server that sends nothing for 10 s. Default 6 s.
	Budget time.Duration
	// SpoolDir is where mirror downloads are held while they are checked (unlinked files). Default
	// os.TempDir().
	SpoolDir string
	Client   *http.Client
	Log      *slog.Logger
	// Signatures returns what checks a detached signature the sync db does not carry against pacman's
	// keyring (nil when there is none). With it, such a signature is taken from a peer that seeds it,
	// found under the followed indexes, once it proved valid over the package; else from the mirrors.
	Signatures func() sigcheck.Verifier
	// Served, when set, is told of every package handed to pacman whole from IPFS, with its CID: the
	// blocks kubo keeps of it are a second copy once pacman's cache has the file (see the agent).
	Served func(e alpmdb.Entry, c cid.Cid)
	// Owner elects the LAN machine that fetches a package from the mirrors for the whole LAN when no
	// peer has it yet: it returns the base URL of that neighbour's forwarded port and its peer ID, or ""
	// when it is this machine (or there is no neighbour). nil: never ask a neighbour.
	Owner func(ctx context.Context, sum [sha256.Size]byte) (base, peer string)
	// Page returns what the agent adds to the status page at the endpoint's root (the node, its LAN
	// peers, what it seeds); nil shows only the endpoint's own figures. It is called with a context
	// that ends within a few seconds.
	Page func(ctx context.Context) PageData
	// TallyFile keeps the bytes handed to pacman today, for the page, across the agent's runs (it exits
	// when idle); "" keeps them in memory only.
	TallyFile string
}

// Server is the mirror endpoint. It is an http.Handler.
type Server struct {
	opts    Options
	log     *slog.Logger
	checked sync.Map // sha256 -> cid.Cid: index CIDs this endpoint fetched and found right
	metrics *metrics

	flightsMu  sync.Mutex
	flights    map[[sha256.Size]byte]*flight // upstream downloads, running or kept a while
	lanStreams chan struct{}                 // neighbours' downloads being served
	lanClient  *http.Client
	today      *dayTally
}

// New returns a Server.
func New(opts Options) *Server {
	if opts.Hedge <= 0 {
		opts.Hedge = 300 * time.Millisecond
	}
	if opts.Budget <= 0 {
		opts.Budget = 6 * time.Second
	}
	if opts.SpoolDir == "" {
		opts.SpoolDir = os.TempDir()
	}
	if opts.Client == nil {
		opts.Client = NewClient()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: opts.Log, metrics: newMetrics(), today: newDayTally(opts.TallyFile, opts.Log, time.Now),
		flights: map[[sha256.Size]byte]*flight{}, lanStreams: make(chan struct{}, maxLANStreams), lanClient: newLANClient()}
}

// SaveTally writes the bytes handed to pacman today to Options.TallyFile now, if a write is due; the
// agent calls it as it stops.
func (s *Server) SaveTally() { s.today.flush() }

// CachePrefix starts the paths of CacheServer requests: CacheServer = http://127.0.0.1:7878/cache/$repo/os/$arch.
const CachePrefix = "/cache"

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case MetricsPath, "/":
		// What this machine seeds and who its neighbours are is for this machine: a web page that got
		// its name to resolve to 127.0.0.1 (DNS rebinding) must not read it through the visitor's browser.
		if !loopbackHost(r.Host) {
			http.Error(w, "only for Host: 127.0.0.1, [::1] or localhost", http.StatusMisdirectedRequest)
			return
		}
		if r.URL.Path == MetricsPath {
			s.writeMetrics(w)
		} else {
			s.writePage(w, r)
		}
		return
	}
	p, cache := strings.CutPrefix(r.URL.Path, CachePrefix+"/")
	if cache {
		p = "/" + p
	}
	req, err := ParsePath(p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	// A CacheServer answers from peers only; so does a request that passed through an endpoint already.
	peersOnly := cache || looped(r)
	var entry alpmdb.Entry
	known := false
	if ix := s.index(); ix != nil && isPackage(req.File) {
		entry, known = ix.Lookup(strings.TrimSuffix(req.File, ".sig"))
	}
	switch {
	case !known && cache:
		http.Error(w, "not a package of the sync dbs", http.StatusNotFound)
	case !known && peersOnly:
		s.metrics.loopsRefused.Add(1)
		http.Error(w, errLoop.Error(), http.StatusLoopDetected)
	case !known:
		s.proxy(w, r, req)
	case strings.HasSuffix(req.File, ".sig"):
		s.signature(w, r, req, entry, peersOnly)
	default:
		s.pkg(w, r, req, entry, peersOnly)
	}
}

// loopbackHost says whether a Host header names this machine: a loopback address or localhost.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func (s *Server) index() *alpmdb.Index {
	if s.opts.Index == nil {
		return nil
	}
	return s.opts.Index()
}

// signature serves a package's detached signature from the sync db itself when it carries one, else
// from a peer when it can be checked, else from the mirrors (not for peersOnly: a 404).
func (s *Server) signature(w http.ResponseWriter, r *http.Request, req Request, e alpmdb.Entry, peersOnly bool) {
	sig := e.Signature()
	if sig == nil {
		sig = s.peerSignature(r.Context(), req, e)
	}
	switch {
	case sig == nil && peersOnly:
		http.Error(w, "no peer has a signature that checks out", http.StatusNotFound)
		return
	case sig == nil:
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
	if s.opts.Signatures == nil {
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
	pc, _ := s.lookup(ctx, pkgReq, e) // its bytes are hashed below, trusted or not
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
	s.metrics.signaturesLAN.Add(1)
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

// pkg serves a package the sync db describes, whole or from the offset of a "Range: bytes=N-" (pacman
// and curl resuming a .part), always from a source checked against the db (see fetch.go).
func (s *Server) pkg(w http.ResponseWriter, r *http.Request, req Request, e alpmdb.Entry, peersOnly bool) {
	from, to, ok := parseRange(r.Header.Get("Range"), e.Size)
	if !ok {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", e.Size))
		http.Error(w, "range not satisfiable", http.StatusRequestedRangeNotSatisfiable)
		return
	}
	partial := from > 0 || to < e.Size-1
	status := setPackageHeaders(w.Header(), from, to, e.Size, partial)
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	start := time.Now()
	src, err := s.race(r.Context(), req, e, peersOnly)
	if err != nil {
		s.noSource(w, req, err, peersOnly)
		return
	}
	defer src.r.Close()
	w.WriteHeader(status)
	if err := s.deliver(w, src, e, from, to); err != nil {
		s.metrics.verifyFailed.Add(1)
		s.log.Warn("package not delivered", "file", req.File, "source", src.source, "checked_first", src.verified, "err", err)
		// Headers and bytes are out: abort the connection so the transfer ends short.
		panic(http.ErrAbortHandler)
	}
	s.metrics.served(src.source, to-from+1)
	if s.opts.Served != nil && src.cid.Defined() && !partial {
		s.opts.Served(e, src.cid)
	}
	s.today.add(src.source, to-from+1)
	s.log.Info("package served", "file", req.File, "source", src.source, "checked_first", src.verified,
		"bytes", to-from+1, "took", time.Since(start))
}

// setPackageHeaders sets the headers of a package's bytes from..to and returns the status to send.
func setPackageHeaders(h http.Header, from, to, size int64, partial bool) int {
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(to-from+1, 10))
	if !partial {
		return http.StatusOK
	}
	h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to, size))
	return http.StatusPartialContent
}

// noSource answers a request no source could serve: 404 as a CacheServer (pacman moves on to its
// mirrors), 502 as a Server.
func (s *Server) noSource(w http.ResponseWriter, req Request, err error, peersOnly bool) {
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Content-Range")
	h.Del("Accept-Ranges")
	if peersOnly {
		s.metrics.notFound.Add(1)
		s.log.Debug("no peer has the package", "file", req.File, "err", err)
		http.Error(w, "no peer has "+req.File, http.StatusNotFound)
		return
	}
	s.log.Warn("no source could serve the package", "file", req.File, "err", err)
	http.Error(w, err.Error(), http.StatusBadGateway)
}

// deliver copies the window from..to of src to pacman through a check of the whole file: a spool
// this endpoint hashed needs only its size checked; anything else is hashed on the way.
func (s *Server) deliver(w io.Writer, src *body, e alpmdb.Entry, from, to int64) error {
	var v interface {
		io.Writer
		Finish() error
	}
	if src.spooled {
		v = &sizeCheck{w: &window{w: w, from: from, to: to}, size: e.Size}
	} else {
		v = newVerifier(&window{w: w, from: from, to: to}, e.Size, e.SHA256)
	}
	if _, err := io.Copy(v, src.r); err != nil {
		return err
	}
	return v.Finish()
}

// parseRange reads a single "bytes=N-" or "bytes=N-M" range against size: the first and last byte to
// send. No Range header, or one this does not take (several ranges, a suffix range), is the whole file;
// ok is false for a range that starts past the end.
func parseRange(header string, size int64) (from, to int64, ok bool) {
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, size - 1, true
	}
	a, b, _ := strings.Cut(spec, "-")
	first, err := strconv.ParseInt(a, 10, 64)
	if err != nil || first < 0 {
		return 0, size - 1, true
	}
	last := size - 1
	if b != "" {
		l, err := strconv.ParseInt(b, 10, 64)
		if err != nil || l < first {
			return 0, size - 1, true
		}
		last = min(l, size-1)
	}
	if first >= size {
		return 0, 0, false
	}
	return first, last, true
}

// fromIndexes looks the file up under each followed index root in turn. Undef when none has it.
func (s *Server) fromIndexes(ctx context.Context, req Request) cid.Cid {
	roots := s.opts.Indexes
	if s.opts.Discovered != nil {
		roots = append(slices.Clone(roots), s.opts.Discovered()...)
	}
	for _, root := range roots {
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

// proxy passes a request to the mirrors unchanged, and the first useful answer back.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request, req Request) {
	var last *http.Response
	for _, m := range s.opts.Mirrors {
		u := Expand(m, req.Repo, req.Arch) + "/" + req.File
		resp, err := s.upstream(r.Context(), r.Method, u, r)
		if err != nil {
			s.log.Warn("mirror failed", "mirror", hostOf(u), "file", req.File, "err", err)
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
