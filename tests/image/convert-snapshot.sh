#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# An internal snapshot as the source of convert and measure (-l), against
# qemu-img 7.2:
#  - a qcow2 with three snapshots made by qemu-img snapshot -c, each with
#    other data (one before a discard and with a shorter L1 table than
#    the image needs, one after the image grew) and the active state resized: vdisk convert -l and qemu-img convert
#    -l give identical raw files and equal qcow2 images, by ID, by name and
#    with snapshot.id=/snapshot.name=; the data is the snapshot's;
#  - the size is the image's, as in QEMU 7.2 (bdrv_snapshot_load_tmp does
#    not change it);
#  - measure -l prints what qemu-img prints (JSON and text);
#  - errors (no such snapshot, bad option list, a format without internal
#    snapshots, several sources) give qemu-img's message and exit code;
#  - the image file is not changed;
#  - crafted snapshot L1 tables (tests/fuzz/make-qcow2-corpus.py) are
#    refused with one line each, before any output is created.
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

img=$T/sn.qcow2
qio() { qemu-io -f qcow2 "$@" "$img" >/dev/null || fail "qemu-io $*"; }
# 4k clusters: an L1 entry covers 2 MiB, so snapshot "one" (32M, 16
# entries) has a shorter L1 table than the image (96M) needs: reads past
# its end see unallocated space, as in QEMU.
qemu-img create -q -f qcow2 -o cluster_size=4k "$img" 32M
qio -c 'write -P 1 0 1M' -c 'write -P 2 20M 512k' -c 'write -c -P 7 8M 64k'
qemu-img snapshot -c one "$img"
qio -c 'write -P 3 0 64k' -c 'discard 20M 512k'
qemu-img resize -q "$img" 64M
qio -c 'write -P 4 50M 1M'
qemu-img snapshot -c two "$img"
qemu-img resize -q "$img" 128M
qio -c 'write -P 5 100M 1M'
qemu-img snapshot -c three "$img"
qemu-img resize -q --shrink "$img" 96M
qio -c 'write -P 6 1M 64k'
qemu-img check -q "$img" || fail "the test image is not clean"
sum_before=$(md5sum <"$img")

# 1. convert -l: raw outputs byte for byte, qcow2 outputs equal.
for spec in 1 one 2 two 3 three snapshot.id=1 snapshot.name=two \
	snapshot.id=3,snapshot.name=three; do
	rm -f v.raw q.raw v.qcow2 q.qcow2
	"$VDISK" convert -f qcow2 -l "$spec" -O raw "$img" v.raw >v.out 2>&1 ||
		fail "vdisk convert -l $spec: $(cat v.out)"
	qemu-img convert -f qcow2 -l "$spec" -O raw "$img" q.raw ||
		fail "qemu-img convert -l $spec"
	cmp -s v.raw q.raw || fail "convert -l $spec -O raw: outputs differ"
	"$VDISK" convert -f qcow2 -l "$spec" -O qcow2 "$img" v.qcow2 >v.out 2>&1 ||
		fail "vdisk convert -l $spec -O qcow2: $(cat v.out)"
	qemu-img convert -f qcow2 -l "$spec" -O qcow2 "$img" q.qcow2
	qemu-img compare -q v.qcow2 q.qcow2 || fail "convert -l $spec -O qcow2: images differ"
	qemu-img check -q v.qcow2 || fail "convert -l $spec: qemu-img check of the output"
	[ "$(stat -c %s v.raw)" = 100663296 ] || fail "-l $spec: size $(stat -c %s v.raw), not 96M"
done

# 2. The data is the snapshot's (both tools could agree on the active state).
check_data()
{
	local spec=$1
	shift
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	"$VDISK" convert -f qcow2 -l "$spec" -O qcow2 "$img" d.qcow2 >v.out 2>&1 ||
		fail "vdisk convert -l $spec: $(cat v.out)"
	qemu-io -f qcow2 "${args[@]}" d.qcow2 >r.out 2>&1
	! grep -q 'verification failed\|error' r.out || fail "-l $spec: $(cat r.out)"
	rm -f d.qcow2
}
check_data one 'read -P 1 0 1M' 'read -P 2 20M 512k' 'read -P 7 8M 64k' 'read -P 0 40M 1M' \
	'read -P 0 95M 1M'
check_data two 'read -P 3 0 64k' 'read -P 1 64k 960k' 'read -P 0 20M 512k' \
	'read -P 7 8M 64k' 'read -P 4 50M 1M' 'read -P 0 95M 1M'
