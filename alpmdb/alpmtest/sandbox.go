package alpmtest

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Sandbox is a pacman root under t.TempDir() with its own pacman.conf, so
// real pacman can sync, download and install without touching the host.
type Sandbox struct {
	Root     string // the install root
	DBPath   string // Root/var/lib/pacman/
	CacheDir string // Root/var/cache/pacman/pkg/
	HookDir  string // Root/etc/pacman.d/hooks/
	LogFile  string // Root/var/log/pacman.log
	GPGDir   string // Root/etc/pacman.d/gnupg/
	Conf     string // Root/etc/pacman.conf
	Repos    []*Repo
	// Servers overrides the Server lines of a repo's section, by repo name
	// (e.g. to point pacman at a gateway); repos without an entry are served
	// from file://<repo.Dir>. Call WriteConf after changing it.
	Servers map[string][]string
	// CacheServers are a repo's CacheServer lines (pacman 6.1 and later), written before its Servers.
	CacheServers map[string][]string
	// Includes makes a repo's section "Include = FILE" (a mirrorlist, as Arch's pacman.conf has it)
	// instead of Server lines. Call WriteConf after changing it.
	Includes map[string]string
	// Options are extra lines for [options], e.g. "XferCommand = ...".
	// Call WriteConf after changing it.
	Options []string
	// Wrap is put before "pacman" when it runs, e.g. {"ip", "netns", "exec", "host1"} to run it on a
	// test host in a network namespace.
	Wrap []string
	// SigLevel is pacman's SigLevel, "Never" when empty: test packages are unsigned or carry made-up
	// signatures unless a Signer signed them and Signer.Trust put its key into GPGDir.
	SigLevel string
}

// NewSandbox makes the sandbox's directories and writes Conf with one
// section per repo, in order.
func NewSandbox(t testing.TB, repos ...*Repo) *Sandbox {
	t.Helper()
	root := t.TempDir()
	s := &Sandbox{
		Root:     root,
		DBPath:   filepath.Join(root, "var", "lib", "pacman") + "/",
		CacheDir: filepath.Join(root, "var", "cache", "pacman", "pkg") + "/",
		HookDir:  filepath.Join(root, "etc", "pacman.d", "hooks") + "/",
		LogFile:  filepath.Join(root, "var", "log", "pacman.log"),
		GPGDir:   filepath.Join(root, "etc", "pacman.d", "gnupg") + "/",
		Conf:     filepath.Join(root, "etc", "pacman.conf"),
		Repos:    repos,
		Servers:  map[string][]string{},
	}
	for _, dir := range []string{
		filepath.Join(s.DBPath, "sync"),
		s.CacheDir,
		s.HookDir,
		filepath.Dir(s.LogFile),
	} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("alpmtest: %v", err)
		}
	}
	// gpg insists its home is private.
	if err := os.MkdirAll(s.GPGDir, 0o700); err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	s.WriteConf(t)
	return s
}

// ConfText is the pacman.conf WriteConf writes.
func (s *Sandbox) ConfText() string {
	var b strings.Builder
	b.WriteString("# pacman.conf of an alpmtest sandbox\n[options]\n")
	for _, kv := range [][2]string{
		{"RootDir", s.Root},
		{"DBPath", s.DBPath},
		{"CacheDir", s.CacheDir},
		{"HookDir", s.HookDir},
		{"LogFile", s.LogFile},
		{"GPGDir", s.GPGDir},
		{"Architecture", DefaultArch},
		{"SigLevel", cmp.Or(s.SigLevel, "Never")},
	} {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	for _, line := range s.Options {
		b.WriteString(line + "\n")
	}
	for _, r := range s.Repos {
		fmt.Fprintf(&b, "\n[%s]\n", r.Name)
		for _, cs := range s.CacheServers[r.Name] {
			fmt.Fprintf(&b, "CacheServer = %s\n", cs)
		}
		if inc, ok := s.Includes[r.Name]; ok {
			fmt.Fprintf(&b, "Include = %s\n", inc)
			continue
		}
		servers, ok := s.Servers[r.Name]
		if !ok {
			servers = []string{"file://" + r.Dir}
		}
		for _, server := range servers {
			fmt.Fprintf(&b, "Server = %s\n", server)
		}
	}
	return b.String()
}

// WriteConf (re)writes Conf from the sandbox's fields.
func (s *Sandbox) WriteConf(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(s.Conf, []byte(s.ConfText()), 0o644); err != nil {
		t.Fatalf("alpmtest: writing %s: %v", s.Conf, err)
	}
}

// PacmanArgs is the command line Pacman runs, minus "pacman".
func (s *Sandbox) PacmanArgs(args ...string) []string {
	return append([]string{
		"--config", s.Conf,
		"--root", s.Root,
		"--dbpath", s.DBPath,
		"--cachedir", s.CacheDir,
		"--hookdir", s.HookDir,
		"--noconfirm",
	}, args...)
}

// Pacman runs real pacman on the sandbox with args, fails the test with the
// combined output if pacman fails, and returns the combined output.
func (s *Sandbox) Pacman(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.PacmanErr(args...)
	if err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	return out
}

// PacmanErr is Pacman for tests that expect pacman to fail: it returns the
// combined output and pacman's error instead of failing the test.
func (s *Sandbox) PacmanErr(args ...string) (string, error) {
	if len(s.Wrap) > 0 {
		return run(s.Root, s.Wrap[0], append(append(s.Wrap[1:len(s.Wrap):len(s.Wrap)], "pacman"), s.PacmanArgs(args...)...)...)
	}
	return run(s.Root, "pacman", s.PacmanArgs(args...)...)
}

// SyncDBPath is where pacman keeps repo name's database after -Sy.
func (s *Sandbox) SyncDBPath(name string) string {
	return filepath.Join(s.DBPath, "sync", name+".db")
}

// Path is rel (e.g. a Pkg.PayloadPath) inside the sandbox's root.
func (s *Sandbox) Path(rel string) string {
	return filepath.Join(s.Root, rel)
}

// CachedPackages lists the package files in the sandbox's cache (regular files named *.pkg.tar*,
// detached signatures included), sorted: what a seeder of this cache must have pinned.
func (s *Sandbox) CachedPackages(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(s.CacheDir)
	if err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.Contains(e.Name(), ".pkg.tar") {
			names = append(names, e.Name())
		}
	}
	return names
}

// CopyFile copies from to to with mode, making to's directory: a package put into a cache by hand, a
// binary put into a sandbox root.
func CopyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatalf("alpmtest: %v", err)
	}
}
