package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/fsnotify/fsnotify"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent/control"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/catalog"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/units"
)

// maxBackoff bounds the wait between retries of a failing pass. A retry costs a connection attempt and
// a stat of the cache; waiting longer would leave the node behind for that long after kubo returns.
const maxBackoff = 5 * time.Second

// Options configure an Agent.
type Options struct {
	Config *alpmdb.Config
	// Catalog holds the sync dbs' index, which the agent loads for every pass, and what it seeds, which
	// it records after every pass. Default: a catalog of Config's dbs.
	Catalog *catalog.Catalog
	// Seeder is the seeder's configuration; the agent fills in Node. When its CacheDirs is empty the
	// Config's are used.
	Seeder   reconcile.Options
	StateDir string
	// Dial connects to the IPFS node. The agent calls it again, with backoff, while it fails.
	Dial func(ctx context.Context) (node.Node, error)
	API  string // the node's address with credentials removed, for messages
	Auth control.Authorizer
	Log  *slog.Logger

	// Quiet is how long events must stop before a pass starts; MaxDelay bounds the wait under a steady
	// stream of events (a long download). Defaults: 2 s and 30 s.
	Quiet, MaxDelay time.Duration
	// IdleExit, when positive, ends Run after that long with no pass to do and no control connection.
	IdleExit time.Duration
	// Rewatch is how often a CacheDir or the sync dir that is missing is looked for again. Default 2 s.
	Rewatch time.Duration
	// AfterPass, when set, is called with the report of every pass that finished.
	AfterPass func(*reconcile.Report)
	// Served, when set, says how many package bytes the mirror endpoint handed to pacman from peers and
	// from mirrors since the agent started, for Status.
	Served func() (peers, mirrors int64)
}

// Agent is the long-running seeder.
type Agent struct {
	opts Options
	log  *slog.Logger

	kick chan struct{} // a pass is wanted; buffered 1

	mu       sync.Mutex
	st       Status
	lastSeen time.Time // last control connection, event or end of work, for IdleExit
	busy     int       // work under way (Busy)

}

// Index returns the index of the sync dbs as they are on disk now (see catalog.Catalog.Index).
func (a *Agent) Index() *alpmdb.Index { return a.opts.Catalog.Index() }

// Status is the agent's answer to a status request.
type Status struct {
	PID        int               `json:"pid"`
	Started    time.Time         `json:"started"`
	State      string            `json:"state"` // "starting", "idle", "pending", "reconciling", "waiting"
	Passes     int               `json:"passes"`
	Events     int               `json:"events"`
	Overflows  int               `json:"overflows"` // inotify queue overflows, each healed by a full pass
	Goroutines int               `json:"goroutines"`
	LastError  string            `json:"last_error,omitempty"`
	NextRetry  *time.Time        `json:"next_retry,omitempty"`
	Watching   []string          `json:"watching"`
	Missing    []string          `json:"missing,omitempty"` // watched paths that do not exist (yet)
	API        string            `json:"api"`
	Last       *reconcile.Report `json:"last_pass,omitempty"`
	// Package bytes the endpoint handed to pacman since the agent started, by source.
	FromPeers   int64 `json:"from_peers_bytes"`
	FromMirrors int64 `json:"from_mirrors_bytes"`
	// Notes are what the agent found of its surroundings at start that a user must know (the unit
	// forbids the network the endpoint needs).
	Notes []string `json:"notes,omitempty"`
}

