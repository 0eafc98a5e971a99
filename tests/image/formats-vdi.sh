#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdi (VirtualBox) against QEMU 7.2's qemu-img and qemu-io:
#  - the interop matrix of tests/lib/formats.sh for dynamic and static
#    images (qemu-img check clean on what vdisk wrote, vdisk check clean on
#    both, qemu-img compare identical, QEMU's bytes read back by vdisk);
#  - create: the header qemu-img writes (all but the UUIDs), sizes rounded to
#    a sector, the size limit;
#  - check: a damaged block map or block count is reported by vdisk check as
#    by qemu-img check (corruptions, exit 2), and -r is refused by both;
#  - probing: vdisk info without -f says vdi.
# Rerun with FORMATS_SEED=N; FORMATS_OPS sets the workload length.
set -uo pipefail

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3
. "$SRCDIR/tests/lib/formats.sh"

HAS_CHECK=1
interop_row dynamic vdi "" 40M
interop_row static vdi static=on 12M
interop_row odd vdi "" 5000k

# Create: the same header and map as qemu-img, but for the two UUIDs.
for spec in "1M" "1000" "3G" "10M static=on"; do
	set -- $spec
	o=${2:+-o $2}
	qemu-img create -q -f vdi $o q.vdi "$1" || fail "qemu-img create $spec"
	"$VDISK" create -f vdi $o v.vdi "$1" >/dev/null || fail "vdisk create $spec"
	[ "$(stat -c %s q.vdi)" = "$(stat -c %s v.vdi)" ] || fail "$spec: file sizes differ"
	cmp -s <(head -c 392 q.vdi) <(head -c 392 v.vdi) || fail "$spec: headers differ"
	cmp -s <(tail -c +425 q.vdi | head -c 4096) <(tail -c +425 v.vdi | head -c 4096) ||
		fail "$spec: headers or maps differ"
	rm -f q.vdi v.vdi
done
"$VDISK" create -f vdi big.vdi 600T >/dev/null 2>err && fail "600T accepted"
grep -q "Unsupported VDI image size" err || fail "600T: $(cat err)"

# Probing.
qemu-img create -q -f vdi p.vdi 4M
"$VDISK" info p.vdi | grep -qx "file format: vdi" || fail "vdi not probed"

# Check: the count of allocated blocks wrong, then two entries on one block.
qemu-img create -q -f vdi c.vdi 4M
qemu-io -f vdi -c 'write -P 1 0 4k' -c 'write -P 2 1M 4k' c.vdi >/dev/null
cp c.vdi c2.vdi
printf '\x05\x00\x00\x00' | dd of=c.vdi bs=1 seek=388 conv=notrunc status=none
printf '\x00\x00\x00\x00' | dd of=c2.vdi bs=1 seek=516 conv=notrunc status=none
for f in c.vdi c2.vdi; do
	qemu-img check -f vdi "$f" >q.out 2>&1
	q=$?
	"$VDISK" check -f vdi "$f" >v.out 2>&1
	v=$?
	[ "$q" = 2 ] && [ "$v" = 2 ] || fail "$f: qemu-img check $q, vdisk check $v: $(cat v.out)"
	grep -q "ERROR:" v.out || fail "$f: vdisk check names nothing: $(cat v.out)"
	[ "$(grep -c ERROR: q.out)" = "$(grep -c ERROR: v.out)" ] ||
		fail "$f: different findings: $(cat q.out) / $(cat v.out)"
done
qemu-img check -r all -f vdi p.vdi >/dev/null 2>&1 && fail "qemu-img repaired vdi?"
"$VDISK" check -r all -f vdi p.vdi >/dev/null 2>&1 && fail "vdisk check -r accepted on vdi"
echo "PASS"
