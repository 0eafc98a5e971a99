#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# NBD exports on I/O threads, as qemu-storage-daemon takes them:
# --export type=nbd,...,iothread=ID (and QMP block-export-add).  The
# handshake runs on the main thread; a client that picks an export on a
# thread is handed over to it.  Checked here:
#   - two exports on two threads and one on the main loop, driven at once
#     by fio (verify) and nbdcopy: the named threads do the work (their CPU
#     time grows, the main thread's much less) and the bytes are right;
#   - requests sent in the same packet as NBD_OPT_GO are answered (they
#     arrive on the main thread and are parsed on the export's);
#   - clients that vanish right after NBD_OPT_GO, 200 times;
#   - no connection left behind by them (a safe-mode delete goes through);
#   - block-export-del: safe mode refuses while connected, hard mode with
#     fio in flight ends that client only; nbd-server-stop with a client
#     on a thread; a new server and export afterwards;
#   - SIGTERM with clients connected: exit 0, and qemu-img check is clean;
#   - nbd-server-stop while another monitor's deletion waits: refused; a
#     failed export add while nbd-server-stop waits: the node stays on its
#     thread, which cannot be deleted.
set -eu
. "$(dirname "$0")/../lib/common.sh"
vd_setup python3 qemu-img qemu-io nbdcopy fio
fio --enghelp 2>/dev/null | grep -qw nbd || skip "fio has no nbd engine"

pid=
trap 'if [ -n "$pid" ]; then kill -KILL $pid 2>/dev/null; fi; rm -rf "$T"' EXIT
SIZE=$((32 << 20))
qemu-img create -q -f raw a.raw $SIZE
qemu-img create -q -f qcow2 b.qcow2 $SIZE
qemu-img create -q -f raw c.raw $SIZE

"$VDISK" serve --object iothread,id=io0 --object iothread,id=io1 \
	--blockdev driver=file,node-name=fa,filename=a.raw \
	--blockdev driver=file,node-name=fb,filename=b.qcow2 \
	--blockdev driver=qcow2,node-name=qb,file=fb \
	--blockdev driver=file,node-name=fc,filename=c.raw \
	--nbd-server addr.type=unix,addr.path="$T/nbd.sock" \
	--export type=nbd,id=ea,node-name=fa,name=a,writable=on,iothread=io0 \
	--export type=nbd,id=eb,node-name=qb,name=b,writable=on,iothread=io1 \
	--export type=nbd,id=ec,node-name=fc,name=c,writable=on \
	--chardev socket,path="$T/qmp.sock",server=on,wait=off,id=m --monitor chardev=m \
	2>serve.log &
pid=$!
wait_socket nbd.sock
wait_socket qmp.sock

python3 - "$T" "$SRCDIR" "$pid" $SIZE <<'PY' || { cat serve.log; fail "NBD on I/O threads"; }
import os, socket, struct, subprocess, sys, time
T, SRC, PID, SIZE = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, SRC + "/tests/lib")
from qmp import QMP
from nbdwire import (CMD_DISC, CMD_READ, CMD_WRITE, go_option, go_replies, greet, recvn,
                     request, simple_reply)

SOCK = T + "/nbd.sock"
def uri(name):
    return "nbd+unix:///%s?socket=%s" % (name, SOCK)

def cpu_ns(tid):
    with open("/proc/%d/task/%d/schedstat" % (PID, tid)) as f:
        return int(f.read().split()[0])

def busy(tid, p):
    """Wait until fio @p keeps thread @tid busy (it is connected and its
    requests are served there)."""
    t0 = cpu_ns(tid)
    for _ in range(200):
        assert p.poll() is None, p.communicate()
        if cpu_ns(tid) - t0 > 20 * 10**6:
            return
        time.sleep(0.05)
    raise AssertionError("fio never reached the thread")

