package endpoint

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

// getPage asks srv for its root with method and returns the answer with its body read.
func getPage(t *testing.T, url, method string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s /: %v", method, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s /: %v", method, err)
	}
	return resp, string(b)
}

func TestStatusPage(t *testing.T) {
	today := time.Now().Format(time.DateOnly)
	hostile := "<script>alert(1)</script>"
	tests := []struct {
		name    string
		page    func(ctx context.Context) PageData // nil: no agent
		tally   string                             // the tally file's content before the server starts; "": none
		method  string
		want    []string
		notWant []string
	}{
		{name: "no agent", method: "GET", want: []string{"No agent details", `href="/metrics"`, "0 B"}},
		{
			name: "the agent's data", method: "GET",
			page: func(context.Context) PageData {
				return PageData{
					Node:       PageNode{ID: "12D3KooWSelf", Version: "0.38.1"},
					LANPeers:   []PagePeer{{ID: "12D3KooWNeighbour", Addr: "/ip4/192.168.1.20/tcp/4001"}},
					Repos:      map[string]Count{"core": {Files: 3, Bytes: 300 << 10}, "extra": {Files: 1, Bytes: 2 << 20}},
					LastPass:   time.Now(),
					LANIndexes: []string{"/ipns/12D3KooWNeighbour"},
				}
			},
			want: []string{"reachable", "12D3KooWSelf", "0.38.1", "LAN peers (1)", "/ip4/192.168.1.20/tcp/4001",
				"<td>core</td>", "300.0 KiB", "<td>extra</td>", "2.0 MiB", `<th class="n">4</th>`, "/ipns/12D3KooWNeighbour"},
		},
		{
			name: "hostile names are escaped", method: "GET",
			page: func(context.Context) PageData {
				return PageData{
					Node:     PageNode{ID: hostile, Version: hostile},
					LANPeers: []PagePeer{{ID: hostile, Addr: `"><img src=x>`}},
					Repos:    map[string]Count{hostile: {Files: 1, Bytes: 1}},
					LastPass: time.Now(),
				}
			},
			want:    []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&#34;&gt;&lt;img src=x&gt;"},
			notWant: []string{"<script", "<img"},
		},
		{
			name: "node down", method: "GET",
			page: func(context.Context) PageData {
				return PageData{Node: PageNode{Error: "dial tcp 127.0.0.1:5001: connection refused"}}
			},
			want: []string{"not reachable", "connection refused", "no pass has run"},
		},
		{
			name: "an agent that takes too long is cut off", method: "GET",
			page: func(ctx context.Context) PageData {
				<-ctx.Done()
				return PageData{Node: PageNode{Error: ctx.Err().Error()}}
			},
			want: []string{"not reachable", "deadline exceeded"},
		},
		{name: "HEAD answers the headers only", method: "HEAD"},
		{
			name: "today's tally file is taken up", method: "GET",
			tally: `{"day":"` + today + `","peer_bytes":123456789,"mirror_bytes":0}`,
			want:  []string{"117.7 MiB", "100%"},
		},
		{
			name: "a tally file of another day starts at zero", method: "GET",
			tally:   `{"day":"2001-01-01","peer_bytes":123456789,"mirror_bytes":5}`,
			notWant: []string{"117.7 MiB"},
		},
		{name: "a corrupt tally file starts at zero", method: "GET", tally: `{"day":`, notWant: []string{"117.7 MiB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "today.json")
			if tt.tally != "" {
				if err := os.WriteFile(file, []byte(tt.tally), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s := newSetupWith(t, func(o *Options) { o.Page, o.TallyFile = tt.page, file })
			start := time.Now()
			resp, body := getPage(t, s.srv.URL, tt.method)
			if took := time.Since(start); took > pageTime+2*time.Second {
				t.Errorf("the page took %s", took)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s /: %s\n%s", tt.method, resp.Status, body)
			}
			for h, want := range map[string]string{
				"Content-Type":            "text/html; charset=utf-8",
				"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
				"X-Content-Type-Options":  "nosniff",
				"Cache-Control":           "no-store",
			} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s: %q, want %q", h, got, want)
				}
			}
			if tt.method == "HEAD" && body != "" {
				t.Errorf("HEAD answered a body: %q", body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("the page lacks %q:\n%s", w, body)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(body, w) {
					t.Errorf("the page has %q:\n%s", w, body)
				}
			}
		})
	}
}

// The agent exits when idle and socket activation starts it again: the bytes handed to pacman today
// must survive into the next Server, while the count since the start begins again.
func TestStatusPageTallyAcrossServers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state", "today.json")
	first := newSetupWith(t, func(o *Options) { o.TallyFile = file })
	first.peerHolds(t)
	first.ipfs.add(node.RawCID(sha256.Sum256(first.small)), first.small)
	if code, _, _, err := first.get(t, "/core/os/x86_64/small-1-1-x86_64.pkg.tar.zst"); err != nil || code != 200 {
		t.Fatalf("small from IPFS: %d, %v", code, err)
	}
	// The handler counts the package once its last byte is out: the client may be done before.
	var b []byte
	var err error
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, err = os.ReadFile(file); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("the tally was not written: %v", err)
	}
	var f tallyFile
	if err := json.Unmarshal(b, &f); err != nil || f.PeerBytes != int64(len(first.small)) || f.Day != time.Now().Format(time.DateOnly) {
		t.Errorf("the tally file says %s (%v), want %d peer bytes today", b, err, len(first.small))
	}

	second := newSetupWith(t, func(o *Options) { o.TallyFile = file })
	_, body := getPage(t, second.srv.URL, "GET")
	today := `<td>Today</td><td class="n">300.0 KiB</td><td class="n">0 B</td><td class="n">300.0 KiB</td><td class="n">100%</td>`
	since := `<td>Since the agent started</td><td class="n">0 B</td><td class="n">0 B</td><td class="n">0 B</td>`
	for _, want := range []string{today, since} {
		if !strings.Contains(body, want) {
			t.Errorf("the second server's page lacks %q:\n%s", want, body)
		}
	}
}

