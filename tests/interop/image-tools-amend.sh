#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk dd, amend, check output, -o help and -p against qemu-img 7.2: the
# same command line on copies of the same images (raw, qcow2 v2/v3, zero
# clusters, extended L2, compressed zlib/zstd, a backing chain, snapshots,
# bitmaps, lazy refcounts, 4k clusters).  For each: the same stdout+stderr
# (the program name aside), the same exit code, images equal under qemu-img
# compare, the same qemu-img info --output=json (file name and sizes on
# disk aside) and qemu-img check clean on what vdisk wrote.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

qio() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }
n=0

# same IMG SUBCOMMAND ARGS...: run "qemu-img SUB ARGS q.img" and
# "vdisk SUB ARGS v.img" on copies of IMG and compare everything.
same() {
	local img=$1
	shift
	rm -f q.img v.img
	cp "$img" q.img
	cp "$img" v.img
	local qrc=0 vrc=0
	qemu-img "$@" q.img >q.out 2>&1 || qrc=$?
	"$VDISK" "$@" v.img >v.out 2>&1 || vrc=$?
	sed -i 's/^vdisk:/qemu-img:/; s/v\.img/q.img/g' v.out
	[ "$qrc" = "$vrc" ] || fail "$*: exit $vrc, qemu-img $qrc: $(cat v.out)"
	cmp -s q.out v.out || fail "$*: output differs: $(diff q.out v.out)"
	# Neither tool changed the image (refused, or read only): done.
	if cmp -s "$img" q.img && cmp -s "$img" v.img; then
		n=$((n + 1))
		return 0
	fi
	qemu-img compare q.img v.img >/dev/null 2>&1 || fail "$*: images differ"
	qemu-img info --output=json q.img | grep -v '"filename"\|actual-size\|dirty-flag' >qi.json
	qemu-img info --output=json v.img | grep -v '"filename"\|actual-size\|dirty-flag' >vi.json
	cmp -s qi.json vi.json || fail "$*: qemu-img info differs: $(diff qi.json vi.json)"
	# What vdisk wrote is clean (a check without -r all writes nothing).
	if [ "$(head -c 3 v.img)" = QFI ] && { [ "$1" != check ] || [[ "$*" == *"-r all"* ]]; }; then
		qemu-img check v.img >c.out 2>&1 || fail "$*: vdisk left $(cat c.out)"
	fi
	n=$((n + 1))
}

# --- images ----------------------------------------------------------------
qemu-img create -q -f raw base.raw 16M
qio -f raw -c 'write -P 9 0 8M' -c 'write -P 7 14M 1M' base.raw
qemu-img create -q -f qcow2 v3.qcow2 16M
qio -c 'write -P 1 0 1M' -c 'write -z 2M 1M' -c 'write -P 2 5M 64k' v3.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 16M
qio -c 'write -P 1 0 1M' v2.qcow2
qemu-img create -q -f qcow2 -b base.raw -F raw ov.qcow2
qio -c 'write -z 1M 1M' -c 'write -P 3 4M 64k' ov.qcow2
qemu-img convert -c -f raw -O qcow2 base.raw zlib.qcow2
qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd base.raw zstd.qcow2
qemu-img create -q -f qcow2 -o compression_type=zstd zstd-empty.qcow2 1M
qemu-img create -q -f qcow2 -o extended_l2=on ext.qcow2 1M
qemu-img create -q -f qcow2 snap.qcow2 1M
qio -c 'write -P 5 0 64k' snap.qcow2
qemu-img snapshot -c s1 snap.qcow2
qio -c 'write -P 6 0 64k' snap.qcow2
cp snap.qcow2 snap-resized.qcow2
qemu-img resize -q snap-resized.qcow2 2M
qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 1M
qemu-img create -q -f qcow2 -o cluster_size=4k small.qcow2 16M
qio -c 'write -P 1 0 3M' small.qcow2

