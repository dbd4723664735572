#!/bin/sh
# CI check of the systemd units: runs `systemd-analyze verify` on pacman-ipfs.socket,
# pacman-ipfs-mirror.socket, pacman-ipfs.service, pacman-ipfs-kubo.service and
# pacman-ipfs-seed-mirror.service/.timer, and fails on any message at all.
#
# verify insists that every Exec*= binary exists, so the binaries the units name are created as stub
# executables at their real paths, only where nothing is there yet, and removed again on exit (with any
# directory this script had to create). That needs root when they are missing; as a user with all of them
# installed it works too.
#
# usage: packaging/verify-units.sh [DIR]  (from anywhere; exits 0 when clean, 1 otherwise)
#   DIR: where the unit files are, e.g. an installed package's usr/lib/systemd/system; default: packaging/
set -eu

here=$(cd "${1:-$(dirname "$0")}" && pwd)
stubs="/usr/bin/pacman-ipfs /usr/lib/pacman-ipfs/pacman-ipfs-notify /usr/lib/pacman-ipfs/pacman-ipfs-kubo-init /usr/bin/ipfs"

tmp=$(mktemp -d)
created_files=
created_dirs=
cleanup() {
	for f in $created_files; do rm -f "$f"; done
	# Deepest first: created_dirs is built by prepending.
	for d in $created_dirs; do rmdir "$d" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v systemd-analyze >/dev/null 2>&1 || { echo "verify-units: systemd-analyze not found" >&2; exit 1; }

for f in $stubs; do
	[ -e "$f" ] && continue
	dir=$(dirname "$f")
	missing=
	d=$dir
	while [ ! -d "$d" ]; do missing="$d $missing"; d=$(dirname "$d"); done
	for d in $missing; do
		mkdir "$d" || { echo "verify-units: cannot create $d for a stub (run as root)" >&2; exit 1; }
		created_dirs="$d $created_dirs"
	done
	printf '#!/bin/sh\n# stub made by packaging/verify-units.sh; removed when it exits\nexit 0\n' >"$f" ||
		{ echo "verify-units: cannot create stub $f (run as root)" >&2; exit 1; }
	created_files="$created_files $f"
	chmod 755 "$f"
done

units="pacman-ipfs.socket pacman-ipfs-mirror.socket pacman-ipfs.service pacman-ipfs-kubo.service pacman-ipfs-seed-mirror.service pacman-ipfs-seed-mirror.timer"
for u in $units; do cp "$here/$u" "$tmp/"; done
rc=0
# shellcheck disable=SC2086 # $units is a list of words
out=$(cd "$tmp" && systemd-analyze verify --man=no $units 2>&1) || rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
	printf '%s\n' "$out" >&2
	echo "verify-units: FAILED (systemd-analyze verify exit $rc)" >&2
	exit 1
fi

echo "verify-units: OK ($units)"
