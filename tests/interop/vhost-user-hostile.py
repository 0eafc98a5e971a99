# SPDX-License-Identifier: MIT
"""Hostile front ends and QMP clients against one `vdisk serve` process: a
slow or silent client may only delay itself, never the loop that serves every
export and QMP.

    vhost-user-hostile.py A_SOCK B_SOCK QMP_SOCK SIZE_BYTES

A_SOCK and B_SOCK are two vhost-user-blk exports of the same daemon (raw
images of SIZE_BYTES), QMP_SOCK its QMP monitor.  While each hostile client
stalls (half a vhost-user message; never reading its replies; half a QMP
command; a QMP client that never reads), a well-behaved front end on the
other export and on the same export does I/O, and a QMP client runs
query-block; each must be served within BOUND seconds.  The bound is
generous: it says "served while the other one stalled", not how fast; the
measured times are printed.  Then a front end that sends every message in
1-byte pieces (its fds with the first or the last byte) must work.

Prints "ok" and exits 0 on success.
"""

import json
import mmap
import os
import select
import socket
import struct
import sys
import time

A_SOCK, B_SOCK, QMP_SOCK, SIZE = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qmp import QMP  # noqa: E402

BOUND = 2.0

GET_FEATURES, SET_FEATURES, SET_OWNER = 1, 2, 3
SET_MEM_TABLE = 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 8, 9, 10
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = 15, 16, 17
SET_VRING_ENABLE, SET_BACKEND_REQ_FD, GET_CONFIG = 18, 21, 24
NEED_REPLY = 0x8
F_PROTOCOL_FEATURES = 1 << 30
F_VERSION_1 = 1 << 32
P_REPLY_ACK, P_BACKEND_REQ, P_CONFIG = 1 << 3, 1 << 5, 1 << 9
BACKEND_CONFIG_CHANGE_MSG = 2
IN, OUT = 0, 1

MEM = 1 << 20
GPA_BASE = 0x100000
UVA_BASE = 0x7F0000000000
QSIZE = 16
DESC, AVAIL, USED, BUF, STATUS = 0x0000, 0x1000, 0x2000, 0x10000, 0x20000

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, flush=True)


class Conn:
    """A vhost-user connection; @pieces sends each message 1 byte at a
    time, its fds with the first byte (@fds_last: with the last)."""

    def __init__(self, path, pieces=False, fds_last=False):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.settimeout(10)
        self.pieces = pieces
        self.fds_last = fds_last

    def send(self, req, payload=b"", fds=(), flags=1):
        msg = struct.pack("<III", req, flags, len(payload)) + payload
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("%di" % len(fds), *fds))] if fds else []
        if not self.pieces:
            self.s.sendmsg([msg], anc)
            return
        at = len(msg) - 1 if self.fds_last else 0
        for i in range(len(msg)):
            self.s.sendmsg([msg[i:i + 1]], anc if i == at else [])
            # Let the back end see each piece on its own.
            time.sleep(0.0005)

    def recv(self, req):
        r, flags, size = struct.unpack("<III", self.recv_exact(12))
        assert r == req, "reply to %d, expected %d" % (r, req)
        assert flags & 0x4, "reply flag missing"
        return self.recv_exact(size)

    def recv_exact(self, n):
        b = b""
        while len(b) < n:
            chunk = self.s.recv(n - len(b))
            if not chunk:
                raise EOFError("connection closed")
            b += chunk
        return b

    def u64(self, req):
        self.send(req)
        return struct.unpack("<Q", self.recv(req))[0]


