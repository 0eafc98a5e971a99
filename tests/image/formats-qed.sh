#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# qed against QEMU 7.2's qemu-img and qemu-io:
#  - the interop matrix of tests/lib/formats.sh (qemu-img-made images
#    filled by qemu-io read identically through vdisk; vdisk-made images
#    written by vdisk pass `qemu-img check` and `qemu-img compare`) at the
#    default geometry and with -o cluster_size=,table_size=;
#  - create: header fields as qemu-img writes them, and its refusals;
#  - layout: the same writes through qemu-io and vdisk give identical files;
#  - backing chain: -o backing_file=,backing_fmt= (raw: the no-probe bit),
#    writes through vdisk read back by qemu-io over the backing data;
#  - convert both ways;
#  - the need-check flag: clear after vdisk closes, set while writing
#    with cache=writeback (a
#    killed writer leaves it), and an image left with it and a leak is
#    reported by `vdisk check` as `qemu-img check` reports it (exit 3);
#    corruptions (an L2 entry past the end) exit 2 on both;
#  - probing: a qed image without -f is opened by info, refused by io (it
#    names a backing file), as qcow2.
# Rerun with FORMATS_SEED=N; FORMATS_OPS sets the workload length.
set -uo pipefail

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3
. "$SRCDIR/tests/lib/formats.sh"

HAS_CHECK=1
interop_row default qed "" 64M
# (12M: qemu-img check miscounts qed files of more than cluster_size - 1
# clusters, see docs/formats.md; tested below.)
interop_row small-clusters qed cluster_size=4096,table_size=2 12M
interop_row odd qed cluster_size=16384 5000k

features() { od -An -tu8 -j16 -N8 "$1" | tr -d ' '; }

# Create: the 64-byte headers agree (magic, sizes, features, L1 offset,
# image size, backing name) and so do file sizes.
for o in "" "cluster_size=4096" "cluster_size=1M,table_size=16" "table_size=8"; do
	qemu-img create -q -f qed ${o:+-o $o} q.qed 100M || fail "qemu-img create $o"
	"$VDISK" create -q -f qed ${o:+-o $o} v.qed 100M >/dev/null || fail "vdisk create $o"
	cmp -s <(head -c 64 q.qed) <(head -c 64 v.qed) ||
		fail "create $o: headers differ: $(od -An -tx1 -N64 q.qed) / $(od -An -tx1 -N64 v.qed)"
	[ "$(stat -c %s q.qed)" = "$(stat -c %s v.qed)" ] || fail "create $o: file sizes differ"
	qemu-img check -q -f qed v.qed || fail "create $o: qemu-img check"
done
"$VDISK" create -f qed -o cluster_size=3000 x.qed 1M >out 2>&1 && fail "cluster_size=3000 accepted"
grep -q "cluster size must be within range" out || fail "cluster_size=3000: $(cat out)"
"$VDISK" create -f qed -o table_size=32 x.qed 1M >out 2>&1 && fail "table_size=32 accepted"
grep -q "table size must be within range" out || fail "table_size=32: $(cat out)"

# Layout: the same writes (a run of new clusters, zero writes over data,
# over holes, unaligned) through qemu-io and vdisk io give the same bytes.
qemu-img create -q -f qed lq.qed 8M
"$VDISK" create -q -f qed lv.qed 8M >/dev/null
for tool in qemu-io vdisk_io; do
	f=lq.qed
	[ $tool = vdisk_io ] && f=lv.qed
	$tool -f qed -c 'write -P 1 0 1M' -c 'write -z 64k 128k' -c 'write -z 2M 192k' \
		-c 'write -z 3M 1000' -c 'write -P 2 5000k 300k' "$f" >/dev/null || fail "$tool layout writes"
done
cmp -s lq.qed lv.qed || fail "vdisk lays out the writes otherwise than QEMU: $(cmp lq.qed lv.qed)"

# Backing chain: raw base, qed overlay made by vdisk, written by vdisk.
qemu-img create -q -f raw base.raw 8M
qemu-io -f raw -c 'write -P 0xb1 0 8M' base.raw >/dev/null
"$VDISK" create -f qed -o backing_file=base.raw,backing_fmt=raw ov.qed 8M >/dev/null ||
	fail "vdisk create with backing"
