#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk check against qemu-img check on the same images: clean images made
# by qemu-img/qemu-io with workloads (same JSON key by key), then images
# damaged on purpose (leaked cluster, refcount too low, refcount 0 for a used
# cluster, wrong OFLAG_COPIED, L2 entry past the end of the file): the same
# verdict, exit code and counts; after vdisk check -r, qemu-img check is
# clean and the data reads back.  And a dirty (lazy refcounts) image is
# repaired by a read-write open.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

# poke IMG OP ARGS: small edits of the on-disk metadata (qcow2.txt).
cat >poke.py <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
op, args = sys.argv[2], [int(a, 0) for a in sys.argv[3:]]
h = f.read(112)
cb = struct.unpack(">I", h[20:24])[0]; cs = 1 << cb
l1_off = struct.unpack(">Q", h[40:48])[0]
rt_off = struct.unpack(">Q", h[48:56])[0]
order = struct.unpack(">I", h[96:100])[0] if struct.unpack(">I", h[4:8])[0] >= 3 else 4
assert order == 4, "tests use 16-bit refcounts"
per_block = cs * 8 // 16
def rc_pos(cl):
    f.seek(rt_off + 8 * (cl // per_block))
    b = struct.unpack(">Q", f.read(8))[0] & ~0x1ff
    assert b, "no refcount block"
    return b + 2 * (cl % per_block)
def l2_pos(guest):
    l2e = cs // 8
    f.seek(l1_off + 8 * (guest // cs // l2e))
    l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
    return l2 + 8 * (guest // cs % l2e)
def rd(pos, fmt):
    f.seek(pos); return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
def wr(pos, fmt, v):
    f.seek(pos); f.write(struct.pack(fmt, v))
if op == "setrc":          # cluster value
    wr(rc_pos(args[0]), ">H", args[1])
elif op == "hostcl":       # guest offset -> print host cluster index
    print((rd(l2_pos(args[0]), ">Q") & 0x00fffffffffffe00) >> cb)
elif op == "l2and":        # guest offset, mask
    p = l2_pos(args[0]); wr(p, ">Q", rd(p, ">Q") & args[1])
elif op == "l2set":        # guest offset, entry
    wr(l2_pos(args[0]), ">Q", args[1])
elif op == "incompat":     # value
    wr(72, ">Q", args[0])
PY
poke() { python3 poke.py "$@"; }

# same_json A B: the two check reports agree key by key (but the filename).
same_json() {
	python3 - "$1" "$2" "$3" <<'PY' || fail "JSON differs ($3)"
import json, sys
q, v = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for d in (q, v):
    d.pop("filename", None)
if q != v:
    sys.exit("%s:\n qemu-img %s\n vdisk    %s" % (sys.argv[3], q, v))
PY
}

# compare IMG WHAT [REPAIR]: both tools on copies of IMG, same JSON and
# exit code.  Returns the exit code in $rc.
compare() {
	local img=$1 what=$2 r=${3:-} qrc=0 vrc=0
	cp "$img" q.img
	cp "$img" v.img
	qemu-img check ${r:+-r $r} --output=json q.img >q.json 2>q.err || qrc=$?
	"$VDISK" check ${r:+-r $r} --output=json v.img >v.json 2>v.err || vrc=$?
	[ "$qrc" = "$vrc" ] || fail "$what: exit qemu-img $qrc vdisk $vrc: $(cat v.err)"
	sed -i 's/"q.img"/"v.img"/' q.json
	if [ -s q.json ] || [ -s v.json ]; then
		same_json q.json v.json "$what"
	fi
	rc=$qrc
}

# Clean images from qemu-io workloads, in several geometries.
for opts in "" "cluster_size=512" "cluster_size=2M" "compat=0.10" "extended_l2=on" \
	"refcount_bits=1" "refcount_bits=64" "compression_type=zstd" "lazy_refcounts=on"; do
	rm -f w.qcow2
	qemu-img create -q -f qcow2 ${opts:+-o "$opts"} w.qcow2 64M
	cs=$(qemu-img info --output=json w.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster-size"])')
	qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 3M 100k' -c "write -c -P 3 8M $cs" \
		-c "write -c -P 4 10M $cs" -c 'write -P 5 10M 512' -c 'write -z 20M 128k' \
		-c 'write -z -u 0 64k' -c 'discard 1M 64k' -c 'write -P 6 63M 1M' \
		w.qcow2 >/dev/null || fail "qemu-io workload ($opts)"
	compare w.qcow2 "clean $opts"
	[ "$rc" = 0 ] || fail "clean image $opts: exit $rc"
	# And one written by vdisk with the same workload (extended L2 and
	# subclusters included): qemu-img agrees it is clean.
	rm -f v2.qcow2
	qemu-img create -q -f qcow2 ${opts:+-o "$opts"} v2.qcow2 64M
	"$VDISK" io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 3M 100k' \
		-c 'write -z 20M 128k' -c 'discard 1M 64k' v2.qcow2 >/dev/null ||
		fail "vdisk io workload ($opts)"
	compare v2.qcow2 "vdisk-written $opts"
	[ "$rc" = 0 ] || fail "vdisk-written image $opts: exit $rc"
done

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 7 0 1M' -c 'write -P 8 5M 64k' base.qcow2 >/dev/null
data=$(poke base.qcow2 hostcl 0)

verify() { # IMG WHAT: qemu-img check clean, data intact
	qemu-img check -q "$1" || fail "$2: qemu-img check after repair"
	qemu-io -c 'read -P 7 0 1M' -c 'read -P 8 5M 64k' "$1" >/dev/null ||
		fail "$2: data after repair"
}

# damage NAME POKE-ARGS...: a damaged copy in NAME.qcow2
damage() {
	local name=$1
	shift
	cp base.qcow2 "$name.qcow2"
	poke "$name.qcow2" "$@"
}

# 1. Refcount too high on a data cluster: a leak plus an OFLAG_COPIED error.
damage high setrc "$data" 2
compare high.qcow2 "refcount 2"
[ "$rc" = 2 ] || fail "refcount 2: exit $rc"
for r in leaks all; do
	compare high.qcow2 "refcount 2 -r $r" $r
	[ "$rc" = 0 ] || fail "refcount 2 -r $r: exit $rc"
	"$VDISK" check -q -r $r high.qcow2 2>/dev/null || true
done
verify high.qcow2 "refcount 2"

# 2. A leaked cluster only (past the data, in the file): exit 3, -r leaks.
cp base.qcow2 leak.qcow2
end=$(stat -c %s leak.qcow2)
truncate -s $((end + 65536)) leak.qcow2
poke leak.qcow2 setrc $((end / 65536)) 1
compare leak.qcow2 "leak"
[ "$rc" = 3 ] || fail "leak: exit $rc"
compare leak.qcow2 "leak -r leaks" leaks
[ "$rc" = 0 ] || fail "leak -r leaks: exit $rc"
"$VDISK" check -q -r leaks leak.qcow2 || fail "vdisk check -r leaks"
verify leak.qcow2 "leak"

# 3. Refcount 0 for a used cluster: refcount structure rebuilt by -r all.
damage zero setrc "$data" 0
compare zero.qcow2 "refcount 0"
[ "$rc" = 2 ] || fail "refcount 0: exit $rc"
"$VDISK" check -r all zero.qcow2 >out 2>&1 || fail "refcount 0: -r all: $(cat out)"
grep -q "Rebuilding refcount structure" out || fail "no rebuild: $(cat out)"
verify zero.qcow2 "refcount 0"
"$VDISK" check zero.qcow2 >/dev/null || fail "vdisk check after rebuild"

# 4. Refcount too low but not 0 (a cluster shared in the tables).
damage low l2set 0x200000 "$(printf 0x%x $((0x8000000000000000 | data * 65536)))"
compare low.qcow2 "shared data cluster"
[ "$rc" = 2 ] || fail "shared: exit $rc"

# 5. OFLAG_COPIED cleared on an L2 entry.
damage copied l2and 0 0x7fffffffffffffff
compare copied.qcow2 "OFLAG_COPIED"
[ "$rc" = 2 ] || fail "OFLAG_COPIED: exit $rc"
compare copied.qcow2 "OFLAG_COPIED -r all" all
[ "$rc" = 0 ] || fail "OFLAG_COPIED -r all: exit $rc"
"$VDISK" check -q -r all copied.qcow2 || fail "vdisk check -r all OFLAG_COPIED"
verify copied.qcow2 "OFLAG_COPIED"

# 6. An L2 entry pointing past the end of the file.
damage eof l2set 0x10000 0x8000000040000000
compare eof.qcow2 "L2 entry past EOF"
[ "$rc" = 2 ] || fail "past EOF: exit $rc"

# 7. Unaligned data cluster (not repairable by either tool).
damage unaligned l2set 0 "$(printf 0x%x $((0x8000000000000000 | (data * 65536 + 512))))"
compare unaligned.qcow2 "unaligned"
[ "$rc" = 2 ] || fail "unaligned: exit $rc"

# 8. A dirty image (lazy refcounts) with a stale refcount: a read-write
# open repairs it and clears the dirty bit; a read-only open does not.
qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 64M
qemu-io -c 'write -P 7 0 1M' -c 'write -P 8 5M 64k' dirty.qcow2 >/dev/null
poke dirty.qcow2 setrc "$(poke dirty.qcow2 hostcl 0)" 0
poke dirty.qcow2 incompat 1
"$VDISK" io -f qcow2 -r -c 'read -P 7 0 1M' dirty.qcow2 >/dev/null || fail "read-only dirty"
"$VDISK" io -f qcow2 -c 'read -P 7 0 1M' dirty.qcow2 >/dev/null 2>&1 ||
	fail "read-write open of a dirty image"
qemu-img info dirty.qcow2 | grep -q "dirty bit: false" ||
	qemu-img info --output=json dirty.qcow2 | grep -q '"dirty-flag": false' ||
	fail "dirty bit still set"
verify dirty.qcow2 "dirty"
echo PASS
