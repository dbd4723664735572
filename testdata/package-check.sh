#!/usr/bin/env bash
# Builds the Arch package with makepkg from a source tarball (`make dist`), as an unprivileged user with
# check() on, installs it with pacman -U into a scratch root, and checks what it installed: the hook and
# the binary its Exec names, the units (systemd-analyze verify), sysusers.d and tmpfiles.d (applied with
# --root), and that the binaries run. Root only; meant for the pacman 7 root (`make test-pacman7`), where
# makepkg and libalpm are what Arch has.
#
#   testdata/package-check.sh pacman-ipfs-VERSION.tar.gz
set -euo pipefail

tarball=$(realpath "$1")
src=$(cd "$(dirname "$0")/.." && pwd)
builder=pacman-ipfs-build
fail() { echo "package-check: FAILED: $*" >&2; exit 1; }
step() { echo "package-check: $*"; }

[ "$(id -u)" = 0 ] || fail "needs root (useradd, pacman -U)"
id "$builder" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$builder"

work=$(mktemp -d /var/tmp/package-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir "$work/build"
cp "$src/PKGBUILD" "$tarball" "$work/build/"
# The builder's Go build cache survives between runs of the same root; modules come from the module
# cache mounted by pacman7-root.sh when it is there (a file:// proxy), else from the Go module proxy.
gocache=/var/cache/pacman-ipfs-build/go-build
mkdir -p "$gocache"
chown -R "$builder" "$work/build" "$gocache"

proxy=${GOPROXY:-https://proxy.golang.org,direct}
if [ -d /srv/gomodcache/cache/download ]; then
	proxy="file:///srv/gomodcache/cache/download,$proxy"
fi

step "makepkg (build, check, package) as $builder"
start=$(date +%s)
(cd "$work/build" && runuser -u "$builder" -- env -i PATH="$PATH" HOME="$work/build" LANG=C.UTF-8 \
	GOCACHE="$gocache" GOPROXY="$proxy" GOTOOLCHAIN=local \
	makepkg --nodeps --check --noconfirm --nocolor) >"$work/makepkg.log" 2>&1 || {
	tail -n 60 "$work/makepkg.log" >&2
	fail "makepkg"
}
grep -E '^(ok|FAIL|---)' "$work/makepkg.log" | grep -v '^--- SKIP' || true
step "makepkg took $(($(date +%s) - start)) s"
pkg=$(ls "$work"/build/pacman-ipfs-*.pkg.tar.* | grep -v '\.sig$')
# Kept for `make test-units`, which boots it under systemd (/var/tmp of the pacman 7 root).
mkdir -p /var/tmp/pacman-ipfs-pkg
rm -f /var/tmp/pacman-ipfs-pkg/pacman-ipfs-*.pkg.tar.*
cp "$pkg" /var/tmp/pacman-ipfs-pkg/

# A scratch root: pacman -U runs the package's own hook there, chrooted, as it would on a machine.
root=$work/root
mkdir -p "$root/var/lib/pacman" "$root/etc" "$root/var/cache/pacman/pkg"
cat >"$work/pacman.conf" <<EOF
[options]
RootDir = $root
DBPath = $root/var/lib/pacman/
CacheDir = $root/var/cache/pacman/pkg/
LogFile = $root/var/log/pacman.log
SigLevel = Never
EOF
step "pacman -U $(basename "$pkg") into a scratch root"
# -dd: Debian's pacman has no local db of pacman, glibc and the rest.
out=$(pacman --config "$work/pacman.conf" --root "$root" -U --noconfirm -dd "$pkg" 2>&1) || { echo "$out" >&2; fail "pacman -U"; }
echo "$out" | grep -iE 'error|warning' && fail "pacman -U printed an error or warning"

step "the hook, and the binary its Exec names"
hook=$root/usr/share/libalpm/hooks/pacman-ipfs.hook
[ -f "$hook" ] || fail "no $hook"
exec_path=$(sed -n 's/^Exec *= *\([^ ]*\).*/\1/p' "$hook")
[ -n "$exec_path" ] && [ -x "$root$exec_path" ] || fail "the hook's Exec $exec_path is not an executable in the package"
# The hook runs chrooted in any root (pacstrap): its client must need no library.
file "$root$exec_path" | grep -q 'statically linked' || fail "$exec_path is not static: $(file "$root$exec_path")"
printf 'pacman\n' | chroot "$root" "$exec_path" || fail "$exec_path failed inside a bare root"

step "the binaries run"
"$root/usr/bin/pacman-ipfs" help >/dev/null 2>&1 || "$root/usr/bin/pacman-ipfs" --help >/dev/null 2>&1 ||
	fail "/usr/bin/pacman-ipfs does not run"
"$root/usr/bin/pacman-ipfs" status --state-dir "$work/state" --api /ip4/127.0.0.1/tcp/1 >/dev/null 2>&1
# (status answers with the node down; its exit code is not the point, that it links against libalpm is)
ldd "$root/usr/bin/pacman-ipfs" | grep -q 'libalpm.so.15' || fail "pacman-ipfs is not linked against libalpm 15: $(ldd "$root/usr/bin/pacman-ipfs")"

step "units: systemd-analyze verify, on the installed files"
sh "$src/packaging/verify-units.sh" "$root/usr/lib/systemd/system" || fail "systemd-analyze verify"

step "sysusers.d and tmpfiles.d, applied to the root"
out=$(systemd-sysusers --root="$root" 2>&1) || { echo "$out" >&2; fail "systemd-sysusers"; }
grep -q '^pacman-ipfs-kubo:' "$root/etc/passwd" || fail "sysusers made no pacman-ipfs-kubo user"
out=$(systemd-tmpfiles --root="$root" --create 2>&1) || { echo "$out" >&2; fail "systemd-tmpfiles"; }
[ -d "$root/var/cache/pacman-ipfs" ] || fail "tmpfiles made no /var/cache/pacman-ipfs"
kubo_uid=$(awk -F: '$1 == "pacman-ipfs-kubo" {print $3}' "$root/etc/passwd")
[ "$(stat -c %u "$root/var/cache/pacman-ipfs")" = "$kubo_uid" ] || fail "/var/cache/pacman-ipfs is not owned by pacman-ipfs-kubo (uid $kubo_uid)"

step "the credential files of the units' LoadCredential=: there, root's only; seed-mirror's configuration"
for f in kubo-api cluster-api; do
	[ "$(stat -c '%a %u' "$root/etc/pacman-ipfs/$f")" = "600 0" ] || fail "/etc/pacman-ipfs/$f is not 0600 root"
done
grep -q '^MIRROR_ROOT=' "$root/etc/pacman-ipfs/seed-mirror.conf" || fail "no MIRROR_ROOT in /etc/pacman-ipfs/seed-mirror.conf"

step "nothing installed outside what the package lists"
pacman --config "$work/pacman.conf" --root "$root" -Qkk pacman-ipfs >/dev/null 2>&1 || fail "pacman -Qkk pacman-ipfs"
if command -v namcap >/dev/null; then
	namcap "$pkg" || fail namcap
else
	step "namcap: not available here (Arch only), skipped"
fi
step "OK ($(basename "$pkg"), $(pacman --config "$work/pacman.conf" --root "$root" -Ql pacman-ipfs | wc -l) paths)"
