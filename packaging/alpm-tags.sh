#!/bin/sh
# Prints the Go build tags that match the installed libalpm: go-alpm v2.2.1 built plainly matches
# libalpm 13 (pacman 6.0, Debian bookworm); built with -tags next it matches libalpm 14 and 15
# (pacman 6.1 and 7, what Arch ships). Used by the Makefile and the PKGBUILD.
set -eu
v=$(pkg-config --modversion libalpm 2>/dev/null || true)
if [ -z "$v" ]; then
	# No pkg-config: pacman says "Pacman v7.0.0 - libalpm v15.0.0".
	v=$(pacman --version 2>/dev/null | sed -n 's/.*libalpm v\([0-9][0-9.]*\).*/\1/p' | head -n1)
fi
if [ -z "$v" ]; then
	echo "alpm-tags.sh: cannot find libalpm (install libalpm-dev on Debian, pacman on Arch)" >&2
	exit 1
fi
major=${v%%.*}
if [ "$major" -ge 14 ]; then
	echo next
fi