class Device:
    """A front end with memfd guest memory and one split virtqueue."""

    def __init__(self, path, backend_fd=None, **conn_args):
        self.c = c = Conn(path, **conn_args)
        self.fd = os.memfd_create("guest")
        os.ftruncate(self.fd, MEM)
        self.m = mmap.mmap(self.fd, MEM)
        feats = c.u64(GET_FEATURES)
        pf = c.u64(GET_PROTOCOL_FEATURES)
        want = P_CONFIG | P_REPLY_ACK | (P_BACKEND_REQ if backend_fd is not None else 0)
        c.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", pf & want))
        if backend_fd is not None:
            c.send(SET_BACKEND_REQ_FD, fds=[backend_fd])
        c.send(SET_OWNER)
        c.send(GET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8))
        self.capacity = struct.unpack_from("<Q", c.recv(GET_CONFIG), 12)[0]
        c.send(SET_FEATURES, struct.pack("<Q", feats & (F_VERSION_1 | F_PROTOCOL_FEATURES)))
        region = struct.pack("<QQQQ", GPA_BASE, MEM, UVA_BASE, 0)
        c.send(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, fds=[self.fd], flags=1 | NEED_REPLY)
        check(struct.unpack("<Q", c.recv(SET_MEM_TABLE))[0] == 0, "SET_MEM_TABLE acked")
        c.send(SET_VRING_NUM, struct.pack("<II", 0, QSIZE))
        c.send(SET_VRING_BASE, struct.pack("<II", 0, 0))
        c.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, UVA_BASE + DESC, UVA_BASE + USED,
                                           UVA_BASE + AVAIL, 0))
        self.call = os.eventfd(0, os.EFD_NONBLOCK)
        self.kick = os.eventfd(0, os.EFD_NONBLOCK)
        c.send(SET_VRING_CALL, struct.pack("<Q", 0), fds=[self.call])
        c.send(SET_VRING_KICK, struct.pack("<Q", 0), fds=[self.kick])
        c.send(SET_VRING_ENABLE, struct.pack("<II", 0, 1), flags=1 | NEED_REPLY)
        check(struct.unpack("<Q", c.recv(SET_VRING_ENABLE))[0] == 0, "SET_VRING_ENABLE acked")
        self.avail_idx = self.used_seen = 0

    def w(self, addr, data):
        self.m[addr:addr + len(data)] = data

    def blk(self, rtype, sector, data=None, inlen=0):
        """One request (header, data, status); returns (status, in-data)."""
        self.w(BUF, struct.pack("<IIQ", rtype, 0, sector))
        self.m[STATUS] = 0xFF
        segs = [(BUF, 16, False)]
        if data is not None:
            self.w(BUF + 0x1000, data)
            segs.append((BUF + 0x1000, len(data), False))
        if inlen:
            segs.append((BUF + 0x1000, inlen, True))
        segs.append((STATUS, 1, True))
        for i, (addr, ln, wr) in enumerate(segs):
            flags = (2 if wr else 0) | (1 if i + 1 < len(segs) else 0)
            self.w(DESC + 16 * i, struct.pack("<QIHH", GPA_BASE + addr, ln, flags, i + 1))
        self.w(AVAIL + 4 + 2 * (self.avail_idx % QSIZE), struct.pack("<H", 0))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.w(AVAIL + 2, struct.pack("<H", self.avail_idx))
        os.eventfd_write(self.kick, 1)
        deadline = time.monotonic() + 10
        while struct.unpack_from("<H", self.m, USED + 2)[0] == self.used_seen:
            if time.monotonic() > deadline:
                raise TimeoutError("no completion")
            select.select([self.call], [], [], 0.05)
        self.used_seen = (self.used_seen + 1) & 0xFFFF
        return self.m[STATUS], bytes(self.m[BUF + 0x1000:BUF + 0x1000 + inlen])

    def close(self):
        self.c.s.close()
        self.m.close()
        for fd in (self.fd, self.call, self.kick):
            os.close(fd)


pattern = bytes((i * 13 + 5) & 0xFF for i in range(4096))


def io_round(path):
    """Set a device up on @path, write and read back; the seconds it took."""
    t = time.monotonic()
    d = Device(path)
    st, _ = d.blk(OUT, 8, data=pattern)
    check(st == 0, "write status %d" % st)
    st, got = d.blk(IN, 8, inlen=4096)
    check(st == 0 and got == pattern, "read back")
    d.close()
    return time.monotonic() - t


def qmp_round():
    t = time.monotonic()
    q = QMP(QMP_SOCK)
    q.cmd("qmp_capabilities")
    r = q.cmd("query-block")
    check("return" in r, "query-block answered: %r" % r)
    q.sock.close()
    return time.monotonic() - t


def served_while(what):
    """Other clients are served while @what stalls."""
    for name, fn in (("I/O on the other export", lambda: io_round(B_SOCK)),
                     ("I/O on the same export", lambda: io_round(A_SOCK)),
                     ("QMP query-block", qmp_round)):
        try:
            t = fn()
        except Exception as e:  # a timeout, a closed connection
            check(False, "%s while %s: %r" % (name, what, e))
            continue
        print("%-24s while %s: %.3f s" % (name, what, t), flush=True)
        check(t < BOUND, "%s took %.3f s while %s (bound %.1f s)" % (name, t, what, BOUND))


# 1. Half a vhost-user message: the header of SET_FEATURES, no payload.
h = Conn(A_SOCK)
h.s.sendall(struct.pack("<III", SET_FEATURES, 1, 8))
time.sleep(0.2)
served_while("a front end sent a header without its payload")
# Half a header, on another connection.
h2 = Conn(A_SOCK)
h2.s.sendall(struct.pack("<III", GET_FEATURES, 1, 0)[:5])
time.sleep(0.2)
served_while("a front end sent 5 bytes of a header")
# The rest arrives: the first one's message completes (GET_FEATURES after
# SET_FEATURES gets its reply, in order).
h.s.sendall(struct.pack("<Q", F_VERSION_1))
check(h.u64(GET_FEATURES) & F_VERSION_1, "the stalled front end carries on")
h2.s.sendall(struct.pack("<III", GET_FEATURES, 1, 0)[5:])
check(h2.recv(GET_FEATURES) is not None, "the second stalled front end carries on")
h.s.close()
h2.s.close()

