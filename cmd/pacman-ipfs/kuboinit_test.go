package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// pacman-ipfs-kubo-init makes a node of the LAN only unless told PACMAN_IPFS_NETWORK=public: what a
// machine seeds reaches the world only when its owner chose it. The choice is made once per repo.
func TestKuboInitNetwork(t *testing.T) {
	bin := kubotest.Binary(t)
	initRepo := func(network string) (string, []byte, error) {
		repo := filepath.Join(t.TempDir(), "repo")
		c := exec.Command("sh", "../../packaging/pacman-ipfs-kubo-init")
		c.Env = append(os.Environ(), "IPFS_PATH="+repo, "IPFS="+bin, "IPFS_TELEMETRY=off")
		if network != "" {
			c.Env = append(c.Env, "PACMAN_IPFS_NETWORK="+network)
		}
		out, err := c.CombinedOutput()
		return repo, out, err
	}
	config := func(repo, key string) string {
		c := exec.Command(bin, "config", key)
		c.Env = append(os.Environ(), "IPFS_PATH="+repo)
		out, _ := c.CombinedOutput()
		return strings.Join(strings.Fields(string(out)), "")
	}
	for _, tt := range []struct {
		network             string
		bootstrap, autoconf string
		routers, marker     string
	}{
		{"", "[]", "false", "[]", "lan"},
		{"lan", "[]", "false", "[]", "lan"},
		{"public", `["auto"]`, "", `["auto"]`, "public"},
	} {
		repo, out, err := initRepo(tt.network)
		if err != nil {
			t.Fatalf("PACMAN_IPFS_NETWORK=%q: %v\n%s", tt.network, err, out)
		}
		if got := config(repo, "Bootstrap"); got != tt.bootstrap {
			t.Errorf("PACMAN_IPFS_NETWORK=%q: Bootstrap %s, want %s", tt.network, got, tt.bootstrap)
		}
		if got := config(repo, "Routing.DelegatedRouters"); got != tt.routers {
			t.Errorf("PACMAN_IPFS_NETWORK=%q: Routing.DelegatedRouters %s, want %s", tt.network, got, tt.routers)
		}
		if got := config(repo, "AutoConf.Enabled"); tt.autoconf != "" && got != tt.autoconf {
			t.Errorf("PACMAN_IPFS_NETWORK=%q: AutoConf.Enabled %s, want %s", tt.network, got, tt.autoconf)
		}
		if b, _ := os.ReadFile(filepath.Join(repo, "pacman-ipfs-network")); strings.TrimSpace(string(b)) != tt.marker {
			t.Errorf("PACMAN_IPFS_NETWORK=%q: the repo records %q, want %q", tt.network, b, tt.marker)
		}
	}
	if _, out, err := initRepo("world"); err == nil || !strings.Contains(string(out), "want lan or public") {
		t.Errorf("PACMAN_IPFS_NETWORK=world: %v\n%s", err, out)
	}
}
