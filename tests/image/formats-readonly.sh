#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The read-only formats (qcow v1, parallels, bochs, cloop, dmg) against QEMU
# 7.2's qemu-img:
#  - qcow and parallels images made by `qemu-img convert -O qcow|parallels`
#    (qcow also compressed, with -c, and over a backing file); cloop by
#    create_compressed_fs (cloop-utils) and by tests/fuzz/roimg.py; bochs
#    (v1 and v2) and dmg (XML plist and resource fork; zlib, raw and zero
#    chunks) by tests/fuzz/roimg.py, as Debian's qemu-img cannot make them;
#  - `vdisk convert -O raw` of each equals `qemu-img convert -O raw` of the
#    same image, and `vdisk io -r` reads the same bytes back (read -P over
#    runs of the content);
#  - dmg bzip2 chunks: Debian's QEMU has no dmg-bz2 module, so vdisk's
#    read is compared with the content the image was made from;
#  - holes: `vdisk map` reports the unallocated ranges as qemu-img map does
#    (qcow, parallels), zero chunks and extents as zero (dmg, bochs);
#  - read-write opens are refused with QEMU's "Image is read-only", and
#    probing finds each format (dmg by its .dmg name);
#  - an AES-encrypted qcow is refused with a clear message.
set -uo pipefail

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

python3 - "$SRCDIR/tests/fuzz" <<'PY' || fail "image generator"
import sys
sys.path.insert(0, sys.argv[1])
import roimg
d = roimg.pattern(1 << 20, 3)
open("src.raw", "wb").write(d)
small = roimg.pattern(192 << 10, 5)
open("small.raw", "wb").write(small)
out = {
    "v2.bochs": roimg.bochs(d),
    "v1.bochs": roimg.bochs(d, extent=32768, version=1),
    "gen.cloop": roimg.cloop(d, block=16384),
    "plist.dmg": roimg.dmg(d, kinds=(roimg.UDZO, roimg.UDRW, roimg.UDZE, roimg.UDIG)),
    "rsrc.dmg": roimg.dmg(d, chunk_sectors=64, plist=False, kinds=(roimg.UDZO, roimg.UDRW)),
    "bz2.dmg": roimg.dmg(small, kinds=(roimg.UDBZ, roimg.UDZO)),
    "gen.parallels": roimg.parallels(d, ext=False),
}
for name, (img, _) in out.items():
    open(name, "wb").write(img)
PY
qemu-img convert -f raw -O qcow src.raw plain.qcow || fail "qemu-img convert -O qcow"
# qemu-img 7.2 exits 1 after `convert -c -O qcow` (its final zero-length
# compressed write, which qcow refuses) with the image complete: what
# counts is that QEMU reads it back as the source, and that it is compressed.
qemu-img convert -c -f raw -O qcow src.raw comp.qcow 2>/dev/null
qemu-img compare -q -f raw -F qcow src.raw comp.qcow || fail "qemu-img convert -c -O qcow"
[ "$(stat -c %s comp.qcow)" -lt 1048576 ] || fail "comp.qcow is not compressed"
qemu-img convert -f raw -O parallels src.raw made.parallels || fail "qemu-img convert -O parallels"
qemu-img create -q -f raw base.raw 1M
qemu-io -f raw -c 'write -P 0x3c 0 1M' base.raw >/dev/null
qemu-img create -q -f qcow -b base.raw -F raw ov.qcow 1M || fail "qemu-img create qcow over raw"
qemu-io -f qcow -c 'write -P 0x4d 64k 8k' -c 'write -P 0x4e 700k 1000' ov.qcow >/dev/null
images="plain.qcow comp.qcow made.parallels gen.parallels v2.bochs v1.bochs gen.cloop plist.dmg rsrc.dmg"
if command -v create_compressed_fs >/dev/null; then
	create_compressed_fs -B 65536 src.raw real.cloop >/dev/null 2>&1 ||
		fail "create_compressed_fs"
	images="$images real.cloop"
else
	echo "note: create_compressed_fs (cloop-utils) absent: cloop only from the generator"
fi

# same FORMAT IMAGE: vdisk and qemu-img read the same bytes.
same() {
	local fmt=$1 img=$2
	rm -f q.raw v.raw
	qemu-img convert -f "$fmt" -O raw "$img" q.raw || fail "$img: qemu-img convert"
	"$VDISK" convert -f "$fmt" -O raw "$img" v.raw >out 2>&1 || fail "$img: vdisk convert: $(cat out)"
	cmp -s q.raw v.raw || fail "$img: vdisk and qemu-img read different bytes"
	python3 "$SRCDIR/tests/image/formats-wl.py" runs q.raw >runs.txt
	head -200 runs.txt >reads.txt
	args=()
	while IFS= read -r line; do args+=(-c "$line"); done <reads.txt
	"$VDISK" io -r -f "$fmt" "${args[@]}" "$img" >out 2>&1 || fail "$img: vdisk io: $(tail -3 out)"
	grep -qi "fail\|error\|pattern" out && fail "$img: vdisk io -r reads: $(grep -i 'fail\|error\|pattern' out | head -3)"
	echo "ok $img ($fmt)"
}
for img in $images ov.qcow; do
	same "${img##*.}" "$img"
