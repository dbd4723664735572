package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/control"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/kubo"
)

func runAgent(ctx context.Context, args []string) error {
	var (
		c        common
		listen   string
		group    string
		idleExit time.Duration
		quiet    time.Duration
	)
	if err := parse("agent", "Keep the node in step with pacman's caches: watch every CacheDir and the sync dbs, reconcile\nafter each burst of changes, answer the control socket. Started by systemd socket activation\n(pacman-ipfs.socket) or by hand with --listen.", args, func(fs *flag.FlagSet) {
		c.register(fs)
		fs.StringVar(&listen, "listen", "", "control socket `path` to create when not socket-activated")
		fs.StringVar(&group, "socket-group", "", "`group` whose members may ask for work over the control socket (root always may)")
		fs.DurationVar(&idleExit, "idle-exit", 0, "exit after this long with nothing to do (0: never); the next socket activation catches up")
		fs.DurationVar(&quiet, "quiet", 2*time.Second, "how long changes must stop before a reconcile starts")
	}); err != nil {
		return err
	}
	log := c.logger()
	cfg, err := alpmdb.ReadConfig(c.pacmanConf)
	if err != nil {
		return err
	}
	auth, err := control.NewAuthorizer(group)
	if err != nil {
		return err
	}
	ln, err := controlListener(listen)
	if err != nil {
		return err
	}
	if ln == nil {
		log.Warn("no control socket: neither socket-activated nor --listen; the hook cannot reach this agent")
	} else {
		defer ln.Close()
	}
	api := kubo.ResolveAPI(c.api)
	a := agent.New(agent.Options{
		Config:   cfg,
		StateDir: c.stateDir,
		Dial: func(ctx context.Context) (seeder.Node, error) {
			return kubo.Dial(ctx, api)
		},
		API:      kubo.Redact(api),
		Auth:     auth,
		Log:      log,
		Quiet:    quiet,
		IdleExit: idleExit,
	})
	err = a.Run(ctx, ln)
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil // SIGTERM: a clean stop
	}
	return err
}

// controlListener returns the socket systemd passed (LISTEN_FDS), or one created at path, or nil.
func controlListener(path string) (net.Listener, error) {
	lns, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	for _, ln := range lns {
		if ln != nil {
			return ln, nil
		}
	}
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
