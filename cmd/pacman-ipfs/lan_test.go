package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/kubo/kubotest"
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

// newLAN makes n hosts on a bridge that lives in a namespace of its own, with private addresses (a /24
// of 10.77.0.0/16), routes to nothing but the subnet and multicast (224.0.0.0/4, for mDNS), and no
// default route. Everything is removed at cleanup.
func newLAN(t *testing.T, repo *alpmtest.Repo, n int) []*lanHost {
	t.Helper()
	alpmtest.Require(t, "ip", "systemd-socket-activate")
	alpmtest.RequireRoot(t)
	if out, _ := exec.Command("ip", "-br", "addr").Output(); bytes.Contains(out, []byte("10.77.")) {
		t.Skipf("this machine already has addresses in 10.77.0.0/16:\n%s", out)
	}
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	subnet := fmt.Sprintf("10.77.%d", os.Getpid()%250+1)
	br := "pi-lan" + tag
	ipc := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ipc("netns", "add", br)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", br).Run() })
	ipc("-n", br, "link", "set", "lo", "up")
	ipc("-n", br, "link", "add", "br0", "type", "bridge")
	ipc("-n", br, "link", "set", "br0", "up")
	var hosts []*lanHost
	for i := range n {
		h := &lanHost{name: string(rune('A' + i)), ns: fmt.Sprintf("pi-h%d-%s", i, tag), ip: fmt.Sprintf("%s.%d", subnet, i+1)}
		ipc("netns", "add", h.ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", h.ns).Run() })
		veth, port := fmt.Sprintf("pv%d-%s", i, tag), fmt.Sprintf("pb%d-%s", i, tag)
		ipc("link", "add", veth, "type", "veth", "peer", "name", port)
		ipc("link", "set", veth, "netns", h.ns)
		ipc("link", "set", port, "netns", br)
		ipc("-n", br, "link", "set", port, "master", "br0")
		ipc("-n", br, "link", "set", port, "up")
		ipc("-n", h.ns, "link", "set", "lo", "up")
		ipc("-n", h.ns, "link", "set", veth, "name", "eth0")
		ipc("-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
		ipc("-n", h.ns, "link", "set", "eth0", "up")
		ipc("-n", h.ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
		h.sb = alpmtest.NewSandbox(t, repo)
		h.sb.Wrap = []string{"ip", "netns", "exec", h.ns}
		h.repo = filepath.Join(h.sb.Root, "var", "cache", "pacman-ipfs")
		hosts = append(hosts, h)
	}
	return hosts
}

func (h *lanHost) cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.ns}, args...)...)
}

// startKubo initialises the node with packaging/pacman-ipfs-kubo-init and the environment of
// pacman-ipfs-kubo.service, then makes it a test node (no bootstrap peers, no AutoConf fetched from the
// internet) and starts `ipfs daemon --migrate` in the host's namespace, as the unit does.
func (h *lanHost) startKubo(t *testing.T) {
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
	within(t, 60*time.Second, "kubo on "+h.name, func() bool {
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
// flags; no --api (the packaged node is at the default address) and no --index.
func (h *lanHost) startAgent(t *testing.T, extra ...string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h.control = filepath.Join(t.TempDir(), "control.sock")
	h.logs = runLogged(t, h.cmd(append([]string{"systemd-socket-activate", "-l", "127.0.0.1:7878", "-l", h.control,
		"-E", "PACMAN_IPFS_BE_CLI=1", "-E", "IPFS_PATH=" + filepath.Join(t.TempDir(), "none"),
		exe, "agent", "--idle-exit", "15m", "--pacman-conf", h.sb.Conf, "--state-dir", t.TempDir(), "-v",
		"--quiet", "200ms"}, extra...)...), syscall.SIGTERM, "agent on "+h.name)
	within(t, 10*time.Second, "the control socket on "+h.name, func() bool { _, err := os.Stat(h.control); return err == nil })
}

// status runs `pacman-ipfs status --json` in the host's namespace.
func (h *lanHost) status(t *testing.T) status {
	t.Helper()
	exe, _ := os.Executable()
	c := h.cmd(exe, "status", "--json", "--socket", h.control, "--pacman-conf", h.sb.Conf, "--state-dir", t.TempDir())
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
	hosts := newLAN(t, repo, 3)
	a, b, c := hosts[0], hosts[1], hosts[2]
	for _, h := range hosts {
		h.startKubo(t)
	}
	// A downloaded small once, from its mirror (a file:// one, outside the LAN).
	a.sb.Wrap = nil
	a.sb.Pacman(t, "-Syw", "small", "large")
	a.startAgent(t)
	within(t, 30*time.Second, "A seeds small and large", func() bool { return a.status(t).Node.Pins == 2 })

	// B and C: the endpoint is their only Server, its mirrorlist is empty (the uplink is down), their
	// sync dbs are those of an earlier -Sy.
	none := mirrorlist(t)
	for _, h := range []*lanHost{b, c} {
		alpmtest.CopyFile(t, repo.DB, h.sb.SyncDBPath("core"), 0o644)
		h.sb.Servers = map[string][]string{"core": {"http://127.0.0.1:7878/$repo/os/$arch"}}
		h.sb.WriteConf(t)
		h.startAgent(t, "--mirrorlist", none)
	}
	took := within(t, 60*time.Second, "every node sees the two others on the LAN", func() bool {
		for _, h := range hosts {
			if len(h.status(t).Node.LANPeers) < 2 {
				return false
			}
		}
		return true
	})
	t.Logf("mDNS: every node saw both others %s after the agents started; B's status: %v", took.Round(time.Millisecond), b.status(t).Node.LANPeers)

	// large's CID is in A's index only, which B and C find under /ipns/<A's peer ID>.
	aID := a.status(t).Node.ID
	for _, h := range []*lanHost{b, c} {
		within(t, 60*time.Second, h.name+" finds A's index", func() bool {
			logs, _ := os.ReadFile(h.logs)
			return bytes.Contains(logs, []byte("index found on the LAN")) && bytes.Contains(logs, []byte(aID))
		})
	}
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
}
