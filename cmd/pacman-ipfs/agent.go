package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent/control"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/catalog"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/endpoint"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/lanindex"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/prefetch"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// lazyKubo connects to kubo on first use and again after a failed attempt, so that the agent and its
// endpoint start before kubo does.
type lazyKubo struct {
	addr string
	mu   sync.Mutex
	c    *kubo.Client
}

func (l *lazyKubo) client(ctx context.Context) (*kubo.Client, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c != nil {
		return l.c, nil
	}
	c, err := kubo.Dial(ctx, l.addr)
	if err != nil {
		return nil, err
	}
	l.c = c
	return c, nil
}

func (l *lazyKubo) Cat(ctx context.Context, k cid.Cid) (io.ReadCloser, error) {
	c, err := l.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.Cat(ctx, k)
}

// Blocks and DropBlocks make lazyKubo an endpoint.BlockDropper.
func (l *lazyKubo) Blocks(ctx context.Context, root cid.Cid) ([]cid.Cid, error) {
	c, err := l.client(ctx)
	if err != nil {
		return nil, err
	}
	return c.Blocks(ctx, root)
}

func (l *lazyKubo) DropBlocks(ctx context.Context, bs []cid.Cid) error {
	c, err := l.client(ctx)
	if err != nil {
		return err
	}
	return c.DropBlocks(ctx, bs)
}

// agentFlags are the agent's command line.
type agentFlags struct {
	c                            common
	listen, group                string
	idleExit, quiet              time.Duration
	httpAddr, mirrorlist         string
	indexes                      multiFlag
	hedge, budget, mirrorCheck   time.Duration
	lanIndex, lanFetch, prefetch bool
}

func parseAgentFlags(args []string) (*agentFlags, error) {
	f := &agentFlags{}
	err := parse("agent", "Keep the node in step with pacman's caches: watch every CacheDir and the sync dbs, reconcile\nafter each burst of changes, answer the control socket. Started by systemd socket activation\n(pacman-ipfs.socket) or by hand with --listen.", args, func(fs *flag.FlagSet) {
		f.c.register(fs)
		fs.StringVar(&f.listen, "listen", "", "control socket `path` to create when not socket-activated")
		fs.StringVar(&f.group, "socket-group", "", "`group` whose members may ask for work over the control socket (root always may)")
		fs.DurationVar(&f.idleExit, "idle-exit", 0, "exit after this long with nothing to do (0: never); the next socket activation catches up")
		fs.DurationVar(&f.quiet, "quiet", 2*time.Second, "how long changes must stop before a reconcile starts")
		fs.StringVar(&f.httpAddr, "http", "", "serve a pacman mirror on this loopback `address` (e.g. 127.0.0.1:7878) that fetches packages over IPFS")
		fs.StringVar(&f.mirrorlist, "mirrorlist", "/etc/pacman.d/mirrorlist", "the real mirrors the endpoint races and falls back to (`file`)")
		fs.Var(&f.indexes, "index", "an index `root` to find larger packages' CIDs in: /ipfs/..., /ipns/... or a DNSLink name (repeatable)")
		fs.DurationVar(&f.hedge, "hedge", 300*time.Millisecond, "how long kubo has to find a package (hold its root block) before the mirrors start too")
		fs.BoolVar(&f.lanIndex, "lan-index", true, "publish the index under the node's own key (/ipns/<peer ID>) and look up the LAN neighbours' (--lan-index=false: neither)")
		fs.BoolVar(&f.lanFetch, "lan-fetch", true, "a package no peer has is fetched from the mirrors by one LAN machine, elected per package, and streamed to the others as it arrives; this machine serves its neighbours the same way (needs --lan-index and the node's Experimental.Libp2pStreamMounting)")
		fs.BoolVar(&f.prefetch, "prefetch", false, "after new sync dbs, fetch into the node (not into pacman's cache) the upgrades of installed packages that LAN neighbours hold, so that -Su finds them here (needs --lan-index)")
		fs.DurationVar(&f.budget, "verify-budget", 6*time.Second, "how long a peer's copy may take to be checked before any of it goes to pacman (which gives up after 10 s without data)")
		fs.DurationVar(&f.mirrorCheck, "mirror-check", 0, "hold a mirror's download back this long (within --verify-budget) to check it whole first, so that a tampered mirror is replaced by the next before pacman sees a byte (0: stream a mirror's bytes as they arrive, as pacman would take them; the end is held back until the whole file matched)")
	})
	return f, err
}

