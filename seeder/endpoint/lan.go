package endpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
)

// The agents of a LAN serve each other over kubo's stream mounting (lanindex.Protocol): a request comes
// in on a loopback listener the node hands the peer's stream to, and goes out to a loopback port the node
// forwards to the peer. So no agent listens on the network, and a peer is who its node's authenticated
// connection says it is. What a neighbour may ask for is narrow: a package of this machine's sync dbs,
// named by file and by the sha256 its own db lists for it (the two must agree), and the answer is the
// flight for it (see flight.go), which this machine fetches from its own mirrors if it does not run
// already. The asker checks every byte against its own db, as it does a mirror's.

// LANPrefix starts the paths of neighbours' requests: LANPrefix + /<repo>/os/<arch>/<file>.
const LANPrefix = "/lan/v1"

// LANHelloPath answers an agent's hello: a neighbour takes a peer for an agent once it answers there.
const LANHelloPath = LANPrefix + "/hello"

// lanHello is the answer at LANHelloPath.
const lanHello = "pacman-ipfs\n"

// lanSumHeader carries the sha256 the asker's sync db lists for the file.
const lanSumHeader = "X-Pacman-Ipfs-Sha256"

// maxLANStreams bounds the neighbours' downloads served at once, maxPeerStreams one neighbour's; more
// are refused (503) and the asker goes to its mirrors. So no neighbour (nor many identities of one: a
// share of 16 at most, of a table of 64) can take the download slots this machine's pacman needs.
const (
	maxLANStreams  = 16
	maxPeerStreams = 4
)

// peerKey is the context key of the neighbour a LAN request comes from.
type peerKey struct{}

// WithPeer returns ctx carrying who a LAN request comes from: peer says it (kubo's stream mounting
// reports the remote peer ID before the stream's bytes, so it is known once the request has been read).
func WithPeer(ctx context.Context, peer func() string) context.Context {
	return context.WithValue(ctx, peerKey{}, peer)
}

// peerOf is the neighbour r comes from; "" when nobody said (all such requests share one share).
func peerOf(r *http.Request) string {
	if f, ok := r.Context().Value(peerKey{}).(func() string); ok {
		return f()
	}
	return ""
}

// takePeerSlot takes one of peer's download slots; false when it has all of them.
func (s *Server) takePeerSlot(peer string) bool {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	if s.peerStreams[peer] >= maxPeerStreams {
		return false
	}
	s.peerStreams[peer]++
	return true
}

func (s *Server) releasePeerSlot(peer string) {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	if s.peerStreams[peer]--; s.peerStreams[peer] <= 0 {
		delete(s.peerStreams, peer)
	}
}

// benchTime is how long a neighbour whose copy of a package failed (wrong bytes, more than the db's size,
// a stall, not done within checkTime, cut short) is not asked again: a hostile or broken neighbour costs
// this machine one package's attempt, not one for every package it is elected for. A refusal (404, 409,
// 503: another db version, busy) is the protocol's own answer and benches nobody.
const benchTime = 10 * time.Minute

// bench keeps peer from being asked until benchTime has passed.
func (s *Server) bench(peer string) {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	now := time.Now()
	for p, until := range s.benched {
		if now.After(until) {
			delete(s.benched, p) // so the map holds only the neighbours benched now
		}
	}
	s.benched[peer] = now.Add(benchTime)
	s.metrics.benched.Add(1)
}

// isBenched says whether peer is not to be asked now.
func (s *Server) isBenched(peer string) bool {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	return time.Now().Before(s.benched[peer])
}

// refusal says whether a neighbour's failure was the protocol's own refusal, answered at once (a
// refusal that takes its time is a way to cost the asker time, and benches the neighbour like a failure).
func refusal(err error, took time.Duration) bool {
	var status *statusError
	return errors.As(err, &status) && took < time.Second
}

// statusError is a source's answer other than 200.
type statusError struct{ status string }

func (e *statusError) Error() string { return e.status }

// ServeLAN answers a neighbour's request for a package. It is the handler of the listener the node
// hands lanindex.Protocol streams to.
func (s *Server) ServeLAN(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == LANHelloPath {
		_, _ = io.WriteString(w, lanHello)
		return
	}
	req, e, code, msg := s.lanRequest(r)
	if code != 0 {
		http.Error(w, msg, code)
		return
	}
	peer := peerOf(r)
	if !s.takePeerSlot(peer) {
		s.metrics.lanRefused.Add(1)
		http.Error(w, fmt.Sprintf("%d downloads of yours at once already", maxPeerStreams), http.StatusServiceUnavailable)
		return
	}
	defer s.releasePeerSlot(peer)
	select {
	case s.lanStreams <- struct{}{}:
		defer func() { <-s.lanStreams }()
	default:
		s.metrics.lanRefused.Add(1)
		http.Error(w, "too many neighbours' downloads at once", http.StatusServiceUnavailable)
		return
	}
	f, err := s.join(req, e, false)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if f.relaying(r.Context()) {
		// This machine is getting it from a neighbour itself: the asker is better off at its mirrors.
		f.leave()
		s.metrics.lanRefused.Add(1)
		http.Error(w, "this machine is fetching it from a neighbour too", http.StatusConflict)
		return
	}
	s.passOn(w, r, f, req, e)
}

