package main

import (
	"io"
	"net"
	"strings"
	"testing"
)

// The node writes "<peer ID>\n" before a neighbour's stream (p2p listen --report-peer-id): it is read
// off, and the stream's own bytes follow untouched; a line that is no peer ID ends the connection.
func TestPeerConnReadsTheReportedPeer(t *testing.T) {
	for _, tt := range []struct {
		name, sent, peer, rest string
		fails                  bool
	}{
		{"a peer", "12D3KooWExample\nGET /lan/v1/hello HTTP/1.1\r\n\r\n", "12D3KooWExample", "GET /lan/v1/hello HTTP/1.1\r\n\r\n", false},
		{"no line", strings.Repeat("x", 300), "", "", true},
		{"closed before the line", "12D3", "", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			server, client := net.Pipe()
			go func() { io.WriteString(client, tt.sent); client.Close() }()
			c := &peerConn{Conn: server}
			b, err := io.ReadAll(c)
			if tt.fails {
				if err == nil && len(b) > 0 {
					t.Errorf("read %q, want a failure", b)
				}
				return
			}
			if err != nil || string(b) != tt.rest || c.Peer() != tt.peer {
				t.Errorf("peer %q, rest %q, %v; want %q, %q", c.Peer(), b, err, tt.peer, tt.rest)
			}
		})
	}
}
