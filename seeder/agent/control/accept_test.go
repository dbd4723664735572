package control

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// failingListener fails its first accepts as a process out of descriptors does.
type failingListener struct {
	net.Listener
	failures atomic.Int32
}

func (f *failingListener) Accept() (net.Conn, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: syscall.EMFILE}
	}
	return f.Listener.Accept()
}

// EMFILE on accept pauses the loop (5 ms, doubling up to 1 s), it does not end it: the next client is answered.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: ln}
	fl.failures.Store(8)
	srv := &Server{
		Auth:   Authorizer{GID: -1},
		Handle: func(context.Context, Request, Peer) Response { return Response{OK: true} },
		Log:    slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, fl) }()
	t.Cleanup(func() { cancel(); <-done })

	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	resp, err := Do(rctx, path, Request{Op: OpStatus})
	if err != nil || !resp.OK {
		t.Fatalf("after 8 failed accepts: %+v %v", resp, err)
	}
	if n := fl.failures.Load(); n >= 0 {
		t.Errorf("the failures were not all seen (%d left)", n)
	}
}
