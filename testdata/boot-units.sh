#!/usr/bin/env bash
# Boots a distribution's tree with systemd as PID 1 (systemd-nspawn -b; the tree read-only under an
# overlay, so nothing of the boot stays), lays the Arch package out in it as PKGBUILD's package() does,
# and uses the product as the README says, with the README's own commands: the units, the hook, the
# endpoint recipes, the journal, idle exit, the seed-mirror service, and the sandbox (IPAddressDeny=,
# which is first proved enforced). Root only; needs systemd-nspawn (systemd-container), and the tree must
# have systemd, pacman, nginx (the mirror, on loopback) and bsdtar.
#
#   testdata/boot-units.sh NAME TREE PACKAGE [BINDIR]
#
# BINDIR holds pacman-ipfs and pacman-ipfs-notify built for TREE's libalpm when the package's are for
# another (the package is built in the pacman 7 root; bookworm has libalpm 13). Prints one line per
# check and ends with "boot-NAME: N passed, N failed".
set -euo pipefail

name=$1 lower=$(realpath "$2") pkg=$(realpath "$3") bindir=${4:-}
src=$(cd "$(dirname "$0")/.." && pwd)
kubo=${PACMAN_IPFS_KUBO:-$src/bin/ipfs}
passed=0 failed=0 nsp= init=

[ "$(id -u)" = 0 ] || { echo "boot-$name: needs root" >&2; exit 1; }
command -v systemd-nspawn >/dev/null || {
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd-container >/dev/null
}

