// Package seeder reconciles an IPFS node with pacman's package caches: every cache file whose name, size
// and sha256 match a sync-db entry is added and pinned with deterministic CIDs, and every pin of ours that
// no cache file accounts for any more is removed.
//
// A pass is a reconcile, not a replay of events: it compares what the caches hold, what the sync dbs vouch
// for and what the node has pinned, so a lost event, a crash or a restart is healed by the next pass.
// Hash results are kept by (device, inode, size, mtime, ctime), so a pass over an unchanged cache reads
// no file. No byte is sent to the node before it has been verified: kubo announces blocks as it writes
// them, so "add, then check" would already have published a private file.
package seeder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
)

// Options configure a Seeder.
type Options struct {
	CacheDirs []string
	StateDir  string       // where hash results and the last report are kept
	Node      Node         // the IPFS node
	Log       *slog.Logger // nil: discard
	Progress  io.Writer    // nil: quiet; a terminal gets a progress line during long passes
}

// Seeder runs reconcile passes. Its methods must not be called concurrently.
type Seeder struct {
	opts  Options
	log   *slog.Logger
	state *state
	buf   []byte
	prog  progress
}

// New returns a Seeder with the state found in opts.StateDir. A damaged state file is logged and
// replaced: it only costs a re-hash.
func New(opts Options) *Seeder {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := loadState(opts.StateDir)
	if err != nil {
		log.Warn("state unreadable, starting afresh", "err", err)
	}
	return &Seeder{opts: opts, log: log, state: st, buf: make([]byte, 1<<20)}
}

// Report is what one pass did and found. It is kept in the state directory for `status`.
type Report struct {
	Started     time.Time            `json:"started"`
	Duration    time.Duration        `json:"duration_ns"`
	Dirs        []DirReport          `json:"cache_dirs"`
	DBs         []DBReport           `json:"dbs"`
	Added       int                  `json:"added"`
	AddedBytes  int64                `json:"added_bytes"`
	Seeded      int                  `json:"already_seeded"` // already pinned before this pass
	Unpinned    int                  `json:"unpinned"`
	Refused     []FileNote           `json:"refused"`      // not publishable: normal, and said why
	Failed      []FileNote           `json:"failed"`       // could not be seeded this time: the pass did not converge
	Repos       map[string]RepoCount `json:"repos"`        // what is seeded after the pass, per repository
	CopiedBytes int64                `json:"copied_bytes"` // bytes of seeded files stored a second time in the node (not zero-copy)
	HashedBytes int64                `json:"hashed_bytes"` // bytes read to verify checksums in this pass
}

// DirReport describes one CacheDir.
type DirReport struct {
	Dir    string `json:"dir"`
	NoCopy bool   `json:"zero_copy"` // files are referenced in place by the node's filestore
	Why    string `json:"mode"`      // why or why not
	Files  int    `json:"entries"`
	Err    string `json:"error,omitempty"`
}

// DBReport describes one sync db.
type DBReport struct {
	Repo     string `json:"repo"`
	Path     string `json:"path"`
	Packages int    `json:"packages"`
	Err      string `json:"error,omitempty"`
}

// FileNote names a file and what happened to it.
type FileNote struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// RepoCount is what is seeded from one repository.
type RepoCount struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// Converged says whether every verifiable file is seeded and nothing else of ours is pinned.
func (r *Report) Converged() bool {
	if len(r.Failed) > 0 {
		return false
	}
	for _, d := range r.Dirs {
		if d.Err != "" {
			return false
		}
	}
	return true
}

