#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk convert vs qemu-img convert: the same command line on the same
# images (raw, qcow2 v2/v3, extended L2, compressed, a backing chain, with
# snapshots) must exit the same way, give images that qemu-img compare
# finds identical to qemu-img's result and to the source, and qcow2 images
# that qemu-img check finds clean.  Bad command lines fail with one line
# and exit 1, and a failing convert never changes its source.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io

qio() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }

# Sources: data, zeroes written as data, holes and a tail that is not a
# whole cluster.
qemu-img create -q -f raw src.raw 17M
qio -f raw -c 'write -P 0x11 0 1M' -c 'write -P 0 1M 1M' -c 'write -P 0x22 5M 64k' \
	-c 'write -P 0x33 16M 700k' src.raw
for v in 0.10 1.1; do
	qemu-img create -q -f qcow2 -o compat=$v "v$v.qcow2" 17M
	qio -f qcow2 -c 'write -P 0x44 0 3M' -c 'write -z 4M 1M' -c 'write -P 0x55 9M 4k' \
		"v$v.qcow2"
done
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k ext.qcow2 17M
qio -f qcow2 -c 'write -P 0x66 4k 8k' -c 'write -P 0x67 1M 300k' ext.qcow2
qemu-img convert -c -f raw -O qcow2 src.raw comp.qcow2
# A 3-deep chain: base <- mid <- top, each layer overwriting some of the one below.
qemu-img create -q -f qcow2 base.qcow2 17M
qio -f qcow2 -c 'write -P 0x71 0 8M' base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qio -f qcow2 -c 'write -P 0x72 2M 2M' -c 'write -z 6M 1M' mid.qcow2
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qio -f qcow2 -c 'write -P 0x73 3M 64k' -c 'write -P 0x74 12M 1M' top.qcow2
# Snapshots: the active layer is what convert copies.
qemu-img create -q -f qcow2 snap.qcow2 17M
qio -f qcow2 -c 'write -P 0x81 0 2M' snap.qcow2
qemu-img snapshot -c s1 snap.qcow2
qio -f qcow2 -c 'write -P 0x82 1M 2M' snap.qcow2

SOURCES="raw:src.raw qcow2:v0.10.qcow2 qcow2:v1.1.qcow2 qcow2:ext.qcow2 qcow2:comp.qcow2
	qcow2:top.qcow2 qcow2:snap.qcow2"

