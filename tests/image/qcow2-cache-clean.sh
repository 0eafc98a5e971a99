#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# cache-clean-interval (QEMU's qcow2 option): metadata cache entries unused
# for one interval are dropped, so the same L2 table is read from the file
# again after an idle period; with the interval 0 (off) it stays cached.
# Observed through the qcow2_cache_load trace point.
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io

img=$T/cc.qcow2
qemu-img create -q -f qcow2 "$img" 64M
qemu-io -c 'write -P 5 0 1M' "$img" >/dev/null

loads()
{
	VDISK_TRACE='qcow2_cache_*' "$VDISK" io --image-opts \
		"driver=qcow2,cache-clean-interval=$1,file.filename=$img" \
		-c 'read -P 5 0 4k' -c 'sleep 2500' -c 'read -P 5 0 4k' >"$T/out.$1" 2>&1 ||
		fail "vdisk io with cache-clean-interval=$1: $(cat "$T/out.$1")"
	grep -c 'qcow2_cache_load l2' "$T/out.$1" || true
}

n0=$(loads 0)
n1=$(loads 1)
[ "$n0" = 1 ] || fail "interval 0: $n0 L2 loads (want 1): $(cat "$T/out.0")"
[ "$n1" = 2 ] || fail "interval 1 s, 2.5 s idle: $n1 L2 loads (want 2): $(cat "$T/out.1")"
grep -q qcow2_cache_clean "$T/out.1" || fail "no clean pass traced"
echo "ok: idle cache entries dropped after cache-clean-interval"
