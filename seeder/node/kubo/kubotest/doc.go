// Package kubotest starts real kubo (go-ipfs) daemons on loopback for
// integration tests and benchmarks.
//
// Each node gets its own repo, listens only on 127.0.0.1 with kernel-chosen
// ports, and is configured so it never dials the internet: no bootstrap
// peers, no mDNS, no AutoConf, no delegated routers, no telemetry. Nodes
// still run bitswap and the DHT, so two nodes that are connected directly
// with Connect exchange blocks.
//
// The kubo binary is the one pinned as a Go tool in go.mod, so tests run
// against the same kubo version that the project ships against.
//
// It must never be linked into a production binary, nor start a node that can reach beyond loopback.
package kubotest
