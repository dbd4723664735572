package reconcile

import (
	"fmt"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/units"
	"sync"
	"time"
)

// progress draws one self-overwriting line on a terminal during long passes. It is silent unless
// Options.Progress is set (the CLI sets it only when stderr is a terminal) and a phase lasts a while.
// The hasher goroutine and the pass both report to it, hence the mutex.
type progress struct {
	mu               sync.Mutex
	phase            string
	files, filesDone int
	total, done      int64
	start, lastDrawn time.Time
	drawn            bool
}

const progressEvery = 250 * time.Millisecond

// progressAfter is how long a phase runs before a line is drawn: short passes print nothing.
var progressAfter = time.Second

func (s *Seeder) progressStart(phase string, files int, bytes int64) {
	p := &s.prog
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase, p.files, p.filesDone, p.total, p.done, p.start, p.drawn = phase, files, 0, bytes, 0, time.Now(), false
}

func (s *Seeder) progressAdd(n int64) {
	s.prog.mu.Lock()
	defer s.prog.mu.Unlock()
	s.prog.done += n
	s.progressDraw(false)
}

func (s *Seeder) progressFile() {
	s.prog.mu.Lock()
	defer s.prog.mu.Unlock()
	s.prog.filesDone++
	s.progressDraw(false)
}

func (s *Seeder) progressEnd() {
	s.prog.mu.Lock()
	defer s.prog.mu.Unlock()
	if s.prog.drawn {
		s.progressDraw(true)
		fmt.Fprintln(s.opts.Progress)
	}
	s.prog.total = 0
}

// progressDraw is called with the mutex held.
func (s *Seeder) progressDraw(force bool) {
	p := &s.prog
	if s.opts.Progress == nil || p.total == 0 {
		return
	}
	now := time.Now()
	// Short phases print nothing: a progress line is for the long first seeding.
	if !force && (now.Sub(p.lastDrawn) < progressEvery || now.Sub(p.start) < progressAfter) {
		return
	}
	p.lastDrawn, p.drawn = now, true
	elapsed := now.Sub(p.start).Seconds()
	rate := float64(p.done) / max(elapsed, 1e-3)
	eta := "--"
	if rate > 0 && p.done < p.total {
		eta = time.Duration(float64(p.total-p.done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(s.opts.Progress, "\r%s: %d/%d files, %s of %s, %s/s, ETA %s\x1b[K",
		p.phase, p.filesDone, p.files, units.HumanBytes(p.done), units.HumanBytes(p.total), units.HumanBytes(int64(rate)), eta)
}
