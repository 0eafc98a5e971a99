#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Named reproducers of qcow2 driver bugs found by the interop matrix
# (tests/image/qcow2-interop.sh).  (The matrix also found the discard of an
# L2 table shared with a snapshot: qcow2-snapshot-resize.sh has that one.)  Each case: the commands, then what
# qemu-img and vdisk must find.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io

# vio IMG CMD...: vdisk io with the commands; fails on any failed command.
vio() {
	local img=$1 args=()
	shift
	for c in "$@"; do args+=(-c "$c"); done
	"$VDISK" io -f qcow2 "${args[@]}" "$img" >out 2>&1 || { cat out; return 1; }
	! grep -qi "failed" out || { cat out; return 1; }
}

# compressed-write-after-free: compressed writes fill a host cluster byte by
# byte (free_byte_offset).  When every compressed cluster in it was
# overwritten, that host cluster is freed and the next allocation reuses it
# as a data cluster; the next compressed write must not append to it.
# (vdisk did, as QEMU 7.2's qcow2_alloc_bytes() still does: qemu-img check
# then reports "OFLAG_COPIED data cluster: refcount=2" and the compressed
# bytes overwrite the data at 1M.)
qemu-img create -q -f qcow2 a.qcow2 64M
vio a.qcow2 'write -c -P 1 0 64k' 'write -P 2 0 64k' 'write -P 3 1M 64k' 'write -c -P 4 2M 64k' ||
	fail "compressed-write-after-free: the writes failed"
qemu-img check -q a.qcow2 || fail "compressed-write-after-free: qemu-img check"
"$VDISK" check -q a.qcow2 || fail "compressed-write-after-free: vdisk check"
qemu-io -f qcow2 -r -c 'read -P 2 0 64k' -c 'read -P 3 1M 64k' -c 'read -P 4 2M 64k' a.qcow2 >out
! grep -q "verification failed" out || fail "compressed-write-after-free: data: $(cat out)"
echo "ok: compressed-write-after-free"

# compressed-write-multi-cluster: `write -c` of several whole clusters is
# accepted (QEMU 7.2 compresses each on its own); vdisk refused it with
# EINVAL.  An unaligned start, or a length that is not whole clusters short
# of the end of the disk, is refused by both.
rm -f a.qcow2 b.qcow2
qemu-img create -q -f qcow2 a.qcow2 64M
cp a.qcow2 b.qcow2
vio a.qcow2 'write -c -P 5 0 192k' 'write -c -P 6 62M 2M' ||
	fail "compressed-write-multi-cluster: vdisk refused the writes"
qemu-io -f qcow2 -c 'write -c -P 5 0 192k' -c 'write -c -P 6 62M 2M' b.qcow2 >/dev/null
qemu-img check -q a.qcow2 || fail "compressed-write-multi-cluster: qemu-img check"
qemu-img compare -q a.qcow2 b.qcow2 || fail "compressed-write-multi-cluster: differs from qemu-io"
# Compressed clusters have no host offset in the map.
qemu-img map --output=json a.qcow2 | grep -q '"start": 0, "length": 196608,.*"data": true}' ||
	fail "compressed-write-multi-cluster: the clusters at 0 are not compressed: $(qemu-img map --output=json a.qcow2)"
for bad in 'write -c -P 7 4k 64k' 'write -c -P 7 4M 100k'; do
	vio a.qcow2 "$bad" >/dev/null 2>&1 && fail "compressed-write-multi-cluster: '$bad' was accepted"
	qemu-io -f qcow2 -c "$bad" b.qcow2 | grep -q "failed" ||
		fail "compressed-write-multi-cluster: qemu-io accepts '$bad' (test assumption)"
done
qemu-img check -q a.qcow2 || fail "compressed-write-multi-cluster: qemu-img check after refusals"
echo "ok: compressed-write-multi-cluster"
echo PASS
