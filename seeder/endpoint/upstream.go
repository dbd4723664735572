package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// viaToken marks the requests an endpoint sends upstream (Via: 1.1 pacman-ipfs). A request that arrives
// carrying it has passed through an endpoint already, this one or another: it is answered without going
// upstream again, so that a mirrorlist naming an endpoint can never make endpoints call each other in a
// loop.
const viaToken = "pacman-ipfs"

// looped says whether r already passed through an endpoint.
func looped(r *http.Request) bool {
	for _, v := range r.Header.Values("Via") {
		if strings.Contains(v, viaToken) {
			return true
		}
	}
	return false
}

// maxRedirects bounds the redirects followed for one request (curl's default is higher; real mirrors
// redirect once or twice, to a CDN or a closer mirror).
const maxRedirects = 5

// NewClient returns the client an endpoint uses upstream. It follows redirects only as pacman would
// accept them: at most maxRedirects, to the same scheme or from http to https, and never to a loopback,
// link-local or unspecified address (a tampered mirror must not make the agent fetch from the machine
// itself or its link). It waits at most 30 s for response headers.
func NewClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			// pacman downloads up to ParallelDownloads packages at once from the same mirror: keep as
			// many connections warm, so that a burst of small packages pays no new handshakes.
			MaxIdleConnsPerHost: 16,
		},
		CheckRedirect: checkRedirect,
	}
}

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("redirect to %s: more than %d redirects", req.URL.Redacted(), maxRedirects)
	}
	prev := via[len(via)-1].URL
	if req.URL.Scheme != prev.Scheme && !(prev.Scheme == "http" && req.URL.Scheme == "https") {
		return fmt.Errorf("redirect from %s to %s refused: %s to %s", prev.Redacted(), req.URL.Redacted(), prev.Scheme, req.URL.Scheme)
	}
	if err := publicHost(req.Context(), req.URL); err != nil {
		return fmt.Errorf("redirect from %s refused: %w", prev.Redacted(), err)
	}
	return nil
}

// publicHost refuses a URL whose host is, or resolves to, a loopback, link-local or unspecified address.
func publicHost(ctx context.Context, u *url.URL) error {
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return fmt.Errorf("%s is this machine", u.Redacted())
	}
	addrs := []netip.Addr{}
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, a)
	} else {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", u.Redacted(), err)
		}
		addrs = ips
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsUnspecified() {
			return fmt.Errorf("%s is %s, a loopback or link-local address", u.Redacted(), a)
		}
	}
	return nil
}

// DropSelf removes from mirrors every Server template that points at the endpoint's own listen address
// (its port on a loopback address or localhost), and returns the rest and what it removed. With the
// endpoint first in /etc/pacman.d/mirrorlist, which is also the agent's default --mirrorlist, the
// endpoint would otherwise be its own upstream.
func DropSelf(mirrors []string, self net.Addr) (kept, dropped []string) {
	ta, ok := self.(*net.TCPAddr)
	if !ok {
		return mirrors, nil
	}
	for _, m := range mirrors {
		if pointsAt(m, ta) {
			dropped = append(dropped, m)
		} else {
			kept = append(kept, m)
		}
	}
	return kept, dropped
}

func pointsAt(template string, self *net.TCPAddr) bool {
	u, err := url.Parse(Expand(template, "repo", "arch"))
	if err != nil || u.Scheme != "http" {
		return false
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	if port != strconv.Itoa(self.Port) {
		return false
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	selfIP, _ := netip.AddrFromSlice(self.IP)
	return a == selfIP.Unmap() || a.IsLoopback() && selfIP.Unmap().IsLoopback() || a.IsUnspecified()
}

// errLoop is the answer to a request that passed through an endpoint already and would have to go
// upstream again.
var errLoop = errors.New("this request already passed through a pacman-ipfs endpoint: not sent upstream again")
