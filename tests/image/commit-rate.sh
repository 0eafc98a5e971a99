#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk commit -r RATE, as qemu-img 7.2's: the data reaches the base at no
# more than RATE bytes per second (2 MiB at 1 MiB/s takes about 2 s, as
# qemu-img's commit job does), 0 means no limit, and bad rates give
# qemu-img's messages and exit status.
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io

mk()
{
	rm -f base.qcow2 top.qcow2
	qemu-img create -q -f qcow2 base.qcow2 16M
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
	qemu-io -c 'write -P 9 0 1M' -c 'write -P 8 8M 1M' top.qcow2 >/dev/null
}
now_ms() { date +%s%3N; }

# 1. The rate: 2 MiB at 1 MiB/s.
mk
t0=$(now_ms)
"$VDISK" commit -f qcow2 -r 1M top.qcow2 >out 2>&1 || fail "commit -r 1M: $(cat out)"
t1=$(now_ms)
grep -q "Image committed." out || fail "commit -r 1M: $(cat out)"
qemu-io -c 'read -P 9 0 1M' -c 'read -P 8 8M 1M' base.qcow2 >r.out
! grep -q 'verification failed' r.out || fail "commit -r: base content"
qemu-img check -q base.qcow2 || fail "commit -r: base not clean"
ms=$((t1 - t0))
# qemu-img takes 2.0 s here; a limiter that lets the first chunk go at
# once may take a little less, never much less.
[ "$ms" -ge 1400 ] || fail "commit -r 1M of 2 MiB took ${ms} ms: not limited"
[ "$ms" -le 8000 ] || fail "commit -r 1M of 2 MiB took ${ms} ms"

# 2. -r 0 is no limit.
mk
t0=$(now_ms)
"$VDISK" commit -f qcow2 -q -r 0 top.qcow2 || fail "commit -r 0"
t1=$(now_ms)
[ $((t1 - t0)) -le 1400 ] || fail "commit -r 0 took $((t1 - t0)) ms"

# 3. Bad rates: qemu-img's words and exit status.
for r in abc -5 1.5x 99999999999999999999999; do
	mk
	"$VDISK" commit -f qcow2 -r "$r" top.qcow2 >v.err 2>&1
	vrc=$?
	qemu-img commit -f qcow2 -r "$r" top.qcow2 >q.err 2>&1
	qrc=$?
	[ "$vrc" = "$qrc" ] || fail "-r $r: exit $vrc, qemu-img $qrc"
	sed 's/^qemu-img: /vdisk: /' q.err | cmp -s - v.err ||
		fail "-r $r: '$(cat v.err)' vs '$(cat q.err)'"
done
echo "ok: commit -r limits the rate (2 MiB at 1 MiB/s: ${ms} ms), -r 0, bad rates"
