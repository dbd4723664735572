package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent/control"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/memnode"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/nodetest"
)

// world is a pacman DBPath and CacheDir in a temp dir, a sync db written in repo-add's format, an
// in-memory node, and an agent running on a real control socket.
type world struct {
	root, cache, dbPath, socket string
	node                        *memnode.Node
	agent                       *agent.Agent
	entries                     []alpmtest.Entry
	cancel                      context.CancelFunc
	done                        chan error
}

func newWorld(t *testing.T, mutate func(*agent.Options)) *world {
	t.Helper()
	// Socket paths are limited to 108 bytes: keep the root short.
	root, err := os.MkdirTemp("", "pia")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	w := &world{root: root, cache: filepath.Join(root, "pkg"), dbPath: filepath.Join(root, "db"), socket: filepath.Join(root, "s"), node: memnode.New()}
	for _, d := range []string{w.cache, filepath.Join(w.dbPath, "sync"), filepath.Join(w.dbPath, "local")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w.writeDB(t)
	cfg := &alpmdb.Config{Path: "test", RootDir: "/", DBPath: w.dbPath + "/", CacheDirs: []string{w.cache}, Repos: []alpmdb.Repo{{Name: "core"}}}
	opts := agent.Options{
		Config:   cfg,
		StateDir: filepath.Join(root, "state"),
		Dial:     func(context.Context) (node.Node, error) { return w.node, nil },
		API:      "memnode",
		Auth:     control.Authorizer{GID: -1},
		Quiet:    100 * time.Millisecond,
		MaxDelay: 2 * time.Second,
		Rewatch:  100 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&opts)
	}
	w.agent = agent.New(opts)
	ln, err := net.Listen("unix", w.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan error, 1)
	go func() { w.done <- w.agent.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop within 10 s of its context ending")
		}
	})
	return w
}

// pkg makes the bytes of a package, listed in the db or not.
func (w *world) pkg(t *testing.T, name string, size int, listed bool) (string, []byte) {
	t.Helper()
	h := sha256.Sum256([]byte(name))
	data := nodetest.Bytes(uint64(h[0])<<8|uint64(h[1])<<16|uint64(h[2])<<24|uint64(size), size)
	file := name + "-1.0-1-x86_64.pkg.tar.zst"
	if listed {
		sum := sha256.Sum256(data)
		w.entries = append(w.entries, alpmtest.Entry{FileName: file, Name: name, Version: "1.0-1", Arch: "x86_64", CSize: int64(size), SHA256: hex.EncodeToString(sum[:])})
	}
	return file, data
}

// writeDB replaces the sync db the way pacman does: a new file renamed into place.
func (w *world) writeDB(t *testing.T) {
	t.Helper()
	tmp := filepath.Join(w.dbPath, "sync", "core.db.part")
	alpmtest.WriteDB(t, tmp, w.entries)
	if err := os.Rename(tmp, filepath.Join(w.dbPath, "sync", "core.db")); err != nil {
		t.Fatal(err)
	}
}