def fio(name, rw, seconds=None, extra=()):
    args = ["fio", "--name=t", "--ioengine=nbd", "--uri=" + uri(name), "--rw=" + rw,
            "--bs=4k", "--iodepth=16", "--size=%d" % SIZE, "--output-format=terse"]
    if seconds:
        args += ["--runtime=%d" % seconds, "--time_based"]
    return subprocess.Popen(args + list(extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

q = QMP(T + "/qmp.sock", whole_events=True)
q.cmd("qmp_capabilities")
tids = {t["id"]: t["thread-id"] for t in q.cmd("query-iothreads")["return"]}
assert set(tids) == {"io0", "io1"}, tids

# --- three exports at once; each thread does its own export's work ------------
before = {k: cpu_ns(v) for k, v in tids.items()}
main_before = cpu_ns(PID)
runs = [fio("a", "randwrite", extra=["--verify=crc32c", "--do_verify=1"]),
        fio("b", "randwrite", extra=["--verify=crc32c", "--do_verify=1"]),
        fio("c", "randwrite", extra=["--verify=crc32c", "--do_verify=1"])]
for p in runs:
    out, err = p.communicate()
    assert p.returncode == 0, (p.returncode, err.decode())
grew = {k: cpu_ns(v) - before[k] for k, v in tids.items()}
main_grew = cpu_ns(PID) - main_before
print("cpu ns: io0 %d io1 %d main (and export c) %d" % (grew["io0"], grew["io1"], main_grew))
assert grew["io0"] > 20 * 10**6 and grew["io1"] > 20 * 10**6, grew

# Only handshakes on the main thread: export c is not used now.
before = {k: cpu_ns(v) for k, v in tids.items()}
main_before = cpu_ns(PID)
runs = [fio("a", "randread", seconds=2), fio("b", "randread", seconds=2)]
for p in runs:
    out, err = p.communicate()
    assert p.returncode == 0, (p.returncode, err.decode())
grew = {k: cpu_ns(v) - before[k] for k, v in tids.items()}
main_grew = cpu_ns(PID) - main_before
print("cpu ns: io0 %d io1 %d main %d" % (grew["io0"], grew["io1"], main_grew))
assert main_grew * 4 < min(grew.values()), (grew, main_grew)

# nbdcopy (4 connections each) out of both threads' exports, compared with
# the images themselves (-U: the server holds them; an NBD flush first puts
# qcow2's cached metadata on disk).
for name, img, fmt in (("a", T + "/a.raw", "raw"), ("b", T + "/b.qcow2", "qcow2")):
    dst = T + "/copy-%s.raw" % name
    subprocess.run(["nbdcopy", uri(name), dst], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "flush", uri(name)], check=True,
                   stdout=subprocess.DEVNULL)
    r = subprocess.run(["qemu-img", "compare", "-U", "-f", "raw", "-F", fmt, dst, img],
                       capture_output=True)
    assert r.returncode == 0, r

# --- requests in the packet that carries NBD_OPT_GO ----------------------------
# Requests in flight at once may run in any order: the reads in the packet
# read what qemu-io wrote before; the writes are read back afterwards.
subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5c 8M 32k", uri("a")], check=True,
               stdout=subprocess.DEVNULL)
def read_replies(s, n, want):
    got = {}
    while len(got) < n:
        err, cookie = simple_reply(s)
        assert err == 0, err
        got[cookie] = recvn(s, 4096) if cookie in want else None
    for cookie, data in want.items():
        assert got[cookie] == data, "round %d cookie %d" % (round_, cookie)

for round_ in range(20):
    s = socket.socket(socket.AF_UNIX)
    s.connect(SOCK)
    greet(s)
    reqs = b""
    for i in range(8):
        reqs += request(CMD_WRITE, i, (round_ * 8 + i) * 4096, 4096,
                        bytes([0x40 + i]) * 4096)
    for i in range(8):
        reqs += request(CMD_READ, 100 + i, (8 << 20) + i * 4096, 4096)
    s.sendall(go_option(b"a") + reqs)
    go_replies(s)
    read_replies(s, 16, {100 + i: b"\x5c" * 4096 for i in range(8)})
    s.sendall(b"".join(request(CMD_READ, 200 + i, (round_ * 8 + i) * 4096, 4096)
                       for i in range(8)))
    read_replies(s, 8, {200 + i: bytes([0x40 + i]) * 4096 for i in range(8)})
    s.sendall(request(CMD_DISC, 999, 0, 0))
    s.close()

