package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/sigcheck"
)

// addWorkers is how many adds run at once. kubo spends a few milliseconds of each add request on
// bookkeeping (pin, flush) rather than on bytes; overlapping requests hides it.
const addWorkers = 3

// pass carries out one plan against the node and reports what happened. The hasher goroutine only reads
// files and sends results; the add workers and the goroutine running the pass share the rest under mu.
type pass struct {
	s    *Seeder
	in   *inputs
	sigs sigcheck.Verifier // nil: signatures the dbs do not carry are refused
	mu   sync.Mutex
	plan plan // Keep and Claimed grow as hash results come in
	rep  *Report
	// seeded are the files pinned after the pass, with their CIDs: the index and the reference check
	// are made from them.
	seeded []seed
	// unpins are the pins to remove at the end of the pass, kept those whose file left but whose
	// retention has not run out (they stay in the index).
	unpins []cid.Cid
	kept   []seed
	gcOnce sync.Once
	gcErr  error
}

func newPass(s *Seeder, in *inputs, p plan, rep *Report, sigs sigcheck.Verifier) *pass {
	return &pass{s: s, in: in, plan: p, rep: rep, sigs: sigs}
}

// run executes the plan: the files it vouches for are added while the others are hashed, judged and
// added as they are verified; then the index is brought in line (before any unpin: it must never point
// at blocks an unpin drops), the pins no file accounts for go, and references are repaired.
func (ps *pass) run(ctx context.Context) error {
	for _, sd := range ps.plan.Seeded {
		ps.recordSeeded(sd)
	}
	ps.startProgress()
	defer ps.s.progressEnd()
	if err := ps.addAndHash(ctx); err != nil {
		return err
	}
	gone := unpins(ps.in.Pins, ps.plan.Claimed)
	ps.unpins, ps.kept, ps.s.state.Gone = retention(gone, ps.in.Pins, ps.s.pinPrefix(), ps.in.Gone, ps.in.Now, ps.s.opts.Retain)
	ps.rep.Retained = len(ps.kept)
	if err := ps.publishIndex(ctx); err != nil {
		return err
	}
	// Unpin only now: a large file's CID is known only once it was added, and it may be pinned already.
	if err := ps.unpin(ctx); err != nil {
		return err
	}
	return ps.repairRefs(ctx)
}

// startProgress counts the work ahead: files still to hash are read twice, once hashed, once added.
func (ps *pass) startProgress() {
	var n int64
	for _, sd := range ps.plan.Add {
		n += sd.size()
	}
	for _, c := range ps.plan.Hash {
		n += 2 * c.Stat.Size
	}
	ps.s.progressStart("seeding", len(ps.plan.Add)+len(ps.plan.Hash), n)
}

// addAndHash adds the planned files and hashes the others, handing each to the adders as soon as it is
// verified, so that hashing overlaps adding. A failure of the node ends it.
func (ps *pass) addAndHash(ctx context.Context) error {
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	jobs := make(chan seed)
	var wg sync.WaitGroup
	for range addWorkers {
		wg.Go(func() {
			for sd := range jobs {
				if err := ps.add(ctx, sd); err != nil {
					abort(err)
				}
			}
		})
	}
	send := func(sd seed) {
		select {
		case jobs <- sd:
		case <-ctx.Done():
		}
	}
	for _, sd := range ps.plan.Add {
		send(sd)
	}
	for h := range ps.hashAll(ctx, ps.plan.Hash) {
		if sd, add := ps.accept(h); add {
			send(sd)
		}
	}
	close(jobs)
	wg.Wait()
	return context.Cause(ctx)
}

// accept applies a hash result: it judges it, remembers the record, and says whether the file is to be
// added (a verified file whose CID is pinned or claimed already is seeded as it is).
func (ps *pass) accept(h hashed) (seed, bool) {
	if h.err != nil {
		_, lerr := lstat(h.c.Path)
		h.gone = isNotExist(lerr)
	}
	j := judge(ps.in, h)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if h.err == nil {
		ps.rep.HashedBytes += h.st.Size
	}
	if j.Record != nil {
		ps.s.state.Files[h.c.Path] = j.Record
	}
	switch {
	case j.Forget:
		delete(ps.plan.Keep, h.c.Path)
	case j.Failed:
		ps.rep.Failed = append(ps.rep.Failed, *j.Note)
	case j.Note != nil:
		ps.rep.Refused = append(ps.rep.Refused, *j.Note)
		if j.Record != nil {
			ps.s.log.Warn("refused", "file", h.c.Path, "reason", j.Note.Reason)
		}
	}
	if !j.Verified {
		ps.s.progressFile()
		return seed{}, false
	}
	if !claim(j.Seed, ps.in.Pins, ps.plan.Claimed) {
		ps.recordSeededLocked(j.Seed)
		ps.s.progressFile()
		return seed{}, false
	}
	return j.Seed, true
}

func (ps *pass) recordSeeded(sd seed) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.recordSeededLocked(sd)
}

func (ps *pass) recordSeededLocked(sd seed) {
	ps.seeded = append(ps.seeded, sd)
	ps.plan.Claimed[sd.CID] = true
	ps.rep.Seeded++
	ps.rep.count(sd)
}