// At midnight the day's tally starts again, in memory and in its file.
func TestTallyRollsOverAtMidnight(t *testing.T) {
	now := time.Date(2026, 11, 28, 23, 59, 59, 0, time.Local)
	file := filepath.Join(t.TempDir(), "today.json")
	tl := newDayTally(file, slog.New(slog.DiscardHandler), func() time.Time { return now })
	tl.add("ipfs", 100)
	tl.add("https://mirror", 50)
	if p, m := tl.today(); p != 100 || m != 50 {
		t.Fatalf("before midnight: %d from peers, %d from mirrors", p, m)
	}
	now = now.Add(2 * time.Second)
	if p, m := tl.today(); p != 0 || m != 0 {
		t.Errorf("after midnight: %d from peers, %d from mirrors, want zero", p, m)
	}
	tl.add("ipfs", 7) // within a second of the last write: scheduled
	tl.flush()
	again := newDayTally(file, slog.New(slog.DiscardHandler), func() time.Time { return now })
	if p, m := again.today(); p != 7 || m != 0 {
		t.Errorf("the new day's file: %d from peers, %d from mirrors, want 7 and 0", p, m)
	}
}

// The page, /metrics and every package path answer only requests that name this machine: a site that
// made its own name resolve to 127.0.0.1 cannot read through a visitor's browser what it shows, nor
// learn what this machine seeds from a 200 or a 404.
func TestPageAndMetricsOnlyForLoopbackHosts(t *testing.T) {
	srv := New(Options{})
	for _, tc := range []struct {
		host string
		want int
	}{
		{"127.0.0.1:7878", 200}, {"localhost:7878", 200}, {"LOCALHOST", 200}, {"[::1]:7878", 200}, {"127.1.2.3", 200},
		{"evil.example:7878", 421}, {"10.0.0.1:7878", 421}, {"", 421}, {"localhost.evil.example", 421},
	} {
		for _, path := range []string{"/", MetricsPath, "/cache/core/os/x86_64/x-1-1-x86_64.pkg.tar.zst", "/core/os/x86_64/core.db"} {
			r := httptest.NewRequest("GET", path, nil)
			r.Host = tc.host
			w := httptest.NewRecorder()
			srv.ServeHTTP(w, r)
			if (w.Code == 421) != (tc.want == 421) {
				t.Errorf("GET %s with Host %q: %d, want %d", path, tc.host, w.Code, tc.want)
			}
		}
	}
}
