// Package memnode is an IPFS node in memory for tests: it builds real UnixFS DAGs with the seeder's
// import parameters (so its CIDs are the ones kubo must produce) and keeps blocks and named pins in maps.
//
// It must never be linked into a production binary; the conformance suite (nodetest) keeps it honest against
// kubo.
package memnode