func runAgent(ctx context.Context, args []string) error {
	f, err := parseAgentFlags(args)
	if err != nil {
		return err
	}
	if err := f.c.checkCluster(); err != nil {
		return err
	}
	p, err := buildAgent(f)
	if err != nil {
		return err
	}
	err = p.run(ctx)
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil // SIGTERM: a clean stop
	}
	return err
}

// agentParts are the agent's parts, all made before any of them runs: the catalog first (what every
// other part reads or feeds), then the parts that use it. Optional parts are nil when off.
type agentParts struct {
	log     *slog.Logger
	api     *lazyKubo
	control net.Listener // nil: neither socket-activated nor --listen
	cat     *catalog.Catalog
	refresh *catalog.Refresher
	lan     *lanindex.Exchange   // --lan-index
	pf      *prefetch.Prefetcher // --prefetch
	agent   *agent.Agent
	ep      *endpoint.Server // --http, or a socket systemd passed
	web     *http.Server
	webLn   net.Listener
	link    *lanLink // --lan-fetch with an endpoint
	drops   *dropper // the blocks of packages handed to pacman from IPFS, let go of
}

// buildAgent makes every part from the flags and pacman.conf, and opens the listeners.
func buildAgent(f *agentFlags) (*agentParts, error) {
	// The journal: a line per pass that changed something and per package served, every warning.
	log := f.c.logger(slog.LevelInfo)
	cfg, err := alpmdb.ReadConfig(f.c.pacmanConf)
	if err != nil {
		return nil, err
	}
	auth, err := control.NewAuthorizer(f.group)
	if err != nil {
		return nil, err
	}
	addr, err := f.c.apiAddr()
	if err != nil {
		return nil, err
	}
	p := &agentParts{log: log, api: &lazyKubo{addr: addr}, cat: catalog.New(cfg, log)}
	if p.control, p.webLn, err = listeners(f.listen, f.httpAddr); err != nil {
		return nil, err
	}
	if p.control == nil {
		log.Warn("no control socket: neither socket-activated nor --listen; the hook cannot reach this agent")
	}
	p.buildLAN(f, cfg)
	figures := endpoint.NewMetrics()
	p.agent = agent.New(agent.Options{
		AfterPass: p.afterPass, Served: figures.Served, Catalog: p.cat, Config: cfg,
		Seeder: f.c.seederOptions(cfg, nil, log), StateDir: f.c.stateDir, Dial: p.pinningNode(&f.c),
		API: kubo.Redact(addr), Auth: auth, Log: log, Quiet: f.quiet, IdleExit: f.idleExit,
	})
	if p.webLn != nil {
		if err := p.buildEndpoint(f, cfg, figures); err != nil {
			p.closeListeners()
			return nil, err
		}
	}
	return p, nil
}

// buildLAN makes the LAN's parts: the index exchange, the catalog's refresher (the followed roots and
// the LAN's) and the prefetcher.
func (p *agentParts) buildLAN(f *agentFlags, cfg *alpmdb.Config) {
	p.refresh = &catalog.Refresher{Catalog: p.cat, Followed: f.indexes, Log: p.log,
		Node: func(ctx context.Context) (catalog.Lister, error) { return p.api.client(ctx) }}
	if !f.lanIndex {
		if f.prefetch {
			p.log.Warn("--prefetch needs --lan-index: nothing is prefetched")
		}
		return
	}
	p.lan = lanindex.New(func(ctx context.Context) (lanindex.Node, error) { return p.api.client(ctx) }, 20*time.Second, p.log)
	p.refresh.Discovered = p.lan.Roots
	if f.prefetch {
		p.pf = prefetch.New(prefetch.Options{
			Node:     func(ctx context.Context) (prefetch.Node, error) { return p.api.client(ctx) },
			Catalog:  p.cat,
			Upgrades: func(ctx context.Context) ([]string, error) { return alpmdb.Upgrades(ctx, cfg) },
			Log:      p.log,
		})
	}
}

// afterPass runs after each pass: the index is published for the LAN, the catalog and the prefetcher
// look again (new sync dbs, packages installed).
func (p *agentParts) afterPass(r *reconcile.Report) {
	if p.lan != nil {
		p.lan.Publish(r.Index)
	}
	p.refresh.Kick()
	if p.pf != nil {
		p.pf.Kick()
	}
}

