package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent/control"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/units"
)

// status is what `status --json` prints; the text form says the same.
type status struct {
	Agent     *agentStatus                   `json:"agent"` // null when no agent answers
	Node      nodeStatus                     `json:"node"`
	LastSync  *syncStatus                    `json:"last_sync"`            // null before the first pass
	Index     string                         `json:"index,omitempty"`      // /ipfs/<cid> of the mirror-shaped index of what is seeded
	IndexName string                         `json:"index_name,omitempty"` // the IPNS name it is published under
	Seeded    reconcile.RepoCount            `json:"seeded"`
	Repos     map[string]reconcile.RepoCount `json:"repos"`
	Dirs      []reconcile.DirReport          `json:"cache_dirs"`
	DBs       []reconcile.DBReport           `json:"dbs"`
	Refused   []reconcile.FileNote           `json:"refused"`
	Failed    []reconcile.FileNote           `json:"failed"`
	// Cluster is the IPFS Cluster pinning for this machine, with --cluster; null without.
	Cluster *clusterStatus `json:"cluster,omitempty"`
	// MirrorTree says that the state directory is a mirror tree's (seed-mirror), not the cache's.
	MirrorTree bool `json:"mirror_tree,omitempty"`
}

// clusterStatus counts our pins' states across the cluster's peers, per repository.
type clusterStatus struct {
	API   string                    `json:"api"`
	Repos map[string]cluster.Counts `json:"repos"`
	Error string                    `json:"error,omitempty"`
}

// askCluster fills in the cluster's view of our pins; a cluster that does not answer is said so.
func (st *status) askCluster(ctx context.Context, u, prefix string) {
	cs := &clusterStatus{API: cluster.Redact(u)}
	st.Cluster = cs
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := cluster.Dial(dctx, u)
	if err != nil {
		cs.Error = err.Error()
		return
	}
	cs.API = c.Addr()
	if cs.Repos, err = c.Summary(ctx, prefix); err != nil {
		cs.Error = err.Error()
	}
}

type agentStatus struct {
	Socket    string     `json:"socket"`
	PID       int        `json:"pid"`
	Started   time.Time  `json:"started"`
	State     string     `json:"state"`
	Passes    int        `json:"passes"`
	Events    int        `json:"events"`
	LastError string     `json:"last_error,omitempty"`
	NextRetry *time.Time `json:"next_retry,omitempty"`
	Watching  []string   `json:"watching"`
	Missing   []string   `json:"missing,omitempty"`
	// Package bytes the endpoint handed to pacman since the agent started, by source.
	FromPeers   int64 `json:"from_peers_bytes"`
	FromMirrors int64 `json:"from_mirrors_bytes"`
	// Notes: what the agent found at start that a user must know (the unit forbids the network).
	Notes []string `json:"notes,omitempty"`
}

type nodeStatus struct {
	API       string `json:"api"` // credentials removed
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	ID        string `json:"id,omitempty"`
	Version   string `json:"version,omitempty"`
	RepoPath  string `json:"repo_path,omitempty"`
	Filestore bool   `json:"filestore"`
	Pins      int    `json:"pins"` // pins named pacman-ipfs:* in the node now
	// LANPeers are the peers connected over a LAN address (mDNS neighbours), which bitswap asks first.
	LANPeers []kubo.LANPeer `json:"lan_peers"`
	// BitswapRace says why the node may never fetch from a neighbour met while it started (an old
	// boxo); empty when its bitswap has the fix.
	BitswapRace string `json:"bitswap_race,omitempty"`
	// Network is the network the node's configuration joins: "lan" (mDNS neighbours only) or "public"
	// (what it seeds is announced to the world); empty when the node did not say.
	Network string `json:"network,omitempty"`
}

type syncStatus struct {
	Started     time.Time `json:"started"`
	Seconds     float64   `json:"seconds"`
	Converged   bool      `json:"converged"`
	Added       int       `json:"added"`
	Unpinned    int       `json:"unpinned"`
	Retained    int       `json:"retained"` // seed-mirror: pins kept after their file left (--keep-days)
	CopiedBytes int64     `json:"copied_bytes"`
	// Zero copy: pins added again because a block was read from a file that left the cache, and blocks
	// still referenced from files that are gone (unreadable).
	RepairedRefs int `json:"repaired_refs"`
	BrokenRefs   int `json:"broken_refs"`
}

