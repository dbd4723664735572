// Package endpoint is a pacman mirror on loopback that fetches packages over IPFS and races the real
// mirrors, verifying every byte against the sync db before pacman sees it.
//
// pacman asks it for /<repo>/os/<arch>/<file>, as it would ask any mirror (a Server line: pacman 6.0),
// or for /cache/<repo>/os/<arch>/<file> (a CacheServer line: pacman 6.1 and 7). A package is answered
// from its sync-db entry: its CID is derived from the sha256 for a package of at most 1 MiB, and
// otherwise found among what this machine seeds or under the index roots the user follows. As a Server
// it races IPFS against the real mirrors and passes databases, their signatures and files no sync db
// knows to the mirrors unchanged; as a CacheServer it answers only from IPFS, with a 404 for what no
// peer has, and never needs the mirrors. Bytes reach pacman only once they are known to be right (see
// fetch.go): pacman keeps what a failed download wrote and resumes it elsewhere, so an abort cannot take
// a wrong byte back.
//
// It owns the race, the shared upstream downloads and IPFS checks, the LAN protocol's server and the
// status page. It must never write to pacman's cache, send pacman a peer's byte not yet checked (a
// mirror's stream as pacman itself would take it, its end held back), look anything up on the network
// before deciding a request, listen off loopback, or import the reconcile.
package endpoint
