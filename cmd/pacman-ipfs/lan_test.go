package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/lanindex"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/prefetch"
)

// lanHost is one machine of a test LAN: a network namespace with one address on the LAN's bridge, a
// pacman sandbox, the kubo node packaging/ sets up and the agent as the packaged units start it.
type lanHost struct {
	name    string
	ns      string
	ip      string
	sb      *alpmtest.Sandbox
	repo    string // IPFS_PATH: beside the sandbox's cache, as /var/cache/pacman-ipfs is beside /var/cache/pacman
	control string
	logs    string
}

// testLAN is a bridge in a namespace of its own, with private addresses (a /24 of 10.77.0.0/16), and the
// hosts on it.
type testLAN struct {
	br, subnet, tag string
	hosts           []*lanHost
}

// newLAN makes n hosts on a bridge that lives in a namespace of its own, with private addresses (a /24
// of 10.77.0.0/16), routes to nothing but the subnet and multicast (224.0.0.0/4, for mDNS), and no
// default route. Everything is removed at cleanup.
func newLAN(t testing.TB, repo *alpmtest.Repo, n int) *testLAN {
	t.Helper()
	alpmtest.Require(t, "ip", "systemd-socket-activate")
	alpmtest.RequireRoot(t)
	if out, _ := exec.Command("ip", "-br", "addr").Output(); bytes.Contains(out, []byte("10.77.")) {
		t.Skipf("this machine already has addresses in 10.77.0.0/16:\n%s", out)
	}
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	l := &testLAN{br: "pi-lan" + tag, subnet: fmt.Sprintf("10.77.%d", os.Getpid()%250+1), tag: tag}
	ip(t, "netns", "add", l.br)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.br).Run() })
	ip(t, "-n", l.br, "link", "set", "lo", "up")
	ip(t, "-n", l.br, "link", "add", "br0", "type", "bridge")
	ip(t, "-n", l.br, "link", "set", "br0", "up")
	for i := range n {
		h := &lanHost{name: string(rune('A' + i)), ns: fmt.Sprintf("pi-h%d-%s", i, tag), ip: fmt.Sprintf("%s.%d", l.subnet, i+1)}
		l.attach(t, h.ns, h.ip, fmt.Sprint(i))
		h.sb = alpmtest.NewSandbox(t, repo)
		h.sb.Wrap = []string{"ip", "netns", "exec", h.ns}
		h.repo = filepath.Join(h.sb.Root, "var", "cache", "pacman-ipfs")
		l.hosts = append(l.hosts, h)
	}
	return l
}

func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// attach makes namespace ns with address addr on the bridge (interface eth0), routing the subnet and
// multicast only.
func (l *testLAN) attach(t testing.TB, ns, addr, id string) {
	ip(t, "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	veth, port := fmt.Sprintf("pv%s-%s", id, l.tag), fmt.Sprintf("pb%s-%s", id, l.tag)
	ip(t, "link", "add", veth, "type", "veth", "peer", "name", port)
	ip(t, "link", "set", veth, "netns", ns)
	ip(t, "link", "set", port, "netns", l.br)
	ip(t, "-n", l.br, "link", "set", port, "master", "br0")
	ip(t, "-n", l.br, "link", "set", port, "up")
	ip(t, "-n", ns, "link", "set", "lo", "up")
	ip(t, "-n", ns, "link", "set", veth, "name", "eth0")
	ip(t, "-n", ns, "addr", "add", addr+"/24", "dev", "eth0")
	ip(t, "-n", ns, "link", "set", "eth0", "up")
	ip(t, "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
}

// addMirror puts a mirror of repo on the LAN's uplink: a namespace of its own on the bridge (.254), whose
// sending side is shaped to rate with tc (e.g. "20mbit"; "" for none), as every machine's downloads
// from the internet share one uplink.
func (l *testLAN) addMirror(t testing.TB, repo *alpmtest.Repo, rate string) *httpMirror {
	t.Helper()
	ns, addr := "pi-m-"+l.tag, l.subnet+".254"
	l.attach(t, ns, addr, "m")
	if rate != "" {
		if out, err := exec.Command("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root",
			"tbf", "rate", rate, "burst", "32kbit", "latency", "400ms").CombinedOutput(); err != nil {
			t.Fatalf("tc on the mirror's link: %v\n%s", err, out)
		}
	}
	m := serveMirror(t, repo, listenIn(t, ns, addr+":80"))
	m.url = "http://" + addr
	return m
}

// inNetns runs fn inside network namespace ns, on a thread that enters it and is never given back to
// the runtime (it ends with its goroutine): the sockets fn opens belong to ns.
func inNetns(ns string, fn func() error) error {
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		f, oerr := os.Open("/run/netns/" + ns)
		if oerr != nil {
			err = oerr
			return
		}
		defer f.Close()
		if err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return
		}
		err = fn()
	}()
	<-done
	return err
}

