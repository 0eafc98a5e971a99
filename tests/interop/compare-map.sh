#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk map and vdisk compare vs qemu-img map and compare: the same command
# line on the same images (raw, qcow2 v2/v3, extended L2, compressed, a
# 3-deep backing chain, snapshots) prints the same text and JSON and exits
# the same way.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io

qio() { qemu-io "$@" >/dev/null || fail "qemu-io $*"; }

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
qemu-img create -q -f qcow2 base.qcow2 17M
qio -f qcow2 -c 'write -P 0x71 0 8M' base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 20M
qio -f qcow2 -c 'write -P 0x72 2M 2M' -c 'write -z 6M 1M' mid.qcow2
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qio -f qcow2 -c 'write -P 0x73 3M 64k' -c 'write -P 0x74 12M 1M' -c 'write -P 0x75 18M 4k' \
	top.qcow2
qemu-img create -q -f qcow2 snap.qcow2 17M
qio -f qcow2 -c 'write -P 0x81 0 2M' snap.qcow2
qemu-img snapshot -c s1 snap.qcow2
qio -f qcow2 -c 'write -P 0x82 1M 2M' snap.qcow2
# Same contents as src.raw, other layout; and one byte different.
qemu-img convert -f raw -O qcow2 src.raw same.qcow2
cp src.raw diff.raw
qio -f raw -c 'write -P 0x99 5000000 1' diff.raw
qemu-img create -q -f raw long.raw 20M
qemu-img convert -n -f raw -O raw src.raw long.raw

IMAGES="raw:src.raw qcow2:v0.10.qcow2 qcow2:v1.1.qcow2 qcow2:ext.qcow2 qcow2:comp.qcow2
	qcow2:mid.qcow2 qcow2:top.qcow2 qcow2:snap.qcow2"

# same TOOLCMD ARGS...: stdout, stderr (without the program name) and exit
# code of qemu-img and vdisk must be equal.
same() {
	local qrc=0 vrc=0
	qemu-img "$@" >q.out 2>q.err || qrc=$?
	"$VDISK" "$@" >v.out 2>v.err || vrc=$?
	[ "$qrc" = "$vrc" ] || fail "$*: qemu-img exit $qrc, vdisk $vrc ($(cat v.err))"
	diff -u q.out v.out || fail "$*: output differs"
	diff -u <(sed 's/^qemu-img: //' q.err) <(sed 's/^vdisk: //' v.err) ||
		fail "$*: errors differ"
}

for i in $IMAGES; do
	fmt=${i%%:*} f=${i#*:}
	same map -f "$fmt" "$f"
	same map -f "$fmt" --output=json "$f"
	same map -f "$fmt" --output=json --start-offset=3M --max-length=10M "$f"
	same compare -f "$fmt" -F raw "$f" src.raw
	same compare -f "$fmt" -F "$fmt" "$f" "$f"
	same compare -s -f "$fmt" -F "$fmt" "$f" "$f"
done
same compare -f raw -F qcow2 src.raw same.qcow2
same compare -f raw -F raw src.raw diff.raw
same compare -p -f raw -F raw src.raw diff.raw
same compare -q -f raw -F raw src.raw diff.raw
same compare -f raw -F raw src.raw long.raw
same compare -s -f raw -F raw src.raw long.raw
same compare -f raw -F qcow2 long.raw top.qcow2
same compare -f qcow2 -F qcow2 mid.qcow2 top.qcow2
same compare -f raw -F raw src.raw nope.raw
same map -f raw nope.raw
same map --output=xml -f raw src.raw
echo "PASS"