# --- amend -----------------------------------------------------------------
for o in compat=1.1 compat=0.10 compat=v2 compat=0.9 lazy_refcounts=on \
	lazy_refcounts=off,compat=0.10 refcount_bits=8 refcount_bits=1 refcount_bits=64 \
	refcount_bits=3 refcount_bits=128 size=8M size=128M backing_file=x foo=bar \
	cluster_size=4k extended_l2=on preallocation=full encrypt.format=luks data_file=x \
	help; do
	same v3.qcow2 amend -o "$o"
done
for o in compat=1.1 lazy_refcounts=on refcount_bits=8 compat=1.1,refcount_bits=8 \
	compat=1.1,lazy_refcounts=on size=128M; do
	same v2.qcow2 amend -o "$o"
done
same ov.qcow2 amend -o compat=0.10
same ov.qcow2 amend -o backing_file=base.raw,backing_fmt=raw
same ov.qcow2 amend -o backing_file=base.raw
same ov.qcow2 amend -o backing_file=other.raw,backing_fmt=raw
same zlib.qcow2 amend -o compat=0.10
same zlib.qcow2 amend -o refcount_bits=1
same zstd.qcow2 amend -o compat=0.10
same zstd-empty.qcow2 amend -o compat=0.10
same ext.qcow2 amend -o compat=0.10
same snap.qcow2 amend -o compat=0.10
same snap.qcow2 amend -o refcount_bits=1
same snap.qcow2 amend -o refcount_bits=2
same snap-resized.qcow2 amend -o compat=0.10
same lazy.qcow2 amend -o lazy_refcounts=off
same small.qcow2 amend -o refcount_bits=64
same small.qcow2 amend -o compat=0.10
same small.qcow2 amend -q -f qcow2 -t none -o compat=0.10 -o lazy_refcounts=off
same base.raw amend -f raw -o size=1M
# The data survives a downgrade with a backing file: zero clusters read as
# zeroes, not as the backing file's data.
cp ov.qcow2 d.qcow2
"$VDISK" amend -o compat=0.10 d.qcow2
qemu-io -c 'read -P 0 1M 1M' -c 'read -P 9 2M 1M' -c 'read -P 3 4M 64k' d.qcow2 >r.out ||
	fail "downgraded overlay reads wrong: $(cat r.out)"
! grep -q "verification failed" r.out || fail "downgraded overlay: $(cat r.out)"
# Command lines qemu-img refuses before opening anything.
for args in "amend" "amend x.qcow2" "amend -o compat=1.1" "amend -o compat=1.1 a b" \
	"amend -t bogus -o compat=1.1 v3.qcow2" "amend -o compat=1.1 nonexist.qcow2" \
	"amend -f qcow2 -o help" "amend -f raw -o help" "amend --bogus v3.qcow2"; do
	qrc=0 vrc=0
	# shellcheck disable=SC2086
	qemu-img $args >q.out 2>&1 || qrc=$?
	# shellcheck disable=SC2086
	"$VDISK" $args >v.out 2>&1 || vrc=$?
	sed -i 's/^vdisk:/qemu-img:/; s/vdisk --help/qemu-img --help/' v.out
	[ "$qrc" = "$vrc" ] || fail "$args: exit $vrc, qemu-img $qrc"
	cmp -s q.out v.out || fail "$args: output differs: $(diff q.out v.out)"
	n=$((n + 1))
done

# --- -o help -------------------------------------------------------------------
for args in "create -f qcow2 -o help" "create -f raw -o help" "create -f vpc -o help" \
	"create -f vdi -o help" "create -f qcow2 -o size=1M,help x.qcow2" \
	"create -o help x.raw" "create -o help -f qcow2 x.qcow2" \
	"convert -O qcow2 -o help" "convert -o help a.raw x" "convert -O vdi -o help a"; do
	# shellcheck disable=SC2086
	qemu-img $args >q.out 2>&1 || fail "qemu-img $args"
	# shellcheck disable=SC2086
	"$VDISK" $args >v.out 2>&1 || fail "vdisk $args: $(cat v.out)"
	cmp -s q.out v.out || fail "$args: differs: $(diff q.out v.out)"
	n=$((n + 1))
done