// getIn fetches http://addr+path from inside network namespace ns (as a program of that machine would).
// The connection is made on the namespace's thread (dialling there is synchronous; an http.Client would
// dial from another goroutine, outside ns) and used from here.
func getIn(t testing.TB, ns, addr, path string) string {
	t.Helper()
	var conn net.Conn
	err := inNetns(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s in %s: %v", addr, ns, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s in %s: %v", path, ns, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s in %s: %v", path, ns, err)
	}
	return string(body)
}

// listenIn opens a TCP listener inside network namespace ns.
func listenIn(t testing.TB, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := inNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func (h *lanHost) cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.ns}, args...)...)
}

// startKubo initialises the node with packaging/pacman-ipfs-kubo-init and the environment of
// pacman-ipfs-kubo.service, then makes it a test node (no bootstrap peers, no AutoConf fetched from the
// internet) and starts `ipfs daemon --migrate` in the host's namespace, as the unit does.
func (h *lanHost) startKubo(t testing.TB) {
	t.Helper()
	bin := kubotest.Binary(t)
	init := exec.Command("sh", "../../packaging/pacman-ipfs-kubo-init")
	init.Env = append(os.Environ(), "IPFS_PATH="+h.repo, "IPFS="+bin, "PACMAN_IPFS_KUBO_PROFILE=server", "IPFS_TELEMETRY=off")
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("pacman-ipfs-kubo-init on %s: %v\n%s", h.name, err, out)
	}
	for _, kv := range [][2]string{
		{"Bootstrap", `[]`}, {"AutoConf.Enabled", `false`}, {"DNS.Resolvers", `{}`},
		{"Routing.DelegatedRouters", `[]`}, {"Ipns.DelegatedPublishers", `[]`}, {"Routing.Type", `"dht"`},
		{"AutoTLS.Enabled", `false`}, {"Swarm.DisableNatPortMap", `true`},
		{"Plugins.Plugins.telemetry.Disabled", `true`},
	} {
		c := exec.Command(bin, "config", "--json", kv[0], kv[1])
		c.Env = append(os.Environ(), "IPFS_PATH="+h.repo)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("ipfs config %s on %s: %v\n%s", kv[0], h.name, err, out)
		}
	}
	d := h.cmd(bin, "daemon", "--migrate")
	d.Env = append(os.Environ(), "IPFS_PATH="+h.repo, "IPFS_TELEMETRY=off")
	runLogged(t, d, syscall.SIGINT, "kubo on "+h.name)
	alpmtest.Eventually(t, 60*time.Second, "kubo on "+h.name, func() bool {
		_, err := h.ipfs("id")
		return err == nil
	})
}

func (h *lanHost) ipfs(args ...string) (string, error) {
	c := h.cmd(append([]string{os.Getenv("PACMAN_IPFS_KUBO"), "--api", "/ip4/127.0.0.1/tcp/5001"}, args...)...)
	c.Env = append(os.Environ(), "IPFS_PATH="+h.repo)
	out, err := c.CombinedOutput()
	return string(out), err
}