func (w *world) put(t *testing.T, file string, data []byte) string {
	t.Helper()
	p := filepath.Join(w.cache, file)
	// pacman 6 writes <file>.part and renames it: the watcher must wait for the rename.
	if err := os.WriteFile(p+".part", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".part", p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *world) pins(t *testing.T) map[string]string {
	t.Helper()
	p, err := w.node.Pins(context.Background(), node.PinPrefix)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for c, name := range p {
		out[strings.TrimPrefix(name, node.PinPrefix+"core/")] = c.String()
	}
	return out
}

func (w *world) status(t *testing.T) agent.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := agent.AskStatus(ctx, w.socket)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestWatcherSeedsAndUnseeds(t *testing.T) {
	w := newWorld(t, nil)
	a, adata := w.pkg(t, "a", 10<<10, true)
	b, bdata := w.pkg(t, "b", 3<<20, true)
	w.writeDB(t)
	alpmtest.Eventually(t, 15*time.Second, "first pass", func() bool { return w.status(t).Passes >= 1 })

	pa := w.put(t, a, adata)
	pb := w.put(t, b, bdata)
	alpmtest.Eventually(t, 15*time.Second, "both seeded", func() bool { return len(w.pins(t)) == 2 })
	if got, want := w.pins(t)[a], node.RawCID(sha256.Sum256(adata)).String(); got != want {
		t.Errorf("a pinned as %s, want %s", got, want)
	}

	if err := os.Remove(pa); err != nil { // paccache -r
		t.Fatal(err)
	}
	alpmtest.Eventually(t, 15*time.Second, "a unpinned", func() bool { _, ok := w.pins(t)[a]; return !ok })
	if err := os.Rename(pb, filepath.Join(w.root, b)); err != nil { // paccache -m
		t.Fatal(err)
	}
	alpmtest.Eventually(t, 15*time.Second, "b unpinned", func() bool { return len(w.pins(t)) == 0 })
}

func TestBurstIsAFewPasses(t *testing.T) {
	w := newWorld(t, nil)
	files := map[string][]byte{}
	for i := range 300 {
		f, d := w.pkg(t, fmt.Sprintf("p%03d", i), 1<<10, true)
		files[f] = d
	}
	w.writeDB(t)
	alpmtest.Eventually(t, 15*time.Second, "first pass", func() bool { return w.status(t).Passes >= 1 })
	before := w.status(t).Passes
	for f, d := range files { // a 300-package download landing
		w.put(t, f, d)
		time.Sleep(time.Millisecond)
	}
	alpmtest.Eventually(t, 15*time.Second, "300 seeded", func() bool { return len(w.pins(t)) == 300 })
	time.Sleep(300 * time.Millisecond)
	st := w.status(t)
	if passes := st.Passes - before; passes > 5 {
		t.Errorf("300 new files took %d passes (%d events)", passes, st.Events)
	} else {
		t.Logf("300 new files, %d events: %d passes", st.Events, passes)
	}
}

// A file downloaded before `pacman -Sy` is refused until the new db vouches for it.
func TestNewSyncDBMakesFileVerifiable(t *testing.T) {
	w := newWorld(t, nil)
	f, d := w.pkg(t, "late", 2<<10, false)
	w.put(t, f, d)
	alpmtest.Eventually(t, 15*time.Second, "refused", func() bool {
		st := w.status(t)
		return st.Last != nil && len(st.Last.Refused) == 1
	})
	w.entries = append(w.entries, alpmtest.Entry{FileName: f, Name: "late", Version: "1.0-1", Arch: "x86_64", CSize: int64(len(d)), SHA256: hex.EncodeToString(func() []byte { s := sha256.Sum256(d); return s[:] }())})
	w.writeDB(t)
	alpmtest.Eventually(t, 15*time.Second, "seeded after the db changed", func() bool { return len(w.pins(t)) == 1 })
}

func TestCacheDirReplaced(t *testing.T) {
	for _, onKubo := range []bool{false, true} {
		t.Run(map[bool]string{false: "memnode", true: "kubo"}[onKubo], func(t *testing.T) {
			var nd node.Node
			mutate := func(*agent.Options) {}
			if onKubo {
				if testing.Short() {
					t.Skip("starts kubo")
				}
				k := kubotest.Start(t, kubotest.Options{})
				c := k.Client(t)
				nd = c
				mutate = func(o *agent.Options) { o.Dial = func(context.Context) (node.Node, error) { return c, nil } }
			}
			w := newWorld(t, mutate)
			if nd == nil {
				nd = w.node
			}
			pins := func() int {
				p, err := nd.Pins(context.Background(), node.PinPrefix)
				if err != nil {
					t.Fatal(err)
				}
				return len(p)
			}
			f, d := w.pkg(t, "a", 4<<10, true)
			w.writeDB(t)
			w.put(t, f, d)
			alpmtest.Eventually(t, 15*time.Second, "seeded", func() bool { return pins() == 1 })
			if err := os.RemoveAll(w.cache); err != nil {
				t.Fatal(err)
			}
			alpmtest.Eventually(t, 15*time.Second, "unpinned with its dir", func() bool { return pins() == 0 })
			if err := os.Mkdir(w.cache, 0o755); err != nil {
				t.Fatal(err)
			}
			w.put(t, f, d)
			alpmtest.Eventually(t, 15*time.Second, "seeded in the new dir", func() bool { return pins() == 1 })
			if st := w.status(t); len(st.Missing) != 0 {
				t.Errorf("still missing: %v", st.Missing)
			}
		})
	}
}

func TestNodeDownIsRetried(t *testing.T) {
	var mu sync.Mutex
	down := true
	var w *world
	w = newWorld(t, func(o *agent.Options) {
		o.Dial = func(context.Context) (node.Node, error) {
			mu.Lock()
			defer mu.Unlock()
			if down {
				return nil, errors.New("kubo RPC API not reachable at test")
			}
			return w.node, nil
		}
	})
	f, d := w.pkg(t, "a", 4<<10, true)
	w.writeDB(t)
	w.put(t, f, d)
	alpmtest.Eventually(t, 15*time.Second, "waiting state", func() bool {
		st := w.status(t)
		return st.State == "waiting" && strings.Contains(st.LastError, "not reachable")
	})
	mu.Lock()
	down = false
	mu.Unlock()
	alpmtest.Eventually(t, 15*time.Second, "seeded once the nd is back", func() bool { return len(w.pins(t)) == 1 })
	alpmtest.Eventually(t, 15*time.Second, "the error cleared", func() bool { st := w.status(t); return st.LastError == "" && st.State == "idle" })
}

// The agent speaks sd_notify: READY once the first pass is done, STATUS after passes, STOPPING at the end.
func TestSystemdNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "pin")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	w := newWorld(t, nil)
	seen := map[string]string{}
	wait := func(prefix string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for seen[prefix] == "" {
			select {
			case m := <-msgs:
				k, _, _ := strings.Cut(m, "=")
				seen[k+"="] = m
			case <-timeout:
				t.Fatalf("no %s message; got %v", prefix, seen)
			}
		}
	}
	wait("READY=")
	wait("STATUS=")
	if !strings.Contains(seen["STATUS="], "seeding 0 files") {
		t.Errorf("STATUS is %q", seen["STATUS="])
	}
	w.cancel()
	<-w.done
	w.done <- nil // for the cleanup
	wait("STOPPING=")
}

