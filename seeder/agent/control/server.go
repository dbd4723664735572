package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Peer is who is at the other end of a connection, from the kernel (SO_PEERCRED).
type Peer struct {
	PID int32
	UID uint32
	GID uint32
}

// PeerOf reads the peer credentials of a Unix connection.
func PeerOf(conn net.Conn) (Peer, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if cerr != nil {
		return Peer{}, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

// Authorizer decides who may ask for work: root, the agent's own user, and members of one group.
type Authorizer struct {
	GID int // -1: no group
}

// NewAuthorizer resolves group (a name or number; "" for none).
func NewAuthorizer(group string) (Authorizer, error) {
	if group == "" {
		return Authorizer{GID: -1}, nil
	}
	if n, err := strconv.Atoi(group); err == nil {
		return Authorizer{GID: n}, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return Authorizer{}, fmt.Errorf("socket group %q: %w", group, err)
	}
	n, _ := strconv.Atoi(g.Gid)
	return Authorizer{GID: n}, nil
}

// MayWork says whether p may ask for work.
func (a Authorizer) MayWork(p Peer) bool {
	if p.UID == 0 || int(p.UID) == os.Getuid() {
		return true
	}
	if a.GID < 0 {
		return false
	}
	if int(p.GID) == a.GID {
		return true
	}
	u, err := user.LookupId(strconv.Itoa(int(p.UID)))
	if err != nil {
		return false
	}
	gids, err := u.GroupIds()
	return err == nil && slices.Contains(gids, strconv.Itoa(a.GID))
}

// Handler answers one authorized request.
type Handler func(ctx context.Context, req Request, peer Peer) Response

// Server serves the control protocol on a listener.
type Server struct {
	Auth    Authorizer
	Handle  Handler
	Log     *slog.Logger
	Touched func() // called for every request for work served (not for status, nor refused ones), for idle tracking; may be nil

	wg       sync.WaitGroup
	logMu    sync.Mutex
	lastLog  time.Time
	unlogged int
}

// MaxConns bounds the connections served at once; more wait in the kernel's backlog. A request is
// answered in milliseconds, so a few dozen slots are plenty, and a local user holding them open is cut
// off after Deadline.
const MaxConns = 64

// Serve accepts connections until ctx is done or the listener is closed, then waits for open exchanges.
// A failing accept (out of file descriptors, say) is retried with a growing pause, as net/http does:
// it never ends the loop while the agent runs on.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.wg.Wait()
	slots := make(chan struct{}, MaxConns)
	var pause time.Duration
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		conn, err := ln.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.refused("accept failed; retrying", "err", err, "pause", pause)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		pause = 0
		s.wg.Go(func() {
			defer func() { <-slots }()
			s.serveConn(ctx, conn)
		})
	}
}

// refused logs a refusal, at most once per refusalLogEvery, with how many were not logged.
func (s *Server) refused(msg string, args ...any) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if now := time.Now(); now.Sub(s.lastLog) >= refusalLogEvery {
		if s.unlogged > 0 {
			args = append(args, "not_logged_since", s.unlogged)
		}
		s.Log.Warn(msg, args...)
		s.lastLog, s.unlogged = now, 0
		return
	}
	s.unlogged++
}

// refusalLogEvery keeps a flood of bad requests from flooding the journal.
const refusalLogEvery = 10 * time.Second

func (s *Server) serveConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(Deadline))
	peer, err := PeerOf(conn)
	if err != nil {
		_ = WriteResponse(conn, Response{Error: "cannot identify the peer: " + err.Error()})
		return
	}
	req, err := ReadRequest(conn)
	if err != nil {
		s.refused("control request refused", "uid", peer.UID, "pid", peer.PID, "err", err)
		_ = WriteResponse(conn, Response{Error: err.Error()})
		return
	}
	if req.Op != OpStatus && !s.Auth.MayWork(peer) {
		s.refused("control request not allowed", "op", req.Op, "uid", peer.UID, "pid", peer.PID)
		_ = WriteResponse(conn, Response{Error: fmt.Sprintf("%s: only root or the agent's group may ask for work (you are uid %d)", req.Op, peer.UID)})
		return
	}
	// Only work that was asked for and allowed is activity: neither a flood of refused requests nor any
	// local user reading the status every few seconds may keep the agent from its idle exit.
	if s.Touched != nil && req.Op != OpStatus {
		s.Touched()
	}
	_ = WriteResponse(conn, s.Handle(ctx, req, peer))
}
