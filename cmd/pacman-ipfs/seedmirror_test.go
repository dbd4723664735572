package main

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/cluster/clustertest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// mirrorBackend is where seed-mirror pins in a test: a kubo node of its own, or a 3-peer cluster.
type mirrorBackend struct {
	name  string
	start func(t *testing.T) (flags []string, pins func() map[string]string, k *kubotest.Node)
}

var mirrorBackends = []mirrorBackend{
	{"kubo", func(t *testing.T) ([]string, func() map[string]string, *kubotest.Node) {
		k := kubotest.Start(t, kubotest.Options{})
		c := k.Client(t)
		return []string{"--api", k.APIAddr}, func() map[string]string {
			pins, err := c.Pins(context.Background(), MirrorPinPrefix)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]string{}
			for c, name := range pins {
				out[name] = c.String()
			}
			return out
		}, k
	}},
	{"cluster", func(t *testing.T) ([]string, func() map[string]string, *kubotest.Node) {
		cl := clustertest.Start(t, 3, kubotest.Options{})
		local := cl.Peers[0]
		c, err := cluster.Dial(context.Background(), local.APIURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// Every pin on 2 of the 3 peers, this machine's among them (it is allocated first, so the
			// cluster never unpins what this node seeded); the other fetched from it (the origins).
			alpmtest.Eventually(t, 2*time.Minute, "every pin on 2 peers", func() bool {
				on := pinnedOnNamed(t, c, MirrorPinPrefix)
				for _, n := range on {
					if n != 2 {
						return false
					}
				}
				return len(on) > 0
			})
			for name, c := range clusterPinsNamed(t, c, MirrorPinPrefix) {
				if _, err := local.Kubo.TryIPFS(t, "pin", "ls", "--type", "recursive", c); err != nil {
					t.Errorf("%s (%s) is not pinned on this machine's node: %v", name, c, err)
				}
			}
		})
		return []string{"--api", local.Kubo.APIAddr, "--cluster", local.APIURL, "--replication", "2"},
			func() map[string]string { return clusterPinsNamed(t, c, MirrorPinPrefix) }, local.Kubo
	}},
}

// seed-mirror on a tree with two repositories, core laid out as Arch's mirrors do (files in pool/,
// links in os/x86_64/) and extra with the files beside its db, through a kubo node and through a
// 3-peer cluster: verified packages and signatures are pinned, a tampered package and a link out of the
// tree are refused, an unchanged tree re-runs without reading a package, an rsync delta is read and
// nothing else, packages that left stay pinned (and in the index) for --keep-days, and --keep-days 0
// unpins them.
func TestSeedMirror(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: real repo-add, kubo and IPFS Cluster")
	}
	alpmtest.Require(t, "repo-add", "repo-remove", "bsdtar")
	for _, b := range mirrorBackends {
		t.Run(b.name, func(t *testing.T) { testSeedMirror(t, b) })
	}
}

