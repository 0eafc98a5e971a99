#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Cluster faults under `vdisk serve` with RBD-backed exports, on a real
# Ceph 16 cluster (tests/lib/ceph-cluster.sh, replica size 2, min_size 1):
#
# 1. One OSD is killed (SIGKILL) while fio's nbd engine runs a verifying
#    write workload through the server (every block is read back and checked
#    some 64 writes after fio was told it was written, crc32c): I/O goes on
#    once the cluster has marked the OSD down, nothing fails, nothing is lost;
#    the OSD comes back and the cluster recovers.
# 2. The whole cluster stops answering (every daemon SIGSTOPped): a write to
#    an export opened with rados_osd_op_timeout=5 fails with an I/O error
#    within the timeout (no hang), a file-backed export of the same server
#    keeps serving, and once the cluster runs again the RBD export does too.
# 3. The pool is full (a quota): the same, an I/O error within the timeout,
#    and writes again once the quota is lifted.
set -eu
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-io fio python3
fio --enghelp 2>/dev/null | grep -qw nbd || skip "fio has no nbd engine"
"$VDISK" --version | grep -q '^formats:.* rbd' || skip "vdisk was built without librbd (librbd-dev)"
. "$SRCDIR/tests/lib/ceph-cluster.sh"

pid=
trap 'if [ -n "$pid" ]; then kill -KILL $pid 2>/dev/null; fi; rm -rf "$T"' EXIT
ceph_cluster_start || fail "the ceph cluster did not start"
C=$CEPH_CONF
P=$CEPH_POOL
TMO=5

"$VDISK" create -q -f raw "rbd:$P/k:conf=$C" 64M || fail "create k"
"$VDISK" create -q -f raw "rbd:$P/h:conf=$C" 16M || fail "create h"
qemu-img create -q -f raw local.raw 16M
S=$T/nbd.sock
# cache.direct=on: no librbd write-back cache, so that a write is reported
# done only once the OSDs have it (QEMU's cache=none).
"$VDISK" serve \
	--blockdev "driver=rbd,node-name=k,pool=$P,image=k,conf=$C,cache.direct=on" \
	--blockdev "driver=rbd,node-name=h,filename=rbd:$P/h:conf=$C:rados_osd_op_timeout=$TMO:rados_mon_op_timeout=$TMO,cache.direct=on" \
	--blockdev driver=file,node-name=l,filename=local.raw \
	--nbd-server addr.type=unix,addr.path="$S" \
	--export type=nbd,id=ek,node-name=k,name=k,writable=on \
	--export type=nbd,id=eh,node-name=h,name=h,writable=on \
	--export type=nbd,id=el,node-name=l,name=l,writable=on 2>serve.log &
pid=$!
wait_socket "$S"

# --- 1. an OSD dies under a verifying workload ----------------------------------
fio --name=v --ioengine=nbd --uri="nbd+unix:///k?socket=$S" --rw=randwrite --bs=4k-64k \
	--iodepth=8 --size=24M --time_based --runtime=14 --verify=crc32c --verify_fatal=1 \
	--verify_backlog=64 --do_verify=1 --randrepeat=0 >fio.out 2>&1 &
fio_pid=$!
sleep 3
kill -0 $fio_pid 2>/dev/null || { cat fio.out; fail "fio ended before the OSD was killed"; }
t0=$(date +%s)
ceph_osd_kill 1
fio_rc=0
wait $fio_pid || fio_rc=$?
echo "fio finished $(($(date +%s) - t0)) s after the OSD was killed"
[ $fio_rc = 0 ] || { cat fio.out serve.log; fail "fio (verify) failed with an OSD down"; }
# The OSD comes back and the cluster recovers.
ceph_osd_start 1
ceph_wait_clean 90 || fail "the cluster did not recover after the OSD restart"

