# SPDX-License-Identifier: MIT
"""A vhost-user-blk front end in Python, for `vdisk serve` (or
qemu-storage-daemon): it speaks the protocol over the unix socket
(docs/interop/vhost-user.rst), shares memfd guest memory, sets up one split
virtqueue (virtio 1.2 section 2.7) and submits virtio-blk requests
(section 5.2.6), then checks the data against the image file.  Malformed
messages on other connections must end only those connections.

    vhost-user-proto.py SOCKET IMAGE_RAW_OR_NONE SIZE_BYTES

IMAGE is read back to compare (a raw file), or "none" to skip that check.
Prints "ok" and exits 0 on success.
"""

import mmap
import os
import select
import socket
import struct
import sys
import time

SOCK, IMAGE, SIZE = sys.argv[1], sys.argv[2], int(sys.argv[3])

GET_FEATURES, SET_FEATURES, SET_OWNER = 1, 2, 3
SET_MEM_TABLE = 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = 15, 16, 17
SET_VRING_ENABLE, GET_CONFIG, SET_CONFIG = 18, 24, 25
NEED_REPLY = 0x8
F_PROTOCOL_FEATURES = 1 << 30
F_VERSION_1 = 1 << 32
F_INDIRECT = 1 << 28
F_EVENT_IDX = 1 << 29
P_MQ, P_REPLY_ACK, P_CONFIG = 1 << 0, 1 << 3, 1 << 9

MEM = 4 << 20
GPA_BASE = 0x100000  # guest-physical address of the region
UVA_BASE = 0x7F0000000000  # the front end's virtual address for it
QSIZE = 16
DESC, AVAIL, USED = 0x0000, 0x1000, 0x2000
BUF = 0x10000

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, flush=True)


class Conn:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(SOCK)
        self.s.settimeout(10)

    def send(self, req, payload=b"", fds=(), flags=1):
        hdr = struct.pack("<III", req, flags, len(payload))
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("%di" % len(fds), *fds))] if fds else []
        self.s.sendmsg([hdr + payload], anc)

    def recv(self, req):
        hdr = self.recv_exact(12)
        r, flags, size = struct.unpack("<III", hdr)
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

    def closed(self):
        """True if the back end closed the connection."""
        try:
            self.s.settimeout(5)
            return self.s.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


