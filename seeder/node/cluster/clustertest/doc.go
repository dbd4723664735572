// Package clustertest starts real IPFS Cluster peers (ipfs-cluster-service v1.1.6, built from
// testdata/cluster/go.mod) on loopback for integration tests, each with its own kubo node (kubotest):
// crdt consensus, a random secret shared by the peers, no mDNS, loopback listen addresses, short
// metric intervals so that allocations need not wait. A new peer bootstraps to every earlier one: the
// cluster's DHT does not find loopback peers. Everything is stopped and removed at cleanup.
//
// It must never be linked into a production binary.
package clustertest
