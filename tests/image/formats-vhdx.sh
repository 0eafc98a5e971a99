#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vhdx against QEMU 7.2's qemu-img and qemu-io:
#  - the interop matrix of tests/lib/formats.sh (qemu-img check clean on
#    vdisk's images, qemu-img compare equal, every byte of qemu-io's image
#    read back by vdisk) for dynamic and fixed images, block sizes 1, 2, 8
#    (the default) and 32 MiB, with and without block_state_zero;
#  - create: the same layout as qemu-img (file size, region table, metadata
#    table and items but the random page 83 GUID, BAT), and its refusals;
#  - convert both ways: vdisk's and qemu-img's results compare equal;
#  - the log: an image left with a log to replay (tests/image/vhdx-craft.py)
#    is refused read-only as QEMU refuses it, and replayed by vdisk exactly
#    as qemu-img check -r all replays it;
#  - a truncated image (a block past the end) is refused, and `check -r`
#    reports it as qemu-img check -r does;
#  - a differencing image is refused, as by QEMU.
# Rerun with FORMATS_SEED=N; FORMATS_OPS sets the workload length.
set -uo pipefail

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3
. "$SRCDIR/tests/lib/formats.sh"
CRAFT=$SRCDIR/tests/image/vhdx-craft.py
HAS_CHECK=1

interop_row dynamic vhdx "" 64M
interop_row dyn-1m vhdx block_size=1M,block_state_zero=off 20M
interop_row fixed vhdx subformat=fixed,block_size=2M 20M
interop_row fixed-alloc vhdx subformat=fixed,block_state_zero=off,block_size=32M 40M

# Layouts: everything but the random GUIDs and sequence numbers agrees.
layout() { # IMAGE: file size, region table, metadata table, items 0..32, BAT
	python3 - "$1" <<'PY'
import os, struct, sys
d = open(sys.argv[1], "rb").read()
rt = d[192 << 10:(192 << 10) + 80]
bat_off, bat_len = struct.unpack_from("<QI", rt, 32)
md_off = struct.unpack_from("<Q", rt, 64)[0]
print(len(d), rt.hex(), d[md_off:md_off + 192].hex(), d[md_off + 65536:md_off + 65552].hex(),
      d[md_off + 65568:md_off + 65576].hex(), d[bat_off:bat_off + bat_len].hex().rstrip("0"),
      d[0:8], d[64 << 10:(64 << 10) + 4], d[(64 << 10) + 64:(64 << 10) + 80].hex())
PY
}
for spec in "1M" "20M" "1G" "2G" "0" "64M subformat=fixed" "10M block_size=2M,log_size=3M" \
	"300M block_state_zero=off" "12M subformat=fixed,block_state_zero=off,block_size=4M" "101G"; do
	set -- $spec
	o=${2:+-o $2}
	qemu-img create -q -f vhdx $o q.vhdx "$1" || fail "qemu-img create $spec"
	"$VDISK" create -f vhdx $o v.vhdx "$1" >/dev/null || fail "vdisk create $spec"
	[ "$(layout q.vhdx)" = "$(layout v.vhdx)" ] ||
		fail "create $spec: layouts differ: $(layout q.vhdx) / $(layout v.vhdx)"
	qemu-img check -q v.vhdx || fail "qemu-img check of vdisk's $spec"
	[ "$(qemu-img info --output=json v.vhdx | grep -v '"filename"\|actual-size')" = \
		"$(qemu-img info --output=json q.vhdx | grep -v '"filename"\|actual-size')" ] ||
		fail "create $spec: qemu-img info differs"
	rm -f q.vhdx v.vhdx
done
for bad in block_size=3M block_size=512K block_size=512M log_size=1536K log_size=0 subformat=sparse; do
	"$VDISK" create -f vhdx -o $bad x.vhdx 8M >/dev/null 2>err && fail "create -o $bad accepted"
	[ "$(wc -l <err)" = 1 ] || fail "create -o $bad: $(cat err)"
done
"$VDISK" create -f vhdx x.vhdx 65T >/dev/null 2>err && fail "65T accepted"
grep -q "max of 64TB" err || fail "65T: $(cat err)"

# Probing, cluster size, block status: a fresh image is zeroes, one write
# makes one block of data.
"$VDISK" create -f vhdx d.vhdx 64M >/dev/null
"$VDISK" info d.vhdx | grep -qx "file format: vhdx" || fail "vhdx not probed"
"$VDISK" info d.vhdx | grep -qx "cluster_size: 8388608" || fail "cluster_size"
"$VDISK" io -c 'write -P 7 9M 4k' d.vhdx >/dev/null || fail "write to probed vhdx"
"$VDISK" map --output=json d.vhdx >map.json || fail "vdisk map"
python3 - <<'PY' || fail "map of one written block: $(cat map.json)"
import json
m = json.load(open("map.json"))
data = [e for e in m if e["data"]]
assert len(data) == 1 and data[0]["start"] == 8 << 20 and data[0]["length"] == 8 << 20, m
assert all(e["zero"] for e in m if not e["data"]), m
PY

