package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// connLimit caps a server's open connections at max. A connection that comes at the cap makes room by
// closing the connection idle longest: a keep-alive between requests first, then one that has sent
// nothing for newConnGrace; only when every connection is busy does it wait for one to end. So a local
// user holding thousands of idle keep-alives cannot keep pacman out (nginx closes idle keep-alives first
// in the same place), and the agent's descriptors stay bounded.
type connLimit struct {
	net.Listener
	max int

	mu     sync.Mutex
	freed  *sync.Cond
	conns  map[net.Conn]connState
	closed bool
}

type connState struct {
	state http.ConnState
	since time.Time
}

// newConnGrace is how long a new connection may send nothing before it may be closed to make room: a
// client that connected sends its request at once (pacman, curl and aria2c write it right after the
// handshake, so it is read as soon as the connection is accepted).
const newConnGrace = 100 * time.Millisecond

// serveBounded serves srv on ln, at most max connections at once (see connLimit), until ctx ends.
func serveBounded(ctx context.Context, srv *http.Server, ln net.Listener, max int) error {
	lim := newConnLimit(ln, max)
	srv.ConnState = lim.track
	return serveHTTP(ctx, srv, lim)
}

func newConnLimit(ln net.Listener, max int) *connLimit {
	l := &connLimit{Listener: ln, max: max, conns: map[net.Conn]connState{}}
	l.freed = sync.NewCond(&l.mu)
	return l
}

// track is the server's ConnState hook.
func (l *connLimit) track(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		if _, ok := l.conns[c]; ok {
			delete(l.conns, c)
			l.freed.Signal()
		}
	default:
		if _, ok := l.conns[c]; ok {
			l.conns[c] = connState{st, time.Now()}
		}
	}
}

// Accept accepts a connection, then makes room for it.
func (l *connLimit) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.conns) >= l.max {
		if l.closed {
			c.Close()
			return nil, net.ErrClosed
		}
		victim, wait := l.idlest()
		if victim != nil {
			delete(l.conns, victim)
			victim.Close() // the server sees it fail and reports it closed
			continue
		}
		// Nothing to close yet: wait for a connection to end, or for the youngest silent one to be
		// old enough to go.
		t := time.AfterFunc(wait, func() { l.mu.Lock(); l.freed.Broadcast(); l.mu.Unlock() })
		l.freed.Wait()
		t.Stop()
	}
	l.conns[c] = connState{http.StateNew, time.Now()}
	return c, nil
}

// idlest is the connection idle longest that may be closed, or nil and how long until a silent new
// one may be (a second when there is none: then only a connection that ends makes room). l.mu is held.
func (l *connLimit) idlest() (net.Conn, time.Duration) {
	var best net.Conn
	var bestSince time.Time
	wait := time.Second
	pick := func(want http.ConnState, olderThan time.Time) {
		for c, s := range l.conns {
			if s.state != want {
				continue
			}
			if !s.since.Before(olderThan) {
				wait = min(wait, s.since.Sub(olderThan)+time.Millisecond)
				continue
			}
			if best == nil || s.since.Before(bestSince) {
				best, bestSince = c, s.since
			}
		}
	}
	pick(http.StateIdle, time.Now().Add(time.Nanosecond))
	if best == nil {
		pick(http.StateNew, time.Now().Add(-newConnGrace))
	}
	return best, wait
}

// Close closes the listener and wakes an Accept that waits for room.
func (l *connLimit) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	l.freed.Broadcast()
	l.mu.Unlock()
	return err
}
