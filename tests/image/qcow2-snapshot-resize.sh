#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Internal snapshots and size changes, as QEMU 7.2 has them:
#  - regression (qcow2-discard-shared-l2): a discard on an image whose L2
#    table is shared with a snapshot cleared the shared table in place; the
#    snapshot lost its data and the clusters leaked;
#  - a version 3 image with snapshots can grow and shrink; applying a
#    snapshot of another size gives the image that size back; images made
#    this way by vdisk are applied by qemu-img and the other way round;
#  - a version 2 image with snapshots is not resized, with QEMU's message.
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io

qcheck()
{
	qemu-img check "$1" >"$T/check.out" 2>&1 || fail "$2: qemu-img check: $(cat "$T/check.out")"
	"$VDISK" check "$1" >"$T/vcheck.out" 2>&1 || fail "$2: vdisk check: $(cat "$T/vcheck.out")"
}
size_of() { qemu-img info --output=json "$1" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }
reads()
{
	local img=$1 tool=$2
	shift 2
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	if [ "$tool" = qemu ]; then
		qemu-io "${args[@]}" "$img" >"$T/r.out" 2>&1
	else
		"$VDISK" io -f qcow2 "${args[@]}" "$img" >"$T/r.out" 2>&1
	fi
	! grep -q 'verification failed\|error\|Error' "$T/r.out" || fail "$img: $*: $(cat "$T/r.out")"
}

# 1. Discard over a table shared with a snapshot.
img=$T/shared.qcow2
qemu-img create -q -f qcow2 "$img" 128M
"$VDISK" io -f qcow2 -c 'write -P 3 100M 1M' -c 'write -P 4 2M 64k' "$img" >/dev/null
"$VDISK" snapshot -c s "$img"
"$VDISK" io -f qcow2 -c 'discard 32M 96M' -c 'discard 2M 64k' "$img" >/dev/null
qcheck "$img" "discard after snapshot"
reads "$img" vdisk 'read -P 0 100M 1M' 'read -P 0 2M 64k'
qemu-img snapshot -a s "$img"
reads "$img" qemu 'read -P 3 100M 1M' 'read -P 4 2M 64k'

# 2. Resize with snapshots, and snapshots of other sizes, made by vdisk.
img=$T/v3.qcow2
qemu-img create -q -f qcow2 "$img" 64M
"$VDISK" io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 60M 1M' "$img" >/dev/null
"$VDISK" snapshot -c s64 "$img"
"$VDISK" resize -f qcow2 "$img" 128M >/dev/null || fail "grow with a snapshot refused"
"$VDISK" io -f qcow2 -c 'write -P 3 100M 1M' "$img" >/dev/null
"$VDISK" snapshot -c s128 "$img"
"$VDISK" resize -f qcow2 --shrink "$img" 32M >/dev/null || fail "shrink with snapshots refused"
qcheck "$img" "shrink with snapshots"
[ "$(size_of "$img")" = 33554432 ] || fail "size after shrink: $(size_of "$img")"
reads "$img" qemu 'read -P 1 0 1M'
cp "$img" "$T/q.qcow2"
"$VDISK" snapshot -a s64 "$img"
[ "$(size_of "$img")" = 67108864 ] || fail "vdisk apply s64: size $(size_of "$img")"
qcheck "$img" "vdisk apply s64"
reads "$img" qemu 'read -P 1 0 1M' 'read -P 2 60M 1M'
"$VDISK" snapshot -a s128 "$img"
[ "$(size_of "$img")" = 134217728 ] || fail "vdisk apply s128: size $(size_of "$img")"
qcheck "$img" "vdisk apply s128"
reads "$img" qemu 'read -P 3 100M 1M' 'read -P 2 60M 1M' 'read -P 1 0 1M'
# The same image applied by qemu-img.
qemu-img snapshot -a s128 "$T/q.qcow2"
qcheck "$T/q.qcow2" "qemu-img apply s128"
reads "$T/q.qcow2" vdisk 'read -P 3 100M 1M' 'read -P 2 60M 1M'

# 3. Snapshots of other sizes made by qemu-img, applied by vdisk.
img=$T/q3.qcow2
qemu-img create -q -f qcow2 "$img" 64M
qemu-io -c 'write -P 5 10M 1M' "$img" >/dev/null
qemu-img snapshot -c a "$img"
qemu-img resize -q "$img" 256M
qemu-io -c 'write -P 6 200M 1M' "$img" >/dev/null
qemu-img snapshot -c b "$img"
qemu-img resize -q --shrink "$img" 16M
"$VDISK" snapshot -a b "$img"
[ "$(size_of "$img")" = 268435456 ] || fail "vdisk apply b: size $(size_of "$img")"
qcheck "$img" "vdisk apply b"
reads "$img" qemu 'read -P 6 200M 1M' 'read -P 5 10M 1M'
"$VDISK" snapshot -a a "$img"
[ "$(size_of "$img")" = 67108864 ] || fail "vdisk apply a: size $(size_of "$img")"
qcheck "$img" "vdisk apply a"

# 4. Version 2 with a snapshot: refused as qemu-img refuses it.
img=$T/v2.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 "$img" 64M
"$VDISK" snapshot -c s "$img"
qemu-img resize "$img" 128M >"$T/q.out" 2>&1 && fail "qemu-img resized a v2 image with snapshots"
"$VDISK" resize -f qcow2 "$img" 128M >"$T/v.out" 2>&1 && fail "vdisk resized a v2 image with snapshots"
grep -q "Can't resize a v2 image which has snapshots" "$T/v.out" || fail "message: $(cat "$T/v.out")"
echo "ok: discard with snapshots, resize with snapshots, apply across sizes"
