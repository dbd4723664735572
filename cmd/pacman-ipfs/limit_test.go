package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// At the cap, a new connection makes room by closing the idlest one: keep-alives between requests, then
// connections that sent nothing; busy ones are never closed, and the open connections stay at the cap.
func TestConnLimitClosesTheIdlestFirst(t *testing.T) {
	const max = 4
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveBounded(ctx, srv, ln, max) }()
	t.Cleanup(func() { close(release); cancel(); <-done })
	addr := ln.Addr().String()
	get := func(c net.Conn, path string) string {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 512)
		n, _ := c.Read(b)
		return string(b[:n])
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// One busy request, two keep-alives that are done, one silent connection: the cap is reached.
	busy := dial()
	fmt.Fprintf(busy, "GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
	idle := []net.Conn{dial(), dial()}
	for _, c := range idle {
		if got := get(c, "/"); len(got) == 0 {
			t.Fatal("no answer")
		}
	}
	dial() // silent
	// Five more clients, one after another: each is served, making room in turn.
	for i := range 5 {
		c := dial()
		if got := get(c, "/"); len(got) == 0 {
			t.Fatalf("client %d was not served at the cap", i)
		}
	}
	// The busy request was never cut.
	release <- struct{}{}
	busy.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 512)
	if n, err := busy.Read(b); n == 0 {
		t.Errorf("the busy request was cut: %v", err)
	}
}