# same ARGS...: run "convert ARGS q.OUT" and "convert ARGS v.OUT" (the last
# argument names the output, without prefix), compare exit codes and results.
same() {
	local out=${!#} n=$(($# - 1)) qrc=0 vrc=0
	local args=("${@:1:$n}")
	rm -f "q.$out" "v.$out"
	qemu-img convert "${args[@]}" "q.$out" >q.stdout 2>q.err || qrc=$?
	"$VDISK" convert "${args[@]}" "v.$out" >v.stdout 2>v.err || vrc=$?
	[ "$qrc" = "$vrc" ] || fail "convert ${args[*]}: qemu-img exit $qrc, vdisk $vrc ($(cat v.err))"
	[ "$vrc" = 0 ] || return 0
	qemu-img compare -q "q.$out" "v.$out" || fail "convert ${args[*]}: results differ"
	if [ "$(qemu-img info --output=json "v.$out" | sed -n 's/.*"format": "\(.*\)".*/\1/p')" = qcow2 ]; then
		qemu-img check -q "v.$out" || fail "convert ${args[*]}: qemu-img check"
	fi
}

for s in $SOURCES; do
	fmt=${s%%:*} f=${s#*:}
	for ofmt in raw qcow2; do
		same -f "$fmt" -O "$ofmt" "$f" "out.$ofmt"
		qemu-img compare -q -f "$fmt" "$f" "v.out.$ofmt" || fail "$f -> $ofmt differs from source"
	done
	same -f "$fmt" -O qcow2 -c "$f" out.c.qcow2
	same -f "$fmt" -O qcow2 -c -o compression_type=zstd "$f" out.z.qcow2
	same -f "$fmt" -O qcow2 -o compat=0.10 "$f" out.v2.qcow2
	same -f "$fmt" -O qcow2 -o extended_l2=on -m 16 -W "$f" out.x.qcow2
	same -f "$fmt" -O raw -S 0 -m 1 "$f" out.s0.raw
	same -f "$fmt" -O qcow2 -S 64k -W "$f" out.s64.qcow2
done

# The compressed output really is compressed.
"$VDISK" convert -c -f raw -O qcow2 src.raw c.qcow2
qemu-img check c.qcow2 | grep -q '[1-9][0-9.]*% compressed' || fail "-c stored nothing compressed"

# Back-references past deflate's 4 KiB window (libdeflate reaches 32 KiB):
# every cluster is 16 KiB of random bytes four times over, so it compresses
# only through distances of 16 KiB.  QEMU must read it back.
python3 -c '
import os, sys
out = sys.stdout.buffer
for _ in range(32):
    out.write(os.urandom(16384) * 4)
' >far.raw
"$VDISK" convert -c -f raw -O qcow2 far.raw far.qcow2
qemu-img check far.qcow2 | grep -q '100.00% compressed' || fail "far: not every cluster compressed"
qemu-img compare -q -f raw -F qcow2 far.raw far.qcow2 || fail "far: qemu-img reads it back wrong"
qemu-io -r -f qcow2 -c 'read -P 0 0 0' far.qcow2 >/dev/null  # the image opens
"$VDISK" convert -c -o compression_type=zstd -f raw -O qcow2 far.raw farz.qcow2
qemu-img compare -q -f raw -F qcow2 far.raw farz.qcow2 || fail "far (zstd) reads back wrong"

# Zero detection: zeroes written as data in the source become holes.
"$VDISK" convert -f raw -O qcow2 src.raw z.qcow2
qemu-img map --output=json z.qcow2 | grep '"start": 1048576,' | grep -q '"data": false' ||
	fail "the 1M of zeroes at 1M was written as data"

# Several sources, concatenated; -p ends as qemu-img's progress does.
same -p -f raw -O qcow2 src.raw src.raw src.raw cat.qcow2
[ "$(tail -c 20 v.stdout | od -c)" = "$(tail -c 20 q.stdout | od -c)" ] || fail "-p output"
same -q -p -f qcow2 -O raw top.qcow2 mid.qcow2 cat.raw
[ ! -s v.stdout ] || fail "-q printed something"

# -B/-F: only the top layer is copied, the rest stays with the backing file.
same -f qcow2 -O qcow2 -B mid.qcow2 -F qcow2 top.qcow2 b.qcow2
qemu-img compare -q top.qcow2 v.b.qcow2 || fail "-B result differs from the source"
qemu-img info v.b.qcow2 | grep -qx 'backing file: mid.qcow2' || fail "-B: no backing file"

# -n into an existing image, with and without --target-is-zero.
for extra in "" "--target-is-zero"; do
	qemu-img create -q -f qcow2 q.n.qcow2 17M
	qio -f qcow2 -c 'write -P 0xee 0 17M' q.n.qcow2
	cp q.n.qcow2 v.n.qcow2
	qemu-img convert -n -f qcow2 -O qcow2 top.qcow2 q.n.qcow2
	# shellcheck disable=SC2086
	"$VDISK" convert -n $extra -f qcow2 -O qcow2 top.qcow2 v.n.qcow2 ||
		fail "convert -n $extra"
	if [ -z "$extra" ]; then
		qemu-img compare -q top.qcow2 v.n.qcow2 || fail "-n result differs"
	fi
	qemu-img check -q v.n.qcow2 || fail "-n: qemu-img check"
done

# Errors: one line, exit 1, as qemu-img; the source never changes.
sum=$(sha256sum src.raw top.qcow2 mid.qcow2)
qemu-img create -q -f raw small.raw 1M
while IFS= read -r args; do
	qrc=0 vrc=0
	# shellcheck disable=SC2086
	qemu-img convert $args >/dev/null 2>q.err || qrc=$?
	# shellcheck disable=SC2086
	"$VDISK" convert $args >/dev/null 2>v.err || vrc=$?
	[ "$qrc" = "$vrc" ] || fail "convert $args: qemu-img exit $qrc, vdisk $vrc"
	[ "$vrc" = 1 ] || fail "convert $args: exit $vrc"
	[ "$(wc -l <v.err)" = 1 ] || fail "convert $args: $(cat v.err)"
	grep -q '^vdisk: ' v.err || fail "convert $args: no error line"
	sed 's/^qemu-img: //' q.err >q.msg
	sed 's/^vdisk: //' v.err >v.msg
	case "$args" in
	*nope* | *-o\ foo*) ;; # the open/create errors are worded by the library
	*) diff -u q.msg v.msg || fail "convert $args: message differs" ;;
	esac
done <<'EOF'
-f raw -O qcow2 nope.raw x.qcow2
-f raw -O qcow2 -m 17 src.raw x.qcow2
-f raw -O qcow2 -m 0 src.raw x.qcow2
-f raw -O qcow2 -S 100 src.raw x.qcow2
-f raw -O qcow2 -B src.raw src.raw x.qcow2
-f raw -O raw -c src.raw x.raw
-f raw -O qcow2 -C -c src.raw x.qcow2
-f raw src.raw
-f raw -O nope src.raw x
-n -f raw -O raw src.raw small.raw
-n -f qcow2 -O raw v1.1.qcow2 small.raw
-f raw -O qcow2 --target-is-zero src.raw x.qcow2
-f raw -O qcow2 -o foo=bar src.raw x.qcow2
-f qcow2 -O raw src.raw x.raw
EOF
# A convert that fails half-way into an existing file (here: into the source
# image itself, which is locked) leaves the source as it was.
"$VDISK" convert -n -f raw -O raw src.raw src.raw >/dev/null 2>&1 || true
"$VDISK" convert -f qcow2 -O qcow2 -B nope.qcow2 -F qcow2 top.qcow2 mid.qcow2 >/dev/null 2>&1 || true
sha256sum -c --quiet <<<"$sum" || fail "a failing convert changed its source"
echo "PASS"
