package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The dependency rules, as guards (in the manner of tailscale's deptest): what links what is checked on
// every test run, not hoped for.

const (
	module = "github.com/pacman-ipfs/pacman-ipfs"
	goALPM = "github.com/Jguer/go-alpm/v2"
)

// goList runs `go list` with args in the module and returns one line per package: the import path, then
// the package's own imports, space-separated.
func goList(t *testing.T, env []string, args ...string) map[string][]string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	cmd := exec.Command("go", append([]string{"list", "-f", `{{.ImportPath}} {{join .Imports " "}}{{if .Error}} ERROR:{{.Error}}{{end}}`}, args...)...)
	cmd.Dir = "../.."
	// Imports do not depend on build flags, and some cannot go with CGO_ENABLED=0 (makepkg's
	// -buildmode=pie and -linkmode=external): go list gets none.
	cmd.Env = append(os.Environ(), append([]string{"GOFLAGS="}, env...)...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	pkgs := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			pkgs[f[0]] = f[1:]
		}
	}
	return pkgs
}

// importers lists the packages of pkgs that import p.
func importers(pkgs map[string][]string, p string) []string {
	var out []string
	for k, imps := range pkgs {
		if slices.Contains(imps, p) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// libalpm is used by alpmdb alone: its handles are not goroutine-safe and go-alpm keeps callbacks in
// globals, which alpmdb's one mutex accounts for.
func TestDepsLibalpmOnlyInAlpmdb(t *testing.T) {
	pkgs := goList(t, nil, "./...")
	var bad []string
	for _, p := range importers(pkgs, goALPM) {
		if p != module+"/alpmdb" {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Errorf("go-alpm imported outside alpmdb by %v", bad)
	}
}

// The agent's binary links no test helper: not the project's own (alpmtest, kubotest, nodetest, the
// in-memory node), not boxo's merkledag mock. The standard library's testing package comes in only
// through go-libp2p-kad-dht (its dht_options.go), which kubo's RPC client pulls in: nothing of ours.
func TestDepsNoTestHelpersInTheAgent(t *testing.T) {
	pkgs := goList(t, nil, "-deps", "./cmd/pacman-ipfs")
	for p := range pkgs {
		if strings.HasPrefix(p, module+"/") && (strings.HasSuffix(p, "test") || strings.HasSuffix(p, "/memnode")) ||
			p == "github.com/ipfs/boxo/ipld/merkledag/test" {
			t.Errorf("the agent links the test helper %s (imported by %v)", p, importers(pkgs, p))
		}
	}
	if got := importers(pkgs, "testing"); !slices.Equal(got, []string{"github.com/libp2p/go-libp2p-kad-dht"}) {
		t.Errorf("package testing is imported by %v; want go-libp2p-kad-dht alone", got)
	}
}

// The hook's client is small and static: no cgo, no kubo, no libalpm, no IPFS library; it only writes to
// the control socket.
func TestDepsNotifyIsStatic(t *testing.T) {
	pkgs := goList(t, []string{"CGO_ENABLED=0"}, "-e", "-deps", "./cmd/pacman-ipfs-notify")
	for p, imps := range pkgs {
		if i := slices.IndexFunc(imps, func(s string) bool { return strings.HasPrefix(s, "ERROR:") }); i >= 0 {
			t.Errorf("%s does not build without cgo: %s", p, strings.Join(imps[i:], " "))
		}
		for _, banned := range []string{goALPM, "github.com/ipfs/", "github.com/libp2p/", module + "/seeder/node/kubo", "testing", "C"} {
			if p == banned || strings.HasSuffix(banned, "/") && strings.HasPrefix(p, banned) {
				t.Errorf("pacman-ipfs-notify links %s (imported by %v)", p, importers(pkgs, p))
			}
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found nothing")
	}
}

// The imports between the project's own packages run one way, so the data flow reads top-down:
// cmd -> agent -> reconcile -> node; the endpoint beside the reconcile, never importing it; the catalog
// (what is known of who holds what) below the agent, the endpoint and the prefetcher, which share it. Each row
// names a package (or a folder of them) and what it must never import.
func TestDepsLayersRunOneWay(t *testing.T) {
	pkgs := goList(t, nil, "./...")
	s := module + "/seeder/"
	rules := []struct {
		pkg   string // a package, or a folder ending in "/"
		never []string
	}{
		{s + "node/", []string{s + "reconcile", s + "agent", s + "endpoint", s + "prefetch", s + "lanindex", s + "catalog", module + "/alpmdb"}},
		{s + "catalog", []string{s + "reconcile", s + "agent", s + "endpoint", s + "prefetch", s + "lanindex", s + "node/kubo", s + "node/memnode"}},
		{s + "node", []string{s + "reconcile", s + "agent", s + "endpoint", module + "/alpmdb"}},
		{s + "reconcile", []string{s + "agent", s + "endpoint", s + "prefetch", s + "lanindex", s + "node/kubo", s + "node/memnode"}},
		{s + "endpoint", []string{s + "reconcile", s + "agent", s + "prefetch", s + "node/kubo", s + "node/memnode"}},
		{s + "agent", []string{s + "endpoint", s + "prefetch", s + "lanindex", s + "node/kubo", s + "node/memnode"}},
		{s + "prefetch", []string{s + "reconcile", s + "agent", s + "endpoint", s + "node/kubo"}},
		{s + "lanindex", []string{s + "reconcile", s + "agent", s + "endpoint", s + "prefetch"}},
		{s + "sigcheck", []string{s}},
		{s + "atomicfile", []string{s}},
		{s + "units", []string{s}},
		{module + "/alpmdb/ini", []string{goALPM, module + "/alpmdb", s}},
	}
	for _, r := range rules {
		for p, imps := range pkgs {
			if p != r.pkg && !(strings.HasSuffix(r.pkg, "/") && strings.HasPrefix(p, r.pkg)) {
				continue
			}
			if strings.HasSuffix(p, "test") {
				continue // test helpers start what they test
			}
			for _, imp := range imps {
				for _, banned := range r.never {
					if imp == banned || strings.HasSuffix(banned, "/") && strings.HasPrefix(imp, banned) && !strings.HasPrefix(imp, p) {
						t.Errorf("%s imports %s: the layers run the other way", p, imp)
					}
				}
			}
		}
	}
}
