#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vmdk against QEMU 7.2's qemu-img and qemu-io:
#  - the interop matrix of tests/lib/formats.sh for monolithicSparse (with
#    and without zeroed_grain), monolithicFlat, twoGbMaxExtentSparse and
#    twoGbMaxExtentFlat (the 2 GiB extents at a 2.5 GiB size), vmfs-style
#    flat extents written by hand;
#  - create: the descriptor text (all but the random CID), the sparse
#    header, grain directories and file sizes are qemu-img's, byte for
#    byte, for every subformat and the -o options, and its refusals;
#  - streamOptimized: qemu-img's compressed images read by vdisk, vdisk's
#    (convert -c) read by qemu-img; convert -O vmdk by both compare equal;
#    vmdk -> qcow2 by vdisk convert;
#  - info (cid, parent cid, create type, extents) as qemu-img's, check,
#    map (holes, zero grains), a delta with a vmdk parent, probing;
#  - hostile descriptors: absolute or ".." extent names, missing extents,
#    huge lines, refused with one line and no crash.
# Rerun with FORMATS_SEED=N; FORMATS_OPS sets the workload length.
set -uo pipefail

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3
# Five rows and the create matrix: fewer operations per row than the
# library's default keep the whole test within the suite's time limit.
[ -n "${VDISK_QUICK:-}" ] || FORMATS_OPS=${FORMATS_OPS:-80}
. "$SRCDIR/tests/lib/formats.sh"

HAS_CHECK=1
interop_row sparse vmdk "" 40M
interop_row sparse-zg vmdk zeroed_grain=on 9M
interop_row flat vmdk subformat=monolithicFlat 8M
interop_row split-sparse vmdk subformat=twoGbMaxExtentSparse 12M
interop_row split-flat vmdk subformat=twoGbMaxExtentFlat 10M
HAS_CHECK=0

# Several 2 GiB extents: requests across the extent boundary, both ways.
for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
	rm -f s-*.vmdk s.vmdk
	qemu-img create -q -f vmdk -o subformat=$sub s.vmdk 2560M
	qemu-io -f vmdk -c 'write -P 0x71 2047M 2M' -c 'write -P 0x72 2500M 64k' s.vmdk >/dev/null
	"$VDISK" io -f vmdk -c 'read -P 0x71 2047M 2M' -c 'read -P 0x72 2500M 64k' \
		-c 'read -P 0 2049M 1M' -c 'write -P 0x73 2147479552 8k' s.vmdk >out 2>&1 ||
		fail "$sub: vdisk io: $(cat out)"
	grep -qi "fail\|error" out && fail "$sub: vdisk io: $(cat out)"
	qemu-io -f vmdk -c 'read -P 0x71 2047M 1044480' -c 'read -P 0x73 2147479552 8k' \
		-c 'read -P 0x71 2147487744 1044480' s.vmdk >out 2>&1 || fail "$sub: qemu-io: $(cat out)"
	grep -qi "fail\|error" out && fail "$sub: qemu-io reads vdisk's writes: $(cat out)"
	qemu-img check -q -f vmdk s.vmdk || fail "$sub: qemu-img check"
	"$VDISK" info -f vmdk s.vmdk | grep -q "\[1\]:" || fail "$sub: second extent not listed"
done
rm -f s-*.vmdk s.vmdk

# --- create: the same files as qemu-img ----------------------------------
# desc FILE [OFFSET]: the descriptor text without the CID line.
desc() { python3 - "$1" "${2:-0}" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()[int(sys.argv[2]):]
text = data.split(b"\0")[0].decode()
print("".join(l + "\n" for l in text.split("\n") if not l.startswith("CID=")), end="")
PY
}
for spec in "1M" "100M" "5G" "3G subformat=monolithicFlat" "3G subformat=twoGbMaxExtentSparse" \
	"5G subformat=twoGbMaxExtentFlat" "7M subformat=streamOptimized" \
	"10M adapter_type=lsilogic" "10M adapter_type=buslogic,hwversion=7" \
	"10M adapter_type=legacyESX,toolsversion=12345" "10M compat6=on" "10M zeroed_grain=on" \
	"1000000 subformat=monolithicSparse"; do
	set -- $spec
	o=${2:+-o $2}
	rm -rf q v && mkdir q v
	qemu-img create -q -f vmdk $o q/d.vmdk "$1" || fail "qemu-img create $spec"
	"$VDISK" create -f vmdk $o v/d.vmdk "$1" >/dev/null || fail "vdisk create $spec"
	# (A text descriptor's length depends on the CID's.)
	sizes() { (cd "$1" && ls -l | awk '$9 != "d.vmdk" || $5 > 4096 {print $5, $9}'); }
	[ "$(cd q && ls)" = "$(cd v && ls)" ] || fail "create $spec: files: $(ls -l q v)"
	[ "$(sizes q)" = "$(sizes v)" ] || fail "create $spec: file sizes: $(ls -l q v)"
	if head -c 4 q/d.vmdk | grep -q KDMV; then
		cmp -s <(head -c 512 q/d.vmdk) <(head -c 512 v/d.vmdk) || fail "create $spec: headers differ"
		[ "$(desc q/d.vmdk 512)" = "$(desc v/d.vmdk 512)" ] || fail "create $spec: descriptors differ"
		cmp -s <(tail -c +10753 q/d.vmdk) <(tail -c +10753 v/d.vmdk) ||
			fail "create $spec: grain directories differ"
	else
		[ "$(desc q/d.vmdk)" = "$(desc v/d.vmdk)" ] ||
			fail "create $spec: descriptors differ: $(diff <(desc q/d.vmdk) <(desc v/d.vmdk))"
	fi
	for f in q/d-s*.vmdk; do
		[ -e "$f" ] || continue
		cmp -s "$f" "v/${f#q/}" || fail "create $spec: extent $f differs"
	done
	qemu-img check -q -f vmdk v/d.vmdk || fail "create $spec: qemu-img check"
