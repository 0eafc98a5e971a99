# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Sourced by the shell tests (tests/interop, tests/image, tests/fault):
#
#	. "$(dirname "$0")/../lib/common.sh"
#	vd_setup qemu-io qemu-img      # tools the test needs
#
# vd_setup skips the test (exit 77, "SKIP: reason") unless every named tool
# is installed, fails it if vdisk is not built, makes $VDISK an absolute path,
# and moves into a fresh scratch directory $T that is removed at exit.

SRCDIR=${SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${BUILD:-build}
VDISK=${VDISK:-$BUILD/vdisk}

fail() {
	echo "FAIL: $*"
	exit 1
}

skip() {
	echo "SKIP: $*"
	exit 77
}

# need TOOL...: skip unless each is on PATH.
need() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null || skip "$t not installed"
	done
}

vd_setup() {
	need "$@"
	[ -x "$VDISK" ] || fail "$VDISK not built"
	VDISK=$(cd "$(dirname "$VDISK")" && pwd)/$(basename "$VDISK")
	T=$(mktemp -d)
	# shellcheck disable=SC2064
	trap "rm -rf '$T'" EXIT
	cd "$T" || fail "cannot enter $T"
}

# wait_socket PATH: until a server listens there (5 s), else fail.
wait_socket() {
	local i
	for i in $(seq 100); do
		[ -S "$1" ] && return 0
		sleep 0.05
	done
	fail "socket $1 did not appear"
}
