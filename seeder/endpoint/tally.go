package endpoint

import (
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/atomicfile"
)

// tallyEvery is how often at most the day's tally is written: a burst of packages costs one write a
// second, not one a package.
const tallyEvery = time.Second

// dayTally counts the package bytes handed to pacman today (local date), by source kind. It is kept in
// a file because the agent exits when idle (--idle-exit) and socket activation starts it again: "today"
// must outlive one run, where the metrics count since the start.
type dayTally struct {
	path string // "": kept in memory only
	log  *slog.Logger
	now  func() time.Time

	writing sync.Mutex // serialises the writes, so an older tally never lands after a newer one

	mu      sync.Mutex
	day     string // 2006-01-02, local
	peer    int64
	mirror  int64
	saved   time.Time   // when the last write started
	pending *time.Timer // a write is scheduled
}

// tallyFile is the tally's file: one day's bytes by source kind.
type tallyFile struct {
	Day         string `json:"day"`
	PeerBytes   int64  `json:"peer_bytes"`
	MirrorBytes int64  `json:"mirror_bytes"`
}

// newDayTally starts today's tally from path. A missing file, one that does not parse or one of another
// day starts the day at zero: the tally is for a person to read, and must never stop the endpoint.
func newDayTally(path string, log *slog.Logger, now func() time.Time) *dayTally {
	t := &dayTally{path: path, log: log, now: now, day: now().Format(time.DateOnly)}
	if path == "" {
		return t
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return t
	}
	var f tallyFile
	if err == nil {
		err = json.Unmarshal(b, &f)
	}
	switch {
	case err != nil:
		log.Warn("today's tally starts at zero: its file cannot be read", "file", path, "err", err)
	case f.Day != t.day:
		log.Debug("today's tally starts at zero: its file is of another day", "file", path, "day", f.Day)
	default:
		t.peer, t.mirror = max(f.PeerBytes, 0), max(f.MirrorBytes, 0)
	}
	return t
}

// rollLocked starts a new day at midnight. t.mu is held.
func (t *dayTally) rollLocked() {
	if day := t.now().Format(time.DateOnly); day != t.day {
		t.day, t.peer, t.mirror = day, 0, 0
	}
}

// add counts n bytes handed to pacman from source, and writes the tally now or within tallyEvery.
func (t *dayTally) add(source string, n int64) {
	t.mu.Lock()
	t.rollLocked()
	if sourceKind(source) == "peer" {
		t.peer += n
	} else {
		t.mirror += n
	}
	now := false
	if t.path != "" && t.pending == nil {
		if wait := t.saved.Add(tallyEvery).Sub(t.now()); wait > 0 {
			t.pending = time.AfterFunc(wait, t.save)
		} else {
			now = true
		}
	}
	t.mu.Unlock()
	if now {
		t.save()
	}
}

// today returns today's bytes from peers and from mirrors.
func (t *dayTally) today() (peer, mirror int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rollLocked()
	return t.peer, t.mirror
}

// flush writes a scheduled write now, as the agent stops.
func (t *dayTally) flush() {
	t.mu.Lock()
	due := t.pending != nil && t.pending.Stop()
	t.mu.Unlock()
	if due {
		t.save()
	}
}

func (t *dayTally) save() {
	t.writing.Lock()
	defer t.writing.Unlock()
	t.mu.Lock()
	t.pending = nil
	t.saved = t.now()
	b, err := json.Marshal(tallyFile{Day: t.day, PeerBytes: t.peer, MirrorBytes: t.mirror})
	t.mu.Unlock()
	if err == nil {
		err = atomicfile.WriteFile(t.path, b)
	}
	if err != nil {
		t.log.Warn("today's tally not saved", "file", t.path, "err", err)
	}
}