qemu-img info ov.qed | grep -q "backing file: base.raw" || fail "qemu-img info ov.qed: $(qemu-img info ov.qed)"
"$VDISK" info ov.qed | grep -q "backing file format: raw" || fail "vdisk info ov.qed: $("$VDISK" info ov.qed)"
"$VDISK" io -f qed -c 'write -P 0x0c 70000 5000' -c 'write -P 0x0d 4M 64k' ov.qed >/dev/null ||
	fail "vdisk write to the overlay"
qemu-io -f qed -c 'read -P 0xb1 0 70000' -c 'read -P 0x0c 70000 5000' \
	-c 'read -P 0xb1 75000 100000' -c 'read -P 0x0d 4M 64k' -c 'read -P 0xb1 5M 1M' ov.qed >out ||
	fail "qemu-io on vdisk's overlay"
grep -q "Pattern verification failed" out && fail "overlay content: $(grep -B1 Pattern out | head -4)"
qemu-img check -q -f qed ov.qed || fail "qemu-img check ov.qed"
# qemu-io writes an overlay of qemu-img's; vdisk reads the chain.
qemu-img create -q -f qed -b base.raw -F raw qov.qed
qemu-io -f qed -c 'write -P 0x5e 1M 3000' qov.qed >/dev/null
qemu-img convert -f qed -O raw qov.qed qov.raw
"$VDISK" convert -f qed -O raw qov.qed vov.raw || fail "vdisk convert of the chain"
cmp -s qov.raw vov.raw || fail "chain read: vdisk and qemu-img differ"
"$VDISK" map -f qed --output=json qov.qed >map.json 2>/dev/null &&
	python3 - <<'PY' || fail "map of the chain: $(cat map.json)"
import json
m = json.load(open("map.json"))
top = [e for e in m if e["depth"] == 0 and e["data"]]
assert len(top) == 1 and top[0]["start"] == 1 << 20 and top[0]["length"] == 65536, m
PY

# qed over qed: the header records no format but raw, and probing never
# picks a format that names files, so vdisk asks for backing.driver=; with
# it, the chain reads as qemu-img reads it.
qemu-img create -q -f qed mid.qed 4M
qemu-io -f qed -c 'write -P 0x71 0 2M' mid.qed >/dev/null
qemu-img create -q -f qed -b mid.qed -F qed top.qed
qemu-io -f qed -c 'write -P 0x72 1M 64k' top.qed >/dev/null
"$VDISK" io -f qed -c 'read 0 512' top.qed >out 2>&1 && fail "qed over qed probed its backing"
grep -q "give it with backing.driver=qed" out || fail "qed over qed: $(cat out)"
"$VDISK" io -c 'read -P 0x71 0 1M' -c 'read -P 0x72 1M 64k' -c 'read -P 0x71 1088k 960k' \
	-c 'read -P 0 2M 2M' --image-opts \
	driver=qed,file.filename=top.qed,backing.driver=qed,backing.file.filename=mid.qed >out 2>&1 ||
	fail "qed over qed with backing.driver: $(cat out)"
grep -q "Pattern verification failed" out && fail "qed over qed content: $(cat out)"

# Convert both ways.
python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import roimg; open("pat.raw", "wb").write(roimg.pattern(3 << 20, 7))' \
	"$SRCDIR/tests/fuzz"
"$VDISK" convert -f raw -O qed pat.raw v2.qed || fail "vdisk convert -O qed"
qemu-img check -q -f qed v2.qed || fail "qemu-img check of vdisk's convert"
qemu-img compare -f raw -F qed pat.raw v2.qed >/dev/null || fail "qemu-img compare raw / vdisk qed"
qemu-img convert -f raw -O qed pat.raw q2.qed
"$VDISK" convert -f qed -O raw q2.qed back.raw || fail "vdisk convert -O raw"
cmp -s pat.raw back.raw || fail "vdisk reads qemu-img's qed differently"
"$VDISK" compare -f qed -F raw q2.qed pat.raw >/dev/null || fail "vdisk compare"

