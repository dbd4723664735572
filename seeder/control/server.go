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
	Touched func() // called on every connection, for idle tracking; may be nil

	wg sync.WaitGroup
}

// Serve accepts connections until ctx is done or the listener fails, then waits for open exchanges.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("control socket: %w", err)
		}
		if s.Touched != nil {
			s.Touched()
		}
		s.wg.Go(func() { s.serveConn(ctx, conn) })
	}
}

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
		s.Log.Warn("control request refused", "uid", peer.UID, "pid", peer.PID, "err", err)
		_ = WriteResponse(conn, Response{Error: err.Error()})
		return
	}
	if req.Op != OpStatus && !s.Auth.MayWork(peer) {
		s.Log.Warn("control request not allowed", "op", req.Op, "uid", peer.UID, "pid", peer.PID)
		_ = WriteResponse(conn, Response{Error: fmt.Sprintf("%s: only root or the agent's group may ask for work (you are uid %d)", req.Op, peer.UID)})
		return
	}
	_ = WriteResponse(conn, s.Handle(ctx, req, peer))
}
