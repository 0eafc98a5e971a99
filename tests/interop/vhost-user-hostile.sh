#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# One vdisk serve process, two vhost-user-blk exports and QMP, against
# hostile clients (vhost-user-hostile.py): half a vhost-user message, a front
# end that never reads its replies, half a QMP command, a QMP client that
# never reads.  Meanwhile front ends on both exports and a QMP client must be
# served; a front end that sends its messages in 1-byte pieces must work.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup python3 qemu-img
SIZE=$((4 << 20))

pid=
trap 'if [ -n "$pid" ]; then kill -KILL $pid 2>/dev/null; fi; rm -rf "$T"' EXIT

qemu-img create -q -f raw a.raw $SIZE
qemu-img create -q -f qcow2 b.qcow2 $SIZE
"$VDISK" serve --blockdev driver=file,node-name=fa,filename=a.raw \
	--blockdev driver=file,node-name=fb,filename=b.qcow2 \
	--blockdev driver=qcow2,node-name=b,file=fb \
	--export type=vhost-user-blk,id=ea,node-name=fa,addr.type=unix,addr.path=$T/a.sock,writable=on \
	--export type=vhost-user-blk,id=eb,node-name=b,addr.type=unix,addr.path=$T/b.sock,writable=on \
	--chardev socket,path=$T/qmp.sock,server=on,wait=off,id=c --monitor chardev=c \
	2>serve.log &
pid=$!
wait_socket a.sock
wait_socket b.sock
wait_socket qmp.sock
python3 "$SRCDIR/tests/interop/vhost-user-hostile.py" "$T/a.sock" "$T/b.sock" "$T/qmp.sock" $SIZE ||
	{ cat serve.log; fail "hostile clients"; }
kill -TERM $pid
rc=0
wait $pid || rc=$?
pid=
[ $rc = 0 ] || { cat serve.log; fail "vdisk serve exited $rc on SIGTERM"; }
echo "ok"
