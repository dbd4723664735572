// Command pacman-ipfs-notify is what pacman's hook (hooks/pacman-ipfs.hook) runs after a transaction: it
// hands the transaction's package names to the agent's control socket and returns at once. It never
// fails the transaction (it always exits 0), prints nothing when the agent is absent or when it runs in
// a chroot (pacstrap, arch-chroot), and at most one line otherwise. It is built without cgo so that it
// starts in a millisecond and needs no library inside a chroot.
//
// It must never link cgo, kubo or libalpm (a test in cmd/pacman-ipfs checks), never read pacman's files, and
// never wait on the agent unless asked with --wait.
package main
