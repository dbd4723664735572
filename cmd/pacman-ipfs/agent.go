package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/ipfs/go-cid"
	"golang.org/x/net/netutil"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent/control"
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

func (l *lazyKubo) Resolve(ctx context.Context, p string) (cid.Cid, error) {
	c, err := l.client(ctx)
	if err != nil {
		return cid.Undef, err
	}
	return c.Resolve(ctx, p)
}

// agentFlags are the agent's command line.
type agentFlags struct {
	c                            common
	listen, group                string
	idleExit, quiet              time.Duration
	httpAddr, mirrorlist         string
	indexes                      multiFlag
	hedge, budget                time.Duration
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
		fs.DurationVar(&f.budget, "verify-budget", 6*time.Second, "how long a download may take to be checked before any of it goes to pacman (which gives up after 10 s without data)")
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
	w, err := newAgentWiring(f)
	if err != nil {
		return err
	}
	ln, httpLn, err := listeners(f.listen, f.httpAddr)
	if err != nil {
		return err
	}
	if ln == nil {
		w.log.Warn("no control socket: neither socket-activated nor --listen; the hook cannot reach this agent")
	} else {
		defer ln.Close()
	}
	w.a = agent.New(w.agentOptions(w.startLAN(ctx)))
	if httpLn != nil {
		stop, err := w.startEndpoint(ctx, httpLn)
		if err != nil {
			return err
		}
		defer stop()
	}
	if w.pf != nil {
		go w.pf.Run(ctx, time.Minute)
	}
	err = w.a.Run(ctx, ln)
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil // SIGTERM: a clean stop
	}
	return err
}

// agentWiring is what the agent's parts are made of, and the parts that need each other: the endpoint
// needs the agent, whose status reports what the endpoint served.
type agentWiring struct {
	f    *agentFlags
	cfg  *alpmdb.Config
	auth control.Authorizer
	api  *lazyKubo
	log  *slog.Logger
	lan  *lanindex.Exchange
	pf   *prefetch.Prefetcher
	a    *agent.Agent
	ep   *endpoint.Server
}

func newAgentWiring(f *agentFlags) (*agentWiring, error) {
	w := &agentWiring{f: f, log: f.c.logger()}
	var err error
	if w.cfg, err = alpmdb.ReadConfig(f.c.pacmanConf); err != nil {
		return nil, err
	}
	if w.auth, err = control.NewAuthorizer(f.group); err != nil {
		return nil, err
	}
	addr, err := f.c.apiAddr()
	if err != nil {
		return nil, err
	}
	w.api = &lazyKubo{addr: addr}
	return w, nil
}

// startLAN starts the LAN's indexes (ours published under the node's key, the neighbours' looked up)
// and the prefetcher, and returns what runs after each pass.
func (w *agentWiring) startLAN(ctx context.Context) func(*reconcile.Report) {
	if !w.f.lanIndex {
		if w.f.prefetch {
			w.log.Warn("--prefetch needs --lan-index: nothing is prefetched")
		}
		return nil
	}
	w.lan = lanindex.New(func(ctx context.Context) (lanindex.Node, error) { return w.api.client(ctx) }, 20*time.Second, w.log)
	go w.lan.Run(ctx)
	if !w.f.prefetch {
		return func(r *reconcile.Report) { w.lan.Publish(r.Index) }
	}
	w.pf = newPrefetcher(w.cfg, w.api, w.lan, func() *agent.Agent { return w.a }, func() *endpoint.Server { return w.ep }, w.log)
	return func(r *reconcile.Report) { w.lan.Publish(r.Index); w.pf.Kick() }
}

func (w *agentWiring) agentOptions(afterPass func(*reconcile.Report)) agent.Options {
	c := &w.f.c
	return agent.Options{
		AfterPass: afterPass,
		Served: func() (int64, int64) {
			if w.ep == nil {
				return 0, 0
			}
			return w.ep.Served()
		},
		Config:   w.cfg,
		Seeder:   c.seederOptions(w.cfg, nil, w.log),
		StateDir: c.stateDir,
		Dial: func(ctx context.Context) (node.Node, error) {
			k, err := w.api.client(ctx)
			if err != nil {
				return nil, err
			}
			return c.pinningNode(ctx, k)
		},
		API:      kubo.Redact(w.api.addr),
		Auth:     w.auth,
		Log:      w.log,
		Quiet:    w.f.quiet,
		IdleExit: w.f.idleExit,
	}
}

