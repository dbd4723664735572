#!/usr/bin/env bash
# The demo behind `make demo`: starts a throwaway kubo on loopback, seeds this machine's pacman cache
# (or, on a machine without one, a small sample cache made here with bsdtar and repo-add), prints the
# status, and fetches one package back by its CID. Everything it starts or writes goes at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PIPFS=${PIPFS:-./pacman-ipfs}
IPFS=${IPFS:-./bin/ipfs}
CONF=${PACMAN_CONF:-/etc/pacman.conf}

work=$(mktemp -d "${TMPDIR:-/tmp}/pacman-ipfs-demo.XXXXXX")
daemon=
cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
	[ -n "${IPFS_PATH:-}" ] && [ "${IPFS_PATH#"$work"}" = "$IPFS_PATH" ] && rm -rf "$IPFS_PATH"
	rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Use the machine's cache when pacman.conf names repositories whose sync dbs exist and the cache holds
# packages; otherwise make a sample.
real=
if [ -r "$CONF" ] && command -v pacman-conf >/dev/null; then
	dbpath=$(pacman-conf --config "$CONF" DBPath 2>/dev/null || true)
	cachedir=$(pacman-conf --config "$CONF" CacheDir 2>/dev/null | head -n1 || true)
	if [ -n "$(pacman-conf --config "$CONF" --repo-list 2>/dev/null)" ] && ls "$dbpath"/sync/*.db >/dev/null 2>&1 &&
		ls "$cachedir"/*.pkg.tar* >/dev/null 2>&1; then
		real=1
	fi
fi

if [ -n "$real" ]; then
	say "seeding this machine's pacman cache: $cachedir ($(du -sh "$cachedir" | cut -f1))"
	if [ "$(id -u)" = 0 ]; then
		# Beside the cache, kubo's filestore can reference the packages in place: zero copy.
		export IPFS_PATH
		IPFS_PATH=$(mktemp -d "$(dirname "${cachedir%/}")/pacman-ipfs-demo.XXXXXX")
		rmdir "$IPFS_PATH"
	else
		export IPFS_PATH=$work/ipfs
		echo "not root: the node's repo cannot sit beside the cache, so packages are copied into $IPFS_PATH"
	fi
else
	say "no pacman cache here: making a sample repo with bsdtar and repo-add"
	for tool in bsdtar repo-add; do
		command -v $tool >/dev/null || { echo "demo: $tool is missing (run 'make deps' as root)"; exit 1; }
	done
	root=$work/root
	cachedir=$root/var/cache/pacman/pkg
	mkdir -p "$cachedir" "$root/var/lib/pacman/sync" "$root/var/lib/pacman/local" "$work/repo"
	for spec in hello:200 tools:3000 docs:1500; do
		name=${spec%%:*} kib=${spec##*:}
		stage=$work/stage-$name
		mkdir -p "$stage/usr/share/$name"
		head -c $((kib * 1024)) /dev/urandom >"$stage/usr/share/$name/data"
		cat >"$stage/.PKGINFO" <<-EOF
			pkgname = $name
			pkgbase = $name
			pkgver = 1.0-1
			pkgdesc = pacman-ipfs demo package
			url = https://example.invalid/$name
			builddate = $(date +%s)
			packager = pacman-ipfs demo
			size = $((kib * 1024))
			arch = x86_64
		EOF
		(cd "$stage" && bsdtar --uid 0 --gid 0 -czf "$work/repo/$name-1.0-1-x86_64.pkg.tar.gz" .PKGINFO usr)
	done
	repo-add -q "$work/repo/demo.db.tar.gz" "$work"/repo/*.pkg.tar.gz
	# What `pacman -Syw` would leave behind: the sync db and the packages in the cache.
	cp "$work/repo/demo.db.tar.gz" "$root/var/lib/pacman/sync/demo.db"
	cp "$work"/repo/*.pkg.tar.gz "$cachedir"/
	# A file no sync db vouches for: it must be refused, never published.
	echo "not a package" >"$cachedir/notes.txt"
	CONF=$work/pacman.conf
	cat >"$CONF" <<-EOF
		[options]
		RootDir = $root
		DBPath = $root/var/lib/pacman/
		CacheDir = $cachedir
		Architecture = x86_64
		SigLevel = Never
		[demo]
		Server = file://$work/repo
	EOF
	export IPFS_PATH=$root/var/cache/pacman-ipfs
fi

say "starting a throwaway kubo on loopback (IPFS_PATH=$IPFS_PATH)"
"$IPFS" init --empty-repo --profile test >/dev/null
for kv in 'Addresses.API="/ip4/127.0.0.1/tcp/0"' 'Addresses.Gateway="/ip4/127.0.0.1/tcp/0"' \
	'Addresses.Swarm=["/ip4/127.0.0.1/tcp/0"]' 'AutoConf.Enabled=false' 'Bootstrap=[]' \
	'Routing.DelegatedRouters=[]' 'Ipns.DelegatedPublishers=[]' 'DNS.Resolvers={}' \
	'Experimental.FilestoreEnabled=true'; do
	"$IPFS" config --json "${kv%%=*}" "${kv#*=}"
done
IPFS_TELEMETRY=off "$IPFS" daemon >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -s "$IPFS_PATH/api" ] && break; sleep 0.1; done
api=$(cat "$IPFS_PATH/api")
echo "kubo RPC API at $api"

say "pacman-ipfs sync --pacman-conf $CONF --api $api"
rc=0
"$PIPFS" sync --pacman-conf "$CONF" --api "$api" --state-dir "$work/state" || rc=$?

say "pacman-ipfs status"
"$PIPFS" status --api "$api" --state-dir "$work/state"

say "fetching one package back by its CID"
line=$("$IPFS" pin ls --type=recursive --names | grep ' pacman-ipfs:' | head -n1 || true)
if [ -z "$line" ]; then
	echo "nothing was seeded"
	exit 1
fi
cid=${line%% *}
file=${line##*/}
"$IPFS" cat "$cid" >"$work/fetched"
want=$(sha256sum <"$cachedir/$file" | cut -d' ' -f1)
got=$(sha256sum <"$work/fetched" | cut -d' ' -f1)
echo "ipfs cat $cid"
echo "  $file: $(stat -c %s "$work/fetched") bytes, sha256 $got"
if [ "$want" != "$got" ]; then
	echo "  MISMATCH with the cache file (sha256 $want)"
	exit 1
fi
echo "  identical to the file in the cache"
exit "$rc"
