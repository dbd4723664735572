#!/usr/bin/env bash
# Runs a command inside a Debian trixie root (pacman 7.0, libalpm 15: the ABI Arch ships), made with
# debootstrap from the same Debian registry apt uses and cached under /var/tmp, so only the first run pays
# for it (about 5 minutes). The host's Go toolchain, module cache and build cache are bind-mounted, the
# host's CA certificates copied in, and this checkout is mounted at /src. Root only.
#
#   testdata/pacman7-root.sh make test        # what `make test-pacman7` runs
#   testdata/pacman7-root.sh bash             # a shell in the root
#
# PACMAN_IPFS_PACMAN7_ROOT moves the cached root; remove the folder to start over.
set -euo pipefail

root=${PACMAN_IPFS_PACMAN7_ROOT:-/var/tmp/pacman-ipfs-trixie}
src=$(cd "$(dirname "$0")/.." && pwd)
mirror=${PACMAN_IPFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What make and makepkg need in the root, besides Go (bind-mounted); every tool a test needs comes from
# `make deps`, as on any minimal Debian (iproute2, nginx, curl...).
pkgs=gcc,libc6-dev,make,git,pkg-config,libalpm-dev,libarchive-dev,pacman-package-manager,makepkg,libarchive-tools,systemd,zstd,fakeroot,file,binutils,ca-certificates,gpg,gpgv,gpg-agent,procps,sudo,xz-utils

if [ "$(id -u)" != 0 ]; then
	echo "pacman7-root.sh: needs root (debootstrap, chroot, mounts)" >&2
	exit 1
fi

if [ ! -e "$root/.pacman-ipfs-ready" ]; then
	command -v debootstrap >/dev/null || {
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
	}
	start=$(date +%s)
	rm -rf "$root.tmp"
	echo "pacman7-root: debootstrap trixie into $root (once)" >&2
	debootstrap --variant=minbase --include="$pkgs" trixie "$root.tmp" "$mirror" >"$root.log" 2>&1 || {
		tail -n 30 "$root.log" >&2
		exit 1
	}
	rm -rf "$root"
	mv "$root.tmp" "$root"
	echo "pacman7-root: made in $(($(date +%s) - start)) s" >&2
	touch "$root/.pacman-ipfs-ready"
fi
# Certificates change with the host; copy them every time.
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

goroot=$(go env GOROOT)
gomodcache=$(go env GOMODCACHE)
gocache=$(go env GOCACHE)
mkdir -p "$gomodcache" "$gocache"

# A private mount namespace: every mount goes away with the command, whatever happens to it.
exec unshare --mount --propagation private -- bash -euo pipefail -c '
root=$1 src=$2 goroot=$3 gomodcache=$4 gocache=$5; shift 5
mnt() { mkdir -p "$root$2"; mount --rbind "$1" "$root$2"; }
# The root a mount point of its own, so that what needs "/" to be one (ip netns) works inside.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mnt /sys /sys
mnt /dev /dev
mount -t tmpfs tmpfs "$root/tmp"
mount -t tmpfs tmpfs "$root/run"
mnt "$goroot" /usr/local/go
mnt "$gomodcache" /root/go/pkg/mod
mnt "$gomodcache" /srv/gomodcache # world-readable, for makepkg'"'"'s unprivileged builder (a file:// proxy)
mnt "$gocache" /root/.cache/go-build
mnt "$src" /src
exec chroot "$root" /usr/bin/env -i \
	HOME=/root PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" GOFLAGS="${GOFLAGS:-}" GOPROXY="${GOPROXY:-}" \
	PACMAN_IPFS_REQUIRE_TOOLS="${PACMAN_IPFS_REQUIRE_TOOLS:-}" \
	GOMODCACHE=/root/go/pkg/mod GOCACHE=/root/.cache/go-build \
	bash -c "cd /src && exec \"\$@\"" bash "$@"
' bash "$root" "$src" "$goroot" "$gomodcache" "$gocache" "$@"
