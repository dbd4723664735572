package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/reconcile"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/units"
)

var screenshotTo = flag.String("page.screenshot", "", "also copy the status page's screenshot to this `file`")

// A person opens the endpoint's root after pacman installed through it: the page names what this
// machine seeds and what came from peers today, and a real browser renders it.
func TestStatusPageInABrowser(t *testing.T) {
	small := alpmtest.Pkg{Name: "small", Size: 300 << 10}
	other := alpmtest.Pkg{Name: "other", Size: 200 << 10}
	w := newEndpointWorld(t, []alpmtest.Pkg{small, other}, "small")
	alpmtest.Require(t, "chromium")
	w.b.Servers = map[string][]string{"core": {w.endpoint() + "/$repo/os/$arch"}}
	w.b.WriteConf(t)
	w.startB(t, "--mirrorlist", mirrorlist(t, w.m.template()), "--index", w.indexA)
	w.b.Pacman(t, "-Sy")
	w.b.Pacman(t, "-S", "small", "other")
	// B's agent seeds what pacman just put in its cache.
	var seeded reconcile.RepoCount
	alpmtest.Eventually(t, 30*time.Second, "B's agent seeds both packages", func() bool {
		if r := agentState(t, w.control).Last; r != nil {
			seeded = r.Repos["core"]
		}
		return seeded.Files >= 2
	})

	page := getStatusPage(t, w.endpoint())
	peerBytes := int64(fileSize(t, w.repo.Path(small)))
	for _, want := range []string{
		"<td>core</td>",
		fmt.Sprintf(`<td class="n">%d</td>`, seeded.Files),
		units.HumanBytes(seeded.Bytes),
		`<td>Today</td><td class="n">` + units.HumanBytes(peerBytes) + "</td>",
		"<span class=\"good\">reachable</span>",
		`href="/metrics"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}

	shot := screenshot(t, w.endpoint()+"/")
	t.Logf("the status page's screenshot: %s", shot)
	if *screenshotTo != "" {
		b, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(*screenshotTo, b, 0o644)
		}
		if err != nil {
			t.Fatalf("copy the screenshot: %v", err)
		}
		t.Logf("copied to %s", *screenshotTo)
	}
	checkScreenshot(t, shot, 1024, 768)
}

func getStatusPage(t *testing.T, endpoint string) string {
	t.Helper()
	resp, err := http.Get(endpoint + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %s, %s, %v\n%s", resp.Status, resp.Header.Get("Content-Type"), err, b)
	}
	return string(b)
}

// screenshot has headless Chromium render url at 1024x768 and returns the PNG's path.
func screenshot(t *testing.T, url string) string {
	t.Helper()
	dir := t.TempDir()
	shot := filepath.Join(dir, "page.png")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// As root Chromium refuses to start without --no-sandbox; its profile stays in the test's directory.
	cmd := exec.CommandContext(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-dev-shm-usage", "--no-first-run", "--user-data-dir="+filepath.Join(dir, "profile"),
		"--screenshot="+shot, "--window-size=1024,768", url)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	if _, err := os.Stat(shot); err != nil {
		t.Fatalf("chromium wrote no screenshot: %v\n%s", err, out)
	}
	return shot
}

// checkScreenshot decodes the PNG and checks its size, and that it shows something: a blank or
// unstyled page has a handful of colours, the page's text, table and rules many more.
func checkScreenshot(t *testing.T, path string, width, height int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() != width || b.Dy() != height {
		t.Errorf("the screenshot is %dx%d, want %dx%d", b.Dx(), b.Dy(), width, height)
	}
	if n := colours(img); n < 16 {
		t.Errorf("the screenshot has %d colours: a blank page?", n)
	} else {
		t.Logf("the screenshot has %d colours", n)
	}
}

func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}
