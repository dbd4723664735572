package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
)

// The test binary doubles as the command (built with the same tags), so the tests run the real CLI with
// its real exit codes.
func TestMain(m *testing.M) {
	serveRepoIfAsked()
	floodIfAsked()
	if os.Getenv("PACMAN_IPFS_BE_CLI") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func cli(t testing.TB, args ...string) result {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), "PACMAN_IPFS_BE_CLI=1", "IPFS_PATH="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err = cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

// sandbox is a pacman root with two downloaded packages, one file no db vouches for, and a kubo node.
func sandbox(t *testing.T) (*alpmtest.Sandbox, *kubotest.Node) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration: real pacman and kubo")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar")
	repo := alpmtest.MakeRepo(t, "core", alpmtest.Pkg{Name: "a", Size: 10 << 10}, alpmtest.Pkg{Name: "b", Size: 2 << 20})
	sb := alpmtest.NewSandbox(t, repo)
	sb.Pacman(t, "-Syw", "a", "b")
	if err := os.WriteFile(filepath.Join(sb.CacheDir, "stray.pkg.tar.zst"), []byte("not from any repo"), 0o644); err != nil {
		t.Fatal(err)
	}
	return sb, kubotest.Start(t, kubotest.Options{Filestore: true, RepoDir: filepath.Join(sb.Root, "var", "cache", "pacman-ipfs")})
}

func TestSyncThenStatus(t *testing.T) {
	sb, node := sandbox(t)
	state := t.TempDir()
	flags := []string{"--pacman-conf", sb.Conf, "--api", node.APIAddr, "--state-dir", state}

	r := cli(t, append([]string{"sync"}, flags...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "added 2") || !strings.Contains(r.stdout, "stray.pkg.tar.zst") {
		t.Fatalf("sync: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stderr, "\r") {
		t.Errorf("a progress line went to a pipe: %q", r.stderr)
	}
	r = cli(t, append([]string{"sync"}, flags...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "added 0") || !strings.Contains(r.stdout, "already seeded 2") {
		t.Errorf("second sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = cli(t, append([]string{"status", "--json"}, flags[2:]...)...)
	if r.code != 0 {
		t.Fatalf("status --json: exit %d: %s", r.code, r.stderr)
	}
	var st status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	if !st.Node.Reachable || st.Node.Pins != 2 || st.Seeded.Files != 2 || st.Repos["core"].Files != 2 ||
		st.LastSync == nil || !st.LastSync.Converged || len(st.Dirs) != 1 || !st.Dirs[0].NoCopy || len(st.Refused) != 1 {
		t.Errorf("status --json:\n%s", r.stdout)
	}

	r = cli(t, append([]string{"status"}, flags[2:]...)...)
	for _, want := range []string{"seeded:    2 files", "zero-copy", "core", "stray.pkg.tar.zst", "not in any sync db"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status does not say %q:\n%s", want, r.stdout)
		}
	}
}

func TestSyncWithNodeDown(t *testing.T) {
	sb, node := sandbox(t)
	state := t.TempDir()
	flags := []string{"--pacman-conf", sb.Conf, "--api", node.APIAddr, "--state-dir", state}
	if r := cli(t, append([]string{"sync"}, flags...)...); r.code != 0 {
		t.Fatalf("sync: %d %s", r.code, r.stderr)
	}
	before, err := os.ReadFile(filepath.Join(state, reconcile.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	node.Stop(t)

	r := cli(t, append([]string{"sync"}, flags...)...)
	if r.code == 0 || r.took > 10*time.Second {
		t.Errorf("sync with kubo down: exit %d after %s", r.code, r.took)
	}
	for _, want := range []string{node.APIAddr, "ipfs daemon"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error does not mention %q:\n%s", want, r.stderr)
		}
	}
	after, _ := os.ReadFile(filepath.Join(state, reconcile.StateFile))
	if !bytes.Equal(before, after) {
		t.Error("a failed sync changed the state file")
	}
	// status still answers, and says the node is down.
	r = cli(t, append([]string{"status"}, flags[2:]...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "not reachable") || !strings.Contains(r.stdout, "seeded:    2 files") {
		t.Errorf("status with kubo down: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestSyncWithoutReadableDB(t *testing.T) {
	sb, node := sandbox(t)
	if err := os.Remove(sb.SyncDBPath("core")); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "sync", "--pacman-conf", sb.Conf, "--api", node.APIAddr, "--state-dir", t.TempDir())
	if r.code == 0 || !strings.Contains(r.stderr, "no readable sync database") || !strings.Contains(r.stderr, sb.SyncDBPath("core")) {
		t.Errorf("sync with no db: exit %d\n%s", r.code, r.stderr)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{name: "no command", code: 2, out: "usage: pacman-ipfs"},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, out: `unknown command "frobnicate"`},
		{name: "bad flag", args: []string{"sync", "--nope"}, code: 2, out: "flag provided but not defined"},
		{name: "stray argument", args: []string{"status", "extra"}, code: 2, out: `unexpected argument "extra"`},
		{name: "a flag the command does not use", args: []string{"status", "--pacman-conf", "/etc/pacman.conf"}, code: 2, out: "flag provided but not defined: -pacman-conf"},
		{name: "help", args: []string{"sync", "-h"}, code: 0, out: "--pacman-conf"},
		{name: "seed-mirror without --root", args: []string{"seed-mirror", "--state-dir", "/nonexistent"}, code: 2, out: "--root DIR is required"},
		{name: "seed-mirror reads no pacman.conf", args: []string{"seed-mirror", "--pacman-conf", "/etc/pacman.conf"}, code: 2, out: "flag provided but not defined: -pacman-conf"},
		{name: "seed-mirror on a tree without dbs", args: []string{"seed-mirror", "--root", "/proc/self", "--state-dir", "/tmp/pacman-ipfs-usage-test"}, code: 1, out: "no <repo>/os/<arch>/<repo>.db under /proc/self"},
		{name: "a replication factor without a cluster", args: []string{"sync", "--replication", "2", "--pacman-conf", "/etc/pacman.conf", "--api", "/ip4/127.0.0.1/tcp/1"}, code: 1, out: "--replication 2: a replication factor needs --cluster"},
		{name: "missing pacman.conf", args: []string{"sync", "--pacman-conf", "/nonexistent/pacman.conf"}, code: 1, out: "/nonexistent/pacman.conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stdout+r.stderr, strings.TrimPrefix(tt.out, "--")) {
				t.Errorf("exit %d, want %d; output:\n%s%s", r.code, tt.code, r.stdout, r.stderr)
			}
		})
	}
}