// Sync runs one reconcile pass against ix. It returns an error, with the report so far, when the node
// cannot be reached or fails; files that cannot be seeded are listed in the report instead.
func (s *Seeder) Sync(ctx context.Context, ix *alpmdb.Index) (*Report, error) {
	rep := &Report{Started: time.Now(), Repos: map[string]RepoCount{}}
	defer func() { rep.Duration = time.Since(rep.Started) }()
	for _, d := range ix.DBs() {
		dr := DBReport{Repo: d.Repo, Path: d.Path, Packages: d.Packages}
		if d.Err != nil {
			dr.Err = d.Err.Error()
		}
		rep.DBs = append(rep.DBs, dr)
	}

	// Ask the node first: when it is down, fail before reading any file.
	pins, err := s.opts.Node.Pins(ctx, PinPrefix)
	if err != nil {
		return rep, fmt.Errorf("list pins: %w", err)
	}

	seeds, keepPaths := s.verify(ctx, ix, rep)
	if err := ctx.Err(); err != nil {
		s.save(rep, keepPaths)
		return rep, err
	}

	p := makePlan(seeds, pins)
	keep := make(map[cid.Cid]bool)
	for _, sd := range p.Seeded {
		keep[sd.CID] = true
		rep.Seeded++
		rep.count(sd)
	}
	s.progressStart("seeding", len(p.Add), sumSizes(p.Add))
	for _, sd := range p.Add {
		c, err := s.add(ctx, sd)
		s.progressFile()
		if err != nil {
			var fe *fileError
			if errors.As(err, &fe) {
				if _, lerr := lstat(sd.Path); isNotExist(lerr) {
					delete(keepPaths, sd.Path)
					continue // removed while we added it: the unpin below takes back any pin
				}
				rep.Failed = append(rep.Failed, FileNote{Path: sd.Path, Reason: fe.Error()})
				s.log.Warn("not seeded", "file", sd.Path, "err", fe.err)
				continue
			}
			s.progressEnd()
			s.save(rep, keepPaths)
			return rep, err
		}
		keep[c] = true
		rep.Added++
		rep.AddedBytes += sd.Size
		sd.CID = c
		rep.count(sd)
		s.log.Info("seeded", "file", sd.Path, "repo", sd.Repo, "cid", c.String(), "bytes", sd.Size)
	}
	s.progressEnd()

	// Unpin only now: a large file's CID is known only once it was added, and it may be pinned already.
	for _, c := range unpins(pins, keep) {
		if err := s.opts.Node.Unpin(ctx, c); err != nil {
			s.save(rep, keepPaths)
			return rep, fmt.Errorf("unpin %s (%s): %w", c, pins[c], err)
		}
		rep.Unpinned++
		s.log.Info("unpinned", "cid", c.String(), "pin", pins[c])
	}
	s.save(rep, keepPaths)
	return rep, nil
}

func (r *Report) count(sd seed) {
	rc := r.Repos[sd.Repo]
	rc.Files++
	rc.Bytes += sd.Size
	r.Repos[sd.Repo] = rc
	if !sd.NoCopy {
		r.CopiedBytes += sd.Size
	}
}

func sumSizes(seeds []seed) int64 {
	var n int64
	for _, s := range seeds {
		n += s.Size
	}
	return n
}

// verify scans every CacheDir and returns the verified files, hashing those the hash cache cannot vouch
// for. keepPaths lists the paths whose records must survive this pass.
func (s *Seeder) verify(ctx context.Context, ix Index, rep *Report) (seeds []seed, keepPaths map[string]bool) {
	keepPaths = make(map[string]bool)
	var toHash []candidate
	var hashBytes int64
	noCopy := make(map[string]bool)
	for _, dir := range s.opts.CacheDirs {
		dr := DirReport{Dir: dir}
		if r, ok := s.opts.Node.(Referencer); ok {
			dr.NoCopy, dr.Why = r.CanReference(ctx, dir)
		} else {
			dr.Why = "the node cannot reference files in place"
		}
		noCopy[dir] = dr.NoCopy
		cands, err := scanDir(dir)
		if err != nil {
			dr.Err = err.Error()
			s.log.Error("cache dir unreadable; its pins are kept", "dir", dir, "err", err)
			// Not knowing what the dir holds is no reason to unpin it: keep what we knew.
			for path, rec := range s.state.Files {
				if rec.Repo != "" && filepath.Dir(path) == filepath.Clean(dir) {
					keepPaths[path] = true
					seeds = append(seeds, s.seedFromRecord(path, rec, noCopy[dir]))
				}
			}
		}
		dr.Files = len(cands)
		rep.Dirs = append(rep.Dirs, dr)
		for _, c := range cands {
			keepPaths[c.Path] = true
			v := classify(c, ix, s.state.Files[c.Path])
			switch v.Kind {
			case refused:
				rep.Refused = append(rep.Refused, FileNote{Path: c.Path, Reason: v.Reason})
			case needHash:
				toHash = append(toHash, c)
				hashBytes += c.Stat.Size
			case verified:
				seeds = append(seeds, s.newSeed(c, v, noCopy[dir]))
			}
		}
	}

	s.progressStart("verifying", len(toHash), hashBytes)
	defer s.progressEnd()
	for _, c := range toHash {
		if ctx.Err() != nil {
			return seeds, keepPaths
		}
		st, sum, err := hashFile(ctx, c, s.buf, s.progressAdd)
		s.progressFile()
		if err != nil {
			if _, lerr := lstat(c.Path); isNotExist(lerr) {
				delete(keepPaths, c.Path) // removed while we read it: gone is gone
				continue
			}
			if errors.Is(err, ErrChanged) {
				rep.Failed = append(rep.Failed, FileNote{Path: c.Path, Reason: "changed while being verified; retried next pass"})
			} else {
				rep.Failed = append(rep.Failed, FileNote{Path: c.Path, Reason: err.Error()})
			}
			continue
		}
		rep.HashedBytes += st.Size
		rec := &record{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtime, Ctime: st.Ctime, Hashed: true, SHA256: sum}
		c.Stat = st
		v := classify(c, ix, rec)
		if v.Kind == verified {
			rec.Repo = v.Repo
		}
		s.state.Files[c.Path] = rec
		switch v.Kind {
		case verified:
			seeds = append(seeds, s.newSeed(c, v, noCopy[c.Dir]))
		default:
			rep.Refused = append(rep.Refused, FileNote{Path: c.Path, Reason: v.Reason})
			s.log.Warn("refused", "file", c.Path, "reason", v.Reason)
		}
	}
	return seeds, keepPaths
}

