# pacman-ipfs build, test, demo and benchmarks. `make test` installs what it needs (as root on
# Debian/Ubuntu through apt-get, on Arch through pacman) and builds kubo from go.mod's tool pin.

GO        ?= go
PREFIX    ?= /usr
DESTDIR   ?=
# go-alpm's build tag follows the installed libalpm (see packaging/alpm-tags.sh).
TAGS      ?= $(shell packaging/alpm-tags.sh)
BIN       := $(CURDIR)/bin
IPFS      := $(BIN)/ipfs
# In CI a missing tool fails the tests instead of skipping them.
PACMAN_IPFS_REQUIRE_TOOLS ?= $(if $(CI),1,)
export PACMAN_IPFS_REQUIRE_TOOLS
export PACMAN_IPFS_KUBO := $(IPFS)

DEB_DEPS  := gcc pkg-config libalpm-dev libarchive-dev pacman-package-manager makepkg libarchive-tools systemd zstd
ARCH_DEPS := gcc pkgconf pacman libarchive systemd zstd

.PHONY: all build test unit demo bench deps kubo packaging clean

all: build

build:
	$(GO) build -trimpath -tags '$(TAGS)' -o pacman-ipfs ./cmd/pacman-ipfs

# kubo, pinned in go.mod as a Go tool.
kubo: $(IPFS)
$(IPFS): go.mod go.sum
	$(GO) build -o $(IPFS) github.com/ipfs/kubo/cmd/ipfs

deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		missing=; for p in $(DEB_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		fi; \
	elif [ "$$(id -u)" = 0 ] && command -v pacman >/dev/null 2>&1 && [ -f /etc/arch-release ]; then \
		pacman -S --needed --noconfirm $(ARCH_DEPS) >/dev/null; \
	else \
		echo "deps: not root: make sure these are installed: $(DEB_DEPS) (Debian) or $(ARCH_DEPS) (Arch)"; \
	fi

# The whole suite: unit tests, then integration tests against real pacman and a real kubo daemon, then
# the packaging checks.
test: deps kubo
	$(GO) vet -tags '$(TAGS)' ./...
	$(GO) test -tags '$(TAGS)' -count=1 -timeout 40m ./...
	$(MAKE) --no-print-directory packaging

# systemd-analyze verify on every unit (zero messages), and the PKGBUILD's metadata through makepkg.
# makepkg refuses to run as root, so as root it runs as an unprivileged user made for it.
packaging:
	sh packaging/verify-units.sh
	@set -e; tmp=$$(mktemp -d); cp PKGBUILD "$$tmp/"; \
	if [ "$$(id -u)" = 0 ]; then \
		id pacman-ipfs-build >/dev/null 2>&1 || useradd --system --no-create-home pacman-ipfs-build; \
		chown -R pacman-ipfs-build "$$tmp"; \
		(cd "$$tmp" && runuser -u pacman-ipfs-build -- makepkg --printsrcinfo) >"$$tmp/.SRCINFO"; \
	else \
		(cd "$$tmp" && makepkg --printsrcinfo) >"$$tmp/.SRCINFO"; \
	fi; \
	grep -q '^pkgbase = pacman-ipfs' "$$tmp/.SRCINFO"; echo "makepkg --printsrcinfo: OK ($$(wc -l <"$$tmp/.SRCINFO") lines)"; \
	rm -rf "$$tmp"

# Unit tests only: no pacman, no kubo.
unit:
	$(GO) test -tags '$(TAGS)' -short ./...

demo: deps kubo build
	./testdata/demo.sh

bench: deps kubo
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench . -benchtime 1x -timeout 60m ./... | tee bench.out

clean:
	rm -rf pacman-ipfs $(BIN) bench.out
