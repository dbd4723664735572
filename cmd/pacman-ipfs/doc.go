// Command pacman-ipfs seeds pacman's package cache into IPFS. See README.md.
//
// It owns flags, signals and wiring: main calls run(ctx), each subcommand parses its flags (refusing those it
// does not use) and hands over to the seeder packages. It must never hold logic a package could: what it
// decides is which parts to start and with what.
package main
