#!/bin/sh
# CI check of the systemd units: runs `systemd-analyze verify` on pacman-ipfs.socket,
# pacman-ipfs.service, pacman-ipfs-kubo.service and paccache.service with our drop-in
# (paccache.service.d/pacman-ipfs.conf), and fails on any message at all.
#
# verify insists that every Exec*= binary exists, so the binaries the units name are created as stub
# executables at their real paths, only where nothing is there yet, and removed again on exit (with any
# directory this script had to create). That needs root when they are missing; as a user with all of them
# installed it works too. paccache.service comes from pacman-contrib if it is installed, else a stand-in
# copy of it (Type=oneshot) is used.
#
# usage: packaging/verify-units.sh        (from anywhere; exits 0 when clean, 1 otherwise)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
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

cp "$here/pacman-ipfs.socket" "$here/pacman-ipfs-mirror.socket" "$here/pacman-ipfs.service" "$here/pacman-ipfs-kubo.service" "$tmp/"
if [ -f /usr/lib/systemd/system/paccache.service ]; then
	cp /usr/lib/systemd/system/paccache.service "$tmp/"
else
	cat >"$tmp/paccache.service" <<'UNIT'
[Unit]
Description=Discard unused packages (stand-in for pacman-contrib's unit)

[Service]
Type=oneshot
ExecStart=/bin/true
UNIT
fi
mkdir "$tmp/paccache.service.d"
cp "$here/paccache-pacman-ipfs.conf" "$tmp/paccache.service.d/pacman-ipfs.conf"

rc=0
out=$(cd "$tmp" && systemd-analyze verify --man=no \
	pacman-ipfs.socket pacman-ipfs-mirror.socket pacman-ipfs.service pacman-ipfs-kubo.service paccache.service 2>&1) || rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
	printf '%s\n' "$out" >&2
	echo "verify-units: FAILED (systemd-analyze verify exit $rc)" >&2
	exit 1
fi

# Negative control: the same run with an unknown key in the drop-in must complain, or the drop-in was not
# read at all and the clean result above proves nothing.
printf 'PacmanIpfsVerifyCanary=1\n' >>"$tmp/paccache.service.d/pacman-ipfs.conf"
if ! (cd "$tmp" && systemd-analyze verify --man=no paccache.service 2>&1) | grep -q PacmanIpfsVerifyCanary; then
	echo "verify-units: FAILED (systemd-analyze verify did not read paccache.service.d/pacman-ipfs.conf)" >&2
	exit 1
fi
echo "verify-units: OK (pacman-ipfs.socket pacman-ipfs-mirror.socket pacman-ipfs.service pacman-ipfs-kubo.service paccache.service + drop-in)"
