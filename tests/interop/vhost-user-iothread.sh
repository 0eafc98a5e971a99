#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk serve with I/O threads, as qemu-storage-daemon takes them:
# --object iothread,id=ID and iothread=ID on an --export.  Two exports on two
# threads (raw, and qcow2 over a backing file) are driven at once; the
# requests must be served by the named threads (their CPU time grows, the
# main thread's does not; one thread polls, poll-max-ns, and stops spinning
# when idle), the data must be right, and QMP on the main
# thread keeps working: query-iothreads, query-blockstats of nodes that live
# on a thread, block_resize of such a node, block-export-del (the node comes
# back) and block-export-add onto another thread, fixed-iothread, object-add
# and object-del (refused while a node lives on the thread), an export of a
# child node that joins its parent's thread.  SIGTERM ends it with exit 0 and
# clean images.  Then two monitors delete one export at once.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup python3 qemu-img
HERE=$SRCDIR/tests/interop
SIZE=$((16 << 20))
CLIENT=$BUILD/bench/vhost-user-blk
[ -x "$CLIENT" ] || skip "$CLIENT not built (make benches)"

pid=
trap 'if [ -n "$pid" ]; then kill -KILL $pid 2>/dev/null; fi; rm -rf "$T"' EXIT

qemu-img create -q -f raw a.raw $SIZE
qemu-img create -q -f qcow2 base.qcow2 $SIZE
qemu-io -c "write -P 0x5a 0 $SIZE" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 b.qcow2 $SIZE
qemu-img create -q -f raw c.raw $SIZE

"$VDISK" serve --object iothread,id=io0 --object iothread,id=io1,poll-max-ns=50000 \
	--blockdev driver=file,node-name=fa,filename=a.raw \
	--blockdev driver=raw,node-name=ra,file=fa \
	--blockdev driver=file,node-name=fb,filename=b.qcow2 \
	--blockdev driver=qcow2,node-name=qb,file=fb \
	--blockdev driver=file,node-name=fc,filename=c.raw \
	--export type=vhost-user-blk,id=ea,node-name=ra,addr.type=unix,addr.path=$T/a.sock,writable=on,num-queues=2,iothread=io0 \
	--export type=vhost-user-blk,id=eb,node-name=qb,addr.type=unix,addr.path=$T/b.sock,writable=on,iothread=io1 \
	--chardev socket,path=$T/qmp.sock,server=on,wait=off,id=c --monitor chardev=c \
	2>serve.log &
pid=$!
wait_socket a.sock
wait_socket b.sock
wait_socket qmp.sock

python3 - "$T" "$SRCDIR" "$pid" "$CLIENT" $SIZE <<'PY' || { cat serve.log; fail "iothread test"; }
import os, subprocess, sys, time
T, SRC, PID, CLIENT, SIZE = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
sys.path.insert(0, SRC + "/tests/lib")
from qmp import QMP

def cpu_ns(tid):
    with open("/proc/%d/task/%d/schedstat" % (PID, tid)) as f:
        return int(f.read().split()[0])

q = QMP(T + "/qmp.sock")
q.cmd("qmp_capabilities")
threads = q.cmd("query-iothreads")["return"]
assert [t["id"] for t in threads] == ["io0", "io1"], threads
assert [t["poll-max-ns"] for t in threads] == [0, 50000], threads
tids = {t["id"]: t["thread-id"] for t in threads}
for t in threads:
    assert t["thread-id"] != PID, threads
    assert os.path.isdir("/proc/%d/task/%d" % (PID, t["thread-id"])), threads
    with open("/proc/%d/task/%d/comm" % (PID, t["thread-id"])) as f:
        assert f.read().strip() == "IO " + t["id"], t

# Both exports at once: each thread does its own export's work.
before = {k: cpu_ns(v) for k, v in tids.items()}
main_before = cpu_ns(PID)
runs = [subprocess.Popen([CLIENT, T + "/a.sock", "-d", "16", "-q", "2", "-t", "1", "-w",
                          "-s", str(SIZE)], stdout=subprocess.PIPE),
        subprocess.Popen([CLIENT, T + "/b.sock", "-d", "16", "-t", "1", "-s", str(SIZE)],
                         stdout=subprocess.PIPE)]
