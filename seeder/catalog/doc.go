// Package catalog is what this machine knows, before any request comes, of which packages it can get
// from peers and under which CID: the sync dbs' index, the CIDs it can trust (a package of at most one
// chunk is the raw CID of its db sha256; a file it seeds; a file checked whole here, by the endpoint or
// the prefetcher) and the CIDs its neighbours' and the followed indexes claim. The endpoint decides
// every request from a Catalog without a network lookup: a package nobody is known to hold goes to the
// mirrors at once. A Refresher keeps the claims fresh in the background, every index root in parallel
// and each bounded in time and size.
//
// It owns that knowledge and its freshness. It must never fetch a package, trust a claim (an index's
// CID is only where to look: its bytes are checked whole before they are trusted), or list directories
// of repositories and architectures this machine does not use.
package catalog