// New returns an agent. Run starts it.
func New(opts Options) *Agent {
	if opts.Quiet <= 0 {
		opts.Quiet = 2 * time.Second
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 30 * time.Second
	}
	if opts.Rewatch <= 0 {
		opts.Rewatch = 2 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Catalog == nil {
		opts.Catalog = catalog.New(opts.Config, opts.Log)
	}
	a := &Agent{opts: opts, log: opts.Log, kick: make(chan struct{}, 1)}
	a.st = Status{PID: os.Getpid(), Started: time.Now(), State: "starting", API: opts.API}
	a.lastSeen = time.Now()
	return a
}

// Run serves ln (the control socket; nil for none) and keeps the node in step until ctx is done or the
// agent has been idle for IdleExit. It returns nil on a clean stop.
func (a *Agent) Run(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer a.notify("STOPPING=1")

	w, err := fsnotify.NewBufferedWatcher(4096)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	defer w.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	if ln != nil {
		srv := &control.Server{Auth: a.opts.Auth, Handle: a.handle, Log: a.log, Touched: a.touch}
		wg.Go(func() {
			if err := srv.Serve(ctx, ln); err != nil {
				a.log.Error("control socket stopped", "err", err)
			}
		})
	}
	wg.Go(func() { a.watch(ctx, w) })
	if iv, err := daemon.SdWatchdogEnabled(false); err == nil && iv > 0 {
		wg.Go(func() { a.watchdog(ctx, iv/2) })
	}

	a.want() // every start reconciles fully: it catches up on whatever happened while nobody watched
	a.loop(ctx)
	cancel()
	return nil
}

// want schedules a pass.
func (a *Agent) want() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Touch counts as activity for IdleExit.
func (a *Agent) Touch() { a.touch() }

// Busy marks work under way (a download pacman or a neighbour waits for): the agent does not exit idle
// while any runs, however long it takes, and the idle time counts from the end of the last. done ends it.
func (a *Agent) Busy() (done func()) {
	a.mu.Lock()
	a.busy++
	a.lastSeen = time.Now()
	a.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			a.busy--
			a.lastSeen = time.Now()
			a.mu.Unlock()
		})
	}
}

func (a *Agent) touch() {
	a.mu.Lock()
	a.lastSeen = time.Now()
	a.mu.Unlock()
}

// loop runs passes: it waits for a kick, lets a burst settle (Quiet, at most MaxDelay), runs one pass,
// and on failure retries with backoff.
func (a *Agent) loop(ctx context.Context) {
	var (
		s       *reconcile.Seeder
		ready   bool
		backoff time.Duration
		retry   <-chan time.Time
	)
	idle := a.idleTimer()
	for {
		a.setState("idle", nil)
		select {
		case <-ctx.Done():
			return
		case <-idle:
			if a.idleLongEnough() {
				a.log.Info("idle, exiting until the next activation", "after", a.opts.IdleExit)
				return
			}
			idle = a.idleTimer()
			continue
		case <-retry:
		case <-a.kick:
			a.setState("pending", nil)
			if !a.settle(ctx) {
				return
			}
		}
		a.setState("reconciling", nil)
		err := a.pass(ctx, &s)
		if ctx.Err() != nil {
			return
		}
		if !ready {
			// READY once the first pass got as far as it could: planned and run, or stopped by a node or
			// db that is not there yet (the agent then keeps retrying; pacman must never wait for it).
			ready = true
			a.notify("READY=1")
		}
		backoff, retry = a.passDone(err, backoff)
		idle = a.idleTimer()
	}
}

// passDone reports a pass; a failed one is retried with a backoff that doubles up to maxBackoff.
func (a *Agent) passDone(err error, backoff time.Duration) (time.Duration, <-chan time.Time) {
	if err == nil {
		a.recordError(nil)
		a.notify("STATUS=" + a.summary())
		return 0, nil
	}
	backoff = min(max(2*backoff, time.Second), maxBackoff)
	next := time.Now().Add(backoff)
	a.setState("waiting", &next)
	a.recordError(err)
	a.log.Warn("pass failed, retrying", "in", backoff, "err", err)
	a.notify(fmt.Sprintf("STATUS=%s; retrying in %s", firstLine(err), backoff))
	return backoff, time.After(backoff)
}

// settle waits until events stop for Quiet, or MaxDelay passed since the first.
func (a *Agent) settle(ctx context.Context) bool {
	deadline := time.NewTimer(a.opts.MaxDelay)
	defer deadline.Stop()
	quiet := time.NewTimer(a.opts.Quiet)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return true
		case <-quiet.C:
			return true
		case <-a.kick:
			quiet.Reset(a.opts.Quiet)
		}
	}
}

