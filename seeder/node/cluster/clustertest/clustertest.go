package clustertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// EnvService names an ipfs-cluster-service binary to use instead of building the pinned one.
const EnvService = "PACMAN_IPFS_CLUSTER_SERVICE"

// Peer is one running cluster peer and its kubo node.
type Peer struct {
	Name    string
	Dir     string // IPFS_CLUSTER_PATH
	APIURL  string // the REST API, http://127.0.0.1:<port>
	Addr    string // the cluster swarm address, /ip4/127.0.0.1/tcp/<port>/p2p/<id>
	Kubo    *kubotest.Node
	bin     string
	cmd     *exec.Cmd
	done    chan struct{}
	log     *os.File
	stopped bool
}

// Cluster is a set of peers sharing a secret.
type Cluster struct {
	Peers  []*Peer
	secret string
	bin    string
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns ipfs-cluster-service: $PACMAN_IPFS_CLUSTER_SERVICE, else the version pinned in
// testdata/cluster/go.mod, built once per process (the first build takes a few CPU-minutes). It skips
// the test when neither is there, unless PACMAN_IPFS_REQUIRE_TOOLS=1.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvService); p != "" {
		return p
	}
	buildOnce.Do(func() { buildPath, buildErr = goTool("ipfs-cluster-service") })
	if buildErr != nil {
		if os.Getenv(kubotest.EnvRequireTools) == "1" {
			t.Fatalf("clustertest: %v", buildErr)
		}
		t.Skipf("clustertest: ipfs-cluster-service not available: %v", buildErr)
	}
	return buildPath
}

// goTool builds the cluster tool name pinned in testdata/cluster/go.mod.
func goTool(name string) (string, error) {
	dir, err := kubotest.ModuleDir(filepath.Join("testdata", "cluster"))
	if err != nil {
		return "", err
	}
	return kubotest.GoTool(dir, name)
}

// Start starts n peers, each with a kubo node of its own (kopts for all of them).
func Start(t testing.TB, n int, kopts kubotest.Options) *Cluster {
	t.Helper()
	c := &Cluster{bin: Binary(t), secret: randomHex(32)}
	for i := range n {
		c.Add(t, fmt.Sprintf("peer%d", i), kopts)
	}
	c.WaitMetrics(t)
	return c
}

