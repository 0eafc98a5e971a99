#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk convert --bitmaps [--skip-broken-bitmaps] against qemu-img 7.2 on
# the same images: the same bitmap list (names, flags, granularities), the
# same bits (read by qemu-nbd -B through nbdinfo --map), a clean check; and
# the same errors, exit status and leftover target for a source or target
# that cannot hold bitmaps, several sources and an inconsistent bitmap.
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io qemu-nbd nbdinfo python3

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

flags() {
	qemu-img info --output=json "$1" | python3 -c '
import json, sys
for b in json.load(sys.stdin).get("format-specific", {}).get("data", {}).get("bitmaps", []):
    print(b["name"] + ":" + ",".join(b["flags"]) + ":" + str(b["granularity"]))'
}

cd "$T" || exit 1
qemu-img create -q -f qcow2 s.qcow2 32M
qemu-img bitmap --add s.qcow2 x
qemu-img bitmap --add -g 1M s.qcow2 y
qemu-img bitmap --add -g 4096 s.qcow2 z
qemu-io -c 'write -P 1 0 100k' -c 'write -P 2 3M 4k' s.qcow2 >/dev/null
qemu-img bitmap --disable s.qcow2 y
qemu-io -c 'write -P 3 17M 1M' -c 'write -z 30M 64k' s.qcow2 >/dev/null
qemu-img create -q -f raw r.raw 4M
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 4M
cp s.qcow2 iu.qcow2
python3 - iu.qcow2 <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(65536)
    i = h.find(struct.pack(">I", 0x23852875), 104)
    n, _, size, off = struct.unpack(">IIQQ", h[i + 8:i + 32])
    f.seek(off + 12)  # flags of the first entry
    fl = struct.unpack(">I", f.read(4))[0]
    f.seek(off + 12)
    f.write(struct.pack(">I", fl | 1))  # in use
EOF

# 1. The copy: same bitmaps, same bits.
for o in "" "-o cluster_size=4k"; do
	# shellcheck disable=SC2086
	"$VDISK" convert --bitmaps -f qcow2 -O qcow2 $o s.qcow2 v.qcow2 || fail "vdisk convert $o"
	# shellcheck disable=SC2086
	qemu-img convert --bitmaps -f qcow2 -O qcow2 $o s.qcow2 q.qcow2 || fail "qemu-img convert $o"
	qemu-img check v.qcow2 >c.out 2>&1 || fail "check: $(cat c.out)"
	[ "$(flags v.qcow2)" = "$(flags q.qcow2)" ] ||
		fail "bitmap lists differ: $(flags v.qcow2) vs $(flags q.qcow2)"
	[ "$(flags v.qcow2 | wc -l)" = 3 ] || fail "bitmaps missing: $(flags v.qcow2)"
	for b in x y z; do
		bmap v.qcow2 $b >v.map
		bmap q.qcow2 $b >q.map
		cmp -s v.map q.map || fail "bitmap $b differs: $(diff v.map q.map)"
	done
	grep -q dirty v.map || fail "bitmap z copied empty"
	qemu-img compare -q v.qcow2 q.qcow2 || fail "data differs"
	rm -f v.qcow2 q.qcow2
done
echo "ok: convert --bitmaps copies as qemu-img"

# 2. The errors, exit status and leftover target.
n=0
while IFS= read -r args; do
	n=$((n + 1))
	for tool in qemu vdisk; do
		rm -f o.*
		rc=0
		# shellcheck disable=SC2086
		if [ $tool = qemu ]; then
			qemu-img convert $args >$tool.out 2>&1 || rc=$?
		else
			"$VDISK" convert $args >$tool.out 2>&1 || rc=$?
		fi
		sed -i 's/^qemu-img: //; s/^vdisk: //' $tool.out
		echo "rc=$rc $(ls o.* 2>/dev/null | tr '\n' ' ')" >>$tool.out
		flags o.qcow2 >>$tool.out 2>/dev/null || true
	done
	cmp -s qemu.out vdisk.out || fail "case $n ($args) differs: $(diff qemu.out vdisk.out)"
done <<'EOF'
--skip-broken-bitmaps -f qcow2 -O qcow2 s.qcow2 o.qcow2
--bitmaps -f qcow2 -O raw s.qcow2 o.raw
--bitmaps -f raw -O qcow2 r.raw o.qcow2
--bitmaps -f qcow2 -O qcow2 s.qcow2 s.qcow2 o.qcow2
--bitmaps -f qcow2 -O qcow2 v2.qcow2 o.qcow2
--bitmaps -f qcow2 -O qcow2 -o compat=0.10 s.qcow2 o.qcow2
--bitmaps -f qcow2 -O vmdk s.qcow2 o.vmdk
--bitmaps -f qcow2 -O qcow2 iu.qcow2 o.qcow2
--bitmaps --skip-broken-bitmaps -f qcow2 -O qcow2 iu.qcow2 o.qcow2
EOF
echo "ok: convert --bitmaps errors as qemu-img"
