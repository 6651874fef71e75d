#!/usr/bin/env bash
# Installs what tailor needs to build, test and run its demo. Idempotent: each
# item is checked first and reported as "already installed" when present.
#
#   ClickHouse   Debian's clickhouse-server / clickhouse-client packages
#   ONNX Runtime libonnxruntime.so.1 from the npm package onnxruntime-node,
#                unpacked into $TAILOR_CACHE/onnxruntime/
#   Go modules   go mod download
#
# Environment: TAILOR_CACHE (default $HOME/.cache/tailor).
set -euo pipefail

ORT_VERSION=1.24.1
ORT_NPM_PACKAGE="onnxruntime-node@${ORT_VERSION}"
ORT_TARBALL_DIR="package/bin/napi-v6/linux/x64"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAILOR_CACHE="${TAILOR_CACHE:-${HOME:?HOME is not set}/.cache/tailor}"
ORT_DIR="${TAILOR_CACHE}/onnxruntime"

CLEANUP=()
cleanup() { if [ ${#CLEANUP[@]} -gt 0 ]; then rm -rf "${CLEANUP[@]}"; fi; }
trap cleanup EXIT

say() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: ERROR: %s\n' "$*" >&2; exit 1; }

# as_root runs a command as root: directly when we are root, through sudo
# when it is available, and fails with a clear message otherwise.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root to run '$*' (not root and sudo is not installed)"
	fi
}

# have_clickhouse_bin NAME finds NAME on PATH or in the sbin directories that
# a non-root PATH often lacks.
have_clickhouse_bin() {
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

install_clickhouse() {
	if [ -n "${TAILOR_CLICKHOUSE_SERVER:-}" ] && [ -x "${TAILOR_CLICKHOUSE_SERVER}" ]; then
		say "clickhouse: already installed (TAILOR_CLICKHOUSE_SERVER=${TAILOR_CLICKHOUSE_SERVER})"
		return
	fi
	if have_clickhouse_bin clickhouse-server && have_clickhouse_bin clickhouse-client; then
		say "clickhouse: already installed ($(command -v clickhouse-server || echo /usr/sbin/clickhouse-server))"
		return
	fi
	command -v apt-get >/dev/null 2>&1 ||
		die "clickhouse-server is missing and apt-get is not available: install ClickHouse and set TAILOR_CLICKHOUSE_SERVER to its server binary"
	say "clickhouse: installing clickhouse-server and clickhouse-client with apt-get"
	as_root apt-get update || die "apt-get update failed"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y clickhouse-server clickhouse-client ||
		die "apt-get install clickhouse-server clickhouse-client failed"
	have_clickhouse_bin clickhouse-server ||
		die "clickhouse-server still not found after apt-get install"
	say "clickhouse: installed"
}

# is_elf_shared_object FILE checks the ELF magic and the e_type field
# (ET_DYN = 3, little-endian) without needing the 'file' tool.
is_elf_shared_object() {
	local f=$1 magic etype
	[ -s "$f" ] || return 1
	magic=$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')
	[ "$magic" = "7f454c46" ] || return 1
	etype=$(od -An -j16 -N2 -tu2 "$f" | tr -d ' \n')
	[ "$etype" = "3" ]
}

install_onnxruntime() {
	local lib="${ORT_DIR}/libonnxruntime.so.1"
	if is_elf_shared_object "$lib"; then
		say "onnxruntime: already installed (${lib})"
		return
	fi
	command -v npm >/dev/null 2>&1 || die "npm is needed to fetch ${ORT_NPM_PACKAGE} (apt-get install npm)"
	say "onnxruntime: fetching ${ORT_NPM_PACKAGE} with npm pack"

	local tmp
	tmp=$(mktemp -d)
	CLEANUP+=("$tmp")

	(cd "$tmp" && npm pack --silent "$ORT_NPM_PACKAGE" >/dev/null) || die "npm pack ${ORT_NPM_PACKAGE} failed"
	local tgzs=("$tmp"/onnxruntime-node-*.tgz) # a glob, not `ls | head` (SIGPIPE under pipefail)
	local tgz=${tgzs[0]}
	[ -e "$tgz" ] || die "npm pack produced no tarball"

	tar -xzf "$tgz" -C "$tmp" --wildcards "${ORT_TARBALL_DIR}/libonnxruntime.so*" ||
		die "no ${ORT_TARBALL_DIR}/libonnxruntime.so* in $(basename "$tgz")"

	mkdir -p "$ORT_DIR"
	# The 1.24.1 tarball holds only libonnxruntime.so.1; copy whatever
	# libonnxruntime.so.1* it has (a versioned file or links, if a later one
	# ships them) and make sure the libonnxruntime.so.1 name exists.
	local f
	for f in "$tmp/$ORT_TARBALL_DIR"/libonnxruntime.so.1*; do
		[ -e "$f" ] || continue
		cp -P "$f" "$ORT_DIR/"
	done
	if [ ! -e "$lib" ]; then
		local versioned
		versioned=$(ls "$ORT_DIR"/libonnxruntime.so.1.* 2>/dev/null | sort -V | tail -n1 || true)
		[ -n "$versioned" ] || die "no libonnxruntime.so.1* found in ${ORT_NPM_PACKAGE}"
		ln -sf "$(basename "$versioned")" "$lib"
	fi
	ln -sf libonnxruntime.so.1 "${ORT_DIR}/libonnxruntime.so"
	is_elf_shared_object "$lib" || die "${lib} is not an ELF shared object"
	say "onnxruntime: installed ${ORT_VERSION} at ${lib}"
}

download_go_modules() {
	command -v go >/dev/null 2>&1 || die "go is not on PATH"
	# Offline first: succeeds only when every module is in the module cache.
	if (cd "$REPO_ROOT" && GOPROXY=off GOFLAGS=-mod=mod go mod download) >/dev/null 2>&1; then
		say "go modules: already downloaded"
		return
	fi
	say "go modules: go mod download"
	(cd "$REPO_ROOT" && go mod download) || die "go mod download failed"
	say "go modules: downloaded"
}

install_clickhouse
install_onnxruntime
download_go_modules
say "ONNXRUNTIME_LIB=${ORT_DIR}/libonnxruntime.so.1"