func (s *Seeder) newSeed(c candidate, v verdict, noCopy bool) seed {
	sd := seed{Path: c.Path, Name: c.Name, Repo: v.Repo, Size: c.Stat.Size, SHA256: v.SHA256, NoCopy: noCopy}
	sd.CID = s.knownCID(sd.SHA256, sd.Size)
	return sd
}

func (s *Seeder) seedFromRecord(path string, rec *record, noCopy bool) seed {
	sd := seed{Path: path, Name: filepath.Base(path), Repo: rec.Repo, Size: rec.Size, SHA256: rec.SHA256, NoCopy: noCopy}
	sd.CID = s.knownCID(sd.SHA256, sd.Size)
	return sd
}

// knownCID is the CID of a file with this sha256 and size when it is known without adding it.
func (s *Seeder) knownCID(sum [sha256.Size]byte, size int64) cid.Cid {
	if size <= int64(Import.ChunkSize) {
		return RawCID(sum)
	}
	if c, err := cid.Decode(s.state.CIDs[hex.EncodeToString(sum[:])]); err == nil {
		return c
	}
	return cid.Undef
}

// fileError is a failure of one file (it changed or vanished), as opposed to a failure of the node.
type fileError struct {
	path string
	err  error
}

func (e *fileError) Error() string { return e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// add sends one verified file to the node from a descriptor that is checked to be the file that was
// hashed, and checks the CID the node reports where it is known in advance.
func (s *Seeder) add(ctx context.Context, sd seed) (cid.Cid, error) {
	rec := s.state.Files[sd.Path]
	if rec == nil {
		return cid.Undef, &fileError{sd.Path, fmt.Errorf("%s: no hash record: %w", sd.Path, ErrChanged)}
	}
	want := fileStat{Dev: rec.Dev, Ino: rec.Ino, Size: rec.Size, Mtime: rec.Mtime, Ctime: rec.Ctime}
	f, err := openSame(sd.Path, want, true)
	if err != nil {
		return cid.Undef, &fileError{sd.Path, err}
	}
	defer f.Close()
	body := &ctxReader{ctx: ctx, r: io.LimitReader(f, sd.Size), progress: s.progressAdd}
	c, err := s.opts.Node.Add(ctx, File{Path: sd.Path, PinName: sd.pinName(), Size: sd.Size, Content: body, NoCopy: sd.NoCopy})
	if err != nil {
		if body.err != nil {
			return cid.Undef, &fileError{sd.Path, fmt.Errorf("read %s: %w", sd.Path, body.err)}
		}
		return cid.Undef, fmt.Errorf("add %s: %w", sd.Path, err)
	}
	// The bytes sent must be the bytes hashed: re-check the file, and the CID where it follows from the
	// sha256. On a mismatch, take back what was pinned.
	bad := unchanged(f, want)
	if bad == nil && sd.CID.Defined() && !c.Equals(sd.CID) {
		bad = fmt.Errorf("node returned CID %s, expected %s", c, sd.CID)
	}
	if bad != nil {
		if err := s.opts.Node.Unpin(ctx, c); err != nil {
			return cid.Undef, fmt.Errorf("unpin %s after a failed check of %s: %w", c, sd.Path, err)
		}
		return cid.Undef, &fileError{sd.Path, bad}
	}
	if sd.Size > int64(Import.ChunkSize) {
		s.state.CIDs[hex.EncodeToString(sd.SHA256[:])] = c.String()
	}
	return c, nil
}

// save records the pass. Records of files that left the cache are dropped, and so are the CIDs learned
// for content no cache file has any more.
func (s *Seeder) save(rep *Report, keepPaths map[string]bool) {
	live := make(map[string]bool)
	for path, rec := range s.state.Files {
		if !keepPaths[path] {
			delete(s.state.Files, path)
			continue
		}
		live[hex.EncodeToString(rec.SHA256[:])] = true
	}
	for sum := range s.state.CIDs {
		if !live[sum] {
			delete(s.state.CIDs, sum)
		}
	}
	sort.Slice(rep.Refused, func(i, j int) bool { return rep.Refused[i].Path < rep.Refused[j].Path })
	rep.Duration = time.Since(rep.Started)
	s.state.Last = rep
	if err := s.state.save(s.opts.StateDir); err != nil {
		s.log.Error("state not saved; the next pass re-hashes", "err", err)
	}
}

// Repos returns the repositories a report counts, sorted.
func (r *Report) RepoNames() []string {
	return slices.Sorted(maps.Keys(r.Repos))
}
