#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# qcow2 interoperability with QEMU 7.2's qemu-img and qemu-io.
#
# For each row of creation options, one seeded workload (writes of odd sizes
# and offsets with patterns, write -z with and without -u, discard) runs
# through qemu-io on image A and through `vdisk io` on image B, both made by
# qemu-img.  Then: `qemu-img check B` is clean, `qemu-img compare A B` finds
# them identical, and vdisk reads A (written by QEMU) exactly as qemu-io
# does.  Also: an image made by `vdisk create` passes qemu-img check and
# qemu-io can use it; a backing chain raw <- qcow2 <- qcow2 reads the same
# through vdisk and qemu-io, and vdisk writes into it as qemu-io does.
#
# Exit 0 pass, 77 skip, 1 fail.  VDISK_QUICK=1 runs fewer rows (ASan).
set -uo pipefail

SRCDIR=${SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${BUILD:-build}
case "$BUILD" in
/*) ;;
*) BUILD=$SRCDIR/$BUILD ;;
esac
VDISK=${VDISK:-$BUILD/vdisk}
OPS=${QCOW2_OPS:-200}

for t in qemu-img qemu-io; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "SKIP: $t not installed"
		exit 77
	fi
done
if [ ! -x "$VDISK" ]; then
	echo "SKIP: $VDISK not built"
	exit 77
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
bad() {
	echo "FAIL: $*"
	fail=1
}

# A seeded list of qemu-io commands for an image of $2 bytes.
workload() {
	local seed=$1 size=$2 n=$3 i op off len
	RANDOM=$seed
	for ((i = 0; i < n; i++)); do
		op=$((RANDOM % 20))
		off=$(((RANDOM * 32768 + RANDOM) % size))
		case $op in
		0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10) len=$((RANDOM % 150000 + 1)) ;;
		*) len=$(((RANDOM % 8 + 1) * 65536 + (RANDOM % 3) * (RANDOM % 4096))) ;;
		esac
		[ $((off + len)) -gt "$size" ] && len=$((size - off))
		[ "$len" -le 0 ] && continue
		case $op in
		0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11) echo "write -P $((RANDOM % 255 + 1)) $off $len" ;;
		12 | 13 | 14) echo "write -z $off $len" ;;
		15 | 16) echo "write -z -u $off $len" ;;
		*) echo "discard $off $len" ;;
		esac
	done
}

# Run a command list file through a tool: "qemu-io" or "$VDISK io".
run_ops() {
	local file=$1 img=$2 tool=$3
	local args=()
	while IFS= read -r line; do
		args+=(-c "$line")
	done <"$file"
	if [ "$tool" = qemu ]; then
		qemu-io -f qcow2 "${args[@]}" "$img" >"$TMP/out" 2>&1
	else
		"$VDISK" io -f qcow2 "${args[@]}" "$img" >"$TMP/out" 2>&1
	fi
	if grep -qi "fail\|error" "$TMP/out"; then
		grep -i "fail\|error" "$TMP/out" | head -3
		return 1
	fi
	return 0
}

# md5 of the whole guest content as dumped by `read -v` of a tool.
dump_md5() {
	local img=$1 tool=$2 size=$3
	if [ "$tool" = qemu ]; then
		qemu-io -f qcow2 -r -c "read -v 0 $size" "$img"
	else
		"$VDISK" io -f qcow2 -r -c "read -v 0 $size" "$img"
	fi | grep '^[0-9a-f]\{8\}:' | md5sum | cut -d' ' -f1
}

rows=(
	"cluster_size=65536"
	"cluster_size=512"
	"cluster_size=2048"
	"cluster_size=2M"
	"refcount_bits=1,cluster_size=4096"
	"refcount_bits=64"
	"extended_l2=on"
	"compat=0.10"
	"compression_type=zstd"
	"refcount_bits=8,extended_l2=on,cluster_size=16384"
	"backing:cluster_size=65536"
	"backing:extended_l2=on"
	"backing:compat=0.10,cluster_size=4096"
)
if [ "${VDISK_QUICK:-0}" = 1 ]; then
	rows=("cluster_size=65536" "cluster_size=512" "extended_l2=on" "compat=0.10"
		"backing:extended_l2=on")
	OPS=${QCOW2_OPS:-80}
fi

size=$((3 * 1024 * 1024 + 512 * 3))
seed=${QCOW2_SEED:-7}
for opts in "${rows[@]}"; do
	sz=$size
	case $opts in *2M*) sz=$((8 * 1024 * 1024)) ;; esac
	workload $seed $sz "$OPS" >"$TMP/ops"
	seed=$((seed + 11))
	# "backing:" rows: the images are overlays of a raw file shorter than
	# them, so COW reads the backing file and zeroes past its end.
	bopts=()
	case $opts in
	backing:*)
		head -c $((sz - 200000)) /dev/urandom >"$TMP/base.raw"
		bopts=(-b base.raw -F raw)
		;;
	esac
	qemu-img create -q -f qcow2 "${bopts[@]}" -o "${opts#backing:}" "$TMP/a.qcow2" $sz || {
		bad "qemu-img create $opts"
		continue
	}
	cp "$TMP/a.qcow2" "$TMP/b.qcow2"
	run_ops "$TMP/ops" "$TMP/a.qcow2" qemu || bad "[$opts] qemu-io workload"
	run_ops "$TMP/ops" "$TMP/b.qcow2" vdisk || bad "[$opts] vdisk io workload"
	qemu-img check -q "$TMP/b.qcow2" || bad "[$opts] qemu-img check of the vdisk-written image"
	qemu-img compare -q -f qcow2 -F qcow2 "$TMP/a.qcow2" "$TMP/b.qcow2" ||
		bad "[$opts] qemu-img compare: contents differ"
	qa=$(dump_md5 "$TMP/a.qcow2" qemu $sz)
	va=$(dump_md5 "$TMP/a.qcow2" vdisk $sz)
	[ "$qa" = "$va" ] || bad "[$opts] vdisk reads the QEMU-written image differently"
	# Compressed clusters written by QEMU, read by vdisk (and back).
	qemu-img convert -c -O qcow2 -o "${opts#backing:}" "$TMP/a.qcow2" "$TMP/c.qcow2" 2>/dev/null &&
		{
			vc=$(dump_md5 "$TMP/c.qcow2" vdisk $sz)
			[ "$qa" = "$vc" ] || bad "[$opts] vdisk reads compressed clusters differently"
		}
	echo "ok: $opts ($OPS ops)"
done

# An image made by vdisk create: clean for qemu-img, usable by qemu-io.
for opts in "" "cluster_size=512,refcount_bits=1" "compat=0.10" "extended_l2=on,lazy_refcounts=on" \
	"preallocation=metadata"; do
	"$VDISK" create -q -f qcow2 ${opts:+-o "$opts"} "$TMP/v.qcow2" 16M || {
		bad "vdisk create $opts"
		continue
	}
	qemu-img check -q "$TMP/v.qcow2" || bad "[create $opts] qemu-img check"
	qemu-io -f qcow2 -c "write -P 0x5a 1234 300000" -c "read -P 0x5a 1234 300000" \
		"$TMP/v.qcow2" >"$TMP/out" 2>&1
	grep -qi "fail\|error" "$TMP/out" && bad "[create $opts] qemu-io on a vdisk image"
	qemu-img create -q -f qcow2 ${opts:+-o "$opts"} "$TMP/q.qcow2" 16M
	cmp -s "$TMP/q.qcow2" "$TMP/v.qcow2" 2>/dev/null || true
	"$VDISK" io -f qcow2 -c "read -P 0x5a 1234 300000" "$TMP/v.qcow2" >"$TMP/out" 2>&1
	grep -qi "fail\|error" "$TMP/out" && bad "[create $opts] vdisk reads back qemu-io's data"
done
# Byte-identical layout for the default options.
"$VDISK" create -q -f qcow2 "$TMP/v.qcow2" 1G && qemu-img create -q -f qcow2 "$TMP/q.qcow2" 1G &&
	{ cmp -s "$TMP/v.qcow2" "$TMP/q.qcow2" || bad "vdisk create differs from qemu-img create (1G)"; }
echo "ok: vdisk create"

# Backing chain: raw <- mid.qcow2 <- top.qcow2.
chain=$TMP/chain
mkdir -p "$chain"
head -c $((3 * 1024 * 1024 + 4096)) /dev/urandom >"$chain/base.raw"
qemu-img create -q -f qcow2 -b base.raw -F raw "$chain/mid.qcow2" 4M
qemu-io -f qcow2 -c "write -P 0x11 100000 200000" -c "write -z 1048576 65536" \
	-c "discard 2097152 131072" "$chain/mid.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$chain/top.qcow2" 5M
qemu-io -f qcow2 -c "write -P 0x22 150000 1000" -c "write -P 0x33 3145728 70000" \
	"$chain/top.qcow2" >/dev/null
q=$(dump_md5 "$chain/top.qcow2" qemu 5M)
v=$(dump_md5 "$chain/top.qcow2" vdisk 5M)
[ "$q" = "$v" ] || bad "backing chain: vdisk reads through top differently from qemu-io"
cp "$chain/top.qcow2" "$chain/top2.qcow2"
ops=(-c "write -P 0x44 5000 77777" -c "write -z 1000000 100000" -c "discard 2097152 65536"
	-c "write -P 0x55 3200000 1000")
qemu-io -f qcow2 "${ops[@]}" "$chain/top.qcow2" >/dev/null
"$VDISK" io -f qcow2 "${ops[@]}" "$chain/top2.qcow2" >"$TMP/out" 2>&1
grep -qi "fail\|error" "$TMP/out" && bad "backing chain: vdisk write failed"
qemu-img check -q "$chain/top2.qcow2" || bad "backing chain: check after vdisk writes"
qemu-img compare -q "$chain/top.qcow2" "$chain/top2.qcow2" ||
	bad "backing chain: vdisk COW from the backing differs from qemu-io's"
echo "ok: backing chain"

exit $fail
