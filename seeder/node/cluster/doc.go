// Package cluster is the pinning backend for operators who run an IPFS Cluster (REST API v1.1.x): a
// small client over net/http for the few endpoints the seeder needs (POST and DELETE /pins/{cid}, GET
// /pins, GET /allocations, GET /id), and a node.Node that adds through the local kubo node (one of the
// cluster's IPFS peers, zero copy where it applies) and pins through the cluster, with the pin's name,
// the replication factor asked for and the local node's addresses as origins.
//
// It owns what is said to the cluster. It must never touch a pin whose name lacks its caller's prefix, nor let
// the REST API's credentials reach an error, a log or argv.
package cluster
