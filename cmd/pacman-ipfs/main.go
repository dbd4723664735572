package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: pacman-ipfs <command> [flags]

commands:
  sync      one reconcile pass: seed every verified cache file, unpin what left the cache
  status    what is seeded, what was refused and why, the node, the mode (--json for scripts)
  agent     the long-running seeder: watches the caches, answers the control socket (systemd)
  seed-mirror
            seed an Arch mirror tree (operators: after rsync, from a timer), optionally into IPFS Cluster

Every command takes --api ADDR (a kubo RPC multiaddr or URL; default $IPFS_PATH/api, then
/ip4/127.0.0.1/tcp/5001) and --state-dir DIR; sync and agent also read --pacman-conf FILE (default
/etc/pacman.conf); seed-mirror reads --root DIR instead. A flag a command does not use is refused. Run 'pacman-ipfs <command> -h' for the
rest.
`

// exitError carries an exit code without printing anything more.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	var code exitError
	switch {
	case err == nil:
	case errors.As(err, &code):
		os.Exit(int(code))
	case errors.Is(err, context.Canceled):
		os.Exit(130)
	default:
		fmt.Fprintln(os.Stderr, "pacman-ipfs:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return exitError(2)
	}
	switch args[0] {
	case "sync":
		return runSync(ctx, args[1:])
	case "status":
		return runStatus(ctx, args[1:])
	case "agent":
		return runAgent(ctx, args[1:])
	case "seed-mirror":
		return runSeedMirror(ctx, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprintf(os.Stderr, "pacman-ipfs: unknown command %q\n\n%s", args[0], usage)
	return exitError(2)
}
