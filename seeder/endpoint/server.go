package endpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/catalog"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
)

// Fetcher is the IPFS side: kubo's RPC API implements it.
type Fetcher interface {
	// Cat streams the file c.
	Cat(ctx context.Context, c cid.Cid) (io.ReadCloser, error)
}

// Options configure a Server.
type Options struct {
	// Catalog is what the endpoint knows before a request comes: the sync-db index, the CIDs it trusts
	// and what the indexes it follows claim. A request is decided from it alone: no network lookup.
	Catalog *catalog.Catalog
	Node    Fetcher
	// Mirrors are Server templates ($repo, $arch), tried in order.
	Mirrors []string
	// Forbidden, when it says why, means this process may reach loopback only (the packaged unit's
	// IPAddressDeny=any, which drops packets, so a connection would hang until pacman gives up): a
	// mirror elsewhere fails at once, with that reason.
	Forbidden string
	// Metrics are the endpoint's figures; default: its own. AgentMetrics, when set, adds to what
	// /metrics answers (the agent's own figures).
	Metrics      *Metrics
	AgentMetrics func(io.Writer)
	// Hedge is how long IPFS has to deliver first bytes before the mirrors start too. Default 300 ms.
	Hedge time.Duration
	// Budget is how long, from the request, a peer's copy may take to be checked before any of it goes
	// to pacman, which gives up on a server that sends nothing for 10 s. Default 6 s.
	Budget time.Duration
	// MirrorCheck is how long a mirror's download is held back to be checked whole first (within the
	// Budget): a tampered mirror is then replaced by the next one before pacman sees a byte, at the cost
	// of the wait. 0 (the default): a mirror's bytes stream as they arrive, as pacman would take them
	// from that mirror itself, checked on the way with the end held back.
	MirrorCheck time.Duration
	// WriteStall bounds how long one write to a client may block: a client (pacman, a neighbour) that
	// stops reading is cut off instead of holding its connection, a download's reference and its spool
	// for as long as it likes. Default 30 s.
	WriteStall time.Duration
	// PacmanWaits: pacman.conf has DisableDownloadTimeout, so pacman waits for a first byte as long as
	// it takes; a package a peer holds then gets checkTime instead of Budget to be fetched and checked.
	PacmanWaits bool
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
	cat     *catalog.Catalog
	metrics *Metrics

	// life ends with Close; every flight runs under it and is joined by Close through running.
	life    context.Context
	stop    context.CancelFunc
	running sync.WaitGroup
	// races are a request's sources and what drains the losers: bound to the request, joined by Close.
	races sync.WaitGroup

	flightsMu   sync.Mutex
	flights     map[flightKey]*flight // downloads and IPFS checks, running or kept a while
	lanStreams  chan struct{}         // neighbours' downloads being served
	peersMu     sync.Mutex
	peerStreams map[string]int       // each neighbour's downloads being served
	benched     map[string]time.Time // neighbours not asked until then (see bench)
	lanClient   *http.Client
	today       *dayTally
	lanTime     func(size int64) time.Duration // how long a neighbour's download may take: checkTime
}