// pinningNode is how the agent reaches the node it pins through: kubo, or the cluster in front of it.
func (p *agentParts) pinningNode(c *common) func(context.Context) (node.Node, error) {
	return func(ctx context.Context) (node.Node, error) {
		k, err := p.api.client(ctx)
		if err != nil {
			return nil, err
		}
		return c.pinningNode(ctx, k)
	}
}

// buildEndpoint makes the loopback mirror endpoint (and, with --lan-fetch, the LAN link it shares
// downloads over): the mirrors of the mirrorlist minus the endpoint's own address, and an http.Server
// whose every wait is bounded.
func (p *agentParts) buildEndpoint(f *agentFlags, cfg *alpmdb.Config, figures *endpoint.Metrics) error {
	mirrors, err := endpoint.ReadMirrorlist(f.mirrorlist)
	if err != nil {
		// A CacheServer needs no mirror; Server requests then fail with 502 and say why.
		p.log.Warn("no mirrors for the endpoint: only CacheServer requests will be answered", "err", err)
	}
	mirrors, dropped := endpoint.DropSelf(mirrors, p.webLn.Addr())
	if len(dropped) > 0 {
		p.log.Info("the endpoint's own address is not one of its mirrors", "dropped", dropped)
	}
	spool := filepath.Join(f.c.stateDir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return fmt.Errorf("the endpoint's spool: %w", err)
	}
	var owner func(context.Context, [sha256.Size]byte) (string, string)
	if p.lan != nil && f.lanFetch {
		if p.link, err = newLANLink(p.api, p.lan, p.log); err != nil {
			return err
		}
		owner = p.link.owner
	}
	p.drops = newDropper(p.api, p.pf, p.log)
	var forbidden string
	if networkForbidden(context.Background(), remoteHosts(mirrors)) {
		p.log.Warn(forbiddenWhy)
		p.agent.Note(forbiddenWhy)
		forbidden = forbiddenWhy
	}
	p.ep = endpoint.New(endpoint.Options{
		Forbidden: forbidden,
		Catalog:   p.cat, Node: p.api, Metrics: figures, Owner: owner,
		AgentMetrics: func(w io.Writer) { agentMetrics(w, p.agent, p.lan, p.pf, p.cat) },
		Mirrors:      mirrors, Hedge: f.hedge, Budget: f.budget, MirrorCheck: f.mirrorCheck, SpoolDir: spool, Log: p.log,
		Signatures: pacmanKeyring(cfg, p.log), Served: p.drops.enqueue, PacmanWaits: cfg.DisableDownloadTimeout,
		Page:      func(ctx context.Context) endpoint.PageData { return pageData(ctx, p.agent, p.api, p.lan) },
		TallyFile: filepath.Join(f.c.stateDir, tallyFile),
	})
	p.web = boundedServer(p.ep.ServeHTTP, p.agent.Busy, p.log)
	p.log.Info("mirror endpoint", "addr", p.webLn.Addr().String(), "mirrors", len(mirrors), "indexes", len(f.indexes))
	return nil
}

// run starts every part under one group and returns when the agent stops (idle exit, SIGTERM, a part
// that failed) and every part has: the servers shut down, the downloads ended, the forwards closed.
func (p *agentParts) run(ctx context.Context) error {
	defer p.closeListeners()
	g := newGroup(ctx, p.log)
	g.Go("catalog", func(ctx context.Context) error { p.refresh.Run(ctx); return nil })
	if p.lan != nil {
		g.Go("LAN index", func(ctx context.Context) error { p.lan.Run(ctx); return nil })
	}
	if p.pf != nil {
		g.Go("prefetch", func(ctx context.Context) error { p.pf.Run(ctx, time.Minute); return nil })
	}
	if p.ep != nil {
		g.Go("endpoint", func(ctx context.Context) error {
			return serveBounded(ctx, p.web, p.webLn, maxEndpointConns)
		})
		g.Go("dropper", func(ctx context.Context) error { p.drops.run(ctx); return nil })
	}
	if p.link != nil {
		g.Go("LAN link", func(ctx context.Context) error { return p.link.run(ctx, p.ep.ServeLAN, p.agent.Busy) })
	}
	g.Go("agent", func(ctx context.Context) error { return p.agent.Run(ctx, p.control) })
	err := g.Wait()
	if p.ep != nil {
		p.ep.Close() // after the servers: no handler is left to start a download
	}
	return err
}

