// Package node is the IPFS node as the seeder sees it: the narrow Node interface (add with pin, list
// our pins, unpin), the optional capabilities some backends have (referencing files in place, the
// mirror-shaped index, IPNS, garbage collection), and the import parameters every add passes so that a
// CID follows from a package's bytes alone (IPIP-499 unixfs-v1-2025; a package of at most 1 MiB is the
// raw CID of its sha256).
//
// It owns those contracts; the backends live below it (kubo, memnode, and the conformance suite
// nodetest both pass). It must never import the packages that use it (reconcile, agent, endpoint), nor
// alpmdb.
package node
