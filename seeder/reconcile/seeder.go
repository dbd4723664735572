// Package seeder reconciles an IPFS node with pacman's package caches: every cache file whose name, size
// and sha256 match a sync-db entry is added and pinned with deterministic CIDs, and every pin of ours that
// no cache file accounts for any more is removed.
//
// A pass is a reconcile, not a replay of events: it compares what the caches hold, what the sync dbs vouch
// for and what the node has pinned, so a lost event, a crash or a restart is healed by the next pass.
// Hash results are kept by (device, inode, size, mtime, ctime), so a pass over an unchanged cache reads
// no file. No byte is sent to the node before it has been verified: kubo announces blocks as it writes
// them, so "add, then check" would already have published a private file.
package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"io"
	"log/slog"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/alpmdb"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
)

// Options configure a Seeder.
type Options struct {
	CacheDirs []string
	StateDir  string       // where hash results and the last report are kept
	Node      node.Node    // the IPFS node
	Log       *slog.Logger // nil: discard
	Progress  io.Writer    // nil: quiet; a terminal gets a progress line during long passes
	// IndexDir is the node's MFS directory that mirrors what is seeded as <repo>/os/<arch>/<file>, the
	// layout of an Arch mirror ("" for none). Architectures say where "any" packages go.
	IndexDir      string
	Architectures []string
	// PublishKey, when set, names the IPNS key the index root is published under. Off by default: it
	// tells the world what this machine holds.
	PublishKey string
	// Signatures returns what checks the detached signatures a sync db does not carry (pacman 7's
	// repo-add leaves %PGPSIG% out) against pacman's keyring. It is asked at the start of every pass, so
	// a keyring made later (pacman-key --init) is used from then on; nil (or a nil result) refuses them.
	Signatures func() sigcheck.Verifier
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
	Refused     []FileNote           `json:"refused"`              // not publishable: normal, and said why
	Failed      []FileNote           `json:"failed"`               // could not be seeded this time: the pass did not converge
	Repos       map[string]RepoCount `json:"repos"`                // what is seeded after the pass, per repository
	CopiedBytes int64                `json:"copied_bytes"`         // bytes of seeded files stored a second time in the node (not zero-copy)
	Index       string               `json:"index,omitempty"`      // /ipfs/<cid> of the mirror-shaped index of what is seeded
	IndexName   string               `json:"index_name,omitempty"` // /ipns/<name> it is published under, when it is
	HashedBytes int64                `json:"hashed_bytes"`         // bytes read to verify checksums in this pass
	// Zero copy: pins added again because their blocks were referenced from a file that left the cache,
	// and references into the CacheDirs still pointing at no seeded file after that (unreadable blocks).
	RepairedRefs int `json:"repaired_refs,omitempty"`
	BrokenRefs   int `json:"broken_refs"`
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
	if len(r.Failed) > 0 || r.BrokenRefs > 0 {
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

	ps := &pass{s: s, ix: ix, rep: rep, keep: map[cid.Cid]bool{}, keepPaths: map[string]bool{}}
	if s.opts.Signatures != nil {
		ps.sigs = s.opts.Signatures()
	}
	err := ps.run(ctx)
	if !ps.listed {
		return rep, err // the node never answered: leave the state as it was
	}
	s.save(rep, ps.keepPaths)
	return rep, err
}

// addWorkers is how many adds run at once. kubo spends a few milliseconds of each add request on
// bookkeeping (pin, flush) rather than on bytes; overlapping requests hides it.
const addWorkers = 3

// pass is the state of one reconcile. The hasher goroutine only reads files and sends results; the add
// workers and the goroutine running the pass share the rest under mu.
type pass struct {
	s         *Seeder
	ix        Index
	pins      map[cid.Cid]string // our pins when the pass started
	listed    bool               // the node answered the pin listing
	mu        sync.Mutex
	rep       *Report
	keep      map[cid.Cid]bool // pins the cache accounts for (or will, once added)
	keepPaths map[string]bool  // paths whose state records survive the pass
	noCopy    map[string]bool  // by CacheDir
	indexed   []seed           // seeded files with their CIDs, for the index
	gcOnce    sync.Once
	gcErr     error
	sigs      sigcheck.Verifier // nil: signatures the dbs do not carry are refused
}

// addJob is a verified file and the hash record it was verified under.
type addJob struct {
	sd  seed
	rec record
}

func (ps *pass) run(ctx context.Context) error {
	// Listing the node's pins takes kubo a while on a large cache; the scan (which only lstat()s) runs
	// meanwhile. No byte of any file is read before the node has answered.
	type pinList struct {
		pins map[cid.Cid]string
		err  error
	}
	listed := make(chan pinList, 1)
	go func() {
		pins, err := ps.s.opts.Node.Pins(ctx, node.PinPrefix)
		listed <- pinList{pins, err}
	}()
	seeds, toHash := ps.scan(ctx)
	pl := <-listed
	if pl.err != nil {
		return fmt.Errorf("list pins: %w", pl.err)
	}
	ps.pins, ps.listed = pl.pins, true
	p := makePlan(seeds, ps.pins)
	for _, sd := range p.Seeded {
		ps.seeded(sd)
	}
	// Files still to hash are read twice: once hashed, once added.
	var progressBytes int64
	for _, sd := range p.Add {
		progressBytes += sd.Size
	}
	for _, c := range toHash {
		progressBytes += 2 * c.Stat.Size
	}
	ps.s.progressStart("seeding", len(p.Add)+len(toHash), progressBytes)
	defer ps.s.progressEnd()

	// Files the hash cache vouches for go to the adders first, while the hasher verifies the others; a
	// file is handed to the adders as soon as it is verified, so hashing overlaps adding.
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	jobs := make(chan addJob)
	var wg sync.WaitGroup
	for range addWorkers {
		wg.Go(func() {
			for j := range jobs {
				if err := ps.add(ctx, j); err != nil {
					abort(err)
				}
			}
		})
	}
	send := func(sd seed) {
		ps.mu.Lock()
		rec := ps.s.state.Files[sd.Path]
		ps.mu.Unlock()
		if rec == nil {
			return // seeds come from records: cannot happen
		}
		select {
		case jobs <- addJob{sd: sd, rec: *rec}:
		case <-ctx.Done():
		}
	}
	ps.mu.Lock()
	for _, sd := range p.Add {
		if sd.CID.Defined() {
			ps.keep[sd.CID] = true
		}
	}
	ps.mu.Unlock()
	for _, sd := range p.Add {
		send(sd)
	}
	for res := range ps.hashAll(ctx, toHash) {
		ps.mu.Lock()
		sd, ok := ps.accept(res)
		known := ok && sd.CID.Defined() && (ps.pins[sd.CID] != "" || ps.keep[sd.CID])
		if known {
			ps.seededLocked(sd)
		} else if ok && sd.CID.Defined() {
			ps.keep[sd.CID] = true // claimed now, so a twin in another CacheDir is not added again
		}
		ps.mu.Unlock()
		if ok && !known {
			send(sd)
		}
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	// The index first: it must never point at blocks the unpins below are about to drop.
	if err := ps.publishIndex(ctx); err != nil {
		return err
	}
	// Unpin only now: a large file's CID is known only once it was added, and it may be pinned already.
	for _, c := range unpins(ps.pins, ps.keep) {
		if err := ps.s.opts.Node.Unpin(ctx, c); err != nil {
			return fmt.Errorf("unpin %s (%s): %w", c, ps.pins[c], err)
		}
		ps.rep.Unpinned++
		ps.s.log.Info("unpinned", "cid", c.String(), "pin", ps.pins[c])
	}
	return ps.repairRefs(ctx)
}

// publishIndex brings the node's mirror-shaped index in line with what is seeded, and publishes its root
// under the IPNS key when asked. A pass that changed nothing leaves both alone.
func (ps *pass) publishIndex(ctx context.Context) error {
	s := ps.s
	ixr, ok := s.opts.Node.(node.Indexer)
	if !ok || s.opts.IndexDir == "" {
		return nil
	}
	files := make(map[string]cid.Cid, len(ps.indexed))
	for _, sd := range ps.indexed {
		for _, arch := range alpmdb.ArchDirs(sd.Name, s.opts.Architectures) {
			files[path.Join(sd.Repo, "os", arch, sd.Name)] = sd.CID
		}
	}
	sum := fingerprint(files)
	if sum == s.state.IndexSum && s.state.Index != "" {
		ps.rep.Index, ps.rep.IndexName = s.state.Index, s.state.IndexName
		return nil
	}
	root, err := ixr.SetIndex(ctx, s.opts.IndexDir, files)
	if err != nil {
		return err
	}
	s.state.Index, s.state.IndexSum, s.state.IndexName = "/ipfs/"+root.String(), sum, ""
	ps.rep.Index = s.state.Index
	if np, ok := s.opts.Node.(node.NamePublisher); ok && s.opts.PublishKey != "" {
		name, err := np.PublishName(ctx, s.opts.PublishKey, root)
		if err != nil {
			return err
		}
		s.state.IndexName, ps.rep.IndexName = name, name
	}
	s.log.Info("index updated", "root", s.state.Index, "files", len(files), "name", s.state.IndexName)
	return nil
}

func fingerprint(files map[string]cid.Cid) string {
	keys := slices.Sorted(maps.Keys(files))
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s %s\n", k, files[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// collectGarbage asks the node, once per pass, to drop unpinned blocks: adds that failed on a full disk
// leave them behind, and nothing else would free that space. It says whether an add is worth retrying.
func (ps *pass) collectGarbage(ctx context.Context) bool {
	gc, ok := ps.s.opts.Node.(node.GarbageCollector)
	if !ok {
		return false
	}
	ps.gcOnce.Do(func() {
		ps.s.log.Warn("the node's disk is full; collecting its garbage once")
		ps.gcErr = gc.CollectGarbage(ctx)
	})
	return ps.gcErr == nil
}

func (ps *pass) seeded(sd seed) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.seededLocked(sd)
}

func (ps *pass) seededLocked(sd seed) {
	ps.indexed = append(ps.indexed, sd)
	ps.keep[sd.CID] = true
	ps.rep.Seeded++
	ps.rep.count(sd)
}

// add seeds one file. A failure of the file is reported and the pass goes on; a failure of the node
// ends the pass.
func (ps *pass) add(ctx context.Context, j addJob) error {
	sd := j.sd
	c, err := ps.s.add(ctx, sd, j.rec)
	if errors.Is(err, node.ErrNoSpace) && ps.collectGarbage(ctx) {
		c, err = ps.s.add(ctx, sd, j.rec) // once: a disk still full after the collection stays an error
	}
	ps.s.progressFile()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var fe *fileError
	switch {
	case errors.Is(err, node.ErrNoSpace):
		// Not the end of the pass: the unpins it still has to do may be what frees the space, and the
		// next pass retries. The pass does not converge, so sync says so and the agent retries.
		ps.rep.Failed = append(ps.rep.Failed, FileNote{Path: sd.Path, Reason: err.Error()})
		ps.s.log.Error("not seeded: the node's disk is full", "file", sd.Path, "err", err)
		return nil
	case errors.As(err, &fe):
		if _, lerr := lstat(sd.Path); isNotExist(lerr) {
			delete(ps.keepPaths, sd.Path) // removed while we added it: the unpins take back any pin
			return nil
		}
		ps.rep.Failed = append(ps.rep.Failed, FileNote{Path: sd.Path, Reason: fe.Error()})
		ps.s.log.Warn("not seeded", "file", sd.Path, "err", fe.err)
		return nil
	case err != nil:
		return err
	}
	if sd.Size > int64(node.Import().ChunkSize) {
		ps.s.state.CIDs[hex.EncodeToString(sd.SHA256[:])] = c.String()
	}
	ps.keep[c] = true
	sd.CID = c
	ps.indexed = append(ps.indexed, sd)
	ps.rep.Added++
	ps.rep.AddedBytes += sd.Size
	sd.CID = c
	ps.rep.count(sd)
	ps.s.log.Info("seeded", "file", sd.Path, "repo", sd.Repo, "cid", c.String(), "bytes", sd.Size)
	return nil
}

// scan lists every CacheDir and classifies its entries: the verified files (by the sync dbs and the
// hash cache) and those that must be hashed first. It reads no file.
func (ps *pass) scan(ctx context.Context) (seeds []seed, toHash []candidate) {
	s, rep := ps.s, ps.rep
	ps.noCopy = make(map[string]bool)
	for _, dir := range s.opts.CacheDirs {
		dr := DirReport{Dir: dir}
		if r, ok := s.opts.Node.(node.Referencer); ok {
			dr.NoCopy, dr.Why = r.CanReference(ctx, dir)
		} else {
			dr.Why = "the node cannot reference files in place"
		}
		ps.noCopy[dir] = dr.NoCopy
		cands, err := scanDir(dir)
		if err != nil {
			dr.Err = err.Error()
			s.log.Error("cache dir unreadable; its pins are kept", "dir", dir, "err", err)
			// Not knowing what the dir holds is no reason to unpin it: keep what we knew.
			for path, rec := range s.state.Files {
				if rec.Repo != "" && filepath.Dir(path) == filepath.Clean(dir) {
					ps.keepPaths[path] = true
					seeds = append(seeds, s.seedFromRecord(path, rec, dr.NoCopy))
				}
			}
		}
		dr.Files = len(cands)
		rep.Dirs = append(rep.Dirs, dr)
		for _, c := range cands {
			ps.keepPaths[c.Path] = true
			v := classify(c, ps.ix, s.state.Files[c.Path], ps.sigs != nil)
			switch v.Kind {
			case refused:
				rep.Refused = append(rep.Refused, FileNote{Path: c.Path, Reason: v.Reason})
			case needHash:
				toHash = append(toHash, c)
			case verified:
				seeds = append(seeds, s.newSeed(c, v, dr.NoCopy))
			}
		}
	}
	return seeds, toHash
}

// hashResult is one file hashed by the hasher goroutine.
type hashResult struct {
	c   candidate
	st  fileStat
	sum [sha256.Size]byte
	err error
	// For a signature the db does not carry: the repo of its package when it passed the keyring check,
	// else why not, and whether that answer holds for as long as the signature file is unchanged (gpgv
	// refused it over the right package) or depends on its package (not there yet, say) and must be
	// asked again.
	sigRepo, sigWhy string
	sigRetry        bool
}

// hashAll hashes files in a goroutine of its own, one at a time and one ahead of its reader. The channel
// is closed when all are done or ctx is.
func (ps *pass) hashAll(ctx context.Context, toHash []candidate) <-chan hashResult {
	s := ps.s
	out := make(chan hashResult, 1)
	go func() {
		defer close(out)
		for _, c := range toHash {
			if ctx.Err() != nil {
				return
			}
			st, sum, err := hashFile(ctx, c, s.buf, s.progressAdd)
			res := hashResult{c: c, st: st, sum: sum, err: err}
			if want, _ := expect(c.Name, ps.ix, ps.sigs != nil); err == nil && want.Unvouched {
				res.sigRepo, res.sigWhy, res.sigRetry = ps.checkSignature(ctx, c, st, want)
			}
			out <- res
		}
	}()
	return out
}

// checkSignature checks a signature the db does not carry over its package, which lies beside it and
// must itself match its db entry: the package's bytes go through sha256 and gpgv in one read. It returns
// the package's repo when the signature is good, or the reason it is refused and whether to ask again
// (retry): only gpgv's "bad signature" over a package that matches the db is final. pacman may put the
// .sig into the cache before its package, so "no package" must not stick to the signature.
func (ps *pass) checkSignature(ctx context.Context, c candidate, st fileStat, pkg verdict) (repo, why string, retry bool) {
	sigFile, err := openSame(c.Path, st, true)
	if err != nil {
		return "", err.Error(), true
	}
	sig, err := io.ReadAll(io.LimitReader(sigFile, sigcheck.MaxSize+1))
	sigFile.Close()
	if err != nil {
		return "", fmt.Sprintf("read %s: %v", c.Path, err), true
	}
	pkgPath := strings.TrimSuffix(c.Path, ".sig")
	pst, err := lstat(pkgPath)
	if err != nil || !pst.Mode.IsRegular() || pst.Size != pkg.Size {
		return "", reasonBadSig + ": its package is not in the cache as the sync db describes it", true
	}
	f, err := openSame(pkgPath, pst, true)
	if err != nil {
		return "", err.Error(), true
	}
	defer f.Close()
	h := sha256.New()
	body := io.TeeReader(&ctxReader{ctx: ctx, r: io.LimitReader(f, pkg.Size)}, h)
	verr := ps.sigs.Verify(ctx, sig, body)
	_, _ = io.Copy(h, body) // gpgv may stop reading early on a bad signature
	switch {
	case [sha256.Size]byte(h.Sum(nil)) != pkg.SHA256:
		return "", reasonBadSig + ": its package does not match the sync db", true
	case verr != nil:
		return "", verr.Error(), !errors.Is(verr, sigcheck.ErrBadSignature)
	}
	return pkg.Repo, "", false
}

// accept records a hash result and returns the seed when the file is verified.
func (ps *pass) accept(res hashResult) (seed, bool) {
	s, rep, c := ps.s, ps.rep, res.c
	if res.err != nil {
		s.progressFile()
		switch _, lerr := lstat(c.Path); {
		case isNotExist(lerr):
			delete(ps.keepPaths, c.Path) // removed while we read it: gone is gone
		case errors.Is(res.err, ErrChanged):
			rep.Failed = append(rep.Failed, FileNote{Path: c.Path, Reason: "changed while being verified; retried next pass"})
		case errors.Is(res.err, context.Canceled):
		default:
			rep.Failed = append(rep.Failed, FileNote{Path: c.Path, Reason: res.err.Error()})
		}
		return seed{}, false
	}
	rep.HashedBytes += res.st.Size
	if res.sigRetry {
		// No record: the next pass (its package landing is an event) checks the signature again.
		s.progressFile()
		rep.Refused = append(rep.Refused, FileNote{Path: c.Path, Reason: res.sigWhy})
		return seed{}, false
	}
	rec := &record{Dev: res.st.Dev, Ino: res.st.Ino, Size: res.st.Size, Mtime: res.st.Mtime, Ctime: res.st.Ctime, Hashed: true, SHA256: res.sum,
		Repo: res.sigRepo, Why: res.sigWhy}
	c.Stat = res.st
	v := classify(c, ps.ix, rec, ps.sigs != nil)
	if v.Kind == verified {
		rec.Repo = v.Repo
	}
	s.state.Files[c.Path] = rec
	if v.Kind != verified {
		s.progressFile()
		rep.Refused = append(rep.Refused, FileNote{Path: c.Path, Reason: v.Reason})
		s.log.Warn("refused", "file", c.Path, "reason", v.Reason)
		return seed{}, false
	}
	return s.newSeed(c, v, ps.noCopy[c.Dir]), true
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
	if size <= int64(node.Import().ChunkSize) {
		return node.RawCID(sum)
	}
	if c, err := cid.Decode(s.state.CIDs[hex.EncodeToString(sum[:])]); err == nil {
		return c
	}
	return cid.Undef
}

// SeededCIDs returns, for every file the last pass verified, its sha256 and CID (when known). It must
// not be called during a pass.
func (s *Seeder) SeededCIDs() map[[sha256.Size]byte]cid.Cid {
	out := make(map[[sha256.Size]byte]cid.Cid, len(s.state.Files))
	for _, rec := range s.state.Files {
		if rec.Repo == "" {
			continue
		}
		if c := s.knownCID(rec.SHA256, rec.Size); c.Defined() {
			out[rec.SHA256] = c
		}
	}
	return out
}

// fileError is a failure of one file (it changed or vanished), as opposed to a failure of the node.
type fileError struct {
	path string
	err  error
}

func (e *fileError) Error() string { return e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// add sends one verified file to the node from a descriptor that is checked to be the file that was
// hashed (rec), and checks the CID the node reports where it is known in advance. It touches no state.
func (s *Seeder) add(ctx context.Context, sd seed, rec record) (cid.Cid, error) {
	want := fileStat{Dev: rec.Dev, Ino: rec.Ino, Size: rec.Size, Mtime: rec.Mtime, Ctime: rec.Ctime}
	f, err := openSame(sd.Path, want, true)
	if err != nil {
		return cid.Undef, &fileError{sd.Path, err}
	}
	defer f.Close()
	body := &ctxReader{ctx: ctx, r: io.LimitReader(f, sd.Size), progress: s.progressAdd}
	c, err := s.opts.Node.Add(ctx, node.File{Path: sd.Path, PinName: sd.pinName(), Size: sd.Size, Content: body, NoCopy: sd.NoCopy})
	if err != nil {
		if body.err != nil {
			return cid.Undef, &fileError{sd.Path, fmt.Errorf("read %s: %w", sd.Path, body.err)}
		}
		return cid.Undef, err // the node names the file
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
	s.state.BrokenRefs = rep.BrokenRefs
	if err := s.state.save(s.opts.StateDir); err != nil {
		s.log.Error("state not saved; the next pass re-hashes", "err", err)
	}
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
