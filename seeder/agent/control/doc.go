// Package control is the agent's control protocol, over a Unix stream socket
// (/run/pacman-ipfs/control.sock).
//
// One request per connection: the client writes one JSON object on one line (at most MaxRequest bytes),
// the agent answers with one JSON object on one line and closes. Requests:
//
//	{"op":"status"}                          anyone: the agent's state and last report
//	{"op":"notify","targets":["zlib",...]}   root or the agent's group: a transaction ended, reconcile soon
//	{"op":"reconcile"}                       root or the agent's group: reconcile now (paccache is done)
//
// Answers are {"ok":true,...} or {"ok":false,"error":"..."}. Work requests are acknowledged as soon as
// they are queued, never after the work, so that the pacman hook returns at once. The agent reads the
// peer's credentials (SO_PEERCRED) to decide who may ask for work, and cuts off a connection that sends
// more than MaxRequest bytes or takes longer than the deadline.
//
// This package uses the standard library and golang.org/x/sys/unix (for the peer's credentials) only:
// the notify client that pacman's hook runs is built from it without cgo.
//
// It owns the wire format and the server's bounds. It must never import cgo, kubo, libalpm or the
// project's other packages.
package control