# Need-check: clean after a vdisk write, set while writing.
"$VDISK" create -q -f qed nc.qed 16M >/dev/null
"$VDISK" io -f qed -c 'write -P 1 0 1M' nc.qed >/dev/null
[ $(($(features nc.qed) & 2)) = 0 ] || fail "need-check left set after close"
"$VDISK" io -t writeback -f qed -c 'write -P 2 2M 64k' -c 'sleep 3000' nc.qed >/dev/null &
pid=$!
disown $pid # (no "Killed" notice from bash)
sleep 1.5
[ $(($(features nc.qed) & 2)) = 2 ] || fail "need-check not set while writing"
kill -9 $pid 2>/dev/null
while kill -0 $pid 2>/dev/null; do sleep 0.1; done
qemu-img check -f qed nc.qed >/dev/null 2>&1 || fail "qemu-img check after a killed writer"
# Opening it read-write repairs it and clears the flag, as QEMU.
"$VDISK" io -f qed -c 'read -P 2 2M 64k' nc.qed >/dev/null || fail "reopen after kill"
[ $(($(features nc.qed) & 2)) = 0 ] || fail "need-check not cleared by a read-write open"

# A leaked cluster (the file grows by one cluster nothing refers to).
"$VDISK" create -q -f qed lk.qed 16M >/dev/null
"$VDISK" io -f qed -c 'write -P 3 0 64k' lk.qed >/dev/null
truncate -s +64k lk.qed
qemu-img check -f qed lk.qed >q.out 2>&1
qrc=$?
"$VDISK" check -f qed lk.qed >v.out 2>&1
vrc=$?
[ "$qrc" = 3 ] && [ "$vrc" = 3 ] || fail "leak: qemu-img check $qrc, vdisk check $vrc: $(cat v.out)"
grep -q "1 leaked clusters" v.out || fail "leak count: $(cat v.out)"
# QEMU's cluster count (bytes / (cluster_size - 1)) over 4095 4 KiB
# clusters: qemu-img check reports leaks in a consistent image; vdisk check
# says the same.
"$VDISK" create -q -f qed -o cluster_size=4096,table_size=2 big.qed 20M >/dev/null
"$VDISK" io -f qed -c 'write -P 9 0 17M' big.qed >/dev/null
qemu-img check -f qed big.qed >q.out 2>&1
qrc=$?
"$VDISK" check -f qed big.qed >v.out 2>&1
vrc=$?
[ "$qrc" = "$vrc" ] || fail "17M of 4k clusters: qemu-img check $qrc, vdisk check $vrc"
diff q.out v.out >/dev/null || fail "17M of 4k clusters: $(diff q.out v.out)"

# A corruption: an L2 entry pointing past the end of the file.
python3 - lk.qed <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(64)
cluster, table = struct.unpack_from("<II", h, 4)
l1 = struct.unpack_from("<Q", h, 40)[0]
f.seek(l1)
l2 = struct.unpack("<Q", f.read(8))[0]
f.seek(l2 + 8)
f.write(struct.pack("<Q", 1 << 40))
PY
qemu-img check -f qed lk.qed >q.out 2>&1
qrc=$?
"$VDISK" check -f qed lk.qed >v.out 2>&1
vrc=$?
[ "$qrc" = 2 ] && [ "$vrc" = 2 ] || fail "corruption: qemu-img check $qrc, vdisk check $vrc: $(cat v.out)"
"$VDISK" io -f qed -r -c 'read 64k 4k' lk.qed >out 2>&1
grep -q "read failed" out || fail "read of the corrupt cluster: $(cat out)"

# Probing: info opens a qed without -f, io too (with its backing file, as
# qemu-io); nbd still wants -f (it names files).
"$VDISK" info q2.qed | grep -qx "file format: qed" || fail "qed not probed"
"$VDISK" io -r -c 'read 0 512' q2.qed >out 2>&1 || fail "io on a probed qed: $(cat out)"
"$VDISK" nbd -r -k "$PWD/p.sock" q2.qed >out 2>&1 && fail "nbd probed qed"
grep -q "give it with -f qed" out || fail "nbd on qed: $(cat out)"
echo "PASS"