func testSeedMirror(t *testing.T, b mirrorBackend) {
	core := alpmtest.MakeRepo(t, "core", alpmtest.Pkg{Name: "a", Size: 10 << 10}, alpmtest.Pkg{Name: "b", Arch: "any", Size: 2 << 20, Sig: true},
		alpmtest.Pkg{Name: "c", Size: 200 << 10})
	extra := alpmtest.MakeRepo(t, "extra", alpmtest.Pkg{Name: "d", Size: 1500 << 10}, alpmtest.Pkg{Name: "e", Size: 20 << 10},
		alpmtest.Pkg{Name: "g", Size: 30 << 10})
	root := t.TempDir()
	alpmtest.SyncMirror(t, root, "x86_64", true, core)
	alpmtest.SyncMirror(t, root, "x86_64", false, extra)
	// An attacker's link out of the tree, and a package whose bytes are not the db's.
	evil := filepath.Join(root, "core", "os", "x86_64", "evil-1.0-1-x86_64.pkg.tar.gz")
	if err := os.Symlink("/etc/passwd", evil); err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(root, "extra", "os", "x86_64", extra.Pkgs["g"].FileName())
	if err := os.WriteFile(tampered, make([]byte, fileSize(t, tampered)), 0o644); err != nil {
		t.Fatal(err)
	}
	flags, pins, k := b.start(t)
	state := t.TempDir()
	// An agent seeding this machine's pacman cache into the same node: its pin is never the tree's.
	other := filepath.Join(t.TempDir(), "x-1-1-x86_64.pkg.tar.zst")
	if err := os.WriteFile(other, []byte("a cached package"), 0o644); err != nil {
		t.Fatal(err)
	}
	agentPin := strings.TrimSpace(k.IPFS(t, "add", "-Q", "--pin-name", node.PinPrefix+"core/x-1-1-x86_64.pkg.tar.zst", other))
	k.IPFS(t, "key", "gen", "mirror")
	flags = append(flags, "--publish-index", "mirror")
	var summary string
	run := func(extraFlags ...string) *reconcile.Report {
		t.Helper()
		r := cli(t, append(append([]string{"seed-mirror", "--root", root, "--state-dir", state}, flags...), extraFlags...)...)
		if r.code != 0 || strings.Count(r.stdout, "\n") != 1 || !strings.HasPrefix(r.stdout, "seed-mirror ") {
			t.Fatalf("seed-mirror %v: exit %d, want 0 and one summary line\n%s%s", extraFlags, r.code, r.stdout, r.stderr)
		}
		summary = r.stdout
		if b.name == "kubo" && !strings.Contains(r.stderr, "also holds a pacman cache's pins") {
			t.Errorf("no warning that the node also seeds a pacman cache:\n%s", r.stderr)
		}
		t.Logf("seed-mirror %v: %s", extraFlags, strings.TrimSpace(summary))
		rep, err := reconcile.ReadLastReport(state)
		if err != nil || rep == nil {
			t.Fatalf("last report: %v", err)
		}
		return rep
	}
	name := func(r *alpmtest.Repo, pkg, suffix string) string {
		return MirrorPinPrefix + r.Name + "/" + r.Pkgs[pkg].FileName() + suffix
	}

	rep := run()
	want := []string{name(core, "a", ""), name(core, "b", ""), name(core, "b", ".sig"), name(core, "c", ""), name(extra, "d", ""), name(extra, "e", "")}
	if got := slices.Sorted(maps.Keys(pins())); !slices.Equal(got, want) || rep.Added != 6 {
		t.Fatalf("first run: added %d, pins %v, want %v", rep.Added, got, want)
	}
	refused := map[string]string{}
	for _, n := range rep.Refused {
		refused[n.Path] = n.Reason
	}
	if !strings.Contains(refused[evil], "symlink") || !strings.Contains(refused[tampered], "sha256 mismatch") || len(refused) != 2 {
		t.Errorf("refused: %v, want the link and the tampered package", refused)
	}
	oldA := "/pacman-ipfs-mirror/core/os/x86_64/" + core.Pkgs["a"].FileName()
	k.IPFS(t, "files", "stat", oldA)
	// The index is published under the key, and the summary says which DNSLink record points at it.
	if rep.IndexName == "" || !strings.Contains(summary, `"dnslink=`+rep.IndexName+`"`) ||
		strings.TrimSpace(k.IPFS(t, "name", "resolve", "--offline", rep.IndexName)) != rep.Index {
		t.Errorf("published index: name %q, index %q, summary %s", rep.IndexName, rep.Index, summary)
	}

	// status reads the tree's state directory: what is seeded per repository, the published index and,
	// with a cluster, our pins' states on its peers.
	stArgs := []string{"status", "--json", "--state-dir", state}
	for i := 0; i+1 < len(flags); i += 2 {
		if flags[i] == "--api" || flags[i] == "--cluster" {
			stArgs = append(stArgs, flags[i], flags[i+1])
		}
	}
	var st status
	if r := cli(t, stArgs...); json.Unmarshal([]byte(r.stdout), &st) != nil || st.Repos["core"].Files != 4 ||
		st.Repos["extra"].Files != 2 || st.IndexName != rep.IndexName || (b.name == "cluster") != (st.Cluster != nil) ||
		!st.MirrorTree || st.Node.Pins != 6 {
		t.Errorf("status of the tree: %+v\n%s%s", st, r.stdout, r.stderr)
	} else if st.Cluster != nil && st.Cluster.Repos["core"].Pins != 4 {
		t.Errorf("status's cluster: %+v", st.Cluster)
	}

	if rep := run(); rep.HashedBytes != 0 || rep.Added != 0 || rep.Seeded != 6 {
		t.Errorf("unchanged tree: hashed %d bytes, added %d, already seeded %d; want 0, 0, 6", rep.HashedBytes, rep.Added, rep.Seeded)
	}

	// The day's rsync: a newer a in core, e gone from extra (both files deleted by rsync), and g repaired.
	oldPins := pins()
	newA := alpmtest.Pkg{Name: "a", Version: "1.1-1", Size: 12 << 10}
	core.Add(t, newA)
	extra.Remove(t, "e")
	alpmtest.SyncMirror(t, root, "x86_64", true, core)
	alpmtest.SyncMirror(t, root, "x86_64", false, extra)
	rep = run()
	delta := fileSize(t, filepath.Join(root, "pool", "packages", newA.FileName())) + fileSize(t, tampered)
	if rep.Added != 2 || rep.HashedBytes != int64(delta) || rep.Retained != 2 || rep.Unpinned != 0 || len(rep.Refused) != 0 {
		t.Errorf("after the delta: added %d, hashed %d bytes, retained %d, unpinned %d, refused %d; want 2, the new a's and g's size, 2, 0, 0 (rsync deleted the link)",
			rep.Added, rep.HashedBytes, rep.Retained, rep.Unpinned, len(rep.Refused))
	}
	after := pins()
	for n, c := range oldPins {
		if after[n] != c {
			t.Errorf("pin %s dropped within --keep-days", n)
		}
	}
	k.IPFS(t, "files", "stat", oldA) // a downgrade is still where it was
	k.IPFS(t, "files", "stat", "/pacman-ipfs-mirror/core/os/x86_64/"+newA.FileName())

	rep = run("--keep-days", "0")
	if rep.Unpinned != 2 || rep.Retained != 0 {
		t.Errorf("--keep-days 0: unpinned %d, retained %d; want 2, 0", rep.Unpinned, rep.Retained)
	}
	final := pins()
	if len(final) != 6 || final[name(core, "a", "")] == "" || final[name(extra, "g", "")] == "" {
		t.Errorf("pins after --keep-days 0: %v", final)
	}
	if out := k.IPFS(t, "pin", "ls", "--names", agentPin); !strings.Contains(out, node.PinPrefix) {
		t.Errorf("the agent's pin was touched: %s", out)
	}
	if _, err := k.TryIPFS(t, "files", "stat", oldA); err == nil {
		t.Error("the unpinned old a is still in the index")
	}

	// A key that does not exist yet: the run says so; once it is made, the next run publishes under it
	// although the tree did not change.
	r := cli(t, append(append([]string{"seed-mirror", "--root", root, "--state-dir", state, "--keep-days", "0"}, flags...), "--publish-index", "later")...)
	if r.code != 1 || !strings.Contains(r.stderr, `key "later"`) {
		t.Errorf("publishing under a missing key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	k.IPFS(t, "key", "gen", "later")
	later := strings.TrimSpace(k.IPFS(t, "key", "list", "-l", "--ipns-base", "base36"))
	if rep := run("--keep-days", "0", "--publish-index", "later"); rep.IndexName == "" || !strings.Contains(later, strings.TrimPrefix(rep.IndexName, "/ipns/")+" later") {
		t.Errorf("after ipfs key gen: published as %q; keys:\n%s", rep.IndexName, later)
	}
}

// Two runs on one state directory: the second is refused at once, naming it.
func TestSeedMirrorLock(t *testing.T) {
	state := t.TempDir()
	f, err := os.OpenFile(filepath.Join(state, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "core", "os", "x86_64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "core", "os", "x86_64", "core.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "seed-mirror", "--root", root, "--state-dir", state, "--api", "/ip4/127.0.0.1/tcp/1")
	if r.code != 1 || !strings.Contains(r.stderr, "in use by another seed-mirror run") || !strings.Contains(r.stderr, state) {
		t.Errorf("second run: exit %d\n%s", r.code, r.stderr)
	}
}

// The packaged oneshot unit's command, as systemd runs it: ExecStart from
// packaging/pacman-ipfs-seed-mirror.service expanded with the shipped packaging/seed-mirror.conf (its
// MIRROR_ROOT pointed at a test tree), the kubo address handed over as the credential kubo-api, an empty
// cluster-api credential (no cluster), and $STATE_DIRECTORY as StateDirectory= sets it. It seeds the tree
// and prints one summary line.
func TestSeedMirrorUnit(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: real repo-add and kubo")
	}
	alpmtest.Require(t, "repo-add", "bsdtar")
	core := alpmtest.MakeRepo(t, "core", alpmtest.Pkg{Name: "a", Size: 10 << 10}, alpmtest.Pkg{Name: "b", Size: 2 << 20})
	// A repository whose db carries no signatures (pacman 7's repo-add), on a machine with no keyring.
	extra := alpmtest.MakeRepo(t, "extra")
	extra.NoDBSigs = true
	extra.Add(t, alpmtest.Pkg{Name: "s", Size: 1 << 10, Sig: true})
	root := t.TempDir()
	alpmtest.SyncMirror(t, root, "x86_64", true, core, extra)
	k := kubotest.Start(t, kubotest.Options{})

	env := readEnvironmentFile(t, "../../packaging/seed-mirror.conf")
	if env["MIRROR_ROOT"] == "" {
		t.Fatalf("seed-mirror.conf sets no MIRROR_ROOT: %v", env)
	}
	env["MIRROR_ROOT"] = root
	env["SEED_MIRROR_FLAGS"] = "--keep-days 0 --gpg-dir " + filepath.Join(t.TempDir(), "no-keyring")
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "kubo-api"), []byte(k.APIAddr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(creds, "cluster-api"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	argv := unitExecStart(t, "../../packaging/pacman-ipfs-seed-mirror.service", env)
	if argv[0] != "/usr/bin/pacman-ipfs" || argv[1] != "seed-mirror" {
		t.Fatalf("ExecStart = %q", argv)
	}
	state := t.TempDir()
	exe, _ := os.Executable()
	cmd := exec.Command(exe, argv[1:]...)
	cmd.Env = append(os.Environ(), "PACMAN_IPFS_BE_CLI=1", "CREDENTIALS_DIRECTORY="+creds, "STATE_DIRECTORY="+state,
		"IPFS_PATH="+filepath.Join(t.TempDir(), "none"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || strings.Count(string(out), "\n") != 1 || !strings.Contains(string(out), "added 3") {
		t.Fatalf("the unit's command %q: %v\n%s%s", argv, err, out, stderr.String())
	}
	if rep, err := reconcile.ReadLastReport(state); err != nil || rep == nil || rep.Added != 3 || len(rep.Refused) != 1 {
		t.Errorf("no report of the run in $STATE_DIRECTORY: %v %+v", err, rep)
	}
	// The refused signature is normal in a cache but not in a tree: the journal gets a warning.
	if !strings.Contains(stderr.String(), "signatures refused") || !strings.Contains(stderr.String(), "files=1") {
		t.Errorf("no warning about the signatures refused for want of a keyring:\n%s", stderr.String())
	}
}

// readEnvironmentFile reads KEY=VALUE lines as systemd's EnvironmentFile= does (comments, blank lines;
// no quoting is used in the files we ship).
func readEnvironmentFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(v, `"'\`) {
			t.Fatalf("%s: %q is not a plain KEY=VALUE line", path, line)
		}
		env[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return env
}

// unitExecStart is a unit's ExecStart= as systemd expands it: ${VAR} is one word, $VAR a word per
// white-space-separated part of its value (none when it is empty).
func unitExecStart(t *testing.T, unit string, env map[string]string) []string {
	t.Helper()
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "ExecStart="); ok {
			line = v
		}
	}
	var argv []string
	for _, w := range strings.Fields(line) {
		switch {
		case strings.HasPrefix(w, "${") && strings.HasSuffix(w, "}"):
			argv = append(argv, env[w[2:len(w)-1]])
		case strings.HasPrefix(w, "$"):
			argv = append(argv, strings.Fields(env[w[1:]])...)
		default:
			argv = append(argv, w)
		}
	}
	if len(argv) < 2 {
		t.Fatalf("%s: ExecStart %q", unit, line)
	}
	return argv
}
