#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk create vs qemu-img create (raw): same file sizes and "Formatting"
# lines; vdisk info vs qemu-img info: same human text, including the disk
# size (both allocate the first block of a new file), and the same JSON values
# for the fields both know.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img python3

SIZES="0 1000 1k 1.5k 64M 1.5G 2T"
[ -n "${VDISK_QUICK:-}" ] && SIZES="1k 64M"

for size in $SIZES; do
	rm -f img
	qemu-img create -f raw img "$size" >q.out
	qsize=$(stat -c %s img)
	qemu-img info img >q.info
	qemu-img info --output=json img >q.json
	rm -f img
	"$VDISK" create -f raw img "$size" >v.out || fail "vdisk create $size"
	vsize=$(stat -c %s img)
	[ "$qsize" = "$vsize" ] || fail "size $size: qemu-img made $qsize bytes, vdisk $vsize"
	diff -u q.out v.out || fail "size $size: the Formatting line differs"

	# qemu-img reads what vdisk created, and vdisk describes it the same way.
	qemu-img info img >q2.info || fail "qemu-img info on a vdisk-created image"
	"$VDISK" info img >v.info || fail "vdisk info $size"
	diff -u q.info v.info || fail "size $size: info differs"
	diff -u q2.info v.info || fail "size $size: info differs"
	"$VDISK" info -f raw img | diff -u q.info - || fail "info -f raw"

	"$VDISK" info --output=json img >v.json || fail "vdisk info --output=json"
	python3 - q.json v.json <<'PY' || fail "size $size: JSON differs"
import json, sys
q = json.load(open(sys.argv[1]))
v = json.load(open(sys.argv[2]))
for k in ("virtual-size", "actual-size", "filename", "format", "dirty-flag"):
    if q.get(k) != v.get(k):
        sys.exit("%s: qemu-img %r, vdisk %r" % (k, q.get(k), v.get(k)))
if set(q) != set(v):
    sys.exit("keys: qemu-img %s, vdisk %s" % (sorted(q), sorted(v)))
if not isinstance(v["actual-size"], int) or v["actual-size"] < 0:
    sys.exit("actual-size %r" % v["actual-size"])
PY
done

# -q prints nothing; -o size= works like the positional size.
rm -f img
"$VDISK" create -q -f raw -o size=3M img >v.out
[ ! -s v.out ] || fail "-q printed something"
[ "$(stat -c %s img)" = 3145728 ] || fail "-o size=3M"

# Preallocation reaches the file (qemu-img's -o preallocation=full).
rm -f img
"$VDISK" create -f raw -o preallocation=full img 1M >v.out
grep -qx "Formatting 'img', fmt=raw size=1048576 preallocation=full" v.out || fail "prealloc line"
[ "$(du -k img | cut -f1)" -ge 1024 ] || fail "preallocation=full left holes"

# Errors: no size, size twice, a bad size, an unknown option or format.
for args in "img2" "-o size=1M img2 1M" "img2 12x" "-o foo=1 img2 1M" "-f nope img2 1M"; do
	rc=0
	"$VDISK" create $args >/dev/null 2>err || rc=$?
	[ "$rc" = 1 ] || fail "vdisk create $args: exit $rc, want 1"
	grep -q '^vdisk: ' err || fail "vdisk create $args: no error message"
done

# info on an image given as options.
"$VDISK" info --image-opts driver=raw,file.filename=img | grep -qx 'file format: raw' ||
	fail "info --image-opts"
echo "PASS"