# Convert both ways, each against qemu-img's result.
head -c 6M /dev/urandom >src.raw
dd if=/dev/zero of=src.raw bs=1M seek=20 count=0 2>/dev/null
qemu-img convert -f raw -O vhdx src.raw q.vhdx || fail "qemu-img convert to vhdx"
"$VDISK" convert -f raw -O vhdx src.raw v.vhdx || fail "vdisk convert to vhdx"
qemu-img check -q v.vhdx || fail "qemu-img check of vdisk convert's output"
qemu-img compare -f vhdx -F vhdx q.vhdx v.vhdx >/dev/null || fail "convert to vhdx differs"
qemu-img compare -f raw -F vhdx src.raw v.vhdx >/dev/null || fail "convert to vhdx lost data"
qemu-img convert -f vhdx -O qcow2 q.vhdx q.qcow2 || fail "qemu-img convert from vhdx"
"$VDISK" convert -f vhdx -O qcow2 q.vhdx v.qcow2 || fail "vdisk convert from vhdx"
qemu-img compare -f qcow2 -F qcow2 q.qcow2 v.qcow2 >/dev/null || fail "convert from vhdx differs"
qemu-img compare -f raw -F qcow2 src.raw v.qcow2 >/dev/null || fail "convert from vhdx lost data"

# The log.  Block 1 allocated by qemu-io, then a log of two entries that
# writes block 0 and zeroes the start of block 1.
qemu-img create -q -f vhdx -o block_size=1M,block_state_zero=off l.vhdx 8M
qemu-io -f vhdx -c 'write -P 3 1M 1M' l.vhdx >/dev/null
python3 "$CRAFT" log l.vhdx 0x5a || fail "crafting the log"
cp l.vhdx lq.vhdx
qemu-img info lq.vhdx >err 2>&1 && fail "qemu-img opened an image with a log read-only"
grep -q "needs to be replayed" err || fail "qemu-img: $(cat err)"
"$VDISK" info l.vhdx >err 2>&1 && fail "vdisk opened an image with a log read-only"
[ "$(grep -c . err)" = 1 ] && grep -q "opened read-only, but contains a log that needs to be replayed" err ||
	fail "vdisk read-only open of a log: $(cat err)"
qemu-img check -r all lq.vhdx >/dev/null 2>&1 || fail "qemu-img replay"
"$VDISK" check -r all l.vhdx >chk.out 2>&1 || fail "vdisk check -r all: $(cat chk.out)"
grep -q "1 corruptions" chk.out || fail "vdisk check does not count the replay: $(cat chk.out)"
qemu-img compare -f vhdx -F vhdx lq.vhdx l.vhdx >/dev/null || fail "replays differ"
[ "$(stat -c %s lq.vhdx)" = "$(stat -c %s l.vhdx)" ] || fail "replays leave other file sizes"
qemu-io -f vhdx -c 'read -P 0x5a 0 8k' -c 'read -P 0 8k 1016k' -c 'read -P 0 1M 8k' \
	-c 'read -P 3 1032k 1016k' l.vhdx >out || fail "reads after the replay"
grep -q "fail" out && fail "replayed content: $(cat out)"
qemu-img check -q l.vhdx || fail "qemu-img check after vdisk's replay"
"$VDISK" check l.vhdx | grep -q "No errors" || fail "log not emptied by the replay"
# A read-write open replays too; a write after it goes on cleanly.
qemu-img create -q -f vhdx -o block_size=1M,block_state_zero=off l4.vhdx 8M
qemu-io -f vhdx -c 'write -P 3 1M 1M' l4.vhdx >/dev/null
python3 "$CRAFT" log l4.vhdx 0x6b
"$VDISK" io -c 'write -P 4 5M 4k' -c 'read -P 0x6b 0 8k' l4.vhdx >out 2>&1 || fail "rw open with log: $(cat out)"
grep -q "fail" out && fail "rw replay content: $(cat out)"
qemu-io -f vhdx -r -c 'read -P 4 5M 4k' -c 'read -P 0x6b 0 8k' l4.vhdx | grep -q fail && fail "after rw replay"
qemu-img check -q l4.vhdx || fail "qemu-img check after rw replay"

# A truncated image: refused by an open, reported by check -r as by qemu-img.
qemu-img create -q -f vhdx -o block_size=1M t.vhdx 8M
qemu-io -f vhdx -c 'write 0 64k' -c 'write 3M 1M' t.vhdx >/dev/null
truncate -s 9M t.vhdx
cp t.vhdx tq.vhdx
# check without -r: both report it (qemu-img opens with BDRV_O_CHECK either way).
qemu-img check tq.vhdx >qout 2>&1
qrc=$?
"$VDISK" check t.vhdx >vout 2>&1
vrc=$?
[ "$qrc" = "$vrc" ] || fail "check of the truncated image: qemu-img $qrc, vdisk $vrc: $(cat vout)"
"$VDISK" info t.vhdx >err 2>&1 && fail "vdisk opened a truncated image"
grep -q "Image has probably been truncated" err || fail "truncated: $(cat err)"
qemu-img check -r all tq.vhdx >/dev/null 2>&1
[ $? = 2 ] || fail "qemu-img check -r all of the truncated image should exit 2"
"$VDISK" check -r all t.vhdx >out 2>&1
[ $? = 2 ] || fail "vdisk check -r all of the truncated image should exit 2: $(cat out)"
grep -q "1 errors were found" out || fail "vdisk check: $(cat out)"

# Differencing disks: has_parent with a parent locator (ENOTSUP) or without.
"$VDISK" create -f vhdx p.vhdx 8M >/dev/null
python3 - p.vhdx <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek((192 << 10) + 64)
    md = struct.unpack("<Q", f.read(8))[0]
    f.seek(md + 65536 + 4)
    f.write(struct.pack("<I", 2))
PY
qemu-img info p.vhdx >/dev/null 2>&1 && fail "qemu-img opened has_parent without locator"
"$VDISK" info p.vhdx >err 2>&1 && fail "vdisk opened has_parent without locator"
grep -q "parent" err || fail "has_parent: $(cat err)"
echo "PASS"