# --- clients gone right after NBD_OPT_GO (some with a request on the way) -------
for i in range(200):
    s = socket.socket(socket.AF_UNIX)
    s.connect(SOCK)
    greet(s)
    tail = request(CMD_READ, 1, 0, 4096) if i % 2 else b""
    s.sendall(go_option(b"b" if i % 3 else b"a") + tail)
    if i % 4 == 0:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 0x40 0 4096", uri("a")], check=True,
               stdout=subprocess.DEVNULL)
# None of them is left: a safe-mode delete of b goes through once the
# server has seen the last one go.  Then b is back, on io1.
for _ in range(100):
    r = q.cmd("block-export-del", id="eb")
    if r == {"return": {}}:
        break
    assert "in use" in r["error"]["desc"], r
    time.sleep(0.05)
assert r == {"return": {}}, "connections left after the clients went: %r" % r
r = q.cmd("block-export-add", type="nbd", id="eb", **{"node-name": "qb"}, name="b",
          writable=True, iothread="io1")
assert r == {"return": {}}, r

# --- deleting exports with clients on their threads --------------------------------
p = fio("a", "randrw", seconds=30)
busy(tids["io0"], p)
r = q.cmd("block-export-del", id="ea")
assert "error" in r and "in use" in r["error"]["desc"], r
r = q.cmd("block-export-del", id="ea", mode="hard")
assert r == {"return": {}}, r
t0 = time.time()
out, err = p.communicate(timeout=20)
assert p.returncode != 0 and time.time() - t0 < 15, (p.returncode, err)
ev = q.take_events()
assert any(e["event"] == "BLOCK_EXPORT_DELETED" and e["data"]["id"] == "ea" for e in ev), ev
names = subprocess.run(["nbdinfo", "--list", "--json", "nbd+unix:///?socket=" + SOCK],
                       capture_output=True, text=True, check=True).stdout
assert '"b"' in names and '"a"' not in names, names

p = fio("b", "randread", seconds=30)
busy(tids["io1"], p)
assert q.cmd("nbd-server-stop") == {"return": {}}
t0 = time.time()
out, err = p.communicate(timeout=20)
assert p.returncode != 0 and time.time() - t0 < 15, p.returncode
# A new server, and an export of fa on the other thread.
r = q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": SOCK}})
assert r == {"return": {}}, r
r = q.cmd("block-export-add", type="nbd", id="ea", **{"node-name": "fa"}, name="a",
          writable=True, iothread="io1")
assert r == {"return": {}}, r
subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x99 1M 64k", "-c",
                "read -P 0x99 1M 64k", uri("a")], check=True, stdout=subprocess.DEVNULL)
r = q.cmd("block-export-add", type="nbd", id="x", **{"node-name": "fc"}, iothread="nope")
assert "error" in r and "nope" in r["error"]["desc"], r

