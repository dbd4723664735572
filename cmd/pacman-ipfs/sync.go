package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/units"
)

func runSync(ctx context.Context, args []string) error {
	var c common
	if err := parse("sync", "One reconcile pass: every cache file whose name, size and sha256 match a sync db entry is\nadded and pinned; pins of files that left the cache are removed. Exits 0 when the node holds\nexactly the verified cache (refused files are normal and listed).", args, func(fs *flag.FlagSet) { c.register(fs) }); err != nil {
		return err
	}
	if err := c.checkCluster(); err != nil {
		return err
	}
	log := c.logger(slog.LevelWarn)
	cfg, err := alpmdb.ReadConfig(c.pacmanConf)
	if err != nil {
		return err
	}
	addr, err := c.apiAddr()
	if err != nil {
		return err
	}
	k, err := kubo.Dial(ctx, addr)
	if err != nil {
		return err
	}
	n, err := c.pinningNode(ctx, k)
	if err != nil {
		return err
	}
	ix, err := alpmdb.Load(ctx, cfg)
	if err != nil {
		return err
	}
	for _, p := range ix.Problems() {
		log.Warn("sync db skipped", "err", p)
	}
	opts := c.seederOptions(cfg, n, log)
	opts.Progress = terminal(os.Stderr)
	s := reconcile.New(opts)
	rep, err := s.Sync(ctx, ix)
	printSummary(os.Stdout, rep)
	return passResult(ctx, "sync", rep, err)
}

// passResult is a command's outcome from its pass: the error as it is when the node or cluster was not
// reached (its message says how to start it) or the run was stopped, else said to be the command's;
// exit 1, quietly, when the pass did not converge (the summary said why).
func passResult(ctx context.Context, command string, rep *reconcile.Report, err error) error {
	if err != nil {
		if errors.Is(err, kubo.ErrUnreachable) || errors.Is(err, cluster.ErrUnreachable) || ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%s did not finish: %w", command, err)
	}
	if !rep.Converged() {
		return exitError(1)
	}
	return nil
}

func printSummary(w io.Writer, r *reconcile.Report) {
	fmt.Fprintf(w, "added %d (%s), already seeded %d, unpinned %d, refused %d, failed %d, in %s\n",
		r.Added, units.HumanBytes(r.AddedBytes), r.Seeded, r.Unpinned, len(r.Refused), len(r.Failed), r.Duration.Round(1e6))
	for _, d := range r.Dirs {
		mode := "copied into the node"
		if d.NoCopy {
			mode = "zero-copy"
		}
		fmt.Fprintf(w, "cache %s: %s: %s\n", d.Dir, mode, d.Why)
		if d.Err != "" {
			fmt.Fprintf(w, "  error: %s\n", d.Err)
		}
	}
	for _, db := range r.DBs {
		if db.Err != "" {
			fmt.Fprintf(w, "sync db %s skipped: %s\n", db.Repo, db.Err)
		}
	}
	if r.Index != "" {
		fmt.Fprintf(w, "index: %s %s\n", r.Index, r.IndexName)
	}
	printNotes(w, "refused", r.Refused)
	printNotes(w, "failed", r.Failed)
}

func printNotes(w io.Writer, title string, notes []reconcile.FileNote) {
	if len(notes) == 0 {
		return
	}
	fmt.Fprintf(w, "%s:\n", title)
	for _, n := range notes {
		fmt.Fprintf(w, "  %q: %s\n", n.Path, n.Reason)
	}
}
