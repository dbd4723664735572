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

// Metrics counts what the endpoint did since the agent started. It is made before the endpoint
// (NewMetrics) so that what reports the figures (the agent's status) needs only them, not the endpoint.
type Metrics struct {
	mu       sync.Mutex
	bytes    map[string]int64 // handed to pacman, by source kind: "peer" or "mirror"
	packages map[string]int64

	hedges        atomic.Int64 // mirrors started because IPFS had sent nothing within the hedge delay
	fallbacks     atomic.Int64 // mirrors started because IPFS failed
	direct        atomic.Int64 // packages no peer was known to hold: the mirrors at once
	busy          atomic.Int64 // pacman's requests passed to the mirrors straight: every download slot taken
	verifyFailed  atomic.Int64 // a source's bytes did not match the sync db
	clientGone    atomic.Int64 // clients that hung up or stopped reading before the end
	notFound      atomic.Int64 // peers-only requests no peer could answer (404)
	unchecked     atomic.Int64 // mirror downloads streamed as they arrived rather than checked whole first
	loopsRefused  atomic.Int64 // requests that already passed an endpoint and were not sent upstream
	signaturesLAN atomic.Int64 // signatures taken from peers after a keyring check
	relayed       atomic.Int64 // packages fetched through the neighbour elected for them (cut-through)
	lanServed     atomic.Int64 // bytes passed to neighbours that asked for a package (ServeLAN)
	lanRefused    atomic.Int64 // neighbours' requests refused: too many at once, or relaying already
	benched       atomic.Int64 // neighbours not asked for a while: their copy was wrong, stalled or too slow
}

// NewMetrics returns zeroed figures.
func NewMetrics() *Metrics {
	return &Metrics{bytes: map[string]int64{}, packages: map[string]int64{}}
}

// sourceKind names a source as the figures do: "peer" for IPFS and for a LAN neighbour that passed
// on its download, else "mirror".
func sourceKind(source string) string {
	if source == "ipfs" || strings.HasPrefix(source, "lan:") {
		return "peer"
	}
	return "mirror"
}

// served counts n bytes handed to pacman from source; whole: they were the whole package (a range is
// part of one, and is not counted as a package).
func (m *Metrics) served(source string, n int64, whole bool) {
	kind := sourceKind(source)
	m.mu.Lock()
	m.bytes[kind] += n
	if whole {
		m.packages[kind]++
	}
	m.mu.Unlock()
}

// Served returns the bytes handed to pacman from peers and from mirrors.
func (m *Metrics) Served() (peers, mirrors int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes["peer"], m.bytes["mirror"]
}

// writeMetrics writes the endpoint's counters, then whatever Options.Metrics adds (the agent's).
func (s *Server) writeMetrics(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m := s.metrics
	var b strings.Builder
	m.mu.Lock()
	metric(&b, "pacman_ipfs_endpoint_bytes_total", "counter", "Package bytes handed to pacman, by source.", byLabel("source", m.bytes))
	metric(&b, "pacman_ipfs_endpoint_packages_total", "counter", "Whole packages handed to pacman, by source (a Range request counts in bytes only).", byLabel("source", m.packages))
	m.mu.Unlock()
	for _, c := range []struct {
		name, help string
		v          *atomic.Int64
	}{
		{"pacman_ipfs_endpoint_hedges_total", "Mirrors started because no peer had sent a byte within the hedge delay.", &m.hedges},
		{"pacman_ipfs_endpoint_fallbacks_total", "Mirrors started because IPFS failed.", &m.fallbacks},
		{"pacman_ipfs_endpoint_direct_total", "Package requests no peer was known to hold: the mirrors at once (or a 404 as a CacheServer).", &m.direct},
		{"pacman_ipfs_endpoint_passed_through_total", "Package requests passed to the mirrors unchanged because every download slot was taken.", &m.busy},
		{"pacman_ipfs_endpoint_verification_failures_total", "Sources whose bytes did not match the sync db.", &m.verifyFailed},
		{"pacman_ipfs_endpoint_client_aborts_total", "Downloads the client ended before the last byte (hung up, or stopped reading).", &m.clientGone},
		{"pacman_ipfs_endpoint_not_found_total", "Peers-only requests (CacheServer) no peer could answer.", &m.notFound},
		{"pacman_ipfs_endpoint_streamed_total", "Mirror downloads streamed to pacman as they arrived (checked on the way, the end held back), rather than checked whole first.", &m.unchecked},
		{"pacman_ipfs_endpoint_loops_refused_total", "Requests that had passed an endpoint already and were not sent upstream.", &m.loopsRefused},
		{"pacman_ipfs_endpoint_peer_signatures_total", "Signatures taken from peers after the keyring check.", &m.signaturesLAN},
		{"pacman_ipfs_endpoint_relayed_total", "Packages fetched through the LAN machine elected to download them from its mirrors.", &m.relayed},
		{"pacman_ipfs_lan_served_bytes_total", "Package bytes passed to LAN neighbours that asked for them.", &m.lanServed},
		{"pacman_ipfs_lan_refused_total", "Neighbours' requests refused: too many at once, or this machine relaying already.", &m.lanRefused},
		{"pacman_ipfs_lan_benched_total", "Neighbours not asked again for a while: the copy they sent was wrong, stalled or was not done in time.", &m.benched},
	} {
		metric(&b, c.name, "counter", c.help, map[string]int64{"": c.v.Load()})
	}
	_, _ = io.WriteString(w, b.String())
	if s.opts.AgentMetrics != nil {
		s.opts.AgentMetrics(w)
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