check_data three 'read -P 3 0 64k' 'read -P 1 64k 960k' 'read -P 0 1M 64k' \
	'read -P 4 50M 1M' 'read -P 0 95M 1M'

# 3. measure -l: the same JSON and text as qemu-img.
for spec in one 2 snapshot.name=three; do
	for out in qcow2 raw; do
		for fmt in json human; do
			"$VDISK" measure -f qcow2 -l "$spec" -O "$out" --output=$fmt "$img" \
				>v.out 2>&1 || fail "vdisk measure -l $spec: $(cat v.out)"
			qemu-img measure -f qcow2 -l "$spec" -O "$out" --output=$fmt "$img" >q.out 2>&1
			cmp -s v.out q.out ||
				fail "measure -l $spec -O $out ($fmt): $(cat v.out) vs $(cat q.out)"
		done
	done
done
# It measures the snapshot, not the active state.
"$VDISK" measure -f qcow2 -l one -O qcow2 --output=json "$img" >a.out
"$VDISK" measure -f qcow2 -O qcow2 --output=json "$img" >b.out
! cmp -s a.out b.out || fail "measure -l one measured the active state"

# 4. Errors: qemu-img's message (its name replaced) and exit code.
raw=$T/r.raw
qemu-img create -q -f raw "$raw" 1M
same_error()
{
	local what=$1
	shift
	local v q vrc qrc
	rm -f e.out
	"$VDISK" "$@" >v.err 2>&1
	vrc=$?
	qemu-img "$@" >q.err 2>&1
	qrc=$?
	sed 's/^qemu-img: /vdisk: /' q.err >q2.err
	[ "$vrc" = "$qrc" ] || fail "$what: exit $vrc, qemu-img $qrc"
	cmp -s v.err q2.err || fail "$what: '$(cat v.err)' vs qemu-img '$(cat q.err)'"
	[ ! -e e.out ] || fail "$what: output created"
}
for spec in nope snapshot.id=9 snapshot.name=one,snapshot.id=2 snapshot.id=1,snapshot.foo=1 \
	snapshot.name; do
	same_error "convert -l $spec" convert -f qcow2 -l "$spec" -O raw "$img" e.out
	same_error "measure -l $spec" measure -f qcow2 -l "$spec" -O qcow2 "$img"
done
same_error "raw source" convert -f raw -l one -O raw "$raw" e.out
same_error "raw measure" measure -f raw -l one -O qcow2 "$raw"
same_error "two sources" convert -f qcow2 -l one -O raw "$img" "$img" e.out
grep -q "No support for concatenating multiple snapshot" v.err || fail "two sources: $(cat v.err)"

# 5. Nothing of the above wrote to the image.
[ "$(md5sum <"$img")" = "$sum_before" ] || fail "the source image changed"

# 6. Crafted snapshot tables: one clear line, exit 1, no output.
python3 "$SRCDIR/tests/fuzz/make-qcow2-corpus.py" "$T/corpus" >/dev/null
n=0
for f in "$T"/corpus/snapshot-*; do
	case ${f##*/} in
	snapshot-valid | snapshot-disk-size-huge)
		"$VDISK" convert -f qcow2 -l snapshot.id=1 -O raw "$f" ok.raw >v.err 2>&1 ||
			fail "${f##*/}: $(cat v.err)"
		rm -f ok.raw
		continue
		;;
	esac
	rm -f e.out
	"$VDISK" convert -f qcow2 -l snapshot.id=1 -O raw "$f" e.out >v.err 2>&1
	rc=$?
	[ "$rc" = 1 ] || fail "${f##*/}: exit $rc: $(cat v.err)"
	[ "$(wc -l <v.err)" = 1 ] && grep -q '^vdisk: Failed to load snapshot: Snapshot L1 ' v.err ||
		fail "${f##*/}: $(cat v.err)"
	[ ! -e e.out ] || fail "${f##*/}: output created"
	# By ID or name, QEMU retries by name after a bad table: not found.
	"$VDISK" measure -f qcow2 -l 1 "$f" >v.err 2>&1 && fail "${f##*/}: measure -l 1 worked"
	[ "$(wc -l <v.err)" = 1 ] || fail "${f##*/}: measure: $(cat v.err)"
	n=$((n + 1))
done
[ "$n" -ge 10 ] || fail "only $n crafted snapshot images"
echo "ok: convert -l and measure -l as qemu-img 7.2 ($n crafted snapshot tables refused)"