func runStatus(ctx context.Context, args []string) error {
	var c common
	var asJSON bool
	var socket string
	if err := parse("status", "What is seeded, what was refused and why, the node and the mode. Asks a running agent\nfirst, else reads the state directory.", args, func(fs *flag.FlagSet) {
		c.registerNode(fs)
		c.registerCluster(fs)
		fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
		fs.StringVar(&socket, "socket", control.DefaultSocket, "the agent's control `socket`")
	}); err != nil {
		return err
	}
	st := status{Repos: map[string]reconcile.RepoCount{}}
	rep, note := lastReport(ctx, socket, c.stateDir, &st)
	addr, err := c.apiAddr()
	if err != nil {
		return err
	}
	prefix := node.PinPrefix
	if rep != nil && rep.PinPrefix != "" {
		prefix = rep.PinPrefix
	}
	st.Node.ask(ctx, addr, prefix)
	if u, err := c.clusterURL(); err != nil {
		return err
	} else if u != "" {
		st.askCluster(ctx, u, prefix)
	}
	if note != "" {
		st.Node.Error = strings.TrimSpace(st.Node.Error + "\n" + note)
	}
	if rep != nil {
		st.fromReport(rep)
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(os.Stdout, &st)
	return nil
}

// describe asks the node who it is and which LAN peers it has (the status page asks the same). The
// error is the first call's that failed: a client that connected earlier may find its node gone.
func (n *nodeStatus) describe(ctx context.Context, node *kubo.Client) error {
	info, err := node.Info(ctx)
	if err != nil {
		return fmt.Errorf("node identity: %w", err)
	}
	n.ID, n.Version, n.RepoPath, n.Filestore = info.ID, info.Version, info.RepoPath, info.Filestore
	peers, err := node.LANPeers(ctx)
	if err != nil {
		return fmt.Errorf("LAN peers: %w", err)
	}
	n.LANPeers = peers
	// Not every node answers version/deps (an older kubo, another implementation): no verdict then.
	n.BitswapRace, _ = node.BitswapStartRace(ctx)
	n.Network, _ = node.Network(ctx)
	return nil
}

// lastReport is the last pass's report: a mirror tree's when the state directory is one (seed-mirror's
// pins are named apart), else the running agent's, else the state directory's.
func lastReport(ctx context.Context, socket, stateDir string, st *status) (*reconcile.Report, string) {
	saved, err := reconcile.ReadLastReport(stateDir)
	if err == nil && saved != nil && saved.PinPrefix != "" {
		return saved, ""
	}
	rep, note := agentReport(ctx, socket, st)
	if st.Agent != nil {
		return rep, note
	}
	if err != nil {
		note = strings.TrimSpace(note + "\n" + err.Error())
	}
	return saved, note
}

// agentReport asks a running agent for its status; without one it returns nothing and no note.
func agentReport(ctx context.Context, socket string, st *status) (*reconcile.Report, string) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	as, err := agent.AskStatus(actx, socket)
	if err != nil {
		if control.IsNoAgent(err) {
			return nil, ""
		}
		return nil, err.Error()
	}
	st.Agent = &agentStatus{Socket: socket, PID: as.PID, Started: as.Started, State: as.State, Passes: as.Passes,
		Events: as.Events, LastError: as.LastError, NextRetry: as.NextRetry, Watching: as.Watching, Missing: as.Missing,
		FromPeers: as.FromPeers, FromMirrors: as.FromMirrors, Notes: as.Notes}
	return as.Last, ""
}

// ask fills in what the node at addr says of itself; a node that does not answer is said so.
func (n *nodeStatus) ask(ctx context.Context, addr, prefix string) {
	n.API = kubo.Redact(addr)
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	kn, err := kubo.Dial(dctx, addr)
	cancel()
	if err != nil {
		n.Error = err.Error()
		return
	}
	n.Reachable = true
	if err := n.describe(ctx, kn); err != nil {
		n.Error = err.Error()
	}
	if pins, err := kn.Pins(ctx, prefix); err == nil {
		n.Pins = len(pins)
	} else {
		n.Error = err.Error()
	}
}

// fromReport fills in the last pass.
func (st *status) fromReport(rep *reconcile.Report) {
	st.LastSync = &syncStatus{Started: rep.Started, Seconds: rep.Duration.Seconds(), Converged: rep.Converged(),
		Added: rep.Added, Unpinned: rep.Unpinned, Retained: rep.Retained, CopiedBytes: rep.CopiedBytes,
		RepairedRefs: rep.RepairedRefs, BrokenRefs: rep.BrokenRefs}
	st.Repos, st.Dirs, st.DBs, st.Refused, st.Failed = rep.Repos, rep.Dirs, rep.DBs, rep.Refused, rep.Failed
	st.Index, st.IndexName = rep.Index, rep.IndexName
	st.MirrorTree = rep.PinPrefix != ""
	for _, rc := range rep.Repos {
		st.Seeded.Files += rc.Files
		st.Seeded.Bytes += rc.Bytes
	}
}

func printStatus(w io.Writer, st *status) {
	if st.MirrorTree {
		fmt.Fprintln(w, "state:     a mirror tree's (seed-mirror), pins named "+MirrorPinPrefix)
	} else {
		printAgent(w, st.Agent)
	}
	printNode(w, &st.Node)
	if st.LastSync == nil {
		fmt.Fprintln(w, "last sync: never (run `pacman-ipfs sync`)")
		return
	}
	printLastSync(w, st)
	printCluster(w, st.Cluster)
	printNotes(w, "refused", st.Refused)
	printNotes(w, "failed", st.Failed)
}