# 2. A front end that never reads its replies: GET_FEATURES until its
# socket is full, so that the back end has a reply it cannot write.
h = Conn(A_SOCK)
h.s.setblocking(False)
msg = struct.pack("<III", GET_FEATURES, 1, 0)
sent = 0
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        h.s.send(msg)
        sent += 1
    except BlockingIOError:
        # Full: wait a moment for the back end to read more, then again.
        if not select.select([], [h.s], [], 0.3)[1]:
            break
print("a front end that does not read: %d requests sent before its socket filled" % sent, flush=True)
check(time.monotonic() < deadline, "the back end kept reading a front end that does not read")
served_while("a front end does not read its replies")
# It was only delayed: every reply is there once it reads.
h.s.setblocking(True)
h.s.settimeout(10)
got = 0
try:
    for _ in range(sent):
        h.recv(GET_FEATURES)
        got += 1
except Exception as e:
    print("reading the replies:", repr(e))
check(got == sent, "all %d replies read back (got %d)" % (sent, got))
h.s.close()

# 3. QMP: half a command, then a client that never reads.
hq = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
hq.connect(QMP_SOCK)
hq.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-bl')
time.sleep(0.2)
served_while("a QMP client sent half a command")
hq.sendall(b'ock"}\n')
hq.settimeout(10)
f = hq.makefile("r")
lines = [json.loads(f.readline()) for _ in range(3)]
check("QMP" in lines[0] and "return" in lines[1] and isinstance(lines[2].get("return"), list),
      "the half command completes: %r" % lines)
hq.close()

hq = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
hq.connect(QMP_SOCK)
hq.sendall(b'{"execute": "qmp_capabilities"}\n')
hq.setblocking(False)
cmd = b'{"execute": "query-block"}\n'
sent = 0
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        hq.send(cmd)
        sent += 1
    except BlockingIOError:
        if not select.select([], [hq], [], 0.3)[1]:
            break
    except OSError as e:
        print("the QMP client that does not read was dropped after %d commands: %r" % (sent, e))
        break
print("a QMP client that does not read: %d commands sent before its socket filled" % sent,
      flush=True)
served_while("a QMP client does not read its replies")
# It was only delayed: every reply comes once it reads.
hq.setblocking(True)
hq.settimeout(10)
f = hq.makefile("rb")
got = 0
try:
    f.readline()  # greeting
    f.readline()  # qmp_capabilities
    for _ in range(sent):
        r = json.loads(f.readline())
        if "event" in r:
            continue
        if "return" not in r:
            break
        got += 1
except Exception as e:
    print("reading the QMP replies:", repr(e))
check(got == sent, "all %d QMP replies read back (got %d)" % (sent, got))
hq.close()

# 3b. A back-end channel the front end does not read: block_resize sends
# config changes on it; none may wait for the front end, and the one that
# did not fit is sent once the front end reads.
chan, theirs = socket.socketpair()
theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
d = Device(A_SOCK, backend_fd=theirs.fileno())
theirs.close()
q = QMP(QMP_SOCK)
q.cmd("qmp_capabilities")
t = time.monotonic()
for i in range(64):
    r = q.cmd("block_resize", **{"node-name": "fa"}, size=SIZE + (i + 1) * 65536)
    check(r == {"return": {}}, "block_resize: %r" % r)
t = time.monotonic() - t
print("64 block_resize with a back-end channel nobody reads: %.3f s" % t, flush=True)
check(t < BOUND, "block_resize waited for the back-end channel (%.3f s)" % t)
served_while("a front end does not read its back-end channel")
chan.settimeout(0.5)
msgs = 0
try:
    while True:
        r, flags, size = struct.unpack("<III", chan.recv(12, socket.MSG_WAITALL))
        check(r == BACKEND_CONFIG_CHANGE_MSG and size == 0, "config change message")
        msgs += 1
except socket.timeout:
    pass
print("config change messages once the front end read its channel: %d" % msgs, flush=True)
check(0 < msgs < 64, "config changes queued while the channel was full")
d.c.send(GET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8))
cap = struct.unpack_from("<Q", d.c.recv(GET_CONFIG), 12)[0]
check(cap == (SIZE + 64 * 65536) // 512, "capacity after the resizes: %d" % cap)
d.close()
chan.close()
q.sock.close()

# 4. Messages in 1-byte pieces, fds with the first byte, then with the last.
for last in (False, True):
    t = time.monotonic()
    d = Device(A_SOCK, pieces=True, fds_last=last)
    st, _ = d.blk(OUT, 16, data=pattern)
    check(st == 0, "1-byte pieces: write status %d" % st)
    st, got = d.blk(IN, 16, inlen=4096)
    check(st == 0 and got == pattern, "1-byte pieces: read back")
    check(d.c.u64(GET_QUEUE_NUM) >= 1, "1-byte pieces: GET_QUEUE_NUM")
    d.close()
    print("front end in 1-byte pieces (fds with the %s byte): %.3f s"
          % ("last" if last else "first", time.monotonic() - t), flush=True)

# Everything still works at the end.
served_while("nothing")

if failures:
    sys.exit(1)
print("ok")
