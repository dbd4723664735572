package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// startNginx serves dir as a mirror (<dir>/<repo>/os/<arch>/<file>) with a real nginx on loopback and
// returns its base URL.
func startNginx(t *testing.T, dir string) string {
	t.Helper()
	alpmtest.Require(t, "nginx")
	prefix := t.TempDir()
	port := freePort(t)
	for _, d := range []string{"logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(prefix, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp;
	uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
	types { application/octet-stream zst; }
	server { listen 127.0.0.1:%[2]d; root %[3]s; }
}
`, prefix, port, dir)
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	runLogged(t, exec.Command("nginx", "-p", prefix, "-c", path), syscall.SIGQUIT, "nginx")
	waitListening(t, port)
	return "http://127.0.0.1:" + strconv.Itoa(port)
}

// The endpoint answers a package as nginx answers the same file (nginx is its mirror here): every
// Range form, If-Range with a stale and with a current validator, HEAD; and curl, wget and aria2c (split
// into four connections) as pacman's XferCommand get the file whole and right through it.
func TestHTTPLikeNginx(t *testing.T) {
	if testing.Short() {
		t.Skip("integration: nginx, kubo, the agent")
	}
	alpmtest.Require(t, "pacman", "repo-add", "bsdtar", "curl", "wget", "aria2c")
	p := alpmtest.Pkg{Name: "pkg", Size: 3 << 20, Ext: ".pkg.tar"}
	repo := alpmtest.MakeRepo(t, "core", p)
	root := t.TempDir()
	alpmtest.SyncMirror(t, root, alpmtest.DefaultArch, false, repo)
	nginx := startNginx(t, root)
	data, err := os.ReadFile(repo.Path(p))
	if err != nil {
		t.Fatal(err)
	}
	node := kubotest.Start(t, kubotest.Options{})
	sb := alpmtest.NewSandbox(t, repo)
	sb.Servers = map[string][]string{"core": {nginx + "/$repo/os/$arch"}}
	sb.WriteConf(t)
	sb.Pacman(t, "-Sy")
	port := freePort(t)
	endpoint := "http://127.0.0.1:" + strconv.Itoa(port)
	startAgent(t, "--pacman-conf", sb.Conf, "--api", node.APIAddr, "--state-dir", t.TempDir(),
		"--listen", filepath.Join(t.TempDir(), "control.sock"), "--http", "127.0.0.1:"+strconv.Itoa(port),
		"--mirrorlist", mirrorlist(t, nginx+"/$repo/os/$arch"))
	waitListening(t, port)
	file := "/core/os/" + alpmtest.DefaultArch + "/" + p.FileName()
	resp, err := http.Head(nginx + file)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	modified := resp.Header.Get("Last-Modified")
	size := len(data)
	for _, tc := range []struct{ method, rng, ifRange string }{
		{"GET", "", ""},
		{"GET", "bytes=0-", ""},
		{"GET", "bytes=1000-", ""},
		{"GET", "bytes=5-9", ""},
		{"GET", "bytes=-500", ""},
		{"GET", fmt.Sprintf("bytes=5-%d", 10*size), ""},
		{"GET", fmt.Sprintf("bytes=%d-", size), ""},
		{"GET", "bytes=abc", ""},
		{"GET", "bytes=9-5", ""},
		{"GET", "bytes=5-9", `"stale"`},
		{"GET", "bytes=5-9", modified},
		{"GET", "bytes=5-9", "Mon, 01 Jan 2001 00:00:00 GMT"},
		{"HEAD", "", ""},
		{"HEAD", "bytes=5-9", ""},
	} {
		name := fmt.Sprintf("%s %q %q", tc.method, tc.rng, tc.ifRange)
		want, wantBody := ask(t, tc.method, nginx+file, tc.rng, tc.ifRange)
		got, gotBody := ask(t, tc.method, endpoint+file, tc.rng, tc.ifRange)
		if got.StatusCode != want.StatusCode || got.Header.Get("Content-Range") != want.Header.Get("Content-Range") {
			t.Errorf("%s: endpoint %d %q, nginx %d %q", name, got.StatusCode, got.Header.Get("Content-Range"), want.StatusCode, want.Header.Get("Content-Range"))
			continue
		}
		if want.StatusCode < 300 && (got.Header.Get("Content-Length") != want.Header.Get("Content-Length") || !bytes.Equal(gotBody, wantBody)) {
			t.Errorf("%s: endpoint %s bytes, nginx %s", name, got.Header.Get("Content-Length"), want.Header.Get("Content-Length"))
		}
	}
	sum := sha256.Sum256(data)
	for _, c := range [][]string{
		{"curl", "-fsS", "-o", "OUT", endpoint + file},
		{"wget", "-q", "-O", "OUT", endpoint + file},
		{"aria2c", "-q", "-x4", "-s4", "-k1M", "--remote-time", "-d", "DIR", "-o", "out", endpoint + file},
	} {
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		for i, a := range c {
			c[i] = strings.NewReplacer("OUT", out, "DIR", dir).Replace(a)
		}
		if b, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", c[0], err, b)
			continue
		}
		b, err := os.ReadFile(out)
		if err != nil || sha256.Sum256(b) != sum {
			t.Errorf("%s through the endpoint: %d bytes, %v: not the package", c[0], len(b), err)
		}
	}
	// A client that hangs up is not a source that failed the check.
	if v := metricValue(t, endpoint, "pacman_ipfs_endpoint_verification_failures_total"); v != 0 {
		t.Errorf("%v verification failures counted for clients that closed their connections", v)
	}
}

func ask(t *testing.T, method, url, rng, ifRange string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	if ifRange != "" {
		req.Header.Set("If-Range", ifRange)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}