for p in runs:
    out = p.communicate()[0].decode()
    assert p.returncode == 0 and "iops=" in out, (p.returncode, out)
grew = {k: cpu_ns(v) - before[k] for k, v in tids.items()}
main_grew = cpu_ns(PID) - main_before
print("cpu ns: io0 %d io1 %d main %d" % (grew["io0"], grew["io1"], main_grew))
assert grew["io0"] > 20 * 10**6 and grew["io1"] > 20 * 10**6, grew
assert main_grew * 4 < min(grew.values()), (grew, main_grew)

# The data path, checked against the file, on the thread; and the protocol
# cases (a descriptor loop among them: NEEDS_RESET) on the polling thread,
# which must not keep spinning over a broken device or an idle ring.
subprocess.run(["python3", SRC + "/tests/interop/vhost-user-proto.py", T + "/a.sock",
                T + "/a.raw", str(SIZE)], check=True)
subprocess.run(["python3", SRC + "/tests/interop/vhost-user-proto.py", T + "/b.sock",
                "none", str(SIZE)], check=True)
time.sleep(0.2)
idle = cpu_ns(tids["io1"])
time.sleep(1)
idle = cpu_ns(tids["io1"]) - idle
print("io1 cpu ns in 1 s idle: %d" % idle)
assert idle < 200 * 10**6, idle

# Statistics of nodes on the threads, read there.
st = q.cmd("query-blockstats", **{"query-nodes": True})["return"]
by = {s.get("node-name"): s["stats"] for s in st}
assert by["ra"]["wr_operations"] > 1000 and by["qb"]["rd_operations"] > 1000, by
assert by["fc"]["rd_operations"] == 0, by
devs = q.cmd("query-blockstats")["return"]
assert {d.get("qdev") for d in devs} >= {"/objects/export/ea", "/objects/export/eb"}, [(d.get("device"), d.get("qdev"), d.get("node-name")) for d in devs]
blocks = q.cmd("query-block")["return"]
assert any(b.get("inserted", {}).get("node-name") == "qb" for b in blocks), blocks

# block_resize on a node that lives on io1.
r = q.cmd("block_resize", **{"node-name": "qb", "size": 2 * SIZE})
assert r == {"return": {}}, r

# An unknown thread; a node shared with a running export cannot move with
# fixed-iothread=on, and stays on its thread without it (QEMU's rule).
r = q.cmd("block-export-add", type="vhost-user-blk", id="x", **{"node-name": "fc"},
          addr={"type": "unix", "path": T + "/x.sock"}, iothread="nope")
assert "error" in r and "nope" in r["error"]["desc"], r
r = q.cmd("block-export-add", type="vhost-user-blk", id="ea2", **{"node-name": "fa"},
          addr={"type": "unix", "path": T + "/a2.sock"}, iothread="io1",
          **{"fixed-iothread": True})
assert "error" in r and "iothread" in r["error"]["desc"], r
r = q.cmd("block-export-add", type="vhost-user-blk", id="ea2", **{"node-name": "fa"},
          addr={"type": "unix", "path": T + "/a2.sock"}, iothread="io1")
assert r == {"return": {}}, r
assert q.cmd("block-export-del", id="ea2") == {"return": {}}

# object-add / object-del; a thread in use stays.
assert q.cmd("object-add", **{"qom-type": "iothread", "id": "io2"}) == {"return": {}}
assert "error" in q.cmd("object-add", **{"qom-type": "iothread", "id": "io2"})
assert len(q.cmd("query-iothreads")["return"]) == 3
r = q.cmd("object-del", id="io0")
assert "error" in r and "in use" in r["error"]["desc"], r

# A node that moved to a thread comes back when its export goes, and can
# move to another one; the new export serves on io2.
assert q.cmd("block-export-del", id="ea", mode="hard") == {"return": {}}
r = q.cmd("block-export-add", type="vhost-user-blk", id="ea", **{"node-name": "ra"},
          addr={"type": "unix", "path": T + "/a.sock"}, writable=True, iothread="io2",
          **{"fixed-iothread": True})