func TestIdleExit(t *testing.T) {
	w := newWorld(t, func(o *agent.Options) { o.IdleExit = 500 * time.Millisecond })
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("Run after idling: %v", err)
		}
		w.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not exit when idle")
	}
}

// Any local user may read the status, so reading it is not work: asked every 100 ms, it does not keep the
// agent from its idle exit.
func TestStatusIsNotWork(t *testing.T) {
	w := newWorld(t, func(o *agent.Options) { o.IdleExit = time.Second })
	stop := time.After(10 * time.Second)
	for {
		select {
		case err := <-w.done:
			if err != nil {
				t.Errorf("Run after idling: %v", err)
			}
			w.done <- nil
			return
		case <-stop:
			t.Fatal("status requests every 100 ms kept the agent up past its idle exit")
		case <-time.After(100 * time.Millisecond):
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = agent.AskStatus(ctx, w.socket) // fails once the agent is gone
			cancel()
		}
	}
}

func TestControlSocket(t *testing.T) {
	w := newWorld(t, nil)
	send := func(raw string) control.Response {
		t.Helper()
		conn, err := net.Dial("unix", w.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte(raw)); err != nil {
			t.Fatal(err)
		}
		if c, ok := conn.(*net.UnixConn); ok {
			c.CloseWrite()
		}
		var resp control.Response
		if err := json.NewDecoder(conn).Decode(&resp); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		return resp
	}
	tests := []struct {
		name, raw string
		ok        bool
		err       string
	}{
		{name: "status", raw: `{"op":"status"}` + "\n", ok: true},
		{name: "notify", raw: `{"op":"notify","targets":["zlib","glibc"]}` + "\n", ok: true},
		{name: "reconcile without newline", raw: `{"op":"reconcile"}`, ok: true},
		{name: "not JSON", raw: "hello\n", err: "malformed request"},
		{name: "unknown field", raw: `{"op":"status","x":1}` + "\n", err: "malformed request"},
		{name: "unknown op", raw: `{"op":"rm -rf"}` + "\n", err: `unknown op "rm -rf"`},
		{name: "no op", raw: `{}` + "\n", err: `no "op"`},
		{name: "two values", raw: `{"op":"status"}{"op":"status"}` + "\n", err: "more than one"},
		{name: "oversized", raw: `{"op":"notify","targets":["` + strings.Repeat("x", control.MaxRequest) + `"]}` + "\n", err: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := send(tt.raw)
			if resp.OK != tt.ok || !strings.Contains(resp.Error, tt.err) {
				t.Errorf("answer %+v, want ok=%v error containing %q", resp, tt.ok, tt.err)
			}
		})
	}

	// A client that connects and says nothing is cut off by the deadline, and others are served meanwhile.
	idle, err := net.Dial("unix", w.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if resp := send(`{"op":"status"}` + "\n"); !resp.OK {
		t.Errorf("status while a slow client holds a connection: %+v", resp)
	}
	_ = idle.SetReadDeadline(time.Now().Add(control.Deadline + 5*time.Second))
	start := time.Now()
	var resp control.Response
	err = json.NewDecoder(idle).Decode(&resp)
	if took := time.Since(start); err == nil && resp.OK || took > control.Deadline+3*time.Second {
		t.Errorf("silent client: answer %+v err %v after %s", resp, err, took)
	}
}

func TestAuthorizer(t *testing.T) {
	me := uint32(os.Getuid())
	tests := []struct {
		name string
		auth control.Authorizer
		peer control.Peer
		want bool
	}{
		{name: "root", auth: control.Authorizer{GID: -1}, peer: control.Peer{UID: 0}, want: true},
		{name: "the agent's own user", auth: control.Authorizer{GID: -1}, peer: control.Peer{UID: me}, want: true},
		{name: "stranger", auth: control.Authorizer{GID: -1}, peer: control.Peer{UID: 4242, GID: 4242}, want: me == 4242},
		{name: "member by primary group", auth: control.Authorizer{GID: 777}, peer: control.Peer{UID: 4242, GID: 777}, want: true},
		{name: "other group", auth: control.Authorizer{GID: 777}, peer: control.Peer{UID: 4242, GID: 778}, want: me == 4242},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.auth.MayWork(tt.peer); got != tt.want {
				t.Errorf("MayWork(%+v) = %v, want %v", tt.peer, got, tt.want)
			}
		})
	}
}
