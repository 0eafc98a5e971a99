#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Persistent dirty bitmaps kept up to date by vdisk's own writes, as QEMU
# 7.2 keeps them: the same writes, zero writes, discards and compressed
# writes made by `vdisk io` and by qemu-io on two copies of one image give
# the same bitmaps (read by qemu-nbd -B through nbdinfo --map), a clean
# `qemu-img check`, and no in-use flag.  A vdisk killed while it has the
# image open leaves the bitmaps flagged in use (inconsistent), as QEMU does;
# vdisk then refuses to use them with QEMU's message.  Resize, commit and
# rebase keep the bitmaps as qemu-img does.
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io qemu-nbd nbdinfo

# bmap IMG NAME: the dirty extents of bitmap NAME, as QEMU reads them.
bmap() {
	local sock=$T/m.sock p
	rm -f "$sock"
	qemu-nbd -r -f qcow2 -B "$2" -k "$sock" "$1" 2>"$T/nbd.err" &
	p=$!
	wait_socket "$sock"
	nbdinfo --map="qemu:dirty-bitmap:$2" "nbd+unix:///?socket=$sock" ||
		fail "nbdinfo --map $2 on $1: $(cat "$T/nbd.err")"
	kill "$p" 2>/dev/null
	wait "$p" 2>/dev/null || true
}

# same_bitmaps A B NAME...: both images hold the same bits.
same_bitmaps() {
	local a=$1 b=$2 n
	shift 2
	for n in "$@"; do
		bmap "$a" "$n" >"$T/a.map"
		bmap "$b" "$n" >"$T/b.map"
		cmp -s "$T/a.map" "$T/b.map" ||
			fail "bitmap $n differs ($a vs $b): $(diff "$T/a.map" "$T/b.map")"
	done
}

# flags IMG: "name:flags" of every bitmap (json info).
flags() {
	qemu-img info --output=json -U "$1" | python3 -c '
import json, sys
for b in json.load(sys.stdin).get("format-specific", {}).get("data", {}).get("bitmaps", []):
    print(b["name"] + ":" + ",".join(b["flags"]) + ":" + str(b["granularity"]))'
}

clean_check() {
	qemu-img check "$1" >"$T/c.out" 2>&1 || fail "qemu-img check $1: $(cat "$T/c.out")"
	"$VDISK" check "$1" >"$T/c.out" 2>&1 || fail "vdisk check $1: $(cat "$T/c.out")"
}

cd "$T" || exit 1
qemu-img create -q -f qcow2 a.qcow2 64M
qemu-img bitmap --add a.qcow2 b0
qemu-img bitmap --add -g 4096 a.qcow2 b1
qemu-img bitmap --add a.qcow2 off
qemu-img bitmap --disable a.qcow2 off
# Bits set before vdisk opens the image are kept.
qemu-io -c 'write -P 1 0 4M' -c 'write -P 2 32M 1M' a.qcow2 >/dev/null
cp a.qcow2 q.qcow2

# 1. The same requests through vdisk and through QEMU.
ops=(-c 'write -P 3 8M 64k' -c 'write 4095 2' -c 'write -z 20M 1M' -c 'write -z -u 33M 64k'
	-c 'discard 30M 128k' -c 'write -c 40M 128k' -c 'write -P 4 67108352 512')
"$VDISK" io -f qcow2 "${ops[@]}" a.qcow2 >/dev/null || fail "vdisk io"
qemu-io -f qcow2 "${ops[@]}" q.qcow2 >/dev/null || fail "qemu-io"
clean_check a.qcow2
[ "$(flags a.qcow2)" = "$(flags q.qcow2)" ] ||
	fail "bitmap list differs: $(flags a.qcow2) vs $(flags q.qcow2)"
flags a.qcow2 | grep -q in-use && fail "in-use after a clean close: $(flags a.qcow2)"
same_bitmaps a.qcow2 q.qcow2 b0 b1 off
bmap a.qcow2 b0 | grep -q '8388608 *65536 *1 *dirty' || fail "write not recorded"
bmap a.qcow2 b1 | grep -q '^ *40M\|41943040 *131072 *1' || fail "compressed write not recorded"
echo "ok: vdisk io records writes as QEMU"