work=$(mktemp -d /var/tmp/boot-units.XXXXXX)
root=$work/root
cleanup() {
	if [ -n "$nsp" ]; then
		kill "$nsp" 2>/dev/null || true # nspawn powers the container off
		for _ in $(seq 1 100); do kill -0 "$nsp" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$nsp" 2>/dev/null || true
	fi
	umount -l "$root" 2>/dev/null || true
	umount -l "$work/t" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# The overlay's writable half on a tmpfs: the tree may be "/" itself.
mkdir -p "$work/t" "$root"
mount -t tmpfs -o size=2g tmpfs "$work/t"
mkdir -p "$work/t/upper" "$work/t/work"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/t/upper,workdir=$work/t/work" "$root"

# The package, as pacman -U would lay it out (its metadata files aside), and kubo where Arch's package
# puts it.
bsdtar -xpf "$pkg" -C "$root" --exclude .PKGINFO --exclude .BUILDINFO --exclude .MTREE --exclude .INSTALL
if [ -n "$bindir" ]; then
	install -m755 "$bindir/pacman-ipfs" "$root/usr/bin/pacman-ipfs"
	install -m755 "$bindir/pacman-ipfs-notify" "$root/usr/lib/pacman-ipfs/pacman-ipfs-notify"
fi
install -m755 "$kubo" "$root/usr/bin/ipfs"

# A repository on the machine's own nginx (loopback: the packaged unit may reach it), and pacman set up
# to use it.
repo=$root/srv/mirror/core/os/x86_64
mkdir -p "$repo"
mkpkg() { # name size
	local d=$work/pkg-$1
	mkdir -p "$d/usr/share/$1"
	head -c "$2" /dev/urandom >"$d/usr/share/$1/data"
	printf 'pkgname = %s\npkgbase = %s\npkgver = 1.0-1\npkgdesc = boot test\nurl = https://example.org\nbuilddate = 1700000000\npackager = test\nsize = %s\narch = x86_64\nlicense = custom\n' "$1" "$1" "$2" >"$d/.PKGINFO"
	(cd "$d" && bsdtar -czf "$repo/$1-1.0-1-x86_64.pkg.tar.gz" .PKGINFO usr)
}
mkpkg small $((300 << 10))
mkpkg big $((3 << 20))
mkpkg other $((200 << 10))
repo-add -q "$repo/core.db.tar.gz" "$repo"/*.pkg.tar.gz
mkdir -p "$root/etc/nginx/sites-enabled" "$root/var/lib/pacman/sync" "$root/var/cache/pacman/pkg" "$root/etc/pacman.d"
# Written as new files only: a link in the tree (Debian's sites-enabled/default is an absolute one) would
# be followed out of it, into this machine's own /etc.
rm -f "$root/etc/nginx/sites-enabled/default" "$root/etc/pacman.conf" "$root/etc/pacman.d/mirrorlist" "$root/etc/pacman-ipfs/seed-mirror.conf"
cat >"$root/etc/nginx/sites-enabled/pacman-ipfs-mirror" <<'EOF'
server {
	listen 80 default_server;
	root /srv/mirror;
}
EOF
echo 'Server = http://127.0.0.1/$repo/os/$arch' >"$root/etc/pacman.d/mirrorlist"
pacmanconf() { # the lines of [core] before its Include
	{
		printf '[options]\nArchitecture = x86_64\nSigLevel = Never\nLocalFileSigLevel = Never\n'
		[ -z "${downloaduser:-}" ] || printf 'DownloadUser = %s\n' "$downloaduser"
		printf '[core]\n'
		printf '%s\n' "$@"
		printf 'Include = /etc/pacman.d/mirrorlist\n'
	} >"$root/etc/pacman.conf"
}
pacmanconf
printf 'MIRROR_ROOT=/srv/mirror\nSEED_MIRROR_FLAGS=\n' >"$root/etc/pacman-ipfs/seed-mirror.conf"

# Boot: a network of its own (loopback, and a veth pair for a non-loopback address), CAP_BPF so that
# IPAddressDeny= is enforced at all.
systemd-nspawn -b --register=no --keep-unit --capability=CAP_BPF,CAP_PERFMON --system-call-filter=bpf \
	--private-network -D "$root" --machine="pi-boot-$name" >"$work/console.log" 2>&1 &
nsp=$!
for _ in $(seq 1 100); do init=$(pgrep -P "$nsp" | head -n1) && [ -n "$init" ] && break; sleep 0.1; done
ctr() { nsenter -t "$init" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"; }
state=
for _ in $(seq 1 600); do # the bus comes up a moment after PID 1
	state=$(ctr timeout 120 systemctl is-system-running --wait 2>/dev/null || true)
	case $state in running | degraded | maintenance) break ;; esac
	sleep 0.2
done
echo "boot-$name: booted: $(ctr systemctl --version | head -n1), $(ctr pacman --version | grep -o 'Pacman v[0-9.]*'), the system $state"

# pacman 7 downloads as an unprivileged user, as Arch's pacman.conf has it.
if ! ctr pacman --version | grep -q 'Pacman v6\.'; then
	ctr useradd --system --no-create-home --shell /usr/sbin/nologin alpm
	downloaduser=alpm
	pacmanconf
fi

check() { # what, command...
	local what=$1
	shift
	if "$@" >"$work/out" 2>&1; then
		passed=$((passed + 1))
		echo "boot-$name: ok: $what"
	else
		failed=$((failed + 1))
		echo "boot-$name: FAILED: $what"
		tail -n 25 "$work/out" | sed 's/^/    /'
	fi
}
# within SECONDS command...: the command succeeds within that time.
within() {
	local end=$(($(date +%s) + $1))
	shift
	until "$@"; do
		[ "$(date +%s)" -lt "$end" ] || return 1
		sleep 0.3
	done
}
pins() { ctr pacman-ipfs status --json 2>/dev/null | grep -o '"pins": *[0-9]*' | grep -o '[0-9]*$'; }
pinsAre() { [ "$(pins)" = "$1" ]; }
active() { [ "$(ctr systemctl is-active "$1")" = "$2" ]; }
http() { ctr curl -s -o /dev/null -w '%{http_code}' --max-time 20 "$1"; }

# The sandbox is proved before anything is believed of it: a unit with the packaged settings must not
# reach a non-loopback address that a unit without them reaches.
ctr ip link add pi0 type veth peer name pi1
ctr ip addr add 10.99.0.1/24 dev pi0
ctr ip link set pi0 up
ctr ip link set pi1 up
ctr systemctl restart nginx
denied() {
	! ctr systemd-run --wait --pipe -q -p IPAddressDeny=any -p IPAddressAllow=localhost \
		timeout 3 bash -c 'exec 3<>/dev/tcp/10.99.0.1/80'
}
check "IPAddressDeny=any is enforced (a unit with it cannot reach 10.99.0.1:80; one without it can)" \
	eval 'denied && ctr systemd-run --wait --pipe -q timeout 3 bash -c "exec 3<>/dev/tcp/10.99.0.1/80"'
if [ "$failed" != 0 ]; then
	echo "boot-$name: the sandbox is not enforced here (CAP_BPF?): nothing else is checked"
	echo "boot-$name: $passed passed, $failed failed"
	exit 1
fi

# The README's install steps.
check "systemctl enable --now pacman-ipfs-kubo.service pacman-ipfs.socket" \
	eval 'ctr systemctl enable --now pacman-ipfs-kubo.service && ctr systemctl enable --now pacman-ipfs.socket'
check "kubo runs as its own user" within 60 eval '[ "$(ctr ps -o user= -C ipfs)" = pacman-ipfs-kubo ] && active pacman-ipfs-kubo.service active'
check "nothing runs until something knocks" active pacman-ipfs.service inactive
check "pacman -Sy small big: the hook starts the agent" ctr pacman -Sy --noconfirm small big
check "the agent seeds both" within 60 pinsAre 2
check "status answers any user" eval 'ctr runuser -u nobody -- pacman-ipfs status | grep -q "pins"'
check "the watchdog is fed" eval '[ "$(ctr systemctl show -P WatchdogTimestampMonotonic pacman-ipfs.service)" -gt 0 ]'
check "the journal has the pass line" within 20 eval 'ctr journalctl -u pacman-ipfs.service -o cat | grep -q "msg=pass"'
check "a package removed from the cache is unpinned" eval 'ctr sh -c "rm /var/cache/pacman/pkg/big-*" && within 60 pinsAre 1'

# The endpoint, enabled and disabled with the README's commands while the agent runs.
readme() { # the README's lines between the two marker comments, as a script
	sed -n "/<!-- $1 -->/,/<!-- \/$1 -->/p" "$src/README.md" | grep '^sudo ' | sed 's/^sudo //'
}
check "the agent runs before the endpoint is enabled" active pacman-ipfs.service active
check "the README's endpoint recipe works while the agent runs" eval 'readme enable-endpoint | grep -q . && ctr sh -e -c "$(readme enable-endpoint)"'
check "the endpoint serves a seeded package" eval '[ "$(http http://127.0.0.1:7878/core/os/x86_64/small-1.0-1-x86_64.pkg.tar.gz)" = 200 ]'
# A sandbox denial names itself at once: the unit as shipped, a mirror that is not on loopback (before:
# every such request hung until pacman gave up, and the journal said "i/o timeout").
echo 'Server = http://10.99.0.1/$repo/os/$arch' >"$root/etc/pacman.d/mirrorlist"
ctr systemctl stop pacman-ipfs.service
forbidden() {
	local out
	out=$(ctr curl -s --max-time 20 -w '\n%{http_code} %{time_total}' http://127.0.0.1:7878/core/os/x86_64/other-1.0-1-x86_64.pkg.tar.gz)
	echo "$out"
	[ "$(tail -n1 <<<"$out" | cut -d' ' -f1)" = 502 ] && grep -q 'IPAddressDeny=' <<<"$out"
}
check "a mirror the unit forbids: a 502 naming the cause and the drop-in" forbidden
echo "boot-$name: (that answer took $(tail -n1 "$work/out" | cut -d' ' -f2) s)"
check "the journal names it" within 10 eval 'ctr journalctl -u pacman-ipfs.service -o cat | grep -qF "forbids the network (IPAddressDeny=)"'
check "status names it" eval 'ctr pacman-ipfs status | grep -q "note: pacman-ipfs.service forbids the network"'
echo 'Server = http://127.0.0.1/$repo/os/$arch' >"$root/etc/pacman.d/mirrorlist"
ctr systemctl stop pacman-ipfs.service
if ctr pacman --version | grep -q 'Pacman v6\.0'; then
	pacmanconf 'Server = http://127.0.0.1:7878/$repo/os/$arch'
	check "pacman 6.0, the endpoint first: a package nobody holds comes through it from the mirror" ctr pacman -Sw --noconfirm other
else
	pacmanconf 'CacheServer = http://127.0.0.1:7878/cache/$repo/os/$arch'
	check "pacman 7, the endpoint a CacheServer: a package nobody holds is a 404 at once" \
		eval '[ "$(http http://127.0.0.1:7878/cache/core/os/x86_64/other-1.0-1-x86_64.pkg.tar.gz)" = 404 ]'
	check "pacman 7: pacman gets it from its Server" ctr pacman -Sw --noconfirm other
fi
pacmanconf
check "the README's recipe disables the endpoint while the agent runs" eval 'readme disable-endpoint | grep -q . && ctr sh -e -c "$(readme disable-endpoint)"'
check "nothing listens on 127.0.0.1:7878 then" eval '[ "$(http http://127.0.0.1:7878/)" = 000 ]'

# Idle exit, with the flag shortened by a drop-in; the socket stays.
mkdir -p "$root/etc/systemd/system/pacman-ipfs.service.d"
printf '[Service]\nExecStart=\nExecStart=/usr/bin/pacman-ipfs agent --idle-exit 5s\n' >"$root/etc/systemd/system/pacman-ipfs.service.d/idle.conf"
ctr systemctl daemon-reload
ctr systemctl stop pacman-ipfs.service
check "the hook's client starts the agent" eval 'ctr /usr/lib/pacman-ipfs/pacman-ipfs-notify --reconcile --wait && within 30 active pacman-ipfs.service active'
check "the agent leaves when idle; its socket stays" within 60 eval 'active pacman-ipfs.service inactive && active pacman-ipfs.socket active'
rm "$root/etc/systemd/system/pacman-ipfs.service.d/idle.conf"
ctr systemctl daemon-reload

# The seed-mirror service on the machine's own tree.
check "pacman-ipfs-seed-mirror.service seeds the tree" eval 'ctr systemctl start pacman-ipfs-seed-mirror.service && [ "$(ctr systemctl show -P Result pacman-ipfs-seed-mirror.service)" = success ]'
check "pacman-ipfs-seed-mirror.timer is enabled and waits" eval 'ctr systemctl enable --now pacman-ipfs-seed-mirror.timer && active pacman-ipfs-seed-mirror.timer active'

if [ "$failed" != 0 ]; then
	echo "boot-$name: the journal:"
	ctr journalctl -b --no-pager -o short-monotonic -u 'pacman-ipfs*' | tail -n 60 | sed 's/^/    /'
fi
echo "boot-$name: $passed passed, $failed failed"
[ "$failed" = 0 ]