func (p *agentParts) closeListeners() {
	for _, ln := range []net.Listener{p.control, p.webLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if p.link != nil {
		p.link.ln.Close()
	}
}

// listeners returns the control socket and the mirror endpoint's socket: those systemd passed
// (LISTEN_FDS, picked by name: pickListeners), else those created from the flags. The endpoint only ever
// listens on loopback.
func listeners(controlPath, httpAddr string) (control, web net.Listener, err error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, nil, fmt.Errorf("socket activation: %w", err)
	}
	if control, web, err = pickListeners(named); err != nil {
		return nil, nil, err
	}
	if control == nil {
		if control, err = controlListener(controlPath); err != nil {
			return nil, nil, err
		}
	}
	if web == nil && httpAddr != "" {
		if web, err = net.Listen("tcp", httpAddr); err != nil {
			return nil, nil, fmt.Errorf("mirror endpoint: %w", err)
		}
	}
	if web != nil {
		if ta, ok := web.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
			web.Close()
			return nil, nil, fmt.Errorf("mirror endpoint %s: only a loopback address is allowed", web.Addr())
		}
	}
	return control, web, nil
}

// The names the units give their sockets (FileDescriptorName=).
const (
	controlSocketName = "control"
	mirrorSocketName  = "mirror"
)

// pickListeners picks the control socket and the endpoint's socket by the names systemd passed them
// under; a socket without a name (systemd-socket-activate without --fdname) by its type. A socket of
// another name, of the wrong type, or a second one for the same use is an error naming it, and every
// socket passed is closed then: none is replaced silently, none is left open.
func pickListeners(named map[string][]net.Listener) (control, web net.Listener, err error) {
	for _, name := range slices.Sorted(maps.Keys(named)) {
		for _, ln := range named[name] {
			_, unix := ln.(*net.UnixListener)
			_, tcp := ln.(*net.TCPListener)
			use, slot := name, &control
			switch unnamed := strings.HasPrefix(name, "LISTEN_FD_") || name == "unknown"; {
			case name == controlSocketName && unix, unnamed && unix:
				use = controlSocketName
			case name == mirrorSocketName && tcp, unnamed && tcp:
				use, slot = mirrorSocketName, &web
			default:
				err = fmt.Errorf("socket %q (%s %s) passed by systemd: the agent takes a Unix socket named %q and a TCP one named %q (FileDescriptorName=)",
					name, ln.Addr().Network(), ln.Addr(), controlSocketName, mirrorSocketName)
			}
			if err == nil && *slot != nil {
				err = fmt.Errorf("two sockets passed by systemd for the %s: %s and %s", use, (*slot).Addr(), ln.Addr())
			}
			if err != nil {
				closeAll(named)
				return nil, nil, err
			}
			*slot = ln
		}
	}
	return control, web, nil
}

func closeAll(named map[string][]net.Listener) {
	for _, lns := range named {
		for _, ln := range lns {
			ln.Close()
		}
	}
}