// pass runs one reconcile, connecting to the node where needed. The sync dbs are reloaded when one of
// them changed on disk, which a db replaced behind the watcher's back cannot escape either.
func (a *Agent) pass(ctx context.Context, s **reconcile.Seeder) error {
	if *s == nil {
		node, err := a.opts.Dial(ctx)
		if err != nil {
			return err
		}
		opts := a.opts.Seeder
		if len(opts.CacheDirs) == 0 {
			opts.CacheDirs = a.opts.Config.CacheDirs
		}
		if opts.StateDir == "" {
			opts.StateDir = a.opts.StateDir
		}
		opts.Node, opts.Log = node, a.log
		*s = reconcile.New(opts)
	}
	ix, err := a.opts.Catalog.LoadIndex(ctx)
	if err != nil {
		return err
	}
	rep, err := (*s).Sync(ctx, ix)
	a.opts.Catalog.SetSeeded((*s).SeededCIDs())
	a.mu.Lock()
	a.st.Passes++
	if rep != nil {
		a.st.Last = rep
	}
	a.mu.Unlock()
	if err != nil {
		return err
	}
	if a.opts.AfterPass != nil {
		a.opts.AfterPass(rep)
	}
	if rep.Added+rep.Unpinned > 0 || len(rep.Failed) > 0 {
		a.log.Info("pass", "added", rep.Added, "unpinned", rep.Unpinned, "seeded", rep.Seeded, "refused", len(rep.Refused), "failed", len(rep.Failed), "took", rep.Duration)
	}
	return nil
}

func (a *Agent) summary() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.st.Last
	if r == nil {
		return "idle"
	}
	var files int
	var bytes int64
	for _, rc := range r.Repos {
		files += rc.Files
		bytes += rc.Bytes
	}
	return fmt.Sprintf("seeding %d files (%s); last pass %s: %d added, %d unpinned, %d refused",
		files, units.HumanBytes(bytes), r.Started.Format("15:04:05"), r.Added, r.Unpinned, len(r.Refused))
}

func (a *Agent) setState(state string, next *time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.State == "waiting" && state == "idle" {
		return // still waiting for the retry
	}
	a.st.State, a.st.NextRetry = state, next
}

func (a *Agent) recordError(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		a.st.LastError, a.st.NextRetry = "", nil
		a.st.State = "idle"
		return
	}
	a.st.LastError = err.Error()
}

func (a *Agent) idleTimer() <-chan time.Time {
	if a.opts.IdleExit <= 0 {
		return nil
	}
	return time.After(a.opts.IdleExit)
}

func (a *Agent) idleLongEnough() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.State == "idle" && a.busy == 0 && time.Since(a.lastSeen) >= a.opts.IdleExit
}

// handle answers the control socket.
func (a *Agent) handle(ctx context.Context, req control.Request, peer control.Peer) control.Response {
	switch req.Op {
	case control.OpStatus:
		b, err := json.Marshal(a.Status())
		if err != nil {
			return control.Response{Error: err.Error()}
		}
		return control.Response{OK: true, Status: b}
	case control.OpNotify, control.OpReconcile:
		a.log.Info("asked to reconcile", "op", req.Op, "targets", len(req.Targets), "uid", peer.UID)
		a.touch()
		a.want()
		return control.Response{OK: true}
	}
	return control.Response{Error: "unknown op " + req.Op}
}

// Status returns a copy of the agent's status.
// Note adds what a user must know to the status.
func (a *Agent) Note(msg string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.Notes = append(a.st.Notes, msg)
}

func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	st.Notes = append([]string(nil), a.st.Notes...)
	st.Goroutines = runtime.NumGoroutine()
	st.Watching = append([]string(nil), a.st.Watching...)
	st.Missing = append([]string(nil), a.st.Missing...)
	if a.opts.Served != nil {
		st.FromPeers, st.FromMirrors = a.opts.Served()
	}
	return st
}