assert r == {"return": {}}, r
tid2 = [t["thread-id"] for t in q.cmd("query-iothreads")["return"] if t["id"] == "io2"][0]
b2 = cpu_ns(tid2)
subprocess.run(["python3", SRC + "/tests/interop/vhost-user-proto.py", T + "/a.sock",
                T + "/a.raw", str(SIZE)], check=True)
assert cpu_ns(tid2) > b2, "io2 did not serve the re-added export"
assert q.cmd("object-del", id="io0") == {"return": {}}
assert [t["id"] for t in q.cmd("query-iothreads")["return"]] == ["io1", "io2"]

# An export of a child node (fb, under qb) joins its parent's thread; the
# thread cannot go while a node lives there; when both exports are gone the
# whole graph comes back, the thread can go, and the node still works
# (review regression: only the child came back, its parent stayed on a
# thread that could then be freed under it).
r = q.cmd("block-export-add", type="vhost-user-blk", id="ec", **{"node-name": "fb"},
          addr={"type": "unix", "path": T + "/c.sock"})
assert r == {"return": {}}, r
assert q.cmd("block-export-del", id="eb", mode="hard") == {"return": {}}
r = q.cmd("object-del", id="io1")
assert "error" in r and "in use" in r["error"]["desc"], r
assert q.cmd("block-export-del", id="ec", mode="hard") == {"return": {}}
assert q.cmd("object-del", id="io1") == {"return": {}}
r = q.cmd("block_resize", **{"node-name": "qb", "size": 3 * SIZE})
assert r == {"return": {}}, r
st = q.cmd("query-blockstats", **{"query-nodes": True})["return"]
assert any(s.get("node-name") == "qb" for s in st), st
print("qmp ok")
PY

kill -TERM $pid
rc=0
wait $pid || rc=$?
pid=
[ $rc = 0 ] || { cat serve.log; fail "vdisk serve exited $rc on SIGTERM"; }
[ ! -e a.sock ] && [ ! -e b.sock ] || fail "socket files left behind"
qemu-img check -q b.qcow2 || fail "qemu-img check b.qcow2"
"$VDISK" check b.qcow2 >/dev/null || fail "vdisk check b.qcow2"
[ "$(qemu-img info --output=json b.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((3 * SIZE)) ] ||
	fail "block_resize on the I/O thread did not reach the image"

# Two monitors delete the same export while its deletion waits for a slow
# flush (null-co, 1 s) in a nested loop iteration: the second is told it is
# not found (review regression: it freed the export a second time).
"$VDISK" serve --blockdev driver=null-co,node-name=n0,size=16M,latency-ns=1000000000 \
	--export type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$T/n.sock \
	--chardev socket,path=$T/qmp2.sock,server=on,wait=off,id=c --monitor chardev=c \
	2>serve2.log &
pid=$!
wait_socket n.sock
wait_socket qmp2.sock
python3 - "$T" "$SRCDIR" <<'PY' || { cat serve2.log; fail "concurrent block-export-del"; }
import sys, threading, time
T, SRC = sys.argv[1], sys.argv[2]
sys.path.insert(0, SRC + "/tests/lib")
from qmp import QMP
q1, q2 = QMP(T + "/qmp2.sock"), QMP(T + "/qmp2.sock")
q1.cmd("qmp_capabilities")
q2.cmd("qmp_capabilities")
first = {}
t = threading.Thread(target=lambda: first.update(q1.cmd("block-export-del", id="e0")))
t.start()
time.sleep(0.3)
second = q2.cmd("block-export-del", id="e0")
t.join()
assert first == {"return": {}}, first
assert "error" in second and "not found" in second["error"]["desc"], second
assert q2.cmd("query-block-exports") == {"return": []}
assert q2.cmd("quit") == {"return": {}}
PY
rc=0
wait $pid || rc=$?
pid=
[ $rc = 0 ] || { cat serve2.log; fail "vdisk serve exited $rc after the concurrent deletes"; }
echo "ok"