func printAgent(w io.Writer, a *agentStatus) {
	if a == nil {
		fmt.Fprintln(w, "agent:     not running (reading the state directory)")
		return
	}
	fmt.Fprintf(w, "agent:     pid %d, %s, %d passes, %d events since %s\n", a.PID, a.State, a.Passes, a.Events, a.Started.Local().Format(time.DateTime))
	if a.LastError != "" {
		fmt.Fprintf(w, "           last error: %s\n", a.LastError)
	}
	for _, n := range a.Notes {
		fmt.Fprintf(w, "           note: %s\n", n)
	}
	for _, m := range a.Missing {
		fmt.Fprintf(w, "           waiting for %s to exist\n", m)
	}
	if total := a.FromPeers + a.FromMirrors; total > 0 {
		fmt.Fprintf(w, "endpoint:  %s to pacman, %.0f%% from peers (%s), the rest from mirrors\n",
			units.HumanBytes(total), 100*float64(a.FromPeers)/float64(total), units.HumanBytes(a.FromPeers))
	}
}

func printNode(w io.Writer, n *nodeStatus) {
	if n.Reachable {
		fmt.Fprintf(w, "node:      %s at %s, peer %s, %d pins of ours\n", n.Version, n.API, n.ID, n.Pins)
		fmt.Fprintf(w, "lan peers: %d", len(n.LANPeers))
		for _, p := range n.LANPeers {
			fmt.Fprintf(w, " %s", p.Addr)
		}
		fmt.Fprintln(w)
		switch n.Network {
		case kubo.NetworkLAN:
			fmt.Fprintln(w, "network:   the LAN only (no bootstrap peers, no delegated routing): what it seeds stays on the LAN")
		case kubo.NetworkPublic:
			fmt.Fprintln(w, "network:   the public IPFS network: the packages it seeds and its index are announced to the world")
		}
		if n.BitswapRace != "" {
			fmt.Fprintf(w, "warning:   %s\n", n.BitswapRace)
		}
	} else {
		fmt.Fprintf(w, "node:      not reachable at %s\n", n.API)
	}
	if n.Error != "" {
		fmt.Fprintf(w, "           %s\n", n.Error)
	}
}

func printCluster(w io.Writer, cs *clusterStatus) {
	if cs == nil {
		return
	}
	if cs.Error != "" {
		fmt.Fprintf(w, "cluster:   %s\n", cs.Error)
		return
	}
	fmt.Fprintf(w, "cluster:   %s; per repository, pins and their state on the peers they are allocated to:\n", cs.API)
	for _, repo := range slices.Sorted(maps.Keys(cs.Repos)) {
		n := cs.Repos[repo]
		fmt.Fprintf(w, "  %-12s %6d pins: %d pinned, %d pinning, %d queued, %d in error\n", repo, n.Pins, n.Pinned, n.Pinning, n.Queued, n.Error)
	}
}

func printLastSync(w io.Writer, st *status) {
	ls := st.LastSync
	state := "converged"
	if !ls.Converged {
		state = "not converged: see failed below"
	}
	fmt.Fprintf(w, "last sync: %s, %.1fs, %s\n", ls.Started.Local().Format(time.DateTime), ls.Seconds, state)
	if st.MirrorTree {
		fmt.Fprintf(w, "retained:  %d packages that left the tree (--keep-days)\n", ls.Retained)
	}
	fmt.Fprintf(w, "seeded:    %d files, %s\n", st.Seeded.Files, units.HumanBytes(st.Seeded.Bytes))
	for _, name := range slices.Sorted(maps.Keys(st.Repos)) {
		rc := st.Repos[name]
		fmt.Fprintf(w, "  %-12s %6d files %12s\n", name, rc.Files, units.HumanBytes(rc.Bytes))
	}
	for _, d := range st.Dirs {
		mode := "copy"
		if d.NoCopy {
			mode = "zero-copy"
		}
		label := "cache:    "
		if st.MirrorTree {
			label = "dir:      "
		}
		fmt.Fprintf(w, "%s %s: %s (%s)\n", label, d.Dir, mode, d.Why)
	}
	fmt.Fprintf(w, "stored twice: %s (bytes of the cache copied into the node's repo)\n", units.HumanBytes(ls.CopiedBytes))
	if ls.BrokenRefs > 0 || ls.RepairedRefs > 0 {
		fmt.Fprintf(w, "zero copy: %d broken references (blocks read from files that left the cache), %d pins re-added to repair them\n",
			ls.BrokenRefs, ls.RepairedRefs)
	}
	if st.Index != "" {
		fmt.Fprintf(w, "index:     %s %s\n", st.Index, st.IndexName)
	}
	for _, db := range st.DBs {
		if db.Err != "" {
			fmt.Fprintf(w, "sync db %s: %s\n", db.Repo, db.Err)
		} else {
			fmt.Fprintf(w, "sync db %s: %d packages\n", db.Repo, db.Packages)
		}
	}
}