// watch turns file system events into kicks. It watches every CacheDir and the sync db directory;
// a watched directory that is removed or replaced is looked for again every Rewatch, and its return
// is a kick (what it holds now is whatever it holds).
func (a *Agent) watch(ctx context.Context, w *fsnotify.Watcher) {
	syncDir := filepath.Join(a.opts.Config.DBPath, "sync")
	ws := &watchSet{a: a, w: w, watched: map[string]bool{}}
	for _, d := range append([]string{syncDir}, a.opts.Config.CacheDirs...) {
		ws.dirs = append(ws.dirs, filepath.Clean(d))
	}
	ws.rewatch()
	tick := time.NewTicker(a.opts.Rewatch)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			ws.rewatch()
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			ws.handle(ev)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			a.watchError(err)
		}
	}
}

// watchSet is the directories the agent watches, and which of them are watched now.
type watchSet struct {
	a       *Agent
	w       *fsnotify.Watcher
	dirs    []string
	watched map[string]bool
}

// rewatch adds a watch on every directory that has none (a kick for each that came back) and records
// which are watched and which are missing.
func (ws *watchSet) rewatch() {
	var missing []string
	for _, d := range ws.dirs {
		if ws.watched[d] {
			continue
		}
		if err := ws.w.Add(d); err != nil {
			missing = append(missing, d)
			continue
		}
		ws.watched[d] = true
		ws.a.log.Info("watching", "dir", d)
		ws.a.want()
	}
	ws.a.mu.Lock()
	defer ws.a.mu.Unlock()
	ws.a.st.Watching = ws.a.st.Watching[:0]
	for _, d := range ws.dirs {
		if ws.watched[d] {
			ws.a.st.Watching = append(ws.a.st.Watching, d)
		}
	}
	ws.a.st.Missing = missing
}

func (ws *watchSet) handle(ev fsnotify.Event) {
	if ws.watched[ev.Name] && ev.Has(fsnotify.Remove|fsnotify.Rename) {
		// The directory itself went (or was moved away): its watch is gone with it.
		_ = ws.w.Remove(ev.Name)
		delete(ws.watched, ev.Name)
		ws.a.log.Warn("watched directory gone; looking for it again", "dir", ev.Name)
		ws.a.event()
		ws.rewatch()
		return
	}
	if relevant(ev) {
		ws.a.event()
	}
}

// watchError: whatever was lost, a pass sees the truth.
func (a *Agent) watchError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		a.mu.Lock()
		a.st.Overflows++
		a.mu.Unlock()
		a.log.Warn("inotify queue overflowed: events were lost; reconciling everything")
	} else {
		a.log.Warn("inotify", "err", err)
	}
	a.event()
}

func (a *Agent) event() {
	a.mu.Lock()
	a.st.Events++
	a.lastSeen = time.Now()
	a.mu.Unlock()
	a.want()
}

// relevant filters out what pacman writes on its way to a finished file: partial downloads and its
// download directories' own churn. A finished file shows as a create or a rename into the directory.
func relevant(ev fsnotify.Event) bool {
	name := filepath.Base(ev.Name)
	if strings.HasSuffix(name, ".part") || ev.Op == fsnotify.Chmod {
		return false
	}
	if strings.HasPrefix(name, "download-") && !ev.Has(fsnotify.Remove) {
		return false
	}
	return true
}

func (a *Agent) watchdog(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.notify("WATCHDOG=1")
		}
	}
}

// notify speaks sd_notify(3); outside systemd (no NOTIFY_SOCKET) it does nothing.
func (a *Agent) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		a.log.Debug("sd_notify", "err", err)
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// AskStatus asks the agent listening at socket for its status. An absent agent gives an error for which
// control.IsNoAgent is true.
func AskStatus(ctx context.Context, socket string) (Status, error) {
	resp, err := control.Do(ctx, socket, control.Request{Op: control.OpStatus})
	if err != nil {
		return Status{}, err
	}
	var st Status
	if err := json.Unmarshal(resp.Status, &st); err != nil {
		return Status{}, fmt.Errorf("agent at %s: bad status: %w", socket, err)
	}
	return st, nil
}
