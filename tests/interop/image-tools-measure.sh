#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk measure vs qemu-img measure: the same command line, byte for byte
# the same output (human and JSON) and the same exit code, for qcow2 and
# raw targets with the qcow2 options that change the figures
# (cluster_size, refcount_bits, extended_l2, compat, preallocation,
# backing_file), from --size and from source images: raw (sparse, with
# zero-filled ranges), qcow2 v2 and v3, extended L2, compressed, a 3-deep
# backing chain, internal snapshots and persistent bitmaps ("bitmaps
# size").  Bad command lines: exit 1 from both, a one-line message.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io

qemu-img create -q -f raw sp.raw 100M
qemu-io -f raw -c 'write -P 1 10M 1M' -c 'write -P 0 20M 1M' -c 'write 50M 12k' \
	-c 'write -P 3 99M 4097' sp.raw >/dev/null
qemu-img convert -c -f raw -O qcow2 sp.raw comp.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k xl.qcow2 1G
qemu-io -f qcow2 -c 'write 5k 3k' -c 'write -z 1M 256k' xl.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 10M
qemu-io -f qcow2 -c 'write 0 1M' v2.qcow2 >/dev/null
qemu-img create -q -f qcow2 bm.qcow2 64M
qemu-img bitmap --add bm.qcow2 b0
qemu-img bitmap --add -g 131072 --disable bm.qcow2 b1
qemu-io -f qcow2 -c 'write -P 1 1M 3M' -c 'write -z 8M 1M' bm.qcow2 >/dev/null
qemu-img create -q -f qcow2 b0.qcow2 16M
qemu-io -f qcow2 -c 'write -P 1 0 2M' b0.qcow2 >/dev/null
qemu-img snapshot -c s1 b0.qcow2
qemu-img create -q -f qcow2 -b b0.qcow2 -F qcow2 b1.qcow2 20M
qemu-io -f qcow2 -c 'write -P 2 1M 2M' -c 'write -z 0 64k' b1.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c 'write -P 3 15M 64k' top.qcow2 >/dev/null

SOURCES="-f_raw_sp.raw -f_qcow2_comp.qcow2 -f_qcow2_xl.qcow2 -f_qcow2_v2.qcow2
-f_qcow2_bm.qcow2 -f_qcow2_top.qcow2 -f_qcow2_b0.qcow2 --size_1G --size_0 --size_123456789
--size_3T"
OPTIONS="none cluster_size=4k extended_l2=on compat=0.10 refcount_bits=1
refcount_bits=64,cluster_size=2M preallocation=full preallocation=metadata backing_file=x
cluster_size=512 extended_l2=on,cluster_size=8k compat=0.10,refcount_bits=8 cluster_size=3k"
if [ -n "${VDISK_QUICK:-}" ]; then
	SOURCES="-f_raw_sp.raw -f_qcow2_bm.qcow2 -f_qcow2_top.qcow2 --size_1G"
	OPTIONS="none cluster_size=4k extended_l2=on"
fi

n=0
for src in $SOURCES; do
	src=${src//_/ }
	for o in $OPTIONS; do
		oo=""
		[ "$o" = none ] || oo="-o $o"
		for target in qcow2 raw; do
			[ "$target" = raw ] && [ -n "$oo" ] && continue
			for out in human json; do
				qrc=0 vrc=0
				# shellcheck disable=SC2086
				qemu-img measure --output=$out -O $target $oo $src >q.out 2>q.err || qrc=$?
				# shellcheck disable=SC2086
				"$VDISK" measure --output=$out -O $target $oo $src >v.out 2>v.err || vrc=$?
				what="measure --output=$out -O $target $oo $src"
				[ "$qrc" = "$vrc" ] || fail "$what: qemu-img exit $qrc, vdisk $vrc: $(cat q.err v.err)"
				cmp -s q.out v.out || fail "$what: $(diff q.out v.out)"
				if [ "$vrc" != 0 ]; then
					[ "$(wc -l <v.err)" = 1 ] || fail "$what: not one line: $(cat v.err)"
				fi
				n=$((n + 1))
			done
		done
	done
done
# The bitmaps line appears (and is not zero) where there are bitmaps.
"$VDISK" measure -O qcow2 -f qcow2 bm.qcow2 | grep -qx 'bitmaps size: 327680' ||
	fail "bitmaps size of bm.qcow2"

# Bad command lines and missing files: exit 1 from both, one line.
for args in "-O qcow2" "-O qcow2 --size 1G sp.raw" "-O qcow2 -f raw --size 1G" \
	"-O qcow2 -f qcow2 nope.qcow2" "-O vdi --size 1G" "-O nofmt --size 1G" \
	"-O qcow2 --size 1x" "-O qcow2 --output=xml --size 1G" "-O qcow2 -o foo=1 --size 1G" \
	"-O qcow2 -o compat=9 --size 1G" "-O qcow2 a b" "-O qcow2 --size 1G -o cluster_size=512 --size 8E"; do
	qrc=0 vrc=0
	# shellcheck disable=SC2086
	qemu-img measure $args >/dev/null 2>q.err || qrc=$?
	# shellcheck disable=SC2086
	"$VDISK" measure $args >/dev/null 2>v.err || vrc=$?
	[ "$qrc" = 1 ] && [ "$vrc" = 1 ] || fail "measure $args: qemu-img $qrc, vdisk $vrc"
	grep -q '^vdisk: ' v.err || fail "measure $args: no message"
done
echo "PASS ($n command lines equal)"
