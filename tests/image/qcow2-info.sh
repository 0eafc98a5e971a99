#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk info on qcow2 images made by qemu-img: the same text and JSON as
# qemu-img info, with and without -f (probing may find qcow2 because info
# does not open the backing chain, as qemu-img info does not), including an
# image whose backing file is missing.  And the other side of the probing
# rule: vdisk io, which would open the backing file, refuses to probe qcow2.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img python3

qemu-img create -q -f raw base.raw 4M
for opts in "" "cluster_size=4096" "compat=0.10" "extended_l2=on" "compression_type=zstd" \
	"lazy_refcounts=on,refcount_bits=64"; do
	rm -f img.qcow2
	qemu-img create -q -f qcow2 ${opts:+-o "$opts"} img.qcow2 64M
	qemu-img info img.qcow2 >q.txt
	"$VDISK" info img.qcow2 >v.txt || fail "vdisk info ($opts)"
	diff -u q.txt v.txt || fail "info differs ($opts)"
	"$VDISK" info -f qcow2 img.qcow2 | diff -u q.txt - || fail "info -f qcow2 differs ($opts)"
	qemu-img info --output=json img.qcow2 >q.json
	"$VDISK" info --output=json img.qcow2 >v.json
	python3 - q.json v.json "$opts" <<'PY' || fail "JSON differs ($opts)"
import json, sys
q, v = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
if q != v:
    sys.exit("%s:\n qemu-img %s\n vdisk    %s" % (sys.argv[3], q, v))
PY
done

# An overlay, then the same with its backing file gone: info still works.
qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2
qemu-img info top.qcow2 >q.txt
"$VDISK" info top.qcow2 | diff -u q.txt - || fail "overlay info differs"
mv base.raw gone.raw
"$VDISK" info top.qcow2 | diff -u q.txt - || fail "info needs the backing file"
mv gone.raw base.raw

# Probing for a command that opens the backing chain: accepted as qemu-io
# does, and the backing file is read; without it, the same error as qemu-io.
"$VDISK" io -c 'read -q 0 512' top.qcow2 || fail "vdisk io did not probe a qcow2 image"
mv base.raw gone.raw
rc=0
"$VDISK" io -c 'read 0 512' top.qcow2 >out 2>&1 || rc=$?
mv gone.raw base.raw
[ $rc = 1 ] || fail "vdisk io opened an overlay without its backing file (exit $rc)"
grep -q "base.raw" out || fail "the error does not name the backing file: $(cat out)"
"$VDISK" io -f qcow2 -c 'read -q 0 512' top.qcow2 || fail "vdisk io -f qcow2"
echo PASS