// WaitMetrics waits until every running peer has the freespace metric of every running peer: before
// that, a pin with a replication factor above 1 fails with "not enough peers to allocate".
func (c *Cluster) WaitMetrics(t testing.TB) {
	t.Helper()
	want := 0
	for _, p := range c.Peers {
		if p.running() {
			want++
		}
	}
	deadline := time.Now().Add(time.Minute)
	for _, p := range c.Peers {
		if !p.running() {
			continue
		}
		for {
			var metrics []json.RawMessage
			if getJSON(p.APIURL+"/monitor/metrics/freespace", &metrics) == nil && len(metrics) >= want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("clustertest: %s does not see the freespace metrics of %d peers within a minute", p.Name, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// Add starts one more peer, bootstrapped to every running one.
func (c *Cluster) Add(t testing.TB, name string, kopts kubotest.Options) *Peer {
	t.Helper()
	k := kubotest.Start(t, kopts)
	p := &Peer{Name: name, Dir: filepath.Join(t.TempDir(), name), Kubo: k, bin: c.bin}
	p.run(t, "init", "--consensus", "crdt")
	clusterPort, apiPort := freePort(t), freePort(t)
	cfg := [][2]string{
		{"cluster.peername", strconv.Quote(name)},
		{"cluster.secret", strconv.Quote(c.secret)},
		{"cluster.listen_multiaddress", `["/ip4/127.0.0.1/tcp/` + strconv.Itoa(clusterPort) + `"]`},
		{"cluster.mdns_interval", `"0s"`},
		{"cluster.enable_relay_hop", `false`},
		{"cluster.monitor_ping_interval", `"2s"`},
		{"cluster.peer_watch_interval", `"2s"`},
		{"api", `{"restapi": {"http_listen_multiaddress": "/ip4/127.0.0.1/tcp/` + strconv.Itoa(apiPort) + `"}}`},
		{"ipfs_connector.ipfshttp.node_multiaddress", strconv.Quote(k.APIAddr)},
		{"ipfs_connector.ipfshttp.connect_swarms_delay", `"1s"`},
		{"informer.disk.metric_ttl", `"2s"`},
		{"informer.pinqueue.metric_ttl", `"2s"`},
		{"informer.tags.metric_ttl", `"2s"`},
		{"consensus.crdt.rebroadcast_interval", `"2s"`},
	}
	if err := kubotest.EditJSON(filepath.Join(p.Dir, "service.json"), cfg); err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	p.APIURL = "http://127.0.0.1:" + strconv.Itoa(apiPort)
	var boot []string
	for _, q := range c.Peers {
		if q.running() {
			boot = append(boot, q.Addr)
		}
	}
	p.start(t, boot)
	c.Peers = append(c.Peers, p)
	return p
}

func (p *Peer) env() []string {
	return append(os.Environ(), "IPFS_CLUSTER_PATH="+p.Dir, "GOLOG_LOG_LEVEL=error")
}

func (p *Peer) run(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command(p.bin, args...)
	cmd.Env = p.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clustertest: ipfs-cluster-service %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// start runs the daemon and waits until its REST API answers with the peer's ID. A daemon that dies
// while starting is started again, up to twice, as systemd's Restart= would: ipfs-cluster-service 1.1.6
// serves its REST API a moment before its RPC client is set, and a request in that moment (a client
// retrying against a restarted peer) panics it with a nil pointer in go-libp2p-gorpc.
func (p *Peer) start(t testing.TB, bootstrap []string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p.launch(t, bootstrap)
		addr, exited := p.waitID(t)
		if !exited {
			p.Addr = addr
			return
		}
		b, _ := os.ReadFile(filepath.Join(p.Dir, "daemon.log"))
		if attempt == 3 {
			t.Fatalf("clustertest: %s exited while starting, 3 times:\n%s", p.Name, lastLines(string(b), 40))
		}
		t.Logf("clustertest: %s exited while starting; starting it again:\n%s", p.Name, lastLines(string(b), 12))
	}
}

// launch starts the daemon process.
func (p *Peer) launch(t testing.TB, bootstrap []string) {
	t.Helper()
	args := []string{"daemon"}
	if len(bootstrap) > 0 {
		args = append(args, "--bootstrap", strings.Join(bootstrap, ","))
	}
	log, err := os.OpenFile(filepath.Join(p.Dir, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	p.log = log
	p.cmd = exec.Command(p.bin, args...)
	p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = p.env(), log, log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("clustertest: start %s: %v", p.Name, err)
	}
	p.done, p.stopped = make(chan struct{}), false
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(p.Dir, "daemon.log"))
			t.Logf("clustertest: %s's log:\n%s", p.Name, lastLines(string(b), 40))
		}
	})
}

// waitID waits for the REST API and returns the peer's cluster swarm address, or says that the daemon
// exited first.
func (p *Peer) waitID(t testing.TB) (string, bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return "", true
		default:
		}
		var id struct {
			ID        string   `json:"id"`
			Addresses []string `json:"addresses"`
		}
		if getJSON(p.APIURL+"/id", &id) == nil && id.ID != "" {
			for _, a := range id.Addresses {
				if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
					return a, false
				}
			}
			return fmt.Sprintf("/ip4/127.0.0.1/tcp/%s/p2p/%s", "0", id.ID), false
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("clustertest: %s's REST API did not answer within a minute", p.Name)
	return "", false
}

func (p *Peer) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop stops the peer (SIGTERM, then SIGKILL after 10 s); its kubo node keeps running.
func (p *Peer) Stop(t testing.TB) {
	t.Helper()
	if !p.running() {
		return
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.log.Close()
}

// Restart starts a stopped peer again, bootstrapped to the others.
func (c *Cluster) Restart(t testing.TB, p *Peer) {
	t.Helper()
	var boot []string
	for _, q := range c.Peers {
		if q != p && q.running() {
			boot = append(boot, q.Addr)
		}
	}
	p.start(t, boot)
	c.WaitMetrics(t)
}

func getJSON(url string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	ctlOnce sync.Once
	ctlPath string
	ctlErr  error
)

// Ctl runs ipfs-cluster-ctl (the version pinned in testdata/cluster/go.mod, built once per process)
// against the peer's REST API and returns its standard output.
func (p *Peer) Ctl(t testing.TB, args ...string) string {
	t.Helper()
	ctlOnce.Do(func() { ctlPath, ctlErr = goTool("ipfs-cluster-ctl") })
	if ctlErr != nil {
		t.Fatalf("clustertest: ipfs-cluster-ctl: %v", ctlErr)
	}
	hostPort := strings.TrimPrefix(p.APIURL, "http://")
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatalf("clustertest: REST API %s: %v", p.APIURL, err)
	}
	cmd := exec.Command(ctlPath, append([]string{"--host", "/ip4/" + host + "/tcp/" + port}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("clustertest: ipfs-cluster-ctl %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}
