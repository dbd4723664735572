package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
)

// A password that url.Parse refuses ("50%off") must appear nowhere: not in status (any local user may
// ask for it), not in the agent's log (the journal), not in the endpoint's error answers. And it can be
// given without the command line: --api-file, or systemd's LoadCredential= ($CREDENTIALS_DIRECTORY).
func TestSecretsStaySecret(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the agent")
	}
	alpmtest.Require(t, "repo-add", "bsdtar")
	const secret = "50%off"
	small := alpmtest.Pkg{Name: "small", Size: 100 << 10}
	repo := alpmtest.MakeRepo(t, "core", small)
	sb := alpmtest.NewSandbox(t, repo)
	alpmtest.CopyFile(t, repo.DB, sb.SyncDBPath("core"), 0o644)
	dead := freePort(t) // nothing listens: the node is down, so every answer is an error answer
	api := "http://admin:" + secret + "@127.0.0.1:" + strconv.Itoa(dead)
	apiFile := filepath.Join(t.TempDir(), "kubo-api")
	if err := os.WriteFile(apiFile, []byte(api+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "kubo-api"), []byte(api+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clean := func(what, text string) {
		t.Helper()
		if strings.Contains(text, secret) || strings.Contains(text, "admin:") {
			t.Errorf("%s shows the secret:\n%s", what, text)
		}
	}
	base := []string{"--pacman-conf", sb.Conf, "--state-dir", t.TempDir()}
	for _, tt := range []struct {
		name string
		args []string
		env  string // CREDENTIALS_DIRECTORY
	}{
		{"--api", []string{"--api", api}, ""},
		{"--api-file", []string{"--api-file", apiFile}, ""},
		{"LoadCredential", nil, creds},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("CREDENTIALS_DIRECTORY", tt.env)
			}
			args := append(append([]string{}, base...), tt.args...)
			for _, asJSON := range []bool{false, true} {
				st := append([]string{"status", "--socket", filepath.Join(t.TempDir(), "none")}, args[2:]...)
				if asJSON {
					st = append(st, "--json")
				}
				r := cli(t, st...)
				clean("status", r.stdout+r.stderr)
				if asJSON {
					var s status
					if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || !strings.Contains(s.Node.API, "xxxxx@127.0.0.1:"+strconv.Itoa(dead)) {
						t.Errorf("status names the node %q (%v), want the redacted address", s.Node.API, err)
					}
				}
			}
			r := cli(t, append([]string{"sync"}, args...)...)
			clean("sync", r.stdout+r.stderr)

			port := freePort(t)
			control := filepath.Join(t.TempDir(), "control.sock")
			logs := startAgent(t, append(args, "--listen", control, "--http", "127.0.0.1:"+strconv.Itoa(port),
				"--mirrorlist", filepath.Join(t.TempDir(), "none"))...)
			waitListening(t, port)
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/core/os/x86_64/" + small.FileName())
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			clean("the endpoint's answer", string(b))
			// The status page with the node down: says so, within its bound, and keeps the secret.
			start := time.Now()
			page := getStatusPage(t, "http://127.0.0.1:"+strconv.Itoa(port))
			clean("the status page", page)
			if took := time.Since(start); !strings.Contains(page, "not reachable") || took > 5*time.Second {
				t.Errorf("the status page took %s and does not say the node is not reachable:\n%s", took, page)
			}
			raw, _ := json.Marshal(agentState(t, control))
			clean("the agent's status", string(raw))
			if !strings.Contains(string(raw), "xxxxx@127.0.0.1") {
				t.Errorf("the agent's status does not name the node it was given: %s", raw)
			}
			out, _ := os.ReadFile(logs)
			clean("the agent's log", string(out))
		})
	}
}
