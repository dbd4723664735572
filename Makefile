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

# nginx, curl, wget and aria2c: the endpoint is checked against nginx serving the same files, with the
# clients pacman users put into XferCommand; iproute2: the LAN tests' namespaces and tc.
DEB_DEPS  := gcc pkg-config libalpm-dev libarchive-dev pacman-package-manager makepkg libarchive-tools systemd zstd gpg gpgv gpg-agent chromium nginx curl wget aria2 iproute2
ARCH_DEPS := gcc pkgconf pacman libarchive systemd zstd chromium nginx curl wget aria2 iproute2

VERSION   := $(shell sed -n 's/^pkgver=//p' PKGBUILD)
# Where `make test-pacman7` keeps its Debian trixie root (pacman 7, libalpm 15).
PACMAN7_ROOT ?= /var/tmp/pacman-ipfs-trixie
export PACMAN_IPFS_PACMAN7_ROOT := $(PACMAN7_ROOT)

.PHONY: all build test test-pacman7 test-package test-units unit lint demo bench deps kubo packaging dist clean

all: build

build:
	$(GO) build -trimpath -tags '$(TAGS)' -o pacman-ipfs ./cmd/pacman-ipfs

# kubo, pinned in go.mod as a Go tool.
kubo: $(IPFS)
$(IPFS): go.mod go.sum
	$(GO) build -o $(IPFS) github.com/ipfs/kubo/cmd/ipfs

# golangci-lint, pinned as a Go tool in a module of its own (testdata/tools/go.mod): its dependencies
# must not move the ones kubo and the agent are built with.
GOLANGCI  := $(BIN)/golangci-lint
$(GOLANGCI): testdata/tools/go.mod testdata/tools/go.sum
	cd testdata/tools && $(GO) build -o $(GOLANGCI) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

# The committed .golangci.yml: staticcheck, govet, unused, ineffassign, errcheck, and funlen and gocognit
# to keep production functions short and plain. Part of `make test`, so CI runs it with both ABIs' tags.
lint: $(GOLANGCI)
	$(GOLANGCI) run --build-tags '$(TAGS)' ./...

# Installing a package must not start its service (nginx is a test tool here, not a server of this
# machine): a policy-rc.d that denies every start is in place while apt-get runs, unless one already is.
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		missing=; for p in $(DEB_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing:$$missing"; \
			norc=; if [ ! -e /usr/sbin/policy-rc.d ]; then norc=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
			if [ -n "$$norc" ]; then rm -f /usr/sbin/policy-rc.d; fi; [ $$rc = 0 ]; \
		fi; \
	elif [ "$$(id -u)" = 0 ] && command -v pacman >/dev/null 2>&1 && [ -f /etc/arch-release ]; then \
		pacman -S --needed --noconfirm $(ARCH_DEPS) >/dev/null; \
	else \
		echo "deps: not root: make sure these are installed: $(DEB_DEPS) (Debian) or $(ARCH_DEPS) (Arch)"; \
	fi

# The whole suite: unit tests, then integration tests against real pacman and a real kubo daemon, then
# the packaging checks. LEG names the run in the closing count ("host: N passed, N failed, N skipped").
LEG ?= host
test: deps kubo
	$(GO) vet -tags '$(TAGS)' ./...
	$(MAKE) --no-print-directory lint
	testdata/gotest.sh $(LEG) -tags '$(TAGS)' -count=1 -timeout 40m ./...
	$(MAKE) --no-print-directory packaging

# The same suite inside a Debian trixie root (pacman 7.0, libalpm 15, built with -tags next: the ABI
# Arch ships), made once with debootstrap and cached in $(PACMAN7_ROOT); then the Arch package built
# there by makepkg from this tree, installed with pacman -U into a scratch root, and checked.
test-pacman7: kubo
	testdata/pacman7-root.sh make --no-print-directory test LEG=pacman7
	testdata/pacman7-root.sh make --no-print-directory test-package

# The units booted under systemd as PID 1 (systemd-nspawn), with the package test-pacman7 built laid out
# as pacman lays it out: in this machine's own tree (on CI Debian bookworm: systemd 252, pacman 6.0; the
# package's two binaries rebuilt for its libalpm) and in the trixie root (systemd 257, pacman 7.0).
# Read-only under an overlay: neither tree keeps anything of it. Root only; after test-pacman7.
PACMAN7_PKG = $(wildcard $(PACMAN7_ROOT)/var/tmp/pacman-ipfs-pkg/pacman-ipfs-*.pkg.tar.*)
test-units: kubo
	@[ -n "$(PACMAN7_PKG)" ] || { echo "test-units: no package: run make test-pacman7 first"; exit 1; }
	$(GO) build -trimpath -tags '$(TAGS)' -o $(BIN)/host/pacman-ipfs ./cmd/pacman-ipfs
	$(GO) build -trimpath -o $(BIN)/host/pacman-ipfs-notify ./cmd/pacman-ipfs-notify
	testdata/boot-units.sh "$$(. /etc/os-release && echo $$ID-$$VERSION_CODENAME)" / $(PACMAN7_PKG) $(BIN)/host
	testdata/boot-units.sh pacman7-root $(PACMAN7_ROOT) $(PACMAN7_PKG)

# makepkg builds the package from `make dist`'s tarball as an unprivileged user (check() included),
# pacman -U installs it into a scratch root, and testdata/package-check.sh checks what it installed.
test-package: dist
	testdata/package-check.sh pacman-ipfs-$(VERSION).tar.gz

# The source tarball the PKGBUILD builds from: this tree as committed, plus uncommitted changes to
# tracked files (git stash create), so what is tested is what is here.
dist:
	@set -e; tree=$$(git stash create); git archive --format=tar.gz --prefix=pacman-ipfs-$(VERSION)/ \
		-o pacman-ipfs-$(VERSION).tar.gz $${tree:-HEAD}; echo "dist: pacman-ipfs-$(VERSION).tar.gz"

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
	rm -rf pacman-ipfs $(BIN) bench.out pacman-ipfs-*.tar.gz