// startAgent runs the agent in the host's namespace as the packaged units do: behind
// systemd-socket-activate holding the endpoint's port and the control socket, with the unit's ExecStart
// flags and its Nice=; no --api (the packaged node is at the default address) and no --index.
func (h *lanHost) startAgent(t testing.TB, extra ...string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h.control = filepath.Join(t.TempDir(), "control.sock")
	h.logs = runLogged(t, h.cmd(append([]string{"systemd-socket-activate", "-l", "127.0.0.1:7878", "-l", h.control, "--fdname=mirror:control", // the units' FileDescriptorName=
		"-E", "PACMAN_IPFS_BE_CLI=1", "-E", "IPFS_PATH=" + filepath.Join(t.TempDir(), "none"),
		// The unit's Nice=10: seeding is background work.
		"nice", "-n", "10", exe, "agent", "--idle-exit", "15m", "--pacman-conf", h.sb.Conf, "--state-dir", t.TempDir(), "-v"}, extra...)...), syscall.SIGTERM, "agent on "+h.name)
	alpmtest.Eventually(t, 10*time.Second, "the control socket on "+h.name, func() bool { _, err := os.Stat(h.control); return err == nil })
}

// status runs `pacman-ipfs status --json` in the host's namespace.
func (h *lanHost) status(t testing.TB) status {
	t.Helper()
	exe, _ := os.Executable()
	c := h.cmd(exe, "status", "--json", "--socket", h.control, "--state-dir", t.TempDir())
	c.Env = append(os.Environ(), "PACMAN_IPFS_BE_CLI=1", "IPFS_PATH="+filepath.Join(t.TempDir(), "none"))
	out, err := c.Output()
	var st status
	if jerr := json.Unmarshal(out, &st); jerr != nil {
		t.Fatalf("status on %s: %v %v\n%s", h.name, err, jerr, out)
	}
	return st
}

// Three machines on one LAN, each with the kubo node packaging/ sets up and the agent as the units
// start it; nobody connects anything by hand, nobody passes --index, and the uplink is down (no mirror
// at all). The nodes find each other by mDNS, status reports the neighbours, the agents find each
// other's indexes under their peer IDs, and the packages one machine downloaded (one over 1 MiB, whose
// CID only an index gives) install on the two others from the LAN, through their endpoints.
func TestLANPackagedNodesMeetAndShare(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: network namespaces, three kubo nodes, real pacman")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	small := alpmtest.Pkg{Name: "small", Size: 400 << 10}
	large := alpmtest.Pkg{Name: "large", Size: 3 << 20, Ext: ".pkg.tar"} // over 1 MiB: needs an index
	repo := alpmtest.MakeRepo(t, "core", small, large)
	hosts := newLAN(t, repo, 3).hosts
	a, b, c := hosts[0], hosts[1], hosts[2]
	for _, h := range hosts {
		h.startKubo(t)
	}
	// A downloaded small once, from its mirror (a file:// one, outside the LAN).
	a.sb.Wrap = nil
	a.sb.Pacman(t, "-Syw", "small", "large")
	a.startAgent(t)
	alpmtest.Eventually(t, 30*time.Second, "A seeds small and large", func() bool { return a.status(t).Node.Pins == 2 })

	// B and C: the endpoint is their only Server, its mirrorlist is empty (the uplink is down), their
	// sync dbs are those of an earlier -Sy.
	none := mirrorlist(t)
	for _, h := range []*lanHost{b, c} {
		alpmtest.CopyFile(t, repo.DB, h.sb.SyncDBPath("core"), 0o644)
		h.sb.Servers = map[string][]string{"core": {"http://127.0.0.1:7878/$repo/os/$arch"}}
		h.sb.WriteConf(t)
		h.startAgent(t, "--mirrorlist", none)
	}
	took := alpmtest.Eventually(t, 60*time.Second, "every node sees the two others on the LAN", func() bool {
		for _, h := range hosts {
			if len(h.status(t).Node.LANPeers) < 2 {
				return false
			}
		}
		return true
	})
	t.Logf("mDNS: every node saw both others %s after the agents started; B's status: %v", took.Round(time.Millisecond), b.status(t).Node.LANPeers)

	// large's CID is in A's index only, which B and C find under /ipns/<A's peer ID>.
	stA := a.status(t)
	aID := stA.Node.ID
	if stA.Node.Network != kubo.NetworkLAN {
		t.Errorf("the packaged node's network: %q, want %q (the LAN only, by default)", stA.Node.Network, kubo.NetworkLAN)
	}
	for _, h := range []*lanHost{b, c} {
		alpmtest.Eventually(t, 60*time.Second, h.name+" finds A's index", func() bool {
			logs, _ := os.ReadFile(h.logs)
			// Found, and listed into the catalog the endpoint decides from.
			return listedIndexOf(string(logs), aID) &&
				bytes.Contains(logs, []byte("index root listed"))
		})
	}
	alpmtest.Eventually(t, 60*time.Second, "B's /metrics counts its LAN peers and agents", func() bool {
		m := getIn(t, b.ns, "127.0.0.1:7878", "/metrics")
		return strings.Contains(m, "\npacman_ipfs_lan_peers 2\n") && strings.Contains(m, "\npacman_ipfs_lan_agents 2\n")
	})
	for _, h := range []*lanHost{b, c} {
		start := time.Now()
		h.sb.Pacman(t, "-S", "small", "large")
		for _, p := range []alpmtest.Pkg{small, large} {
			if _, err := os.Stat(h.sb.Path(p.PayloadPath())); err != nil {
				t.Errorf("%s not installed on %s: %v", p.Name, h.name, err)
			}
		}
		t.Logf("%s installed small and large from the LAN, with no mirror and no --index, in %s", h.name, time.Since(start).Round(time.Millisecond))
	}
	// What came from the LAN is seeded from pacman's cache without a second copy: the blocks kubo fetched
	// for the endpoint are gone by the time the seeder adds the file, so it references the file.
	for _, h := range []*lanHost{b, c} {
		alpmtest.Eventually(t, 60*time.Second, h.name+" seeds large from its cache without a copy", func() bool {
			out, err := h.ipfs("filestore", "ls")
			return err == nil && strings.Contains(out, large.FileName())
		})
	}
}

