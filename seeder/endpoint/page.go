package endpoint

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/units"
)

// PageData is what the agent tells the status page at the endpoint's root.
type PageData struct {
	Node PageNode
	// LANPeers are the peers the node is connected to over a LAN address.
	LANPeers []PagePeer
	// Repos is what this machine seeds after the last pass, by repository; nil before the first pass.
	Repos    map[string]Count
	LastPass time.Time // when the last pass started; zero before the first
	// LANIndexes are the index roots found on the LAN neighbours.
	LANIndexes []string
}

// Count is what is seeded from one repository.
type Count struct {
	Files int
	Bytes int64
}

// PageNode is the IPFS node as the page shows it.
type PageNode struct {
	ID, Version string
	// Error says why the node did not answer; "" when it did.
	Error string
}

// PagePeer is a LAN peer: its peer ID and the address it is connected on.
type PagePeer struct{ ID, Addr string }

// pageTime bounds what the agent may take to gather the page's data: a node that is down shows as
// such, it does not hold the page.
const pageTime = 2 * time.Second

// pageView is what the template renders.
type pageView struct {
	PageData
	Agent                  bool // Options.Page is set
	Now                    time.Time
	TodayPeer, TodayMirror int64
	SincePeer, SinceMirror int64
	Seeded                 Count
	RepoNames              []string
}

// writePage answers GET / with a small status page for a person: server-rendered, no script, nothing
// fetched from elsewhere (the CSP says so to the browser too).
func (s *Server) writePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		return
	}
	v := pageView{Agent: s.opts.Page != nil, Now: time.Now()}
	if s.opts.Page != nil {
		ctx, cancel := context.WithTimeout(r.Context(), pageTime)
		v.PageData = s.opts.Page(ctx)
		cancel()
	}
	v.TodayPeer, v.TodayMirror = s.today.today()
	v.SincePeer, v.SinceMirror = s.metrics.Served()
	v.RepoNames = slices.Sorted(maps.Keys(v.Repos))
	for _, rc := range v.Repos {
		v.Seeded.Files += rc.Files
		v.Seeded.Bytes += rc.Bytes
	}
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, v); err != nil {
		s.log.Error("status page not rendered", "err", err)
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	_, _ = w.Write(b.Bytes())
}

// peerShare is the share of the bytes that came from peers, as a percentage; "–" of nothing.
func peerShare(peer, mirror int64) string {
	if peer+mirror <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(peer)/float64(peer+mirror))
}

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"bytes": units.HumanBytes,
	"share": peerShare,
	"sum":   func(a, b int64) int64 { return a + b },
	"when":  func(t time.Time) string { return t.Local().Format(time.DateTime) },
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pacman-ipfs</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 52em; padding: 0 1em; color: #1d2433; background: #f6f7f9; }
h1 { font-size: 1.5em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.6em 0 .5em; border-bottom: 2px solid #1793d1; padding-bottom: .2em; }
.muted { color: #5b6475; }
.bad { color: #b3261e; font-weight: 600; }
.good { color: #1b7a3a; font-weight: 600; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35em .7em; border-bottom: 1px solid #dde1e7; }
th { background: #e8eef5; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 13px ui-monospace, monospace; word-break: break-all; }
</style>
</head>
<body>
<h1>pacman-ipfs</h1>
<p class="muted">This machine's pacman endpoint, as of {{when .Now}}. The figures for scripts are at <a href="/metrics">/metrics</a>.</p>

<h2>Node</h2>
{{if not .Agent}}<p class="muted">No agent details.</p>
{{else if .Node.Error}}<p><span class="bad">not reachable</span>: <code>{{.Node.Error}}</code></p>
{{else}}<p><span class="good">reachable</span>, {{.Node.Version}}, peer <code>{{.Node.ID}}</code></p>
{{end}}
<h2>LAN peers ({{len .LANPeers}})</h2>
{{if .LANPeers}}<table>
<tr><th>Peer</th><th>Address</th></tr>
{{range .LANPeers}}<tr><td><code>{{.ID}}</code></td><td><code>{{.Addr}}</code></td></tr>
{{end}}</table>
{{else}}<p class="muted">None connected over a LAN address.</p>
{{end}}{{if .LANIndexes}}<p>Following {{len .LANIndexes}} LAN index{{if gt (len .LANIndexes) 1}}es{{end}}: {{range $i, $r := .LANIndexes}}{{if $i}}, {{end}}<code>{{$r}}</code>{{end}}</p>
{{end}}
<h2>Seeded</h2>
{{if .LastPass.IsZero}}<p class="muted">Nothing yet: no pass has run.</p>
{{else}}<table>
<tr><th>Repository</th><th class="n">Files</th><th class="n">Size</th></tr>
{{range .RepoNames}}{{$rc := index $.Repos .}}<tr><td>{{.}}</td><td class="n">{{$rc.Files}}</td><td class="n">{{bytes $rc.Bytes}}</td></tr>
{{end}}<tr><th>all</th><th class="n">{{.Seeded.Files}}</th><th class="n">{{bytes .Seeded.Bytes}}</th></tr>
</table>
<p class="muted">After the pass of {{when .LastPass}}.</p>
{{end}}
<h2>Handed to pacman</h2>
<table>
<tr><th></th><th class="n">From peers</th><th class="n">From mirrors</th><th class="n">Total</th><th class="n">Peer share</th></tr>
<tr><td>Today</td><td class="n">{{bytes .TodayPeer}}</td><td class="n">{{bytes .TodayMirror}}</td><td class="n">{{bytes (sum .TodayPeer .TodayMirror)}}</td><td class="n">{{share .TodayPeer .TodayMirror}}</td></tr>
<tr><td>Since the agent started</td><td class="n">{{bytes .SincePeer}}</td><td class="n">{{bytes .SinceMirror}}</td><td class="n">{{bytes (sum .SincePeer .SinceMirror)}}</td><td class="n">{{share .SincePeer .SinceMirror}}</td></tr>
</table>
</body>
</html>
`))