# --- dd --------------------------------------------------------------------------
for args in "" "if=base.raw" "if=base.raw of=o bs=0" "if=base.raw of=o bs=abc" \
	"if=base.raw of=o bs=4G" "if=base.raw of=o count=-1" "if=base.raw of=o skip=x" \
	"if=base.raw of=o foo=1" "if=base.raw of=o bar" "if=nonexist of=o" \
	"-O qcow2 if=base.raw of=o bs=1M count=3" "if=base.raw of=o bs=1M skip=20" \
	"if=base.raw of=o bs=1M skip=3" "-O foo if=base.raw of=o" "-f qcow2 if=base.raw of=o" \
	"if=base.raw of=o bs=3000 count=2" "if=base.raw of=o bs=1.5k count=100" \
	"if=base.raw of=o skip=0x10 count=0x100" "if=base.raw of=o skip=1k bs=1k count=2" \
	"if=base.raw of=/nonexist/o" "-O qcow2 if=v3.qcow2 of=o bs=64k skip=3" \
	"-O qcow2 if=ov.qcow2 of=o bs=1M" "-f qcow2 -O raw if=zlib.qcow2 of=o bs=4M count=3" \
	"-U if=snap.qcow2 of=o"; do
	rm -f o q.o v.o
	qrc=0 vrc=0
	# shellcheck disable=SC2086
	qemu-img dd $args >q.out 2>&1 || qrc=$?
	[ -e o ] && mv o q.o
	# shellcheck disable=SC2086
	"$VDISK" dd $args >v.out 2>&1 || vrc=$?
	[ -e o ] && mv o v.o
	sed -i 's/^vdisk:/qemu-img:/' v.out
	[ "$qrc" = "$vrc" ] || fail "dd $args: exit $vrc, qemu-img $qrc: $(cat v.out)"
	cmp -s q.out v.out || fail "dd $args: output differs: $(diff q.out v.out)"
	if [ -e q.o ]; then
		[ -e v.o ] || fail "dd $args: vdisk made no output"
		qemu-img compare q.o v.o >/dev/null || fail "dd $args: outputs differ"
		[ "$(qemu-img info q.o | grep virtual)" = "$(qemu-img info v.o | grep virtual)" ] ||
			fail "dd $args: output sizes differ"
		if [ "$(head -c 3 v.o)" = QFI ]; then
			qemu-img check v.o >/dev/null || fail "dd $args: vdisk output not clean"
		fi
	fi
	n=$((n + 1))
done

# --- check: JSON key order and the -r all report on damaged images --------------
cat >damage.py <<'PY'
import struct, sys
p, mode = sys.argv[1], sys.argv[2]
with open(p, "r+b") as f:
    h = f.read(104)
    rt = struct.unpack(">Q", h[48:56])[0]
    f.seek(rt)
    rb = struct.unpack(">Q", f.read(8))[0]
    f.seek(0, 2)
    n = f.tell() // 65536
    if "leak" in mode:
        for c in (n, n + 1):
            f.seek(rb + 2 * c)
            f.write(struct.pack(">H", 1))
    if "corrupt" in mode:
        f.seek(rb + 2 * (n - 1))
        f.write(struct.pack(">H", 0))
PY
for mode in leak corrupt leakcorrupt; do
	qemu-img create -q -f qcow2 "$mode.qcow2" 16M
	qio -c 'write -P 1 0 1M' -c 'write -c -P 2 4M 64k' "$mode.qcow2"
	python3 damage.py "$mode.qcow2" "$mode"
	for o in "" "--output=json" "-r all" "-r all --output=json" "-r leaks --output=json" \
		"-r all -q"; do
		# shellcheck disable=SC2086
		same "$mode.qcow2" check $o
	done
done
same v3.qcow2 check --output=json
same zlib.qcow2 check --output=json