done
rm -rf q v
"$VDISK" create -f vmdk -o subformat=sparse x.vmdk 1M >/dev/null 2>&1 && fail "subformat=sparse accepted"
"$VDISK" create -f vmdk -o subformat=monolithicFlat,zeroed_grain=on x.vmdk 1M 2>err >/dev/null &&
	fail "flat with zeroed_grain accepted"
grep -q "Flat image can't enable zeroed grain" err || fail "flat+zeroed_grain: $(cat err)"
"$VDISK" create -f vmdk -o compat6=on,hwversion=7 x.vmdk 1M 2>err >/dev/null && fail "compat6+hwversion"
grep -q "compat6 cannot be enabled with hwversion set" err || fail "compat6: $(cat err)"

# --- info, check, map -----------------------------------------------------
qemu-img create -q -f vmdk -o zeroed_grain=on z.vmdk 8M
qemu-io -f vmdk -c 'write -P 0x11 0 128k' -c 'write -z 1M 128k' z.vmdk >/dev/null
strip_cid() { grep -v "cid:\|disk size"; }
diff <(qemu-img info -f vmdk z.vmdk | strip_cid) <("$VDISK" info -f vmdk z.vmdk | strip_cid) ||
	fail "info differs from qemu-img's"
diff <(qemu-img info -f vmdk --output=json z.vmdk | grep -v actual-size) \
	<("$VDISK" info -f vmdk --output=json z.vmdk | grep -v actual-size) || fail "info json differs"
diff <(qemu-img map -f vmdk --output=json z.vmdk) <("$VDISK" map -f vmdk --output=json z.vmdk) ||
	fail "map differs from qemu-img's"
# Descriptor files and their extents, in a subdirectory (names as qemu-img
# shows them), and the holes of a flat extent (QEMU recurses into the file).
mkdir -p sub
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse sub/t.vmdk 3G
qemu-img create -q -f vmdk -o subformat=monolithicFlat sub/f.vmdk 3M
qemu-io -f vmdk -c 'write -P 0x12 64k 8k' sub/f.vmdk >/dev/null
for f in sub/t.vmdk sub/f.vmdk; do
	diff <(qemu-img info -f vmdk "$f" | grep -v "disk size") \
		<("$VDISK" info -f vmdk "$f" | grep -v "disk size") || fail "$f: info differs"
	diff <(qemu-img map -f vmdk --output=json "$f") <("$VDISK" map -f vmdk --output=json "$f") ||
		fail "$f: map differs"
done
"$VDISK" check -f vmdk z.vmdk >out 2>&1 || fail "check: $(cat out)"
grep -q "No errors were found on the image." out || fail "check output: $(cat out)"
# A grain pointing past the end of the file: the check fails, as qemu-img's.
cp z.vmdk bad.vmdk
python3 - <<'PY'
import struct
f = open("bad.vmdk", "r+b")
h = f.read(512)
gd = struct.unpack_from("<Q", h, 56)[0]
f.seek(gd * 512); gt = struct.unpack("<I", f.read(4))[0]
f.seek(gt * 512 + 4 * 5); f.write(struct.pack("<I", 0x100000))
PY
qemu-img check -f vmdk bad.vmdk >/dev/null 2>&1
q=$?
"$VDISK" check -f vmdk bad.vmdk >out 2>&1
v=$?
[ "$q" = 1 ] && [ "$v" = 1 ] || fail "check on a grain past EOF: qemu-img $q, vdisk $v: $(cat out)"
grep -q "points after EOF" out && grep -q "Check failed: Invalid argument" out ||
	fail "check message: $(cat out)"