class Device:
    """One front end with its guest memory and queue 0."""

    def __init__(self, features_extra=0):
        self.c = Conn()
        self.fd = os.memfd_create("guest")
        os.ftruncate(self.fd, MEM)
        self.m = mmap.mmap(self.fd, MEM)
        c = self.c
        self.features = c.u64(GET_FEATURES)
        check(self.features & F_PROTOCOL_FEATURES, "PROTOCOL_FEATURES offered")
        check(self.features & F_VERSION_1, "VERSION_1 offered")
        pf = c.u64(GET_PROTOCOL_FEATURES)
        check(pf & P_CONFIG, "CONFIG protocol feature")
        c.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", pf & (P_CONFIG | P_REPLY_ACK | P_MQ)))
        self.nq = c.u64(GET_QUEUE_NUM)
        c.send(SET_OWNER)
        cfg = self.get_config(0, 60)
        self.capacity = struct.unpack_from("<Q", cfg, 0)[0]
        acked = (F_VERSION_1 | F_PROTOCOL_FEATURES | features_extra) & self.features
        c.send(SET_FEATURES, struct.pack("<Q", acked))
        # One region, with REPLY_ACK.
        region = struct.pack("<QQQQ", GPA_BASE, MEM, UVA_BASE, 0)
        c.send(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, fds=[self.fd], flags=1 | NEED_REPLY)
        check(struct.unpack("<Q", c.recv(SET_MEM_TABLE))[0] == 0, "SET_MEM_TABLE acked")
        c.send(SET_VRING_NUM, struct.pack("<II", 0, QSIZE))
        c.send(SET_VRING_BASE, struct.pack("<II", 0, 0))
        c.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, UVA_BASE + DESC, UVA_BASE + USED,
                                           UVA_BASE + AVAIL, 0))
        self.call = os.eventfd(0, os.EFD_NONBLOCK)
        self.kick = os.eventfd(0, os.EFD_NONBLOCK)
        self.err = os.eventfd(0, os.EFD_NONBLOCK)
        c.send(SET_VRING_CALL, struct.pack("<Q", 0), fds=[self.call])
        c.send(SET_VRING_ERR, struct.pack("<Q", 0), fds=[self.err])
        c.send(SET_VRING_KICK, struct.pack("<Q", 0), fds=[self.kick])
        c.send(SET_VRING_ENABLE, struct.pack("<II", 0, 1))
        self.avail_idx = 0
        self.used_seen = 0
        self.next_desc = 0

    def get_config(self, off, size):
        self.c.send(GET_CONFIG, struct.pack("<III", off, size, 0) + bytes(size))
        r = self.c.recv(GET_CONFIG)
        check(len(r) == 12 + size, "GET_CONFIG reply size")
        return r[12:]

    def w(self, addr, data):
        self.m[addr:addr + len(data)] = data

    def submit(self, segs, wait=True):
        """segs: [(addr, len, writable)]; returns (used_len, status_addr)."""
        head = self.next_desc
        for i, (addr, ln, wr) in enumerate(segs):
            idx = (head + i) % QSIZE
            flags = (2 if wr else 0) | (1 if i + 1 < len(segs) else 0)
            self.w(DESC + 16 * idx, struct.pack("<QIHH", GPA_BASE + addr, ln, flags, (idx + 1) % QSIZE))
        self.next_desc = (head + len(segs)) % QSIZE
        self.w(AVAIL + 4 + 2 * (self.avail_idx % QSIZE), struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.w(AVAIL + 2, struct.pack("<H", self.avail_idx))
        os.eventfd_write(self.kick, 1)
        if not wait:
            return None
        return self.wait_used(head)

    def wait_used(self, head):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            used_idx = struct.unpack_from("<H", self.m, USED + 2)[0]
            if used_idx != self.used_seen:
                e = USED + 4 + 8 * (self.used_seen % QSIZE)
                uid, ln = struct.unpack_from("<II", self.m, e)
                self.used_seen = (self.used_seen + 1) & 0xFFFF
                check(uid == head, "used id %d == head %d" % (uid, head))
                return ln
            r, _, _ = select.select([self.call], [], [], 0.05)
            if r:
                os.eventfd_read(self.call)
        raise TimeoutError("no completion")

    def blk(self, rtype, sector, data=None, inlen=0, seg_data=None):
        """A 3-descriptor request; returns (status, used_len, in-data)."""
        hdr = struct.pack("<IIQ", rtype, 0, sector)
        self.w(BUF, hdr)
        st = BUF + 0x200000
        self.m[st] = 0xFF
        segs = [(BUF, 16, False)]
        if data is not None:
            self.w(BUF + 0x1000, data)
            segs.append((BUF + 0x1000, len(data), False))
        if inlen:
            segs.append((BUF + 0x1000, inlen, True))
        segs.append((st, 1, True))
        ln = self.submit(segs)
        out = bytes(self.m[BUF + 0x1000:BUF + 0x1000 + inlen]) if inlen else b""
        return self.m[st], ln, out

    def close(self):
        self.c.s.close()
        self.m.close()
        for fd in (self.fd, self.call, self.kick, self.err):
            os.close(fd)


IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES = 0, 1, 4, 8, 11, 13

d = Device(F_EVENT_IDX | F_INDIRECT | (1 << 13) | (1 << 14) | (1 << 9))
check(d.capacity == SIZE // 512, "capacity %d" % d.capacity)
pattern = bytes((i * 7 + 3) & 0xFF for i in range(4096))
st, ln, _ = d.blk(OUT, 8, data=pattern)
check(st == 0 and ln == 1, "OUT status %d used %d" % (st, ln))
st, ln, got = d.blk(IN, 8, inlen=4096)
check(st == 0 and ln == 4097 and got == pattern, "IN readback")
st, _, _ = d.blk(FLUSH, 0)
check(st == 0, "FLUSH")
st, ln, got = d.blk(GET_ID, 0, inlen=20)
check(st == 0 and ln == 21, "GET_ID")
st, _, _ = d.blk(IN, SIZE // 512, inlen=512)
check(st == 1, "IN past the end: IOERR")
st, _, _ = d.blk(3, 0, inlen=512)
check(st == 2, "unknown type: UNSUPP")
# Invalid discard / write-zeroes (QEMU vhost-user-blk-test "basic").
seg = struct.pack("<QII", 0, 1, 0)
st, _, _ = d.blk(DISCARD, 0, data=seg + seg)
check(st == 2, "discard with 2 segments: UNSUPP (got %d)" % st)
st, _, _ = d.blk(DISCARD, 0, data=struct.pack("<QII", 0, 0xFFFFFFFF, 0))
check(st == 1, "discard of 0xffffffff sectors: IOERR (got %d)" % st)
st, _, _ = d.blk(WRITE_ZEROES, 0, data=struct.pack("<QII", SIZE // 512 + 1, 1, 0))
check(st == 1, "write zeroes past the end: IOERR (got %d)" % st)
st, _, _ = d.blk(WRITE_ZEROES, 0, data=struct.pack("<QII", 0, 1, 0xFFFFFFFE))
check(st == 2, "write zeroes with reserved flags: UNSUPP (got %d)" % st)
st, _, _ = d.blk(WRITE_ZEROES, 16, data=struct.pack("<QII", 16, 8, 1))
check(st == 0, "write zeroes with unmap")
st, _, got = d.blk(IN, 16, inlen=4096)
check(st == 0 and got == bytes(4096), "zeroes read back")

# A front end that sends garbage ends only its own connection.
bad = [
    lambda c: c.s.sendall(b"\xff" * 64),  # bad version bits
    lambda c: c.send(SET_VRING_NUM, struct.pack("<II", 99, 16)),  # ring index
    lambda c: c.send(SET_VRING_NUM, struct.pack("<II", 0, 3)),  # size
    lambda c: c.send(SET_MEM_TABLE, struct.pack("<II", 1, 0) + bytes(32)),  # no fd
    lambda c: c.send(SET_FEATURES, b"\x01"),  # payload size
    lambda c: c.s.sendall(struct.pack("<III", 1, 1, 1 << 30)),  # huge size
    lambda c: c.send(GET_CONFIG, struct.pack("<III", 0, 4096, 0)),  # config size
    lambda c: c.send(200),  # unknown request
    # Regression (fuzz-vhost-user crash-mem-table-past-eof): a region
    # larger than its memfd was mapped, and the first access past the end
    # of the file raised SIGBUS in the daemon.
    lambda c: c.send(SET_MEM_TABLE, struct.pack("<II", 1, 0) +
                     struct.pack("<QQQQ", GPA_BASE, 2 * MEM, UVA_BASE, 0), fds=[d.fd]),
]
for i, b in enumerate(bad):
    c = Conn()
    b(c)
    check(c.closed(), "bad message %d closes its connection" % i)
    c.s.close()
# Half a message, then disconnect.
c = Conn()
c.s.sendall(struct.pack("<III", SET_FEATURES, 1, 8) + b"\x01\x02")
c.s.close()

# The first connection still works.
st, _, got = d.blk(IN, 8, inlen=4096)
check(st == 0 and got == pattern, "first connection survives garbage on others")

# GET_VRING_BASE stops the ring and says where to resume.
d.c.send(GET_VRING_BASE, struct.pack("<II", 0, 0))
idx, num = struct.unpack("<II", d.c.recv(GET_VRING_BASE))
check(idx == 0 and num == d.avail_idx, "GET_VRING_BASE %d == %d" % (num, d.avail_idx))
d.close()

# A malformed descriptor chain: NEEDS_RESET (err fd), no crash, connection kept.
d = Device()
d.w(DESC + 0, struct.pack("<QIHH", GPA_BASE + BUF, 16, 1, 1))
d.w(DESC + 16, struct.pack("<QIHH", GPA_BASE + BUF, 16, 1, 0))  # loop
d.w(AVAIL + 4, struct.pack("<H", 0))
d.w(AVAIL + 2, struct.pack("<H", 1))
os.eventfd_write(d.kick, 1)
r, _, _ = select.select([d.err], [], [], 5)
check(r == [d.err], "descriptor loop signals the error fd")
check(d.c.u64(GET_QUEUE_NUM) >= 1, "connection still answers")
# The front end stops the ring and sets it up again: the device works again.
d.c.send(GET_VRING_BASE, struct.pack("<II", 0, 0))
d.c.recv(GET_VRING_BASE)
d.m[0:0x3000] = bytes(0x3000)
d.c.send(SET_VRING_NUM, struct.pack("<II", 0, QSIZE))
d.c.send(SET_VRING_BASE, struct.pack("<II", 0, 0))
d.c.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, UVA_BASE + DESC, UVA_BASE + USED,
                                     UVA_BASE + AVAIL, 0))
d.kick = os.eventfd(0, os.EFD_NONBLOCK)
d.c.send(SET_VRING_KICK, struct.pack("<Q", 0), fds=[d.kick])
d.avail_idx = d.used_seen = d.next_desc = 0
st, _, got = d.blk(IN, 8, inlen=4096)
check(st == 0 and got == pattern, "ring set up again after NEEDS_RESET")
d.close()

if IMAGE != "none":
    with open(IMAGE, "rb") as f:
        f.seek(8 * 512)
        check(f.read(4096) == pattern, "data in the image file")

if failures:
    sys.exit(1)
print("ok")