func (w *agentWiring) startEndpoint(ctx context.Context, httpLn net.Listener) (func(), error) {
	ep, stop, err := startEndpoint(ctx, httpLn, w.f, w.a, w.api, w.lan, w.pf, w.cfg, w.log)
	w.ep = ep
	return stop, err
}

// startEndpoint serves the loopback mirror endpoint on httpLn, and the LAN protocol when --lan-fetch
// has the LAN index exchange to work with. stop closes the endpoint and keeps today's figures.
func startEndpoint(ctx context.Context, httpLn net.Listener, f *agentFlags, a *agent.Agent, api *lazyKubo, lan *lanindex.Exchange, pf *prefetch.Prefetcher, cfg *alpmdb.Config, log *slog.Logger) (*endpoint.Server, func(), error) {
	var link *lanLink
	ec := endpointConfig{
		mirrorlist: f.mirrorlist, indexes: f.indexes, hedge: f.hedge, budget: f.budget,
		spoolDir: filepath.Join(f.c.stateDir, "spool"), tallyFile: filepath.Join(f.c.stateDir, tallyFile), lan: lan,
		prefetch: pf,
	}
	if lan != nil && f.lanFetch {
		ec.owner = func(ctx context.Context, sum [sha256.Size]byte) (string, string) { return link.owner(ctx, sum) }
	}
	srv, endpoint, err := endpointServer(httpLn, ec, a, api, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	if ec.owner != nil {
		if link, err = startLANLink(ctx, api, lan, endpoint, a, log); err != nil {
			return nil, nil, err
		}
	}
	go func() {
		if err := srv.Serve(netutil.LimitListener(httpLn, maxEndpointConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("mirror endpoint stopped", "err", err)
		}
	}()
	return endpoint, func() { srv.Close(); endpoint.SaveTally() }, nil
}

// newPrefetcher is --prefetch's: the agent and the endpoint it works with exist only after it (they
// are handed over as getters), and are there before its first round.
func newPrefetcher(cfg *alpmdb.Config, api *lazyKubo, lan *lanindex.Exchange, a func() *agent.Agent, endpoint func() *endpoint.Server, log *slog.Logger) *prefetch.Prefetcher {
	return prefetch.New(prefetch.Options{
		Node:     func(ctx context.Context) (prefetch.Node, error) { return api.client(ctx) },
		Index:    func() *alpmdb.Index { return a().Index() },
		Upgrades: func(ctx context.Context) ([]string, error) { return alpmdb.Upgrades(ctx, cfg) },
		Roots:    lan.Roots,
		Seeded:   func(sum [sha256.Size]byte) (cid.Cid, bool) { return a().Seeded(sum) },
		Trust: func(sum [sha256.Size]byte, c cid.Cid) {
			if e := endpoint(); e != nil {
				e.Trust(sum, c)
			}
		},
		Architectures: cfg.Architectures,
		Log:           log,
	})
}

// listeners returns the control socket and the mirror endpoint's socket: those systemd passed
// (LISTEN_FDS; a Unix socket is the control socket, a TCP one the endpoint), else those created from the
// flags. The endpoint only ever listens on loopback.
func listeners(controlPath, httpAddr string) (control, web net.Listener, err error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, nil, fmt.Errorf("socket activation: %w", err)
	}
	for _, ln := range lns {
		switch a := ln.(type) {
		case nil:
		case *net.UnixListener:
			control = a
		case *net.TCPListener:
			web = a
		}
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

// maxEndpointConns bounds the endpoint's connections; more wait in the kernel's backlog. pacman opens a
// few at a time (ParallelDownloads); an idle or slow one is cut off by the server's timeouts.
const maxEndpointConns = 256

// tallyFile, in the state directory, keeps the bytes the endpoint handed to pacman today for its status
// page, across the agent's runs.
const tallyFile = "endpoint-today.json"

type endpointConfig struct {
	mirrorlist    string
	indexes       []string
	hedge, budget time.Duration
	spoolDir      string
	tallyFile     string
	lan           *lanindex.Exchange   // nil: no LAN index exchange
	prefetch      *prefetch.Prefetcher // nil: --prefetch is off
	// owner elects the LAN machine that fetches a package nobody has (nil: this one, always).
	owner func(context.Context, [sha256.Size]byte) (string, string)
}

// endpointServer is the loopback mirror endpoint: the mirrors of the mirrorlist minus the endpoint's own
// address, and an http.Server whose every wait is bounded.
func endpointServer(ln net.Listener, ec endpointConfig, a *agent.Agent, api *lazyKubo, cfg *alpmdb.Config, log *slog.Logger) (*http.Server, *endpoint.Server, error) {
	mirrors, err := endpoint.ReadMirrorlist(ec.mirrorlist)
	if err != nil {
		// A CacheServer needs no mirror; Server requests then fail with 502 and say why.
		log.Warn("no mirrors for the endpoint: only CacheServer requests will be answered", "err", err)
	}
	mirrors, dropped := endpoint.DropSelf(mirrors, ln.Addr())
	if len(dropped) > 0 {
		log.Info("the endpoint's own address is not one of its mirrors", "dropped", dropped)
	}
	if err := os.MkdirAll(ec.spoolDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("the endpoint's spool: %w", err)
	}
	var discovered func() []string
	if ec.lan != nil {
		discovered = ec.lan.Roots
	}
	ep := endpoint.New(endpoint.Options{
		Index: a.Index, Node: api, Seeded: a.Seeded, Discovered: discovered,
		Metrics: func(w io.Writer) { agentMetrics(w, a, ec.lan, ec.prefetch) },
		Mirrors: mirrors, Indexes: ec.indexes, Hedge: ec.hedge, Budget: ec.budget, SpoolDir: ec.spoolDir, Log: log,
		Signatures: pacmanKeyring(cfg, log), Owner: ec.owner,
		Served:    func(e alpmdb.Entry, c cid.Cid) { go dropCopies(api, ec.prefetch, e, c, log) },
		Page:      func(ctx context.Context) endpoint.PageData { return pageData(ctx, a, api, ec.lan) },
		TallyFile: ec.tallyFile,
	})
	log.Info("mirror endpoint", "addr", ln.Addr().String(), "mirrors", len(mirrors), "indexes", len(ec.indexes))
	return boundedServer(ep.ServeHTTP, a, log), ep, nil
}

// boundedServer serves h on the agent's behalf with every wait bounded: a header within 5 s, an idle
// keep-alive for 30 s, 16 KiB of headers. A request in flight is activity (the agent must not idle out
// under it); a connection that never sends one is not.
func boundedServer(h http.HandlerFunc, a *agent.Agent, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.Touch()
			defer a.Touch()
			h(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// dropCopies lets go of the blocks kubo keeps of a package pacman was just handed from IPFS: its file
// lands in pacman's cache, and the seeder adds it from there without a copy (kubo's filestore) only if
// the node does not hold its blocks already; left in place, they would be a second copy of the file,
// pinned by the seeder's pin for as long as the file stays cached. Blocks a pin holds stay (kubo
// refuses them): what this machine seeds, what a neighbour relies on.
func dropCopies(api *lazyKubo, pf *prefetch.Prefetcher, e alpmdb.Entry, c cid.Cid, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if pf != nil {
		if err := pf.Release(ctx, c); err != nil {
			log.Debug("prefetch pin not released", "file", e.FileName, "err", err)
		}
	}
	k, err := api.client(ctx)
	if err != nil {
		return
	}
	bs, err := k.Blocks(ctx, c)
	if err == nil {
		err = k.DropBlocks(ctx, bs)
	}
	if err != nil {
		log.Debug("blocks of a served package kept", "file", e.FileName, "cid", c.String(), "err", err)
	}
}

// agentMetrics adds the agent's figures to the endpoint's /metrics: what it seeds and its passes, and
// what the LAN index exchange found.
func agentMetrics(w io.Writer, a *agent.Agent, lan *lanindex.Exchange, pf *prefetch.Prefetcher) {
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