# A vmdk delta on a vmdk parent (parentFileNameHint, parentCID).
qemu-img create -q -f vmdk base.vmdk 4M
qemu-io -f vmdk -c 'write -P 0x33 0 4M' base.vmdk >/dev/null
qemu-img create -q -f vmdk -b base.vmdk -F vmdk delta.vmdk 4M
qemu-io -f vmdk -c 'write -P 0x44 64k 4k' delta.vmdk >/dev/null
"$VDISK" io -f vmdk -c 'read -P 0x33 0 64k' -c 'read -P 0x44 64k 4k' -c 'read -P 0x33 68k 60k' \
	delta.vmdk >out 2>&1 || fail "delta read: $(cat out)"
grep -qi "fail\|error" out && fail "delta read: $(cat out)"
"$VDISK" info -f vmdk delta.vmdk | grep -qx "backing file: base.vmdk" || fail "delta info"
# The delta's descriptor is qemu-img's (but for the CID).
rm -rf q2 v2 && mkdir q2 v2 && cp base.vmdk q2/ && cp base.vmdk v2/
qemu-img create -q -f vmdk -b base.vmdk -F vmdk q2/d.vmdk 4M
"$VDISK" create -f vmdk -o backing_file=base.vmdk,backing_fmt=vmdk v2/d.vmdk 4M >/dev/null ||
	fail "vdisk create delta in v2"
[ "$(desc q2/d.vmdk 512)" = "$(desc v2/d.vmdk 512)" ] ||
	fail "delta descriptors differ: $(diff <(desc q2/d.vmdk 512) <(desc v2/d.vmdk 512))"
# vdisk's own delta, read by qemu-io.
"$VDISK" create -f vmdk -o backing_file=base.vmdk,backing_fmt=vmdk vd.vmdk 4M >/dev/null || fail "vdisk create delta"
"$VDISK" io -f vmdk -c 'write -P 0x55 8k 4k' vd.vmdk >/dev/null || fail "write into the delta"
qemu-io -f vmdk -c 'read -P 0x33 0 8k' -c 'read -P 0x55 8k 4k' -c 'read -P 0x33 12k 1M' vd.vmdk \
	>out 2>&1 || fail "qemu-io on vdisk's delta: $(cat out)"
grep -qi "fail\|error" out && fail "qemu-io on vdisk's delta: $(cat out)"
# Writing to the parent changes its CID: the delta's reads through it fail.
"$VDISK" io -f vmdk -c 'write -P 0x66 3M 4k' base.vmdk >/dev/null
"$VDISK" io -f vmdk -c 'read 0 4k' delta.vmdk >out 2>&1
grep -q "Invalid argument" out || fail "stale parent CID not noticed: $(cat out)"
qemu-io -f vmdk -c 'read 0 4k' delta.vmdk >out 2>&1
grep -q "Invalid argument" out || fail "qemu-io and the stale parent: $(cat out)"

# --- streamOptimized and convert -----------------------------------------
qemu-img create -q -f qcow2 src.qcow2 6M
qemu-io -f qcow2 -c 'write -P 0x21 0 1M' -c 'write -P 0x22 3M 65k' -c 'write -P 0x23 6029312 12k' \
	src.qcow2 >/dev/null
qemu-img convert -f qcow2 -O vmdk -o subformat=streamOptimized src.qcow2 q-stream.vmdk
diff <(qemu-img info -f vmdk q-stream.vmdk | strip_cid) <("$VDISK" info -f vmdk q-stream.vmdk | strip_cid) ||
	fail "streamOptimized info differs from qemu-img's"
"$VDISK" compare -f qcow2 -F vmdk src.qcow2 q-stream.vmdk >out 2>&1 ||
	fail "vdisk reads qemu-img's streamOptimized: $(cat out)"
"$VDISK" convert -c -f qcow2 -O vmdk -o subformat=streamOptimized src.qcow2 v-stream.vmdk ||
	fail "vdisk convert to streamOptimized"
qemu-img compare -f qcow2 -F vmdk src.qcow2 v-stream.vmdk >out 2>&1 ||
	fail "qemu-img reads vdisk's streamOptimized: $(cat out)"
qemu-img check -q -f vmdk v-stream.vmdk || fail "qemu-img check on vdisk's streamOptimized"
# Without -c too: the target takes compressed grains only, as qemu-img knows.
"$VDISK" convert -f qcow2 -O vmdk -o subformat=streamOptimized src.qcow2 v-stream2.vmdk ||
	fail "vdisk convert to streamOptimized without -c"
qemu-img compare -f qcow2 -F vmdk src.qcow2 v-stream2.vmdk >out 2>&1 ||
	fail "streamOptimized without -c: $(cat out)"
