package endpoint

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// MetricsPath is where the endpoint answers with Prometheus' text format.
const MetricsPath = "/metrics"

// metrics counts what the endpoint did since the agent started.
type metrics struct {
	mu       sync.Mutex
	bytes    map[string]int64 // handed to pacman, by source kind: "peer" or "mirror"
	packages map[string]int64

	hedges        atomic.Int64 // mirrors started because IPFS had sent nothing within the hedge delay
	fallbacks     atomic.Int64 // mirrors started because IPFS failed
	verifyFailed  atomic.Int64 // a source's bytes did not match the sync db
	notFound      atomic.Int64 // peers-only requests no peer could answer (404)
	unchecked     atomic.Int64 // mirror downloads streamed past the budget, unchecked
	loopsRefused  atomic.Int64 // requests that already passed an endpoint and were not sent upstream
	signaturesLAN atomic.Int64 // signatures taken from peers after a keyring check
	relayed       atomic.Int64 // packages fetched through the neighbour elected for them (cut-through)
	lanServed     atomic.Int64 // bytes passed to neighbours that asked for a package (ServeLAN)
	lanRefused    atomic.Int64 // neighbours' requests refused: too many at once, or relaying already
}

func newMetrics() *metrics {
	return &metrics{bytes: map[string]int64{}, packages: map[string]int64{}}
}

// sourceKind names a source as the figures do: "peer" for IPFS and for a LAN neighbour that passed
// on its download, else "mirror".
func sourceKind(source string) string {
	if source == "ipfs" || strings.HasPrefix(source, "lan:") {
		return "peer"
	}
	return "mirror"
}

func (m *metrics) served(source string, n int64) {
	kind := sourceKind(source)
	m.mu.Lock()
	m.bytes[kind] += n
	m.packages[kind]++
	m.mu.Unlock()
}

// Served returns the bytes handed to pacman from peers and from mirrors.
func (s *Server) Served() (peers, mirrors int64) {
	s.metrics.mu.Lock()
	defer s.metrics.mu.Unlock()
	return s.metrics.bytes["peer"], s.metrics.bytes["mirror"]
}

// writeMetrics writes the endpoint's counters, then whatever Options.Metrics adds (the agent's).
func (s *Server) writeMetrics(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m := s.metrics
	var b strings.Builder
	m.mu.Lock()
	metric(&b, "pacman_ipfs_endpoint_bytes_total", "counter", "Package bytes handed to pacman, by source.", byLabel("source", m.bytes))
	metric(&b, "pacman_ipfs_endpoint_packages_total", "counter", "Packages handed to pacman, by source.", byLabel("source", m.packages))
	m.mu.Unlock()
	for _, c := range []struct {
		name, help string
		v          *atomic.Int64
	}{
		{"pacman_ipfs_endpoint_hedges_total", "Mirrors started because no peer had sent a byte within the hedge delay.", &m.hedges},
		{"pacman_ipfs_endpoint_fallbacks_total", "Mirrors started because IPFS failed.", &m.fallbacks},
		{"pacman_ipfs_endpoint_verification_failures_total", "Sources whose bytes did not match the sync db.", &m.verifyFailed},
		{"pacman_ipfs_endpoint_not_found_total", "Peers-only requests (CacheServer) no peer could answer.", &m.notFound},
		{"pacman_ipfs_endpoint_unchecked_total", "Mirror downloads streamed unchecked past the budget.", &m.unchecked},
		{"pacman_ipfs_endpoint_loops_refused_total", "Requests that had passed an endpoint already and were not sent upstream.", &m.loopsRefused},
		{"pacman_ipfs_endpoint_peer_signatures_total", "Signatures taken from peers after the keyring check.", &m.signaturesLAN},
		{"pacman_ipfs_endpoint_relayed_total", "Packages fetched through the LAN machine elected to download them from its mirrors.", &m.relayed},
		{"pacman_ipfs_lan_served_bytes_total", "Package bytes passed to LAN neighbours that asked for them.", &m.lanServed},
		{"pacman_ipfs_lan_refused_total", "Neighbours' requests refused: too many at once, or this machine relaying already.", &m.lanRefused},
	} {
		metric(&b, c.name, "counter", c.help, map[string]int64{"": c.v.Load()})
	}
	_, _ = io.WriteString(w, b.String())
	if s.opts.Metrics != nil {
		s.opts.Metrics(w)
	}
}

func byLabel(label string, values map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for _, k := range []string{"peer", "mirror"} {
		out[fmt.Sprintf(`%s="%s"`, label, k)] = values[k]
	}
	return out
}

// metric writes one metric in Prometheus' text format; values are keyed by their label set ("" for none).
func metric(b *strings.Builder, name, kind, help string, values map[string]int64) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" {
			fmt.Fprintf(b, "%s %d\n", name, values[k])
		} else {
			fmt.Fprintf(b, "%s{%s} %d\n", name, k, values[k])
		}
	}
}

// Metric writes one gauge or counter without labels, for Options.Metrics.
func Metric(w io.Writer, name, kind, help string, value float64) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %g\n", name, help, name, kind, name, value)
}