// waitAgents waits until every host's agent has seen the agents of all the others on the LAN (the peers
// whose agent serves the LAN protocol), and returns the hosts' peer IDs.
func waitAgents(t testing.TB, hosts []*lanHost) map[*lanHost]string {
	t.Helper()
	ids := map[*lanHost]string{}
	for _, h := range hosts {
		ids[h] = h.status(t).Node.ID
	}
	for _, h := range hosts {
		alpmtest.Eventually(t, 90*time.Second, h.name+" sees the other agents", func() bool {
			logs, _ := os.ReadFile(h.logs)
			i := bytes.LastIndex(logs, []byte("agents on the LAN"))
			if i < 0 {
				return false
			}
			line, _, _ := bytes.Cut(logs[i:], []byte("\n"))
			for _, o := range hosts {
				if o != h && !bytes.Contains(line, []byte(ids[o])) {
					return false
				}
			}
			return true
		})
	}
	return ids
}

// pacmanAll runs pacman with args on every host at the same moment and waits for all of them.
func pacmanAll(t testing.TB, hosts []*lanHost, args ...string) map[*lanHost]time.Duration {
	t.Helper()
	var mu sync.Mutex
	took := map[*lanHost]time.Duration{}
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Go(func() {
			start := time.Now()
			out, err := h.sb.PacmanErr(args...)
			mu.Lock()
			took[h] = time.Since(start)
			mu.Unlock()
			if err != nil {
				t.Errorf("pacman %s on %s: %v\n%s", strings.Join(args, " "), h.name, err, out)
			}
		})
	}
	wg.Wait()
	return took
}

