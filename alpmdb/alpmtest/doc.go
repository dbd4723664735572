// Package alpmtest builds real Arch Linux packages (with bsdtar), real sync
// databases (with repo-add) and real pacman sandboxes for integration tests,
// plus synthetic sync databases in repo-add's exact format for benchmarks.
//
// Everything lives under t.TempDir(); nothing touches the host's pacman.
//
// It must never be linked into a production binary (a test in cmd/pacman-ipfs checks).
package alpmtest // import "github.com/pacman-ipfs/pacman-ipfs/alpmdb/alpmtest"