# --- 2. the whole cluster stops answering ------------------------------------------------
qemu-io -f raw -c 'write -P 0x11 0 64k' "nbd+unix:///h?socket=$S" >/dev/null || fail "h before"
ceph_cluster_halt
t0=$(date +%s.%N)
out=$(timeout 120 qemu-io -f raw -c 'write -P 0x22 1M 64k' "nbd+unix:///h?socket=$S" 2>&1) &&
	{ ceph_cluster_resume; fail "a write succeeded on a stopped cluster: $out"; }
el=$(python3 -c "print('%.1f' % ($(date +%s.%N) - $t0))")
echo "write on the stopped cluster failed after $el s: $(grep -o 'write failed.*' <<<"$out")"
grep -q 'write failed: Input/output error' <<<"$out" || { ceph_cluster_resume; fail "not an I/O error: $out"; }
python3 -c "import sys; sys.exit(0 if $el < $TMO * 3 + 5 else 1)" ||
	{ ceph_cluster_resume; fail "the error took $el s (timeout $TMO s)"; }
# The other export keeps serving while the cluster is down.
qemu-io -f raw -c 'write -P 0x33 0 64k' -c 'read -P 0x33 0 64k' "nbd+unix:///l?socket=$S" |
	grep -q 'read 65536' || { ceph_cluster_resume; fail "the file export stopped serving"; }
kill -0 $pid || fail "the server died"
ceph_cluster_resume
# Recovery: the RBD export serves again once the cluster answers.
ok=
for i in $(seq 60); do
	if qemu-io -f raw -c 'write -P 0x44 2M 64k' -c 'read -P 0x44 2M 64k' -c 'read -P 0x11 0 64k' \
		"nbd+unix:///h?socket=$S" 2>&1 | grep -q 'read 65536/65536 bytes at offset 0'; then
		ok=1
		break
	fi
	sleep 1
done
[ -n "$ok" ] || { cat serve.log; fail "the RBD export did not recover after the cluster came back"; }
echo "recovered $i s after the cluster was resumed"
qemu-io -f raw -c 'read -P 0x44 2M 64k' -c 'read -P 0x11 0 64k' "rbd:$P/h:conf=$C" | grep -q 'verification failed' &&
	fail "data after recovery"

# --- 3. a full pool (its quota reached) ----------------------------------------------------
# librados holds writes to a full pool until it has room: with the op timeout
# the client gets an I/O error instead, and the server goes on.
timeout 60 ceph -c "$C" osd pool set-quota "$P" max_bytes 1048576 >/dev/null 2>&1 || fail "set-quota"
for i in $(seq 60); do
	timeout 30 ceph -c "$C" health 2>/dev/null | grep -q 'pool(s) full' && break
	sleep 1
done
timeout 30 ceph -c "$C" health 2>/dev/null | grep -q 'pool(s) full' || fail "the pool did not fill"
t0=$(date +%s.%N)
out=$(timeout 120 qemu-io -f raw -c 'write -P 0x55 3M 64k' "nbd+unix:///h?socket=$S" 2>&1) &&
	fail "a write succeeded on a full pool: $out"
el=$(python3 -c "print('%.1f' % ($(date +%s.%N) - $t0))")
echo "write on the full pool failed after $el s: $(grep -o 'write failed.*' <<<"$out")"
grep -q 'write failed: Input/output error' <<<"$out" || fail "not an I/O error: $out"
qemu-io -f raw -c 'read -P 0x33 0 64k' "nbd+unix:///l?socket=$S" | grep -q 'read 65536' ||
	fail "the file export stopped serving"
timeout 60 ceph -c "$C" osd pool set-quota "$P" max_bytes 0 >/dev/null 2>&1 || fail "quota off"
ok=
for i in $(seq 60); do
	if qemu-io -f raw -c 'write -P 0x66 3M 64k' "nbd+unix:///h?socket=$S" 2>&1 | grep -q 'wrote 65536'; then
		ok=1
		break
	fi
	sleep 1
done
[ -n "$ok" ] || fail "writes did not resume after the quota was lifted"
echo "writes resumed $i s after the quota was lifted"

kill -TERM $pid
wait $pid || fail "vdisk serve exited with an error"
pid=
echo "PASS"