# 2. Killed while serving: the bitmaps stay flagged in use, as QEMU's.
cp a.qcow2 k.qcow2
S=$T/k.sock
"$VDISK" nbd -t -f qcow2 -k "$S" k.qcow2 &
p=$!
wait_socket "$S"
flags k.qcow2 | grep -q '^b0:in-use,auto' || fail "not flagged in use while open: $(flags k.qcow2)"
flags k.qcow2 | grep -q '^off:in-use:' || fail "disabled bitmap not flagged in use: $(flags k.qcow2)"
qemu-io -f raw -c 'write -P 5 16M 64k' "nbd+unix:///?socket=$S" >/dev/null || fail "write over NBD"
kill -9 "$p"
wait "$p" 2>/dev/null
flags k.qcow2 | grep -q '^b0:in-use,auto' || fail "in-use lost by the kill: $(flags k.qcow2)"
qrc=0 vrc=0
qemu-img check k.qcow2 >q.out 2>&1 || qrc=$?
"$VDISK" check k.qcow2 >v.out 2>&1 || vrc=$?
[ "$qrc" = "$vrc" ] || fail "check after kill: qemu-img $qrc, vdisk $vrc: $(cat q.out v.out)"
qemu-io -r -f qcow2 -c 'read -P 5 16M 64k' k.qcow2 >/dev/null || fail "data lost by the kill"
# A read-write open keeps the inconsistent bitmaps as they are (QEMU too).
"$VDISK" io -f qcow2 -c "write -P 6 0 4k" k.qcow2 >/dev/null || fail "vdisk io after kill"
flags k.qcow2 | grep -q '^b0:in-use,auto' || fail "in-use flag dropped: $(flags k.qcow2)"
clean_check k.qcow2
for tool in qemu vdisk; do
	cp k.qcow2 k-$tool.qcow2
	rc=0
	if [ $tool = qemu ]; then
		qemu-img resize k-$tool.qcow2 +1M >r-$tool.out 2>&1 || rc=$?
		qemu-img bitmap --clear k-$tool.qcow2 b0 >>r-$tool.out 2>&1 && rc=0
	else
		"$VDISK" resize k-$tool.qcow2 +1M >r-$tool.out 2>&1 || rc=$?
		"$VDISK" bitmap --clear k-$tool.qcow2 b0 >>r-$tool.out 2>&1 && rc=0
	fi
	[ "$rc" != 0 ] || fail "$tool resized an image with an inconsistent bitmap"
	sed -i 's/^[a-z-]*: //' r-$tool.out
done
cmp -s r-qemu.out r-vdisk.out || fail "errors differ: $(diff r-qemu.out r-vdisk.out)"
grep -q "Bitmap 'b0' is inconsistent and cannot be used" r-vdisk.out || fail "$(cat r-vdisk.out)"
"$VDISK" bitmap --remove k.qcow2 b0 || fail "remove an inconsistent bitmap"
clean_check k.qcow2
echo "ok: a kill leaves the bitmaps in use; they are refused as QEMU refuses them"

# 3. A clean stop of the server (SIGTERM) stores them.
cp a.qcow2 t.qcow2
cp a.qcow2 tq.qcow2
rm -f "$S"
"$VDISK" nbd -t -f qcow2 -k "$S" t.qcow2 &
p=$!
wait_socket "$S"
qemu-io -f raw -c 'write -P 5 16M 64k' -c 'write -z 50M 4k' "nbd+unix:///?socket=$S" >/dev/null ||
	fail "write over NBD"
kill "$p"
wait "$p" 2>/dev/null
qemu-io -f qcow2 -c 'write -P 5 16M 64k' -c 'write -z 50M 4k' tq.qcow2 >/dev/null
clean_check t.qcow2
flags t.qcow2 | grep -q in-use && fail "in-use after the server stopped: $(flags t.qcow2)"
same_bitmaps t.qcow2 tq.qcow2 b0 b1 off
echo "ok: vdisk nbd stores the bitmaps at exit"