// controlListener creates the control socket at path, or returns nil for "".
func controlListener(path string) (net.Listener, error) {
	if path == "" {
		return nil, nil
	}
	if _, err := os.Lstat(path); err == nil {
		// A socket left by an agent that died is stale; one that answers belongs to a running agent.
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil, fmt.Errorf("control socket %s: another agent is listening", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Anyone may ask for status; who may ask for work is checked per connection (SO_PEERCRED).
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return ln, nil
}

// maxEndpointConns bounds the endpoint's connections: at the cap, the one idle longest is closed to
// make room (see connLimit). pacman opens a few at a time (ParallelDownloads); a slow one is cut off by
// the server's timeouts.
const maxEndpointConns = 256

// tallyFile, in the state directory, keeps the bytes the endpoint handed to pacman today for its status
// page, across the agent's runs.
const tallyFile = "endpoint-today.json"

// boundedServer serves h on the agent's behalf with every wait bounded: a header within 5 s, an idle
// keep-alive for 30 s, 16 KiB of headers. A request in flight is work (the agent does not idle out under
// it, however long it streams); a connection that never sends one is not.
func boundedServer(h http.HandlerFunc, busy func() (done func()), log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer busy()()
			h(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// dropper lets go of the blocks kubo keeps of a package pacman was just handed from IPFS: its file
// lands in pacman's cache, and the seeder adds it from there without a copy (kubo's filestore) only if
// the node does not hold its blocks already; left in place, they would be a second copy of the file,
// pinned by the seeder's pin for as long as the file stays cached. Blocks a pin holds stay (kubo
// refuses them): what this machine seeds, what a neighbour relies on.
type dropper struct {
	api  *lazyKubo
	pf   *prefetch.Prefetcher // nil: --prefetch is off
	log  *slog.Logger
	jobs chan drop
}

type drop struct {
	e alpmdb.Entry
	c cid.Cid
}

func newDropper(api *lazyKubo, pf *prefetch.Prefetcher, log *slog.Logger) *dropper {
	return &dropper{api: api, pf: pf, log: log, jobs: make(chan drop, 64)}
}

// enqueue is the endpoint's Served: it never blocks a request; when the queue is full the blocks stay
// (a second copy until the file leaves the cache, never a wrong one).
func (d *dropper) enqueue(e alpmdb.Entry, c cid.Cid) {
	select {
	case d.jobs <- drop{e, c}:
	default:
		d.log.Debug("blocks of a served package kept: the queue is full", "file", e.FileName)
	}
}

func (d *dropper) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-d.jobs:
			d.drop(ctx, j)
		}
	}
}

func (d *dropper) drop(ctx context.Context, j drop) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if d.pf != nil {
		if err := d.pf.Release(ctx, j.c); err != nil {
			d.log.Debug("prefetch pin not released", "file", j.e.FileName, "err", err)
		}
	}
	k, err := d.api.client(ctx)
	if err != nil {
		return
	}
	bs, err := k.Blocks(ctx, j.c)
	if err == nil {
		err = k.DropBlocks(ctx, bs)
	}
	if err != nil {
		d.log.Debug("blocks of a served package kept", "file", j.e.FileName, "cid", j.c.String(), "err", err)
	}
}

// agentMetrics adds the agent's figures to the endpoint's /metrics: what it seeds and its passes, and
// what the LAN index exchange found.
func agentMetrics(w io.Writer, a *agent.Agent, lan *lanindex.Exchange, pf *prefetch.Prefetcher, cat *catalog.Catalog) {
	st := a.Status()
	var files, bytes int64
	var took time.Duration
	if r := st.Last; r != nil {
		for _, rc := range r.Repos {
			files += int64(rc.Files)
			bytes += rc.Bytes
		}
		took = r.Duration
	}
	endpoint.Metric(w, "pacman_ipfs_seeded_files", "gauge", "Cache files seeded after the last pass.", float64(files))
	endpoint.Metric(w, "pacman_ipfs_seeded_bytes", "gauge", "Bytes of the cache files seeded after the last pass.", float64(bytes))
	endpoint.Metric(w, "pacman_ipfs_passes_total", "counter", "Reconcile passes since the agent started.", float64(st.Passes))
	endpoint.Metric(w, "pacman_ipfs_last_pass_seconds", "gauge", "How long the last pass took.", took.Seconds())
	roots, claims := 0, 0
	for _, r := range cat.Roots() {
		roots++
		claims += r.Files
	}
	endpoint.Metric(w, "pacman_ipfs_catalog_roots", "gauge", "Index roots the catalog follows (configured and found on the LAN).", float64(roots))
	endpoint.Metric(w, "pacman_ipfs_catalog_files", "gauge", "Files the followed index roots list, over this machine's repositories and architectures.", float64(claims))
	if lan != nil {
		endpoint.Metric(w, "pacman_ipfs_lan_indexes", "gauge", "Index roots found on the LAN neighbours.", float64(len(lan.Roots())))
		endpoint.Metric(w, "pacman_ipfs_lan_peers", "gauge", "Peers the node is connected to over LAN addresses (its mDNS neighbours).", float64(lan.LANPeers()))
		_, agents := lan.Agents()
		endpoint.Metric(w, "pacman_ipfs_lan_agents", "gauge", "LAN neighbours whose agent answers the LAN protocol.", float64(len(agents)))
	}
	if pf != nil {
		r := pf.Last()
		endpoint.Metric(w, "pacman_ipfs_prefetch_held_files", "gauge", "Upgrades held in the node after the last prefetch round.", float64(r.Held+r.Fetched))
		endpoint.Metric(w, "pacman_ipfs_prefetch_last_round_bytes", "gauge", "Bytes the last prefetch round fetched from the LAN.", float64(r.Bytes))
	}
}
