package alpmtest // import "github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// RequireToolsEnv, when set to "1", turns the skips of Require and
// RequireRoot into failures so CI cannot silently skip the integration tests.
const RequireToolsEnv = "PACMAN_IPFS_REQUIRE_TOOLS"

// defaultTools is what Require checks when called without tools: everything
// this package runs.
func defaultTools() []string { return []string{"pacman", "repo-add", "repo-remove", "bsdtar"} }

// Require skips the test when one of tools is not in $PATH. When tools
// include "pacman" it also requires root, since every pacman operation on a
// Sandbox (-Sy, -Sw, -S) refuses to run otherwise. Without tools it checks
// every tool this package runs. With PACMAN_IPFS_REQUIRE_TOOLS=1 it fails instead of skipping.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	if len(tools) == 0 {
		tools = defaultTools()
	}
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		unavailable(t, "alpmtest: missing tools: %s", strings.Join(missing, ", "))
	}
	if slices.Contains(tools, "pacman") {
		RequireRoot(t)
	}
}

// RequireRoot skips the test unless it runs as root (pacman -S refuses
// otherwise), or fails it with PACMAN_IPFS_REQUIRE_TOOLS=1.
func RequireRoot(t testing.TB) {
	t.Helper()
	if euid := os.Geteuid(); euid != 0 {
		unavailable(t, "alpmtest: needs root (pacman -S refuses otherwise), running as euid %d", euid)
	}
}

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireToolsEnv) == "1" {
		t.Fatalf(format+" (and %s=1)", append(args, RequireToolsEnv)...)
	}
	t.Skipf(format, args...)
}

// run runs a tool with a C locale (so its messages are stable) and returns its
// combined output; the error names the command and carries the output, which
// is where repo-add and pacman explain themselves.
func run(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// PacmanMajor is the major version of the installed pacman tools (6 on Debian bookworm, 7 on trixie
// and Arch), read once from `repo-add --version`; 0 when repo-add is missing or says nothing usable.
// pacman 7's repo-add writes no %MD5SUM% and embeds %PGPSIG% only with --include-sigs.
func PacmanMajor() int { return pacmanMajor() }

var pacmanMajor = sync.OnceValue(func() int {
	out, err := exec.Command("repo-add", "--version").CombinedOutput()
	if err != nil {
		return 0
	}
	// "repo-add (pacman) 7.0.0"
	for f := range strings.FieldsSeq(string(out)) {
		if major, _, ok := strings.Cut(f, "."); ok {
			if n, err := strconv.Atoi(major); err == nil {
				return n
			}
		}
	}
	return 0
})