// add seeds one file. A failure of the file is reported and the pass goes on; a failure of the node
// ends the pass.
func (ps *pass) add(ctx context.Context, sd seed) error {
	c, err := ps.s.addFile(ctx, sd)
	if errors.Is(err, node.ErrNoSpace) && ps.collectGarbage(ctx) {
		c, err = ps.s.addFile(ctx, sd) // once: a disk still full after the collection stays an error
	}
	ps.s.progressFile()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err != nil {
		return ps.addFailed(sd, err)
	}
	if sd.multiBlock() {
		ps.s.state.CIDs[hex.EncodeToString(sd.Rec.SHA256[:])] = c.String()
	}
	sd.CID = c
	ps.plan.Claimed[c] = true
	ps.seeded = append(ps.seeded, sd)
	ps.rep.Added++
	ps.rep.AddedBytes += sd.size()
	ps.rep.count(sd)
	ps.s.log.Debug("seeded", "file", sd.Path, "repo", sd.Repo, "cid", c.String(), "bytes", sd.size())
	return nil
}

// addFailed reports a failed add, with mu held: a full disk or a file that changed is the file's
// failure; anything else is the node's and ends the pass.
func (ps *pass) addFailed(sd seed, err error) error {
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
			delete(ps.plan.Keep, sd.Path) // removed while we added it: the unpins take back any pin
			return nil
		}
		ps.rep.Failed = append(ps.rep.Failed, FileNote{Path: sd.Path, Reason: fe.Error()})
		ps.s.log.Warn("not seeded", "file", sd.Path, "err", fe.err)
		return nil
	}
	return err
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

// publishIndex brings the node's mirror-shaped index in line with what is seeded, and publishes its root
// under the IPNS key when asked. A pass that changed nothing leaves both alone.
func (ps *pass) publishIndex(ctx context.Context) error {
	s := ps.s
	ixr, ok := s.opts.Node.(node.Indexer)
	if !ok || s.opts.IndexDir == "" {
		return nil
	}
	files, sum := indexFiles(append(slices.Clip(ps.seeded), ps.kept...), s.opts.Architectures)
	// Where it goes and under which key count too: a new --index-dir or --publish-index is a change.
	sum += " " + s.opts.IndexDir + " " + s.opts.PublishKey
	if sum == s.state.IndexSum && s.state.Index != "" {
		ps.rep.Index, ps.rep.IndexName = s.state.Index, s.state.IndexName
		return nil
	}
	root, err := ixr.SetIndex(ctx, s.opts.IndexDir, files)
	if err != nil {
		return err
	}
	// The fingerprint is kept only once all is done: a publish that failed (no such key yet) is tried
	// again by the next pass.
	s.state.Index, s.state.IndexSum, s.state.IndexName = "/ipfs/"+root.String(), "", ""
	ps.rep.Index = s.state.Index
	if np, ok := s.opts.Node.(node.NamePublisher); ok && s.opts.PublishKey != "" {
		name, err := np.PublishName(ctx, s.opts.PublishKey, root)
		if err != nil {
			return err
		}
		s.state.IndexName, ps.rep.IndexName = name, name
	}
	s.state.IndexSum = sum
	s.log.Info("index updated", "root", s.state.Index, "files", len(files), "name", s.state.IndexName)
	return nil
}

// unpin removes our pins that no file accounts for.
func (ps *pass) unpin(ctx context.Context) error {
	for _, c := range ps.unpins {
		if err := ps.s.opts.Node.Unpin(ctx, c); err != nil {
			return fmt.Errorf("unpin %s (%s): %w", c, ps.in.Pins[c], err)
		}
		delete(ps.s.state.Gone, c.String())
		ps.rep.Unpinned++
		ps.s.log.Debug("unpinned", "cid", c.String(), "pin", ps.in.Pins[c])
	}
	return nil
}

// hashAll hashes files in a goroutine of its own, one at a time and one ahead of its reader. The channel
// is closed when all are done or ctx is.
func (ps *pass) hashAll(ctx context.Context, toHash []candidate) <-chan hashed {
	s := ps.s
	out := make(chan hashed, 1)
	go func() {
		defer close(out)
		for _, c := range toHash {
			if ctx.Err() != nil {
				return
			}
			st, sum, err := hashFile(ctx, c, s.buf, s.progressAdd)
			h := hashed{c: c, st: st, sum: sum, err: err}
			if want, _ := expect(c.Name, ps.in.Index, ps.sigs != nil); err == nil && want.Unvouched {
				h.sigRepo, h.sigWhy, h.sigRetry = ps.checkSignature(ctx, c, st, want)
			}
			out <- h
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
	sig, err := readSignature(c.Path, st)
	if err != nil {
		return "", err.Error(), true
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

func readSignature(path string, st fileStat) ([]byte, error) {
	f, err := openSame(path, st, true)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sig, err := io.ReadAll(io.LimitReader(f, sigcheck.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return sig, nil
}

// fileError is a failure of one file (it changed or vanished), as opposed to a failure of the node.
type fileError struct {
	path string
	err  error
}

func (e *fileError) Error() string { return e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// addFile sends one verified file to the node from a descriptor that is checked to be the file that was
// hashed (sd.Rec), and checks the CID the node reports where it is known in advance. It touches no state.
func (s *Seeder) addFile(ctx context.Context, sd seed) (cid.Cid, error) {
	want := fileStat{Dev: sd.Rec.Dev, Ino: sd.Rec.Ino, Size: sd.Rec.Size, Mtime: sd.Rec.Mtime, Ctime: sd.Rec.Ctime}
	f, err := openSame(sd.Path, want, true)
	if err != nil {
		return cid.Undef, &fileError{sd.Path, err}
	}
	defer f.Close()
	body := &ctxReader{ctx: ctx, r: io.LimitReader(f, sd.size()), progress: s.progressAdd}
	c, err := s.opts.Node.Add(ctx, node.File{Path: sd.Path, PinName: sd.pinName(s.pinPrefix()), Size: sd.size(), Content: body, NoCopy: sd.NoCopy})
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
