// Package lanindex lets the agents of a LAN find each other's indexes with no configuration. A package
// over 1 MiB has no CID that follows from the sync db, so a machine can ask its neighbours for it only
// once it knows the CID some neighbour seeds it under. Each agent publishes the root of its index (the
// mirror-shaped MFS tree of what it seeds) under its node's own key, /ipns/<peer ID>, and each resolves
// that name for every peer its node is connected to over a LAN address (the neighbours mDNS found).
//
// It owns only that exchange. What it finds is an untrusted claim: the endpoint still fetches a package
// named by an index whole and checks it against the sync db before pacman sees a byte. It never
// publishes anything but the index root, and resolves at most MaxPeers names per round, each within a
// timeout.
package lanindex
