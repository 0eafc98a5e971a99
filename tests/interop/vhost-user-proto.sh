#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk serve's vhost-user-blk export, driven by a front end written in
# Python (vhost-user-proto.py: memfd guest memory, one split virtqueue,
# IN/OUT/FLUSH/GET_ID and the invalid discard/write-zeroes cases, garbage on
# other connections, a descriptor loop).  Then QMP: query-block-exports,
# block-export-add of a second export, query-blockstats, block-export-del,
# quit.  The daemon must exit 0 on quit and on SIGTERM.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup python3 qemu-img
HERE=$SRCDIR/tests/interop
SIZE=$((16 << 20))

pid=
# A failed step must not leave the daemon running (it holds our stdout).
trap 'if [ -n "$pid" ]; then kill -KILL $pid 2>/dev/null; fi; rm -rf "$T"' EXIT

qemu-img create -q -f raw a.raw $SIZE
qemu-img create -q -f raw b.raw $SIZE

# 1. The protocol, then SIGTERM.
"$VDISK" serve --blockdev driver=file,node-name=f,filename=a.raw \
	--blockdev driver=raw,node-name=d,file=f \
	--export type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=$T/a.sock,writable=on \
	2>serve1.log &
pid=$!
wait_socket a.sock
python3 "$HERE/vhost-user-proto.py" "$T/a.sock" a.raw $SIZE || { cat serve1.log; fail "protocol test"; }
kill -TERM $pid
rc=0
wait $pid || rc=$?
pid=
[ $rc = 0 ] || fail "vdisk serve exited $rc on SIGTERM"
[ ! -e a.sock ] || fail "socket file left behind"

# 2. QMP: exports added and removed at run time.
"$VDISK" serve --blockdev driver=file,node-name=fa,filename=a.raw \
	--blockdev driver=file,node-name=fb,filename=b.raw \
	--blockdev driver=raw,node-name=rb,file=fb \
	--export type=vhost-user-blk,id=ea,node-name=fa,addr.type=unix,addr.path=$T/a.sock,writable=on,num-queues=2 \
	--object iothread,id=io0 \
	--chardev socket,path=$T/qmp.sock,server=on,wait=off,id=c --monitor chardev=c 2>serve2.log &
pid=$!
wait_socket a.sock
wait_socket qmp.sock
python3 - "$T" "$SRCDIR" <<'PY' || { cat serve2.log; fail "QMP test"; }
import subprocess, sys
T, SRC = sys.argv[1], sys.argv[2]
sys.path.insert(0, SRC + "/tests/lib")
from qmp import QMP
q = QMP(T + "/qmp.sock")
q.cmd("qmp_capabilities")
r = q.cmd("query-block-exports")["return"]
assert r == [{"type": "vhost-user-blk", "id": "ea", "node-name": "fa", "shutting-down": False}], r
r = q.cmd("block-export-add", type="vhost-user-blk", id="eb", **{"node-name": "rb"},
          addr={"type": "unix", "path": T + "/b.sock"}, writable=True)
assert r == {"return": {}}, r
r = q.cmd("block-export-add", type="vhost-user-blk", id="eb", **{"node-name": "rb"},
          addr={"type": "unix", "path": T + "/c.sock"})
assert "error" in r, r
r = q.cmd("block-export-add", type="vhost-user-blk", id="ec", **{"node-name": "nope"},
          addr={"type": "unix", "path": T + "/c.sock"})
assert "error" in r, r
assert len(q.cmd("query-block-exports")["return"]) == 2
subprocess.run(["python3", SRC + "/tests/interop/vhost-user-proto.py", T + "/b.sock",
                T + "/b.raw", str(16 << 20)], check=True)
st = q.cmd("query-blockstats", **{"query-nodes": True})["return"]
rb = [s for s in st if s.get("node-name") == "rb"]
assert rb and rb[0]["stats"]["wr_operations"] >= 2, st
r = q.cmd("block-export-del", id="eb")
assert r == {"return": {}}, r
assert "BLOCK_EXPORT_DELETED" in q.events or "BLOCK_EXPORT_DELETED" in [
    e for e in q.take_events()], q.events
assert [e["id"] for e in q.cmd("query-block-exports")["return"]] == ["ea"]
assert "error" in q.cmd("block-export-del", id="eb")
r = q.cmd("quit")
assert r == {"return": {}}, r
PY
rc=0
wait $pid || rc=$?
pid=
[ $rc = 0 ] || fail "vdisk serve exited $rc after quit"
[ ! -e b.sock ] || fail "socket file of a deleted export left behind"

# 3. Bad command lines fail cleanly.
if "$VDISK" serve --export type=vhost-user-blk,id=e,node-name=nope,addr.type=unix,addr.path=$T/x.sock 2>err.log; then
	fail "an export of a missing node succeeded"
fi
grep -q "nope" err.log || fail "no message naming the missing node"
if "$VDISK" serve --blockdev driver=file,node-name=f,filename=a.raw \
	--export type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$T/x.sock,bogus=1 2>err.log; then
	fail "an unknown export option was accepted"
fi
grep -q "bogus" err.log || fail "no message naming the unknown option"
echo "ok"
