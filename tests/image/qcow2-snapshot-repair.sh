#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `vdisk check -r all` repairs the snapshot table as `qemu-img check -r all`
# does (QEMU 7.2's qcow2_check_read_snapshot_table), on crafted images:
#  - an entry with more extra data than 1024 bytes: plain check refuses
#    ("Too much extra metadata", exit 1, as qemu-img), -r all keeps the first
#    1024 bytes and writes the table anew;
#  - an incomplete entry of a version 3 image (8 bytes of extra data, no
#    disk_size): plain check counts a corruption (exit 2, as qemu-img), -r all
#    gives it vm_state_size_large, disk_size and icount.
# Afterwards qemu-img check is clean, qemu-img lists the snapshot, the data
# reads back, and the snapshot still applies.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

craft() { # craft IMG EXTRA_SIZE: rewrite snapshot 0's entry with EXTRA_SIZE bytes of extra data
	python3 - "$1" "$2" <<'PY'
import struct, sys
img, want = sys.argv[1], int(sys.argv[2])
with open(img, "r+b") as f:
    h = f.read(72)
    nb, off = struct.unpack(">IQ", h[60:72])
    assert nb == 1
    f.seek(off)
    e = f.read(40)
    idl, nl = struct.unpack(">HH", e[12:16])
    ex = struct.unpack(">I", e[36:40])[0]
    rest = f.read(ex + idl + nl)
    extra, ids, name = rest[:ex], rest[ex:ex + idl], rest[ex + idl:]
    extra = (extra + bytes(want))[:want]
    ent = e[:36] + struct.pack(">I", want) + extra + ids + name
    ent += bytes(-len(ent) % 8)
    # The table's cluster (64 KiB) has room for the longer entry.
    f.seek(off)
    f.write(ent)
PY
}

for kind in oversize incomplete; do
	rm -f img.qcow2
	qemu-img create -q -f qcow2 img.qcow2 1M
	qemu-io -f qcow2 -c "write -P 0xcd 0 64k" img.qcow2 >/dev/null
	qemu-img snapshot -c snap1 img.qcow2
	qemu-io -f qcow2 -c "write -P 0xee 0 64k" img.qcow2 >/dev/null
	if [ $kind = oversize ]; then craft img.qcow2 2000; want=1; else craft img.qcow2 8; want=2; fi
	cp img.qcow2 ref.qcow2

	set +e
	qemu-img check ref.qcow2 >q.out 2>&1
	qrc=$?
	"$VDISK" check img.qcow2 >v.out 2>&1
	vrc=$?
	set -e
	[ $qrc = $want ] || { cat q.out; fail "$kind: qemu-img check exit $qrc, expected $want"; }
	[ $vrc = $qrc ] || { cat v.out; fail "$kind: vdisk check exit $vrc, qemu-img check $qrc"; }
	if [ $kind = oversize ]; then
		grep -q "Too much extra metadata in snapshot table entry 0" v.out || { cat v.out; fail "$kind: message"; }
	else
		grep -q "ERROR snapshot table entry 0 is incomplete" v.out || { cat v.out; fail "$kind: message"; }
	fi

	"$VDISK" check -r all img.qcow2 >r.out 2>&1 || { cat r.out; fail "$kind: vdisk check -r all failed"; }
	grep -qE "Discarding too much extra metadata|Repairing snapshot table entry 0 is incomplete" r.out ||
		{ cat r.out; fail "$kind: no repair message"; }
	grep -q "1 corruptions" r.out || { cat r.out; fail "$kind: the repair is not counted"; }
	qemu-img check img.qcow2 >q.out 2>&1 || { cat q.out; fail "$kind: qemu-img check after the repair"; }
	"$VDISK" check img.qcow2 >v.out 2>&1 || { cat v.out; fail "$kind: vdisk check after the repair"; }
	qemu-img snapshot -l img.qcow2 | grep -q "snap1" || fail "$kind: snapshot gone"
	qemu-io -r -f qcow2 -c "read -P 0xee 0 64k" img.qcow2 | grep -q "read 65536" || fail "$kind: data"
	"$VDISK" snapshot -a snap1 img.qcow2 || fail "$kind: snapshot -a after the repair"
	qemu-io -r -f qcow2 -c "read -P 0xcd 0 64k" img.qcow2 | grep -q "read 65536" || fail "$kind: snapshot data"
	qemu-img check img.qcow2 >q.out 2>&1 || { cat q.out; fail "$kind: qemu-img check after apply"; }
	# What QEMU 7.2 does with the same image: the same verdicts.
	qemu-img check -r all ref.qcow2 >q.out 2>&1 || { cat q.out; fail "$kind: qemu-img check -r all"; }
	echo "ok $kind: check exit $vrc (as qemu-img), repaired by check -r all"
done
echo PASS
