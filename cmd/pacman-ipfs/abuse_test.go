package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// minimalAgentArgs is an agent with no repositories, no kubo and a mirror endpoint on port.
func minimalAgentArgs(t *testing.T, httpAddr string) []string {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "pacman.conf")
	if err := os.WriteFile(conf, []byte("[options]\nDBPath = "+dir+"/db/\nCacheDir = "+dir+"/pkg/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "mirrorlist")
	if err := os.WriteFile(list, []byte("Server = http://127.0.0.1:9/$repo/os/$arch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--pacman-conf", conf, "--api", "/ip4/127.0.0.1/tcp/9", "--state-dir", filepath.Join(dir, "state"),
		"--listen", filepath.Join(dir, "c.sock"), "--http", httpAddr, "--mirrorlist", list}
}

func TestEndpointOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		r := cli(t, append([]string{"agent"}, minimalAgentArgs(t, addr)...)...)
		if r.code == 0 || !strings.Contains(r.stderr, "only a loopback address is allowed") {
			t.Errorf("agent --http %s: exit %d, %q", addr, r.code, r.stderr)
		}
	}
}

func TestEndpointCutsOffAbuse(t *testing.T) {
	port := freePort(t)
	startAgent(t, minimalAgentArgs(t, "127.0.0.1:"+strconv.Itoa(port))...)
	waitListening(t, port)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	send := func(raw string) string {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, raw)
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	tests := []struct{ name, raw, want string }{
		{name: "traversal", raw: "GET /core/os/x86_64/../../../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", want: "404"},
		{name: "encoded slash", raw: "GET /core/os/x86_64/..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", want: "404"},
		{name: "not the layout", raw: "GET /etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", want: "404"},
		{name: "a write", raw: "PUT /core/os/x86_64/x.pkg.tar.zst HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", want: "405"},
		{name: "oversized headers", raw: "GET /core/os/x86_64/core.db HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", want: "431"},
		// DNS rebinding: a page whose name resolves to 127.0.0.1 learns nothing, not even what is seeded.
		{name: "another host", raw: "GET /cache/core/os/x86_64/x-1-1-x86_64.pkg.tar.zst HTTP/1.1\r\nHost: attacker.example\r\n\r\n", want: "421"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := send(tt.raw); !strings.Contains(got, tt.want) {
				t.Errorf("answer %q, want %s", got, tt.want)
			}
		})
	}
	// A client that sends half a request and waits is cut off by the header timeout.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /core/os/x86_64/core.db HTTP/1.1\r\nHost: x\r\n")
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.ReadAll(c)
	if took := time.Since(start); err != nil || took > 15*time.Second {
		t.Errorf("slow client: %v after %s", err, took)
	} else {
		t.Logf("a client stuck in its headers was cut off after %s", took.Round(time.Millisecond))
	}
}
