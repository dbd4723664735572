// Package reconcile brings an IPFS node in line with pacman's package caches: every cache file whose
// name, size and sha256 match a sync-db entry is added and pinned with deterministic CIDs, and every pin
// of ours that no cache file accounts for any more is removed.
//
// A pass reads top-down: Seeder.Sync collects (lists the CacheDirs with lstat and the node's pins of
// ours), plans (makePlan: a pure function of those values, the sync dbs and the remembered hash
// records), executes the plan (pass.run: hash, judge, add, index, unpin, repair references) and saves
// the report. A pass is a reconcile, not a replay of events, so a lost event, a crash or a restart is
// healed by the next one. Hash results are kept by (device, inode, size, mtime, ctime): a pass over an
// unchanged cache reads no file.
//
// It must never send the node a byte that was not verified first (kubo announces blocks as it writes
// them, so "add, then check" would already have published a private file), follow a link, open anything
// but a regular file that is still the one it hashed, or touch a pin whose name lacks its pin prefix
// (node.PinPrefix for the cache, another for a mirror tree).
// It never writes into pacman's directories and never takes pacman's lock.
package reconcile
