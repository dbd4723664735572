// Package kubo is the seeder's IPFS node backed by a kubo daemon's RPC API (github.com/ipfs/kubo/client/rpc).
//
// Requests are raw where the typed client falls short: Unixfs().Add sends its own import defaults and
// drops max-file-links and the pin name, and Pin().Ls panics on an HTTP error status. Every add passes
// every import parameter explicitly (node.Import), so the node's Import.* configuration cannot change
// a CID.
//
// It owns everything said to kubo. It must never touch a pin whose name lacks its caller's prefix (node.PinPrefix,
// a mirror seeder's, the prefetcher's), nor let a
// credential of the API address reach an error, a log or argv.
package kubo
