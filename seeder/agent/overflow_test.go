package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/agent"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node/kubo/kubotest"
)

// A burst of 3,000 new files on a kernel whose inotify queue holds a single event: the queue overflows,
// the agent says so and reconciles everything, and a real kubo node ends up with all 3,000 pinned.
func TestOverflowAndBurstOf3000(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubo")
	}
	alpmtest.RequireRoot(t) // lowering the kernel's queue takes root
	const knob = "/proc/sys/fs/inotify/max_queued_events"
	old, err := os.ReadFile(knob)
	if err != nil {
		t.Skipf("cannot read %s: %v", knob, err)
	}
	// The knob is the whole machine's. It is restored as soon as our inotify instance exists (the limit
	// is read when one is made), at cleanup whatever happens to the test, and by a watchdog process even
	// if this test binary is killed (go test's -timeout does that without running any cleanup).
	watchdog := exec.Command("sh", "-c", `sleep 60; printf '%s' "$1" > "$2"`, "sh", strings.TrimSpace(string(old)), knob)
	if err := watchdog.Start(); err != nil {
		t.Skipf("cannot start the watchdog that restores %s: %v", knob, err)
	}
	if err := os.WriteFile(knob, []byte("1"), 0o644); err != nil {
		watchdog.Process.Kill()
		t.Skipf("cannot lower %s: %v", knob, err)
	}
	var once sync.Once
	restore := func() {
		once.Do(func() {
			_ = os.WriteFile(knob, old, 0o644) // the watchdog restores it too
			watchdog.Process.Kill()
			watchdog.Wait()
		})
	}
	t.Cleanup(restore)

	kn := kubotest.Start(t, kubotest.Options{})
	client := kn.Client(t)
	w := newWorld(t, func(o *agent.Options) {
		o.Dial = func(context.Context) (node.Node, error) { return client, nil }
		o.MaxDelay = 5 * time.Second
	})
	files := map[string][]byte{}
	for i := range 3000 {
		f, d := w.pkg(t, fmt.Sprintf("burst%04d", i), 512, true)
		files[f] = d
	}
	w.writeDB(t)
	alpmtest.Eventually(t, 15*time.Second, "first pass", func() bool { return w.status(t).Passes >= 1 })
	restore()
	start := time.Now()
	for f, d := range files {
		w.put(t, f, d)
	}
	pinned := func() int {
		p, err := client.Pins(context.Background(), node.PinPrefix)
		if err != nil {
			t.Fatal(err)
		}
		return len(p)
	}
	deadline := time.Now().Add(120 * time.Second)
	for pinned() != 3000 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3000 pinned after 120 s; status %+v", pinned(), w.status(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
	st := w.status(t)
	if st.Overflows == 0 {
		t.Errorf("no overflow was seen with a one-event queue (%d events)", st.Events)
	}
	t.Logf("3,000 files: %d events, %d overflows, %d passes, all pinned %s after the burst began",
		st.Events, st.Overflows, st.Passes, time.Since(start).Round(time.Millisecond))
}
