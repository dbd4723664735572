package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// group owns the goroutines of the agent's long-running parts: each is started by Go and joined by
// Wait, and when one of them returns, every other one is told to stop (its context ends) and awaited.
// So nothing the agent started outlives it: not a listener, not a loop, not a kubo forward.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	wg     sync.WaitGroup

	mu  sync.Mutex
	err error // the first part that failed
}

func newGroup(ctx context.Context, log *slog.Logger) *group {
	ctx, cancel := context.WithCancel(ctx)
	return &group{ctx: ctx, cancel: cancel, log: log}
}

// Go runs part until its context ends or it returns; either way the group then stops.
func (g *group) Go(name string, part func(context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer g.cancel()
		err := part(g.ctx)
		if err == nil || errors.Is(err, context.Canceled) {
			return
		}
		g.log.Error("stopped", "part", name, "err", err)
		g.mu.Lock()
		if g.err == nil {
			g.err = err
		}
		g.mu.Unlock()
	}()
}

// Wait waits for every part and returns the first error.
func (g *group) Wait() error {
	g.wg.Wait()
	g.cancel()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// shutdownTime bounds how long a stopping server waits for its requests before cutting them.
const shutdownTime = 5 * time.Second

// serveHTTP serves ln until ctx ends, then shuts srv down (requests get shutdownTime to finish) and
// returns once it has.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }() // joined below, whatever happens
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTime)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