# --- bitmap ----------------------------------------------------------------------
# same_bits IMG ARGS... BITMAP: as same, and the bits of every bitmap equal.
dump=$(dirname "$0")/qcow2-bitmap-dump.py
[ -f "$dump" ] || dump=$SRCDIR/tests/interop/qcow2-bitmap-dump.py
same_bits() {
	local img=$1 bm=${*: -1}
	shift
	set -- "${@:1:$#-1}"
	rm -f q.img v.img
	cp "$img" q.img
	cp "$img" v.img
	local qrc=0 vrc=0
	qemu-img bitmap "$@" q.img "$bm" >q.out 2>&1 || qrc=$?
	"$VDISK" bitmap "$@" v.img "$bm" >v.out 2>&1 || vrc=$?
	sed -i 's/^vdisk:/qemu-img:/; s/v\.img/q.img/g' v.out
	# QEMU names its anonymous node ('#block123'), vdisk the file.
	sed -i -E "s/ in '[^']*': / in NODE: /; s/ to [^ ]*: Operation/ to NODE: Operation/" q.out v.out
	[ "$qrc" = "$vrc" ] || fail "bitmap $*: exit $vrc, qemu-img $qrc: $(cat v.out)"
	cmp -s q.out v.out || fail "bitmap $*: output differs: $(diff q.out v.out)"
	qemu-img info --output=json q.img | grep -v '"filename"\|actual-size\|dirty-flag' >qi.json
	qemu-img info --output=json v.img | grep -v '"filename"\|actual-size\|dirty-flag' >vi.json
	cmp -s qi.json vi.json || fail "bitmap $*: qemu-img info differs: $(diff qi.json vi.json)"
	python3 "$dump" q.img >q.bm
	python3 "$dump" v.img >v.bm
	cmp -s q.bm v.bm || fail "bitmap $*: bits differ: $(diff q.bm v.bm)"
	qemu-img check v.img >c.out 2>&1 || fail "bitmap $*: vdisk left $(cat c.out)"
	n=$((n + 1))
}
cp v3.qcow2 bm.qcow2
qemu-img bitmap --add bm.qcow2 b0
qemu-img bitmap --add -g 512 bm.qcow2 fine
qemu-img bitmap --disable bm.qcow2 fine
qio -c 'write -P 4 0 64k' -c 'write -P 4 12M 2M' bm.qcow2
cp bm.qcow2 other.qcow2
qio -c 'write -P 5 3M 5k' other.qcow2
same_bits v3.qcow2 --add b0
same_bits v3.qcow2 --add -g 1M b0
same_bits v3.qcow2 --add -g 1000 b0
same_bits v3.qcow2 --add ""
same_bits v3.qcow2 --remove b0
same_bits v3.qcow2 -g 64k --remove b0
same_bits v3.qcow2 --add -F raw b0
same_bits v3.qcow2 b0
same_bits v2.qcow2 --add b0
same_bits bm.qcow2 --add b0
same_bits bm.qcow2 --remove b0
same_bits bm.qcow2 --clear b0
same_bits bm.qcow2 --disable b0
same_bits bm.qcow2 --disable --enable b0
same_bits bm.qcow2 --merge fine b0
same_bits bm.qcow2 --merge nope b0
same_bits bm.qcow2 --remove --add b0
same_bits bm.qcow2 --add --merge b0 new
same_bits bm.qcow2 --add -g 4k --merge b0 new
same_bits bm.qcow2 --add -g 2M --merge b0 new
same_bits bm.qcow2 --enable --merge b0 --disable fine
same_bits bm.qcow2 --merge b0 -b other.qcow2 fine
same_bits bm.qcow2 --merge b0 -b other.qcow2 -F qcow2 b0
same_bits bm.qcow2 --merge b0 -b base.raw -F raw b0
# amend keeps the bitmaps (a resize resizes them).
for o in refcount_bits=8 lazy_refcounts=on size=128M size=8M compat=1.1,refcount_bits=2; do
	same bm.qcow2 amend -o "$o"
	python3 "$dump" q.img >q.bm
	python3 "$dump" v.img >v.bm
	cmp -s q.bm v.bm || fail "amend -o $o: bitmaps differ: $(diff q.bm v.bm)"