# SIGTERM comes with this client connected on io1 (fio fails then).
p = subprocess.Popen(["fio", "--name=t", "--ioengine=nbd", "--uri=" + uri("a"),
                      "--rw=randwrite", "--bs=4k", "--iodepth=16", "--offset=4M",
                      "--size=16M", "--runtime=60", "--time_based"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
busy(tids["io1"], p)
with open(T + "/fio.pid", "w") as f:
    f.write(str(p.pid))
print("ok")
PY

# SIGTERM with a client connected on a thread (its fio, started above).
kill -TERM $pid
rc=0
wait $pid || rc=$?
pid=
fpid=$(cat fio.pid)
for _ in $(seq 100); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$fpid" 2>/dev/null && { kill "$fpid"; fail "fio still running after the server went"; }
[ $rc = 0 ] || { cat serve.log; fail "vdisk serve exit $rc after SIGTERM"; }
qemu-img check -q b.qcow2 || fail "b.qcow2 not clean"
qemu-io -f raw -c 'read -P 0x99 1M 64k' a.raw >/dev/null || fail "a.raw lost the last write"

# nbd-server-stop from a second monitor while block-export-del on the first
# waits for a request in flight (null-co, 4 s per request) on the thread:
# the stop is refused, not run under the deletion's feet (review: it freed
# the server the deletion was still waiting in).
"$VDISK" serve --object iothread,id=io0 \
	--blockdev driver=null-co,node-name=n0,size=16M,latency-ns=4000000000 \
	--nbd-server addr.type=unix,addr.path="$T/n.sock" \
	--export type=nbd,id=e0,node-name=n0,name=n,iothread=io0 \
	--chardev socket,path="$T/qmp2.sock",server=on,wait=off,id=m --monitor chardev=m \
	2>serve2.log &
pid=$!
wait_socket n.sock
wait_socket qmp2.sock
python3 - "$T" "$SRCDIR" <<'PY' || { cat serve2.log; fail "nbd-server-stop during a deletion"; }
import subprocess, sys, threading, time
T, SRC = sys.argv[1], sys.argv[2]
sys.path.insert(0, SRC + "/tests/lib")
from qmp import QMP
q1, q2 = QMP(T + "/qmp2.sock"), QMP(T + "/qmp2.sock")
q1.cmd("qmp_capabilities")
q2.cmd("qmp_capabilities")
client = subprocess.Popen(["qemu-io", "-r", "-f", "raw", "-c", "read 0 4k",
                           "nbd+unix:///n?socket=" + T + "/n.sock"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.5)  # connected, its read in flight for 4 s
first = {}
t = threading.Thread(target=lambda: first.update(q1.cmd("block-export-del", id="e0",
                                                        mode="hard")))
t.start()
time.sleep(0.3)
second = q2.cmd("nbd-server-stop")
t.join()
client.wait()
assert first == {"return": {}}, first
assert "error" in second and "being removed" in second["error"]["desc"], second
assert q2.cmd("query-block-exports") == {"return": []}
assert q2.cmd("nbd-server-stop") == {"return": {}}

# And the other way round: while nbd-server-stop waits for the request in
# flight, a failed export add of the same node (which sends unused nodes
# home) must not move the node off the thread, and the thread cannot go
# (review: the stop had already taken the export off the list).
r = q2.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": T + "/n.sock"}})
assert r == {"return": {}}, r
r = q2.cmd("block-export-add", type="nbd", id="e0", **{"node-name": "n0"}, name="n",
           iothread="io0")
assert r == {"return": {}}, r
client = subprocess.Popen(["qemu-io", "-r", "-f", "raw", "-c", "read 0 4k",
                           "nbd+unix:///n?socket=" + T + "/n.sock"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.5)
first = {}
t = threading.Thread(target=lambda: first.update(q1.cmd("nbd-server-stop")))
t.start()
time.sleep(0.3)
r = q2.cmd("block-export-add", type="vhost-user-blk", id="v", **{"node-name": "n0"},
           addr={"type": "unix", "path": T + "/no/such/dir/v.sock"})
assert "error" in r, r
r = q2.cmd("object-del", id="io0")
assert "error" in r, "io0 went while its export was being stopped: %r" % r
t.join()
client.wait()
assert first == {"return": {}}, first
assert q2.cmd("query-block-exports") == {"return": []}
# As QEMU's, the stop reports each export it removed.
ev = q1.take_events() + q2.take_events()
assert "BLOCK_EXPORT_DELETED" in ev, ev
assert q2.cmd("quit") == {"return": {}}
PY
rc=0
wait $pid || rc=$?
pid=
[ $rc = 0 ] || { cat serve2.log; fail "vdisk serve exited $rc after nbd-server-stop during a deletion"; }
echo "PASS: nbd-iothread"