// New returns a Server.
func New(opts Options) *Server {
	if opts.Hedge <= 0 {
		opts.Hedge = 300 * time.Millisecond
	}
	if opts.Budget <= 0 {
		opts.Budget = 6 * time.Second
	}
	if opts.WriteStall <= 0 {
		opts.WriteStall = writeStall
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
	if opts.Catalog == nil {
		opts.Catalog = catalog.New(nil, opts.Log)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	s := &Server{opts: opts, log: opts.Log, cat: opts.Catalog, metrics: opts.Metrics, today: newDayTally(opts.TallyFile, opts.Log, time.Now),
		flights: map[flightKey]*flight{}, lanStreams: make(chan struct{}, maxLANStreams), peerStreams: map[string]int{}, benched: map[string]time.Time{}, lanClient: NewLANClient(), lanTime: checkTime}
	s.life, s.stop = context.WithCancel(context.Background())
	return s
}

// Close stops every download still running and waits for them, closes the spools kept, and writes
// today's figures. The handlers must have returned (the http.Server shut down) before.
func (s *Server) Close() {
	s.flightsMu.Lock() // join starts a flight under it: none starts after this
	s.stop()
	s.flightsMu.Unlock()
	s.running.Wait()
	s.races.Wait()
	s.flightsMu.Lock()
	for k, f := range s.flights {
		f.mu.Lock()
		f.closeLocked()
		f.mu.Unlock()
		delete(s.flights, k)
	}
	s.flightsMu.Unlock()
	s.today.flush()
}

// CachePrefix starts the paths of CacheServer requests: CacheServer = http://127.0.0.1:7878/cache/$repo/os/$arch.
const CachePrefix = "/cache"

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	// Everything here is for this machine: a web page that got its name to resolve to 127.0.0.1 (DNS
	// rebinding) must not learn through the visitor's browser what it seeds (a 200 or a 404 for a
	// package says as much as the status page), nor who its neighbours are.
	if !LoopbackHost(r.Host) {
		http.Error(w, "only for Host: 127.0.0.1, [::1] or localhost", http.StatusMisdirectedRequest)
		return
	}
	switch r.URL.Path {
	case MetricsPath, "/":
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

// LoopbackHost says whether host (a Host header, or a URL's host, with or without a port) names this
// machine: a loopback address or localhost.
func LoopbackHost(host string) bool {
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

func (s *Server) index() *alpmdb.Index { return s.cat.Index() }

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
	c, _ := s.cat.Claimed(req.File)
	if !c.Defined() {
		return nil
	}
	sig, err := s.catAtMost(ctx, c, sigcheck.MaxSize)
	if err != nil {
		s.log.Debug("peer signature unavailable", "file", req.File, "err", err)
		return nil
	}
	pc := s.cat.Lookup(e).CID // its bytes are hashed below, trusted or not
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

// pkg serves a package the sync db describes, whole or the window of a Range (pacman and curl resuming
// a .part, aria2c splitting a download), always from a source checked against the db (see fetch.go).
// Its answers are nginx's: 206 for any one satisfiable range, 416 for a malformed or unsatisfiable one,
// the whole file for several ranges or an If-Range that does not match; its strong ETag is the db's
// sha256, the same whatever the source, and its Last-Modified the mirror's when a mirror sent it.
func (s *Server) pkg(w http.ResponseWriter, r *http.Request, req Request, e alpmdb.Entry, peersOnly bool) {
	rg, err := parseRange(r.Header.Get("Range"), e.Size)
	if err != nil {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", e.Size))
		http.Error(w, err.Error(), http.StatusRequestedRangeNotSatisfiable)
		return
	}
	if r.Method == http.MethodHead {
		s.head(w, r, req, e, rg, peersOnly)
		return
	}
	start := time.Now()
	src, err := s.race(r.Context(), req, e, peersOnly)
	if err != nil {
		s.noSource(w, req, err, peersOnly)
		return
	}
	defer src.r.Close()
	// Nothing is promised before a byte is at hand: a source that fails now (a mirror streamed past the
	// budget that drops its connection) gets pacman a clean error, not an empty reply.
	if err := src.readFirst(e); err != nil {
		s.noSource(w, req, fmt.Errorf("%s: %w", src.source, err), peersOnly)
		return
	}
	if !ifRange(r.Header.Get("If-Range"), e, src.modified) {
		rg = byteRange{0, e.Size - 1, false} // RFC 9110 13.1.5: a stale validator gets the whole file
	}
	w.WriteHeader(setPackageHeaders(w.Header(), e, rg, src.modified))
	out := s.newStallWriter(w)
	if err := s.deliver(out, src, e, rg); err != nil {
		s.undelivered(req, src, out.err, err)
		// Headers and bytes are out: abort the connection so the transfer ends short.
		panic(http.ErrAbortHandler)
	}
	source := src.sourceNow()
	s.metrics.served(source, rg.len(), !rg.partial)
	if s.opts.Served != nil && src.cid.Defined() && !rg.partial {
		s.opts.Served(e, src.cid)
	}
	s.today.add(source, rg.len())
	if src.sw != nil {
		s.log.Info("package served", "file", req.File, "sources", src.sw.sources, "switched_at", src.sw.switchedAt,
			"bytes", rg.len(), "took", time.Since(start))
		return
	}
	s.log.Info("package served", "file", req.File, "source", source, "checked_first", src.verified,
		"bytes", rg.len(), "took", time.Since(start))
}

// undelivered records why a package did not reach the client whole: the client's doing (clientErr: it
// hung up or stopped reading, as aria2c closing a split connection does), or the source's.
func (s *Server) undelivered(req Request, src *body, clientErr, err error) {
	if clientErr != nil {
		s.metrics.clientGone.Add(1)
		s.log.Info("client stopped taking the package", "file", req.File, "source", src.source, "err", clientErr)
		return
	}
	if errors.Is(err, ErrMismatch) {
		s.metrics.verifyFailed.Add(1)
	}
	s.log.Warn("package not delivered", "file", req.File, "source", src.source, "checked_first", src.verified, "err", err)
}

// head answers HEAD for a package as GET would, without fetching it: a peer known to hold it, or the
// mirrors' own answer (their validators with it), or, as a CacheServer, a 404 when no peer is known to.
func (s *Server) head(w http.ResponseWriter, r *http.Request, req Request, e alpmdb.Entry, rg byteRange, peersOnly bool) {
	switch h := s.cat.Lookup(e); {
	case h.Held:
		w.WriteHeader(setPackageHeaders(w.Header(), e, rg, ""))
	case peersOnly:
		http.Error(w, "no peer has "+req.File, http.StatusNotFound)
	default:
		s.proxy(w, r, req)
	}
}

// setPackageHeaders sets the headers of the window rg of a package and returns the status to send.
func setPackageHeaders(h http.Header, e alpmdb.Entry, rg byteRange, modified string) int {
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("ETag", etag(e))
	if modified != "" {
		h.Set("Last-Modified", modified)
	}
	h.Set("Content-Length", strconv.FormatInt(rg.len(), 10))
	if !rg.partial {
		return http.StatusOK
	}
	h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rg.from, rg.to, e.Size))
	return http.StatusPartialContent
}

// readFirst reads the body's first bytes (kept for the stream), and learns where they come from.
func (b *body) readFirst(e alpmdb.Entry) error {
	first := make([]byte, 32<<10)
	n, err := io.ReadAtLeast(b.r, first, 1)
	if err != nil && !(errors.Is(err, io.EOF) && e.Size == 0) {
		return err
	}
	if o, ok := b.r.(origin); ok {
		// A flight's stream: where its bytes come from is known once the first is read (a neighbour's
		// failed attempt may have been the flight's source when the stream was made).
		if source, modified := o.origin(); source != "" {
			b.source, b.modified = source, modified
		}
	}
	b.r = prefixed(first[:n], b.r)
	return nil
}

// etag is a package's strong validator: its sha256 from the sync db, whatever source sends the bytes.
func etag(e alpmdb.Entry) string { return `"` + hex.EncodeToString(e.SHA256[:]) + `"` }

// ifRange says whether an If-Range validator (empty: none) matches the package as it will be sent: our
// ETag, or exactly the Last-Modified the source gave (a strong comparison).
func ifRange(v string, e alpmdb.Entry, modified string) bool {
	switch {
	case v == "":
		return true
	case strings.HasPrefix(v, `"`):
		return v == etag(e)
	}
	return modified != "" && v == modified
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

// deliver copies the window rg of src to pacman through a check of the whole file: a spool this
// endpoint hashed needs only its size checked; anything else is hashed on the way.
func (s *Server) deliver(w io.Writer, src *body, e alpmdb.Entry, rg byteRange) error {
	var v interface {
		io.Writer
		Finish() error
	}
	if src.spooled {
		v = &sizeCheck{w: &window{w: w, from: rg.from, to: rg.to}, size: e.Size}
	} else {
		v = newVerifier(&window{w: w, from: rg.from, to: rg.to}, e.Size, e.SHA256)
	}
	if _, err := io.Copy(v, src.r); err != nil {
		return err
	}
	return v.Finish()
}

// byteRange is the window of a package to send: its first and last byte, and whether that is a part
// (206) or the whole file (200).
type byteRange struct {
	from, to int64
	partial  bool
}

func (r byteRange) len() int64 { return r.to - r.from + 1 }

// errRange is a Range header that names no satisfiable range of the file.
var errRange = errors.New("range not satisfiable")

// parseRange reads a Range header against size as nginx does: none, another unit, or several ranges
// is the whole file; one range "N-", "N-M" or "-K" (the last K bytes) is that window, a 206 even when it
// is the whole file ("bytes=0-"); a malformed range, or one that starts past the end, is errRange.
func parseRange(header string, size int64) (byteRange, error) {
	whole := byteRange{0, size - 1, false}
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return whole, nil
	}
	a, b, dash := strings.Cut(strings.TrimSpace(spec), "-")
	if !dash {
		return whole, errRange
	}
	if a == "" { // a suffix: the last K bytes
		k, ok := rangeNum(b)
		if !ok || k == 0 || size == 0 {
			return whole, errRange
		}
		return byteRange{max(0, size-k), size - 1, true}, nil
	}
	first, ok := rangeNum(a)
	if !ok || first >= size {
		return whole, errRange
	}
	last := size - 1
	if b != "" {
		l, ok := rangeNum(b)
		if !ok || l < first {
			return whole, errRange
		}
		last = min(l, size-1)
	}
	return byteRange{first, last, true}, nil
}

// rangeNum reads a byte position of a range: digits only.
func rangeNum(s string) (int64, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
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
	_, _ = io.Copy(s.newStallWriter(w), resp.Body)
}
