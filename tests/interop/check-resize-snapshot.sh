#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk check, resize and snapshot against qemu-img on raw images: the same
# exit status and messages (the program name aside), and for resize the same
# resulting file sizes and preserved data.  (qcow2 adds its own cases in
# tests/image/.)
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io

# run TOOL ARGS...: "rc=N" then the output, with the program names unified
# and qemu-img's raw-probing warning dropped (vdisk does not write it here).
run() {
	local rc=0
	"$@" >out 2>&1 || rc=$?
	echo "rc=$rc"
	sed -e 's/^qemu-img: /TOOL: /' -e 's/^vdisk: /TOOL: /' -e 's/qemu-img --help/TOOL --help/' \
		-e 's/vdisk --help/TOOL --help/' \
		-e '/^WARNING: Image format was not specified/,+2d' out
}

same() {
	local q v
	q=$(run qemu-img "$@" a.raw)
	v=$(run "$VDISK" "$@" b.raw)
	[ "$q" = "$v" ] || {
		printf 'qemu-img:\n%s\nvdisk:\n%s\n' "$q" "$v"
		fail "differs: $*"
	}
	[ "$(stat -c %s a.raw)" = "$(stat -c %s b.raw)" ] || fail "sizes differ after: $*"
}

qemu-img create -q -f raw a.raw 1M
qemu-img create -q -f raw b.raw 1M
qemu-io -f raw -c 'write -q -P 0x33 0 1M' a.raw
qemu-io -f raw -c 'write -q -P 0x33 0 1M' b.raw

# check: raw has no checks (63), in both output formats.
same check
same check --output=json
same check -f raw -r leaks

# resize: grow, relative, shrink refused without --shrink, then allowed,
# bad sizes.
same resize -f raw +1M
same resize -f raw 3M
same resize -f raw 1M
same resize -f raw --shrink 1536k
same resize -f raw --shrink -- -512k
same resize -f raw +0.5
same resize -f raw --preallocation=falloc +1M
qemu-io -f raw -c 'read -q -P 0x33 0 1M' b.raw | grep -q 'verification failed' &&
	fail "resize lost data"
"$VDISK" io -f raw -c 'read -q -P 0 1M 1M' b.raw | grep -q 'verification failed' &&
	fail "the grown part does not read as zeroes"

# snapshot: raw has none to list, and cannot take one.
same snapshot -l
same snapshot -l -c s1
# qemu-img words this one "-95 (Operation not supported)"; we name the format.
rc=0
"$VDISK" snapshot -c s1 b.raw 2>err || rc=$?
[ $rc = 1 ] || fail "snapshot -c on raw exited $rc"
grep -q "^vdisk: Could not create snapshot 's1': Operation not supported" err ||
	fail "snapshot -c on raw: $(cat err)"
echo PASS
