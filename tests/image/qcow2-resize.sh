#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk resize on qcow2 against qemu-img resize on a copy of the same image:
# growing (with L1 growth), shrinking (clusters past the end discarded, L2
# tables and refcount blocks freed, file tail cut): the same virtual size,
# qemu-img check clean with the same numbers, the same contents (qemu-img
# compare), data read back; with a snapshot, what qemu-img does (v3 resized,
# v2 refused).
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

same_check() { # STEP
	local qrc=0 vrc=0
	qemu-img check --output=json q.qcow2 >q.json || qrc=$?
	qemu-img check --output=json v.qcow2 >v.json || vrc=$?
	[ $qrc = 0 ] && [ $vrc = 0 ] || fail "$1: qemu-img check exit $qrc/$vrc"
	"$VDISK" check -q v.qcow2 || fail "$1: vdisk check"
	python3 - <<'PY' || fail "$1: check numbers differ"
import json, os, sys
q, v = json.load(open("q.json")), json.load(open("v.json"))
for d in (q, v):
    d.pop("filename")
# After a shrink QEMU may place a new refcount table after the data (seen
# with 512-byte clusters: its discard grows the table), so its file can end
# later: only require ours to end no later.
if os.environ.get("SHRUNK") and v["image-end-offset"] <= q["image-end-offset"]:
    q.pop("image-end-offset"); v.pop("image-end-offset")
if q != v:
    sys.exit("qemu-img-resized %s\nvdisk-resized    %s" % (q, v))
PY
	[ "$(qemu-img info --output=json q.qcow2 | grep virtual-size)" = \
		"$(qemu-img info --output=json v.qcow2 | grep virtual-size)" ] || fail "$1: size"
	qemu-img compare -q q.qcow2 v.qcow2 || fail "$1: contents differ"
}

for opts in "" "cluster_size=4096" "cluster_size=512" "compat=0.10" "extended_l2=on"; do
	rm -f q.qcow2 v.qcow2
	qemu-img create -q -f qcow2 ${opts:+-o "$opts"} q.qcow2 64M
	qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 40M 1M' -c 'write -P 3 63M 1M' \
		q.qcow2 >/dev/null
	cp q.qcow2 v.qcow2
	export SHRUNK=
	# qemu-img's shrink discards cluster by cluster: keep 512-byte
	# clusters to a growth its discard finishes in seconds.
	big=3G
	[ "$opts" != cluster_size=512 ] || big=256M
	for step in $big +1M -- -1M 48M 40M+512 100M 1M; do
		s=${step#--}
		[ -n "$s" ] || continue
		args=()
		case $s in -* | 1M | 48M | 40M+512) args=(--shrink) SHRUNK=1 ;; esac
		case $s in 40M+512) s=$((40 * 1048576 + 512)) ;; esac
		qemu-img resize -q "${args[@]}" q.qcow2 -- "$s"
		"$VDISK" resize -f qcow2 -q "${args[@]}" v.qcow2 -- "$s" ||
			fail "vdisk resize $s ($opts)"
		same_check "resize $s ($opts)"
	done
	qemu-io -c 'read -P 1 0 1M' v.qcow2 | grep -q "verification failed" &&
		fail "data lost ($opts)"
	"$VDISK" io -f qcow2 -c 'write -P 4 512k 64k' v.qcow2 >/dev/null
	qemu-io -c 'write -P 4 512k 64k' q.qcow2 >/dev/null
	same_check "write after resize ($opts)"
done

# With a snapshot: version 3 images are resized as by qemu-img (grow and
# shrink), version 2 ones refused by both (qcow2-snapshot-resize.sh has the
# snapshots applied across sizes).
for compat in 1.1 0.10; do
	rm -f q.qcow2 v.qcow2
	qemu-img create -q -f qcow2 -o compat=$compat q.qcow2 64M
	qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 40M 1M' q.qcow2 >/dev/null
	qemu-img snapshot -c s q.qcow2
	cp q.qcow2 v.qcow2
	for size in 128M 32M; do
		qrc=0 vrc=0
		qemu-img resize -q --shrink q.qcow2 $size >qout 2>&1 || qrc=$?
		"$VDISK" resize -q -f qcow2 --shrink v.qcow2 $size >out 2>&1 || vrc=$?
		[ $qrc = $vrc ] || fail "compat=$compat resize $size with a snapshot: exit $vrc, qemu-img $qrc: $(cat out)"
		if [ $qrc = 0 ]; then
			SHRUNK=1 same_check "compat=$compat resize $size with a snapshot"
		else
			grep -q "snapshots" out || fail "refusal: $(cat out)"
		fi
	done
done
# Grown over a longer backing file: the new range reads as zeroes, not as
# the backing file's data (QEMU 5.1+: zero flags on v3); v2 has no zero flag
# and is refused by both, its size unchanged.
qemu-img create -q -f raw bk.raw 128M
qemu-io -f raw -c 'write -P 7 60M 8M' -c 'write -P 8 100M 1M' bk.raw >/dev/null
rm -f q.qcow2 v.qcow2
qemu-img create -q -f qcow2 -b bk.raw -F raw q.qcow2 64M
cp q.qcow2 v.qcow2
qemu-img resize -q q.qcow2 128M
"$VDISK" resize -q -f qcow2 v.qcow2 128M || fail "grow over backing"
qemu-io -c 'read -P 0 64M 4M' -c 'read -P 0 100M 1M' -c 'read -P 7 60M 4M' v.qcow2 >out ||
	fail "grow over backing: $(cat out)"
grep -q "verification failed" out && fail "backing data in the grown range"
qemu-img compare -q q.qcow2 v.qcow2 || fail "grow over backing: differs from qemu-img's"
qemu-img check -q v.qcow2 || fail "grow over backing: check"
rm -f v.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 -b bk.raw -F raw v.qcow2 64M
"$VDISK" resize -q -f qcow2 v.qcow2 128M >out 2>&1 && fail "v2 grown over a longer backing file"
grep -q "Failed to zero out new clusters" out || fail "v2 refusal: $(cat out)"
qemu-img info v.qcow2 | grep -q '(67108864 bytes)' || fail "v2 size changed by the refusal"
echo PASS