done
for img in plain.qcow comp.qcow made.parallels v2.bochs gen.cloop plist.dmg rsrc.dmg; do
	rm -f x.raw
	"$VDISK" convert -f "${img##*.}" -O raw "$img" x.raw || fail "$img: vdisk convert"
	cmp -s src.raw x.raw || fail "$img: content differs from what it was made from"
done
# The backing chain: overlay data over the backing file's.
"$VDISK" io -r -f qcow -c 'read -P 0x3c 0 64k' -c 'read -P 0x4d 64k 8k' \
	-c 'read -P 0x3c 72k 600k' -c 'read -P 0x4e 700k 1000' ov.qcow >out 2>&1 ||
	fail "qcow over raw: $(cat out)"
grep -q "Pattern verification failed" out && fail "qcow over raw: $(cat out)"

# bzip2 chunks: QEMU on Debian has no dmg-bz2 module; compare with the source.
"$VDISK" convert -f dmg -O raw bz2.dmg bz2.raw || fail "bz2.dmg: vdisk convert"
cmp -s bz2.raw small.raw || fail "bz2.dmg: vdisk reads other bytes than the image holds"
echo "ok bz2.dmg (dmg, bzip2 chunks; checked against its source: Debian's QEMU lacks dmg-bz2)"

# Holes: qemu-img map and vdisk map agree on what is data.
for img in plain.qcow made.parallels; do
	qemu-img map -f "${img##*.}" --output=json "$img" >q.json
	"$VDISK" map -f "${img##*.}" --output=json "$img" >v.json || fail "$img: vdisk map"
	python3 - <<'PY' || fail "$img: maps differ: $(cat q.json) / $(cat v.json)"
import json
def data(f):
    out = []
    for e in json.load(open(f)):
        if not e["data"]:
            continue
        if out and out[-1][1] == e["start"]:
            out[-1][1] = e["start"] + e["length"]
        else:
            out.append([e["start"], e["start"] + e["length"]])
    return out
q, v = data("q.json"), data("v.json")
assert q == v and q, (q, v)
PY
done
for img in plist.dmg v2.bochs; do
	"$VDISK" map -f "${img##*.}" --output=json "$img" >v.json || fail "$img: vdisk map"
	python3 - "$img" <<'PY' || fail "$img: no zero ranges in $(cat v.json)"
import json, sys
m = json.load(open("v.json"))
assert any(e["zero"] and not e["data"] for e in m), m
assert any(e["data"] for e in m), m
PY
done

# Read-write opens are refused, as QEMU does for bochs, cloop and dmg.
for img in plain.qcow made.parallels v2.bochs gen.cloop plist.dmg; do
	"$VDISK" io -f "${img##*.}" -c 'write 0 512' "$img" >out 2>&1 && fail "$img: opened read-write"
	grep -q "Image is read-only" out || fail "$img: $(cat out)"
done
qemu-io -f cloop -c 'read 0 512' gen.cloop >out 2>&1
grep -q "Image is read-only" out || fail "qemu-io says otherwise for cloop: $(cat out)"

# Probing: each is found without -f (qcow names files: info only).
for img in made.parallels v2.bochs gen.cloop plist.dmg; do
	"$VDISK" info "$img" | grep -qx "file format: ${img##*.}" || fail "$img: not probed"
	[ "$(qemu-img info "$img" | grep "file format")" = "$("$VDISK" info "$img" | grep "file format")" ] ||
		fail "$img: probed otherwise than qemu-img"
done
"$VDISK" info plain.qcow | grep -qx "file format: qcow" || fail "qcow not probed"

# lzfse chunks: no Debian library, so the image is refused at open, clearly.
python3 - "$SRCDIR/tests/fuzz" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import roimg
img, at = roimg.dmg(roimg.pattern(64 << 10, 9), plist=False, kinds=(roimg.UDZO,))
open("lzfse.dmg", "wb").write(roimg.patch(img, at["table"] + 204, ">I", 0x80000007))
PY
"$VDISK" info -f dmg lzfse.dmg >out 2>&1 && fail "lzfse.dmg opened"
grep -q "lzfse" out || fail "lzfse.dmg: $(cat out)"
[ "$(wc -l <out)" = 1 ] || fail "lzfse.dmg: more than one line: $(cat out)"

# AES-encrypted qcow (crypt_method 1) is refused, clearly.
cp plain.qcow aes.qcow
printf '\0\0\0\1' | dd of=aes.qcow bs=1 seek=36 conv=notrunc 2>/dev/null
"$VDISK" info -f qcow aes.qcow >out 2>&1 && fail "encrypted qcow opened"
grep -q "AES-CBC encrypted qcow images is no longer supported" out || fail "aes.qcow: $(cat out)"
[ "$(wc -l <out)" = 1 ] || fail "aes.qcow: more than one line: $(cat out)"
echo "PASS"
