// Package sigcheck checks a package's detached signature against pacman's keyring with gpgv, for the
// signatures a sync db does not carry (pacman 7's repo-add leaves %PGPSIG% out unless told otherwise).
//
// It only reads: gpgv takes the keyring as a file and writes nothing, so the agent needs neither
// pacman's GnuPG home nor a writable one. What it does not know is pacman's trust settings (owner
// trust, keys pacman-key disabled): a signature it accepts is valid by a key in the keyring, and pacman
// still makes its own decision before it installs anything.
//
// It must never write a keyring or trust a signature gpgv did not call good.
package sigcheck