// Three machines upgrade at the same moment and nobody on the LAN has the packages yet: each package
// crosses the uplink once, fetched by the machine elected for it and streamed to the two others as it
// arrives; every machine checks it against its own db, and all three install.
func TestLANFetchesFromTheMirrorOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: network namespaces, three kubo nodes, real pacman")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar", "tc")
	pkgs := []alpmtest.Pkg{
		{Name: "small", Size: 400 << 10},
		{Name: "big1", Size: 3 << 20, Ext: ".pkg.tar"},
		{Name: "big2", Size: 3 << 20, Ext: ".pkg.tar"},
	}
	repo := alpmtest.MakeRepo(t, "core", pkgs...)
	lan := newLAN(t, repo, 3)
	// Slow enough that the three downloads overlap, as behind a real uplink.
	m := lan.addMirror(t, repo, "40mbit")
	mirrors := mirrorlist(t, m.url+"/$repo/os/$arch")
	for _, h := range lan.hosts {
		h.startKubo(t)
		alpmtest.CopyFile(t, repo.DB, h.sb.SyncDBPath("core"), 0o644)
		h.sb.Servers = map[string][]string{"core": {"http://127.0.0.1:7878/$repo/os/$arch"}}
		h.sb.WriteConf(t)
		h.startAgent(t, "--mirrorlist", mirrors)
	}
	waitAgents(t, lan.hosts)
	var names []string
	var total int64
	for _, p := range pkgs {
		names = append(names, p.Name)
		fi, err := os.Stat(repo.Files[p.FileName()])
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	took := pacmanAll(t, lan.hosts, append([]string{"-S", "--noconfirm"}, names...)...)
	for _, h := range lan.hosts {
		for _, p := range pkgs {
			if _, err := os.Stat(h.sb.Path(p.PayloadPath())); err != nil {
				t.Errorf("%s not installed on %s: %v", p.Name, h.name, err)
			}
		}
	}
	asked := map[string]int{}
	for _, f := range m.packageRequests() {
		asked[f]++
	}
	for f, n := range asked {
		if n != 1 {
			t.Errorf("the mirror was asked for %s %d times, want once for the LAN", f, n)
		}
	}
	if sent := m.sent.Load(); sent > total*12/10 {
		t.Errorf("the mirror sent %d package bytes for %d bytes of packages, want at most 1.2x", sent, total)
	}
	relayed := 0
	for _, h := range lan.hosts {
		logs, _ := os.ReadFile(h.logs)
		relayed += bytes.Count(logs, []byte("package passed to a neighbour"))
	}
	if relayed == 0 {
		t.Error("no agent passed a package to a neighbour")
	}
	t.Logf("3 machines, %d bytes of packages: the mirror sent %d bytes (%v); %d packages passed between neighbours; took A %s, B %s, C %s",
		total, m.sent.Load(), asked, relayed, took[lan.hosts[0]].Round(time.Millisecond), took[lan.hosts[1]].Round(time.Millisecond), took[lan.hosts[2]].Round(time.Millisecond))
}

