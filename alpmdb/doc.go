// Package alpmdb reads pacman's sync databases through libalpm (go-alpm) into an immutable index of what
// each package file must be: its repository, name, version, size and sha256.
//
// It is the only package that talks to libalpm. libalpm handles are not goroutine-safe and go-alpm keeps
// its callbacks in package globals, so every use of libalpm here happens under one mutex, on a handle that
// lives only for one Load. libalpm never takes pacman's lock for reading sync databases, and nothing here
// writes to them.
//
// It owns pacman.conf (conf.go, through alpmdb/ini) and the sync dbs. It must never write pacman's files,
// take pacman's lock, or hand out a libalpm value: what leaves it is plain Go.
package alpmdb