// lanRequest checks a neighbour's request: a package path, and a package of this machine's sync dbs
// with the sha256 the asker's db lists. A refusal comes with its status code and why.
func (s *Server) lanRequest(r *http.Request) (Request, alpmdb.Entry, int, string) {
	p, ok := strings.CutPrefix(r.URL.Path, LANPrefix)
	if r.Method != http.MethodGet || !ok {
		return Request{}, alpmdb.Entry{}, http.StatusNotFound, "GET " + LANPrefix + "/<repo>/os/<arch>/<file> only"
	}
	req, err := ParsePath(p)
	if err != nil || !isPackage(req.File) || strings.HasSuffix(req.File, ".sig") {
		return Request{}, alpmdb.Entry{}, http.StatusNotFound, "not a package path"
	}
	b, err := hex.DecodeString(r.Header.Get(lanSumHeader))
	if err != nil || len(b) != sha256.Size {
		return Request{}, alpmdb.Entry{}, http.StatusBadRequest, lanSumHeader + ": want the hex sha256 of the file"
	}
	ix := s.index()
	if ix == nil {
		return Request{}, alpmdb.Entry{}, http.StatusServiceUnavailable, "no sync db loaded"
	}
	e, known := ix.Lookup(req.File)
	if !known || e.SHA256 != [sha256.Size]byte(b) {
		// Another db version, or a file this machine does not know: not ours to fetch.
		return Request{}, alpmdb.Entry{}, http.StatusNotFound, "not a package of this machine's sync dbs with that sha256"
	}
	if e.Repo != req.Repo || !slices.Contains(alpmdb.ArchDirs(req.File, s.cat.Architectures()), req.Arch) {
		// The repository and architecture go into this machine's mirror URLs: only its own.
		return Request{}, alpmdb.Entry{}, http.StatusNotFound, "not a repository and architecture of this machine's"
	}
	return req, e, 0, ""
}

// passOn streams the flight's spool to the neighbour as it grows.
func (s *Server) passOn(w http.ResponseWriter, r *http.Request, f *flight, req Request, e alpmdb.Entry) {
	src := f.reader(r.Context())
	defer src.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(e.Size, 10))
	w.WriteHeader(http.StatusOK)
	// A neighbour that stops reading is cut off (writeStall), and so is one that reads too slowly to be
	// done within the time this machine gives a neighbour's copy (checkTime): it must not hold the
	// download's spool, nor one of the LAN's slots, for longer.
	out := s.newStallWriter(w)
	out.until = time.Now().Add(s.lanTime(e.Size))
	n, err := io.Copy(out, src)
	if err != nil {
		s.log.Info("a neighbour's download ended early", "file", req.File, "bytes", n, "err", err)
		panic(http.ErrAbortHandler)
	}
	s.metrics.lanServed.Add(n)
	s.log.Info("package passed to a neighbour", "file", req.File, "bytes", n)
}

// neighbourHeaderTimeout bounds the wait for a neighbour's answer: it answers at once, from a flight it
// joins or starts; a neighbour that does not is not worth more of pacman's time than the mirrors.
const neighbourHeaderTimeout = 3 * time.Second

// fromNeighbour asks the elected neighbour, at base (its forwarded loopback address), for the package.
func (s *Server) fromNeighbour(ctx context.Context, base string, req Request, e alpmdb.Entry) (*http.Response, error) {
	u := fmt.Sprintf("%s%s/%s/os/%s/%s", strings.TrimRight(base, "/"), LANPrefix, req.Repo, req.Arch, req.File)
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	hr.Header.Set(lanSumHeader, hex.EncodeToString(e.SHA256[:]))
	hr.Header.Add("Via", "1.1 "+viaToken)
	return s.lanClient.Do(hr)
}

// Hello says whether the agent behind base (a forward to a peer) serves the LAN protocol; hc is a
// NewLANClient.
func Hello(ctx context.Context, hc *http.Client, base string) bool {
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+LANHelloPath, nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	return resp.StatusCode == http.StatusOK && string(b) == lanHello
}

// NewLANClient talks to neighbours through the node's forwards: loopback only, no redirects, no proxy.
func NewLANClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			ResponseHeaderTimeout: neighbourHeaderTimeout,
			IdleConnTimeout:       30 * time.Second,
			MaxIdleConnsPerHost:   4,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