# 4. Resize (grow, shrink) resizes the bitmaps, as qemu-img resize.
for sz in +3M 16M; do
	cp a.qcow2 r.qcow2
	cp a.qcow2 rq.qcow2
	"$VDISK" resize --shrink r.qcow2 "$sz" >/dev/null || fail "vdisk resize $sz"
	qemu-img resize --shrink rq.qcow2 "$sz" >/dev/null || fail "qemu-img resize $sz"
	"$VDISK" io -f qcow2 -c 'write 12M 64k' r.qcow2 >/dev/null
	qemu-io -f qcow2 -c 'write 12M 64k' rq.qcow2 >/dev/null
	clean_check r.qcow2
	same_bitmaps r.qcow2 rq.qcow2 b0 b1 off
done
echo "ok: resize keeps the bitmaps as qemu-img"

# 5. commit writes into the base: its bitmaps record them.
for tool in qemu vdisk; do
	qemu-img create -q -f qcow2 base-$tool.qcow2 16M
	qemu-img bitmap --add base-$tool.qcow2 c0
	qemu-img create -q -f qcow2 -b base-$tool.qcow2 -F qcow2 top-$tool.qcow2
	qemu-io -f qcow2 -c 'write -P 7 1M 128k' -c 'write -z 5M 64k' top-$tool.qcow2 >/dev/null
done
qemu-img commit -q top-qemu.qcow2 || fail "qemu-img commit"
"$VDISK" commit -q -f qcow2 top-vdisk.qcow2 || fail "vdisk commit"
clean_check base-vdisk.qcow2
bmap base-qemu.qcow2 c0 | grep -q '1048576 *131072 *1 *dirty' || fail "qemu-img commit left c0 clean"
same_bitmaps base-vdisk.qcow2 base-qemu.qcow2 c0
echo "ok: commit records its writes in the base's bitmaps"

# 6. rebase writes into the image rebased: its bitmaps record them.
qemu-img create -q -f qcow2 b1.qcow2 16M
qemu-img create -q -f qcow2 b2.qcow2 16M
qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 8M 64k' b1.qcow2 >/dev/null
qemu-io -f qcow2 -c 'write -P 1 0 512k' -c 'write -P 3 12M 4k' b2.qcow2 >/dev/null
for tool in qemu vdisk; do
	qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 rb-$tool.qcow2
	qemu-img bitmap --add -g 4096 rb-$tool.qcow2 r0
	qemu-io -f qcow2 -c 'write -P 9 8M 4k' rb-$tool.qcow2 >/dev/null
done
qemu-img rebase -q -f qcow2 -b b2.qcow2 -F qcow2 rb-qemu.qcow2 || fail "qemu-img rebase"
"$VDISK" rebase -q -f qcow2 -b b2.qcow2 -F qcow2 rb-vdisk.qcow2 || fail "vdisk rebase"
clean_check rb-vdisk.qcow2
bmap rb-qemu.qcow2 r0 | grep -q '524288 .* 1 *dirty' || fail "qemu-img rebase left r0 clean"
same_bitmaps rb-vdisk.qcow2 rb-qemu.qcow2 r0
echo "ok: rebase records its writes in the image's bitmaps"

# 7. A read-write open that fails after the bitmaps were loaded (here: the
#    backing file is gone) leaves them as they were, not flagged in use
#    (regression: the flags stayed set, and QEMU then refused the bitmap).
qemu-img create -q -f qcow2 gone.qcow2 16M
qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 ov.qcow2
qemu-img bitmap --add ov.qcow2 bm0
mv gone.qcow2 gone-away.qcow2
"$VDISK" io -f qcow2 -c "write 0 4k" ov.qcow2 >ov.out 2>&1 && fail "opened without its backing file"
grep -q "gone.qcow2" ov.out || fail "no word of the backing file: $(cat ov.out)"
flags ov.qcow2 | grep -q in-use && fail "in-use after a failed open: $(flags ov.qcow2)"
flags ov.qcow2 | grep -q '^bm0:auto' || fail "bitmap lost: $(flags ov.qcow2)"
mv gone-away.qcow2 gone.qcow2
clean_check ov.qcow2
echo "ok: a failed open leaves the bitmaps consistent"