// With --prefetch, new sync dbs make the agent fetch the upgrades a LAN neighbour holds into its node
// (not into pacman's cache); `pacman -Su` then installs them with the neighbour gone and no mirror, and
// once installed their prefetch pins go.
func TestLANPrefetchUpgrades(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: network namespaces, two kubo nodes, real pacman")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	v1 := []alpmtest.Pkg{{Name: "small", Size: 400 << 10}, {Name: "big", Size: 3 << 20, Ext: ".pkg.tar"}}
	v2 := []alpmtest.Pkg{{Name: "small", Version: "2.0-1", Size: 420 << 10}, {Name: "big", Version: "2.0-1", Size: 3<<20 + 5, Ext: ".pkg.tar"}}
	repo := alpmtest.MakeRepo(t, "core", v1...)
	hosts := newLAN(t, repo, 2).hosts
	a, b := hosts[0], hosts[1]
	// B has version 1 installed (from its file:// mirror, before the uplink went down).
	b.sb.Wrap = nil
	b.sb.Pacman(t, "-Sy", "--noconfirm", "small", "big")
	b.sb.Wrap = []string{"ip", "netns", "exec", b.ns}
	// Version 2 is out; A has downloaded it.
	repo.Add(t, v2...)
	a.sb.Wrap = nil
	a.sb.Pacman(t, "-Syw", "--noconfirm", "small", "big")
	for _, h := range hosts {
		h.startKubo(t)
	}
	a.startAgent(t)
	b.sb.Servers = map[string][]string{"core": {"http://127.0.0.1:7878/$repo/os/$arch"}}
	b.sb.WriteConf(t)
	b.startAgent(t, "--mirrorlist", mirrorlist(t), "--prefetch")
	b.status(t) // the first connection starts it, as pacman's hook would
	aID := a.status(t).Node.ID
	alpmtest.Eventually(t, 60*time.Second, "B finds A's index", func() bool {
		logs, _ := os.ReadFile(b.logs)
		return listedIndexOf(string(logs), aID)
	})
	// pacman -Sy on B: its sync db is now version 2's.
	alpmtest.CopyFile(t, repo.DB, b.sb.SyncDBPath("core"), 0o644)
	alpmtest.Eventually(t, 120*time.Second, "B prefetches both upgrades", func() bool {
		logs, _ := os.ReadFile(b.logs)
		return bytes.Count(logs, []byte("prefetched from the LAN")) >= 2
	})
	for _, f := range b.sb.CachedPackages(t) {
		if strings.Contains(f, "2.0-1") {
			t.Errorf("prefetching put %s in pacman's cache", f)
		}
	}
	// A leaves the LAN; B upgrades from what it holds.
	ip(t, "-n", a.ns, "link", "set", "eth0", "down")
	start := time.Now()
	b.sb.Pacman(t, "-Su", "--noconfirm")
	took := time.Since(start)
	out := b.sb.Pacman(t, "-Q", "small", "big")
	if strings.Count(out, "2.0-1") != 2 {
		t.Errorf("after -Su on B: %s", out)
	}
	// Installed, the packages are seeded from pacman's cache; kubo keeps one pin per CID, so their pins
	// are the seeder's now and no prefetch pin is left.
	alpmtest.Eventually(t, 60*time.Second, "no prefetch pin left on B", func() bool {
		out, err := b.ipfs("pin", "ls", "--type", "recursive", "--names")
		return err == nil && !strings.Contains(out, prefetch.PinPrefix) && strings.Count(out, node.PinPrefix) == 4
	})
	t.Logf("B upgraded 2 packages from its prefetched blocks, with its neighbour gone and no mirror, in %s", took.Round(time.Millisecond))
}

// listedIndexOf says whether an agent's log shows peer's index found on the LAN and then listed into the
// catalog the endpoint decides requests from (the refresher lists a root found by the LAN exchange
// within its next tick).
func listedIndexOf(logs, peer string) bool {
	found := regexp.MustCompile(`"index found on the LAN" peer=`+regexp.QuoteMeta(peer)+` root=(\S+)`).FindAllStringSubmatch(logs, -1)
	for _, m := range found {
		if strings.Contains(logs, `"index root listed" root=`+m[1]) {
			return true
		}
	}
	return false
}

// At idle exit the agent leaves nothing running behind it: the LAN protocol it mounted on the node is
// gone with it (a neighbour's stream would otherwise be handed to a dead port), as is the process.
func TestIdleExitLeavesNothingBehind(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: a network namespace, the packaged node and the agent")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	repo := alpmtest.MakeRepo(t, "core", alpmtest.Pkg{Name: "small", Size: 10 << 10})
	h := newLAN(t, repo, 1).hosts[0]
	h.sb.Wrap = nil
	h.sb.Pacman(t, "-Sy") // a sync db: with none, the agent keeps retrying, which is not idle
	h.startKubo(t)
	h.startAgent(t, "--idle-exit", "3s")
	h.status(t) // the first connection starts it, as pacman's hook would
	mounted := func() bool {
		out, err := h.ipfs("p2p", "ls")
		return err == nil && strings.Contains(out, lanindex.Protocol)
	}
	alpmtest.Eventually(t, 30*time.Second, "the LAN protocol mounted on the node", mounted)
	alpmtest.Eventually(t, 60*time.Second, "the agent exits idle", func() bool {
		logs, _ := os.ReadFile(h.logs)
		return bytes.Contains(logs, []byte("idle, exiting"))
	})
	alpmtest.Eventually(t, 10*time.Second, "the LAN protocol unmounted after the agent left", func() bool { return !mounted() })
}
