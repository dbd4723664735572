package reconcile

import (
	"context"
	"errors"
	"fmt"
	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
	"path/filepath"
	"strings"

	"github.com/ipfs/go-cid"
)

// A block held by reference (zero copy) is read from one file: the first one added with it. When that
// file leaves the cache while another file still holds the same block (the same package in two
// CacheDirs, two packages that share a 1 MiB chunk at the same offset), the block stays pinned but can
// no longer be read. After a pass in which files left the cache, repairRefs finds the references into our
// CacheDirs that point at no seeded file, takes back the pins that need those blocks, drops the blocks,
// and adds the pins again from the files that are still there, so every reference points at a file that
// is. What it cannot repair is counted in the report, and the pass does not converge.

// refsNeedCheck says whether this pass may have left a reference behind: a file of ours left the cache
// (whether or not its pin went with it), the last check found broken references, or there is no earlier
// pass to go by.
func (ps *pass) refsNeedCheck() bool {
	if ps.rep.Unpinned > 0 || ps.s.state.BrokenRefs > 0 || ps.s.state.Last == nil {
		return true
	}
	for path, rec := range ps.s.state.Files {
		if rec.Repo != "" && !ps.keepPaths[path] {
			return true
		}
	}
	return false
}

// repairRefs is described above. A failure of the node ends the pass; a file that cannot be added again
// is reported as failed.
func (ps *pass) repairRefs(ctx context.Context) error {
	fr, ok := ps.s.opts.Node.(node.FileReferencer)
	if !ok || !ps.refsNeedCheck() {
		return nil
	}
	dangling, err := ps.danglingRefs(ctx, fr)
	if err != nil || len(dangling) == 0 {
		ps.rep.BrokenRefs = 0
		return err
	}
	affected, err := ps.needingBlocks(ctx, fr, dangling)
	if err != nil {
		return err
	}
	for _, sd := range affected {
		if err := ps.s.opts.Node.Unpin(ctx, sd.CID); err != nil {
			return fmt.Errorf("unpin %s to repair its references: %w", sd.Path, err)
		}
	}
	drop := make([]cid.Cid, 0, len(dangling))
	for b := range dangling {
		drop = append(drop, b)
	}
	if err := fr.DropBlocks(ctx, drop); err != nil {
		return fmt.Errorf("drop references to removed files: %w", err)
	}
	for _, sd := range affected {
		if err := ps.readd(ctx, sd); err != nil {
			return err
		}
	}
	left, err := ps.danglingRefs(ctx, fr)
	if err != nil {
		return err
	}
	ps.rep.RepairedRefs = len(affected)
	ps.rep.BrokenRefs = len(left)
	for b, path := range left {
		ps.rep.Failed = append(ps.rep.Failed, FileNote{Path: path, Reason: fmt.Sprintf(
			"block %s is referenced from this file, which is not seeded any more, and a pin that is not ours holds it", b)})
	}
	ps.s.log.Info("references to removed files repaired", "pins", len(affected), "blocks", len(dangling), "left", len(left))
	return nil
}

// danglingRefs lists the blocks referenced from files in our CacheDirs that no seed of this pass is.
func (ps *pass) danglingRefs(ctx context.Context, fr node.FileReferencer) (map[cid.Cid]string, error) {
	refs, err := fr.FileRefs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the node's file references: %w", err)
	}
	live := make(map[string]bool, len(ps.indexed))
	for _, sd := range ps.indexed {
		live[sd.Path] = true
	}
	out := make(map[cid.Cid]string)
	for b, path := range refs {
		if ps.inCacheDir(path) && !live[path] {
			out[b] = path
		}
	}
	return out, nil
}

func (ps *pass) inCacheDir(path string) bool {
	for _, dir := range ps.s.opts.CacheDirs {
		if rel, err := filepath.Rel(filepath.Clean(dir), path); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return true
		}
	}
	return false
}

// needingBlocks returns one seed (a file still in the cache) for each of our pins that holds a dangling
// block.
func (ps *pass) needingBlocks(ctx context.Context, fr node.FileReferencer, dangling map[cid.Cid]string) ([]seed, error) {
	var out []seed
	seen := make(map[cid.Cid]bool)
	for _, sd := range ps.indexed {
		if seen[sd.CID] {
			continue
		}
		seen[sd.CID] = true
		blocks := []cid.Cid{sd.CID}
		if sd.Size > int64(node.Import().ChunkSize) {
			var err error
			if blocks, err = fr.Blocks(ctx, sd.CID); err != nil {
				return nil, err
			}
		}
		for _, b := range blocks {
			if _, ok := dangling[b]; ok {
				out = append(out, sd)
				break
			}
		}
	}
	return out, nil
}

// readd adds a seed again from its file, under the hash record it was verified with.
func (ps *pass) readd(ctx context.Context, sd seed) error {
	rec := ps.s.state.Files[sd.Path]
	if rec == nil {
		return nil // cannot happen: seeds come from records
	}
	c, err := ps.s.add(ctx, sd, *rec)
	if err != nil {
		var fe *fileError
		if errors.As(err, &fe) {
			ps.rep.Failed = append(ps.rep.Failed, FileNote{Path: sd.Path, Reason: "added again to repair its references: " + err.Error()})
			return nil
		}
		return fmt.Errorf("add %s again to repair its references: %w", sd.Path, err)
	}
	if !c.Equals(sd.CID) {
		return fmt.Errorf("add %s again: the node answered %s, not %s", sd.Path, c, sd.CID)
	}
	return nil
}