done
# A write by vdisk is recorded in the bitmaps as a write by qemu-io is
# (tests/image/qcow2-bitmap-dirty.sh goes further).
cp bm.qcow2 w.qcow2
cp bm.qcow2 wq.qcow2
"$VDISK" io -f qcow2 -c 'write -P 6 0 4k' w.qcow2 >/dev/null
qio -f qcow2 -c 'write -P 6 0 4k' wq.qcow2
python3 "$dump" w.qcow2 >v.bm
python3 "$dump" wq.qcow2 >q.bm
cmp -s q.bm v.bm || fail "bits after a vdisk write differ: $(diff q.bm v.bm)"
qemu-img check w.qcow2 >c.out 2>&1 || fail "check after a vdisk write: $(cat c.out)"

# --- -p ----------------------------------------------------------------------------
qemu-img create -q -f raw big.raw 64M
qio -f raw -c 'write -P 1 10M 20M' big.raw
for args in "compare -p big.raw big.raw" "compare -p base.raw big.raw"; do
	qrc=0 vrc=0
	# shellcheck disable=SC2086
	qemu-img $args >q.out 2>&1 || qrc=$?
	# shellcheck disable=SC2086
	"$VDISK" $args >v.out 2>&1 || vrc=$?
	[ "$qrc" = "$vrc" ] || fail "$args: exit $vrc, qemu-img $qrc"
	# The same report format; the steps depend on the chunking.
	head -c 16 q.out | cmp -s - <(head -c 16 v.out) || fail "$args: $(od -c v.out | head)"
	tr '\r' '\n' <v.out | grep -v '^    ([0-9]*\.[0-9][0-9]/100%)$' | grep -v '^$' >v.rest
	tr '\r' '\n' <q.out | grep -v '^    ([0-9]*\.[0-9][0-9]/100%)$' | grep -v '^$' >q.rest
	cmp -s q.rest v.rest || fail "$args: $(diff q.rest v.rest)"
	n=$((n + 1))
done
"$VDISK" convert -p -O qcow2 big.raw p.qcow2 >p.out
[ "$(head -c 15 p.out)" = "    (0.00/100%)" ] || fail "convert -p: $(od -c p.out | head -3)"
tail -c 18 p.out | grep -q '(100.00/100%)' || fail "convert -p end: $(od -c p.out | tail -3)"
"$VDISK" dd -p if=big.raw of=p.raw >p.out
grep -q '(100.00/100%)' p.out || fail "dd -p: $(od -c p.out | tail -3)"
"$VDISK" amend -p -o compat=0.10 p.qcow2 >p.out
grep -q '(100.00/100%)' p.out || fail "amend -p: $(od -c p.out | tail -3)"
# Without -p, SIGUSR1 asks for one report on stderr (as qemu-img).
"$VDISK" convert -O raw -r 16M big.raw slow.raw 2>sig.err &
pid=$!
sleep 1
kill -USR1 $pid 2>/dev/null || true
wait $pid || fail "convert -r after SIGUSR1"
grep -q '^    ([0-9.]*/100%)$' sig.err || fail "no report after SIGUSR1: $(cat sig.err)"

# A downgrade never zeroes a cluster an internal snapshot still reads: a
# zero cluster written over a snapshot's data keeps that host cluster, and
# expanding it in place (as qemu-img 7.2 does) would wipe the snapshot's data.
qemu-img create -q -f qcow2 shz.qcow2 1M
qio -c 'write -P 0xaa 0 64k' shz.qcow2
"$VDISK" snapshot -c s1 shz.qcow2 || fail "snapshot -c"
qio -c 'write -z 0 64k' shz.qcow2
"$VDISK" amend -f qcow2 -o compat=0.10 shz.qcow2 >out 2>&1 && fail "downgrade over a shared zero cluster"
grep -q "shared with an internal snapshot" out || fail "shared zero cluster: $(cat out)"
"$VDISK" snapshot -a s1 shz.qcow2 || fail "snapshot -a"
qemu-io -r -c 'read -P 0xaa 0 64k' shz.qcow2 | grep -q "read 65536" || fail "the snapshot's data was lost"

echo "PASS ($n comparisons)"
