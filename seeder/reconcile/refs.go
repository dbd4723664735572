package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/pacman-ipfs/pacman-ipfs/seeder/node"
)

// A block held by reference (zero copy) is read from one file: the first one added with it. When that
// file leaves the cache while another file still holds the same block (the same package in two
// CacheDirs, two packages that share a 1 MiB chunk at the same offset), the block stays pinned but can
// no longer be read. After a pass in which files left the cache, repairRefs finds the references into our
// CacheDirs that point at no seeded file (dangling), takes back the pins that need those blocks
// (needing), drops the blocks, and adds the pins again from the files that are still there, so every
// reference points at a file that is. What it cannot repair is counted in the report, and the pass does
// not converge.

// refsNeedCheck says whether this pass may have left a reference behind: a file of ours left the cache
// (whether or not its pin went with it), the last check found broken references, or there is no earlier
// pass to go by.
func (ps *pass) refsNeedCheck() bool {
	if ps.rep.Unpinned > 0 || ps.s.state.BrokenRefs > 0 || ps.s.state.Last == nil {
		return true
	}
	for p, rec := range ps.s.state.Files {
		if rec.Repo != "" && !ps.plan.Keep[p] {
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
	lost, err := ps.danglingRefs(ctx, fr)
	if err != nil || len(lost) == 0 {
		ps.rep.BrokenRefs = 0
		return err
	}
	blocks, err := ps.blocksOf(ctx, fr)
	if err != nil {
		return err
	}
	affected := needing(ps.seeded, blocks, lost)
	if err := ps.dropRefs(ctx, fr, affected, lost); err != nil {
		return err
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
	for b, p := range left {
		ps.rep.Failed = append(ps.rep.Failed, FileNote{Path: p, Reason: fmt.Sprintf(
			"block %s is referenced from this file, which is not seeded any more, and a pin that is not ours holds it", b)})
	}
	ps.s.log.Info("references to removed files repaired", "pins", len(affected), "blocks", len(lost), "left", len(left))
	return nil
}

func (ps *pass) danglingRefs(ctx context.Context, fr node.FileReferencer) (map[cid.Cid]string, error) {
	refs, err := fr.FileRefs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the node's file references: %w", err)
	}
	return dangling(refs, ps.s.opts.CacheDirs, ps.seeded), nil
}

// blocksOf lists the blocks of every seeded file of more than one block.
func (ps *pass) blocksOf(ctx context.Context, fr node.FileReferencer) (map[cid.Cid][]cid.Cid, error) {
	out := make(map[cid.Cid][]cid.Cid)
	for _, sd := range ps.seeded {
		if _, done := out[sd.CID]; done || !sd.multiBlock() {
			continue
		}
		bs, err := fr.Blocks(ctx, sd.CID)
		if err != nil {
			return nil, err
		}
		out[sd.CID] = bs
	}
	return out, nil
}

// dropRefs unpins the affected pins and drops the dangling blocks.
func (ps *pass) dropRefs(ctx context.Context, fr node.FileReferencer, affected []seed, lost map[cid.Cid]string) error {
	for _, sd := range affected {
		if err := ps.s.opts.Node.Unpin(ctx, sd.CID); err != nil {
			return fmt.Errorf("unpin %s to repair its references: %w", sd.Path, err)
		}
	}
	drop := make([]cid.Cid, 0, len(lost))
	for b := range lost {
		drop = append(drop, b)
	}
	if err := fr.DropBlocks(ctx, drop); err != nil {
		return fmt.Errorf("drop references to removed files: %w", err)
	}
	return nil
}

// readd adds a seed again from its file, under the hash record it was verified with.
func (ps *pass) readd(ctx context.Context, sd seed) error {
	c, err := ps.s.addFile(ctx, sd)
	var fe *fileError
	switch {
	case errors.As(err, &fe):
		ps.rep.Failed = append(ps.rep.Failed, FileNote{Path: sd.Path, Reason: "added again to repair its references: " + err.Error()})
		return nil
	case err != nil:
		return fmt.Errorf("add %s again to repair its references: %w", sd.Path, err)
	case !c.Equals(sd.CID):
		return fmt.Errorf("add %s again: the node answered %s, not %s", sd.Path, c, sd.CID)
	}
	return nil
}