# The VMware layout: grain directory in a footer (header says all ones),
# then an end-of-stream marker.  Read by both; writes refused by vdisk.
python3 - <<'PY'
import struct
img = bytearray(open("q-stream.vmdk", "rb").read())
hdr = bytearray(img[:512])
img[56:64] = struct.pack("<Q", 0xFFFFFFFFFFFFFFFF)
img += bytes((-len(img)) % 512)
img += struct.pack("<QII", 1, 0, 3) + bytes(496) + hdr + struct.pack("<QII", 0, 0, 0) + bytes(496)
open("footer.vmdk", "wb").write(img)
PY
qemu-img compare -f qcow2 -F vmdk src.qcow2 footer.vmdk >out 2>&1 || fail "qemu-img on footer.vmdk: $(cat out)"
"$VDISK" compare -f qcow2 -F vmdk src.qcow2 footer.vmdk >out 2>&1 || fail "footer.vmdk: $(cat out)"
"$VDISK" io -f vmdk -c 'write 1M 64k' footer.vmdk >out 2>&1 && fail "footer.vmdk opened read-write"
grep -q "can only be opened read-only" out || fail "footer.vmdk write: $(cat out)"
# A grain written twice is refused, as qemu-io does.
"$VDISK" io -f vmdk -c 'write -P 1 0 64k' v-stream.vmdk >out 2>&1
grep -q "write failed" out || fail "rewrite of a compressed grain: $(cat out)"
for sub in monolithicSparse monolithicFlat twoGbMaxExtentSparse; do
	"$VDISK" convert -f qcow2 -O vmdk -o subformat=$sub src.qcow2 v-$sub.vmdk || fail "vdisk convert $sub"
	qemu-img convert -f qcow2 -O vmdk -o subformat=$sub src.qcow2 q-$sub.vmdk
	qemu-img compare -f vmdk -F vmdk v-$sub.vmdk q-$sub.vmdk >out 2>&1 || fail "convert $sub: $(cat out)"
done
"$VDISK" convert -f vmdk -O qcow2 q-stream.vmdk back.qcow2 || fail "vdisk convert vmdk -> qcow2"
qemu-img compare -f qcow2 -F qcow2 src.qcow2 back.qcow2 >out 2>&1 || fail "vmdk -> qcow2: $(cat out)"
"$VDISK" convert -f vmdk -O qcow2 v-twoGbMaxExtentSparse.vmdk back2.qcow2 || fail "split -> qcow2"
qemu-img compare -f qcow2 -F qcow2 src.qcow2 back2.qcow2 >out 2>&1 || fail "split -> qcow2: $(cat out)"

# --- probing ----------------------------------------------------------------
# As qcow2: info opens a probed vmdk (without its parent), io asks for -f.
"$VDISK" info z.vmdk | grep -qx "file format: vmdk" || fail "info does not probe vmdk"
"$VDISK" info v-monolithicFlat.vmdk | grep -qx "file format: vmdk" || fail "descriptor not probed"
"$VDISK" io -c 'read 0 512' z.vmdk 2>err && fail "vdisk io probed a vmdk"
grep -q "give it with -f vmdk" err || fail "io on vmdk: $(cat err)"

# --- hostile descriptors ------------------------------------------------------
mkdir -p inner && : >outside.bin && truncate -s 1M outside.bin
hostile() { # NAME EXPECTED-MESSAGE DESCRIPTOR-TEXT
	printf '%s' "$3" >"inner/$1.vmdk"
	"$VDISK" info -f vmdk "inner/$1.vmdk" >out 2>err && fail "$1: opened: $(cat out)"
	[ "$(wc -l <err)" = 1 ] || fail "$1: not one line: $(cat err)"
	grep -q "$2" err || fail "$1: $(cat err)"
}
head='# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="monolithicFlat"
'
hostile dotdot "leaves the descriptor's directory" "$head"'RW 2048 FLAT "../outside.bin" 0
'
hostile absolute "is absolute" "$head"'RW 2048 FLAT "'"$PWD"'/outside.bin" 0
'
hostile missing "No such file" "$head"'RW 2048 FLAT "nothere.bin" 0
'
hostile badline "Invalid extent line" "$head"'RW 2048 FLAT "x.bin"
'
hostile type "Unsupported image type" "${head/monolithicFlat/streamOptimized}"
hostile longname "longer than" "$head"'RW 2048 FLAT "'"$(printf 'a%.0s' $(seq 600))"'" 0
'
python3 -c 'print("# Disk DescriptorFile\nversion=1\n" + "#" * 3000000)' >inner/huge.vmdk
"$VDISK" info -f vmdk inner/huge.vmdk >out 2>err && fail "huge descriptor opened"
[ "$(wc -l <err)" = 1 ] || fail "huge: $(cat err)"
echo "PASS"
