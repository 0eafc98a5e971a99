# SPDX-License-Identifier: MIT
"""vdisk serve's vhost-user-blk export across reconnections, resizes and
SIGTERM, driven by a front end in Python (docs/interop/vhost-user.rst):

  inflight  GET_INFLIGHT_FD / SET_INFLIGHT_FD ("Inflight I/O tracking"): a
            request in flight when the front end disconnects completes; a
            back end killed (SIGKILL) with a request in flight is replaced and
            the new one resubmits it from the shared region; a region written
            by hand (a write the dead back end took, and a stale last batch
            that must not run again) is honoured.
  packed    the same with packed rings (packed=on), whose region holds copies
            of the descriptors taken: the region is sized and laid out for
            packed rings; a new connection or a new back end continues from
            the region's indices although the front end's SET_VRING_BASE is
            stale (QEMU's, after GET_VRING_BASE failed); regions written by
            hand as a back end killed in the middle of a completion leaves
            them (used descriptor published: committed; not yet: rolled back
            and run again, oldest first); a region that does not hold
            together closes the connection, and the daemon goes on.
  resize    block_resize over QMP sends BACKEND_CONFIG_CHANGE_MSG on the
            SET_BACKEND_REQ_FD channel, and GET_CONFIG has the new capacity.
  sigterm   SIGTERM with requests in flight: they complete, the images are
            flushed and closed (qemu-img check), the daemon exits 0.

    vhost-user-reconnect.py VDISK TMPDIR
"""

import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

VDISK, T = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qmp import QMP  # noqa: E402

GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES = 15, 16
SET_VRING_ENABLE, SET_BACKEND_REQ_FD, GET_CONFIG = 18, 21, 24
GET_INFLIGHT_FD, SET_INFLIGHT_FD = 31, 32
CONFIG_CHANGE_MSG = 2
F_PROTOCOL_FEATURES, F_VERSION_1, F_RING_PACKED = 1 << 30, 1 << 32, 1 << 34
P_REPLY_ACK, P_BACKEND_REQ, P_CONFIG, P_INFLIGHT = 1 << 3, 1 << 5, 1 << 9, 1 << 12
IN, OUT = 0, 1

MEM = 4 << 20
GPA_BASE, UVA_BASE = 0x100000, 0x7F0000000000
QSIZE = 16
DESC, AVAIL, USED = 0x0000, 0x1000, 0x2000
REQ = 0x10000  # request i: header at REQ + 0x2000 * i, data at + 0x1000

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what, flush=True)


def inflight_queue_size(num):
    return (16 + 16 * num + 63) & ~63


def inflight_queue_size_packed(num):
    """QueueRegionPacked: a 32-byte header, 32-byte DescStatePacked."""
    return (32 + 32 * num + 63) & ~63


# Packed ring descriptor flags (virtio 1.2 section 2.8).
P_NEXT, P_WRITE, P_AVAIL, P_USED = 1, 2, 1 << 7, 1 << 15
# QueueRegionPacked header offsets.
PK_VERSION, PK_DESC_NUM, PK_FREE_HEAD, PK_OLD_FREE_HEAD = 8, 10, 12, 14
PK_USED_IDX, PK_OLD_USED_IDX, PK_USED_WRAP, PK_OLD_USED_WRAP = 16, 18, 20, 21
# What QEMU sends in SET_VRING_BASE for a packed ring when GET_VRING_BASE
# failed (the back end died): its own state from the start, slot 0 in lap 1
# for both sides.
STALE_PACKED_BASE = 0x8000 | 0x8000 << 16


def serve(sock, *blockdevs, qmp=None):
    args = [VDISK, "serve"]
    for b in blockdevs:
        args += ["--blockdev", b]
    args += ["--export", "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=%s,"
             "writable=on" % sock]
    if qmp:
        args += ["--chardev", "socket,path=%s,server=on,wait=off,id=c" % qmp, "--monitor",
                 "chardev=c"]
    if os.path.exists(sock):
        os.unlink(sock)
    log = open(os.path.join(T, "serve.log"), "a")
    p = subprocess.Popen(args, stderr=log)
    for _ in range(200):
        if os.path.exists(sock):
            return p
        time.sleep(0.025)
    p.kill()
    raise RuntimeError("socket did not appear")


class Guest:
    """Guest memory and an inflight region that outlive connections, as
    QEMU keeps them across a back end's restart."""

    features = 0

    def __init__(self):
        self.fd = os.memfd_create("guest")
        os.ftruncate(self.fd, MEM)
        self.m = mmap.mmap(self.fd, MEM)
        self.inflight_fd = None
        self.inflight = None
        self.inflight_size = 0
        self.avail_idx = self.used_seen = 0

    def w(self, addr, data):
        self.m[addr:addr + len(data)] = data

    def used_idx(self):
        return struct.unpack_from("<H", self.m, USED + 2)[0]

    def desc_inflight(self, head):
        return self.inflight[16 + 16 * head]

    def chain(self, i, rtype, sector, data=None, inlen=0):
        """Request i's header, data and status in guest memory; returns its
        segments (address, length, VRING_DESC_F_WRITE or 0)."""
        base = REQ + 0x2000 * i
        self.w(base, struct.pack("<IIQ", rtype, 0, sector))
        st = base + 0x1FFF
        self.m[st] = 0xFF
        segs = [(base, 16, 0)]
        if data is not None:
            self.w(base + 0x1000, data)
            segs.append((base + 0x1000, len(data), 0))
        else:
            segs.append((base + 0x1000, inlen, 2))
        segs.append((st, 1, 2))
        return segs

    def put(self, i, rtype, sector, data=None, inlen=0):
        """Request i (3 descriptors from 3 * i) into the avail ring;
        returns its head."""
        segs = self.chain(i, rtype, sector, data, inlen)
        head = (3 * i) % QSIZE
        for k, (addr, ln, fl) in enumerate(segs):
            idx = head + k
            flags = fl | (1 if k + 1 < len(segs) else 0)
            self.w(DESC + 16 * idx, struct.pack("<QIHH", GPA_BASE + addr, ln, flags, idx + 1))
        self.w(AVAIL + 4 + 2 * (self.avail_idx % QSIZE), struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.w(AVAIL + 2, struct.pack("<H", self.avail_idx))
        return head

    def status(self, i):
        return self.m[REQ + 0x2000 * i + 0x1FFF]

    def data(self, i, n):
        b = REQ + 0x2000 * i + 0x1000
        return bytes(self.m[b:b + n])

    def wait_used(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.used_idx() - self.used_seen) & 0xFFFF >= count:
                return True
            time.sleep(0.01)
        return False

    def used_entry(self, k):
        return struct.unpack_from("<II", self.m, USED + 4 + 8 * (k % QSIZE))


class PackedGuest(Guest):
    """A driver of a packed ring (virtio 1.2 section 2.8): the descriptor
    ring at DESC, the driver event area at AVAIL, the device event area at
    USED.  Request i is a chain of 3 descriptors with buffer id i."""

    features = F_RING_PACKED

    def __init__(self):
        super().__init__()
        self.slot, self.wrap = 0, True  # next slot to make available
        self.used_slot, self.used_wrap = 0, True  # next used descriptor
        self.ndescs = {}
        self.done = []  # (id, len) in the order the device used them

    def used_idx(self):
        self.poll()
        return len(self.done)

    def desc_inflight(self, entry):
        return self.inflight[32 + 32 * entry]

    def entry(self, e):
        """DescStatePacked: inflight, next, last, num, counter, id, flags,
        len, addr."""
        return struct.unpack_from("<BxHHHQHHIQ", self.inflight, 32 + 32 * e)

    def hdr16(self, off):
        return struct.unpack_from("<H", self.inflight, off)[0]

    def put(self, i, rtype, sector, data=None, inlen=0, publish=True):
        """Request i into the ring; the head's flags go last (2.8.21).
        Returns the slot of its head."""
        segs = self.chain(i, rtype, sector, data, inlen)
        head, descs = self.slot, []
        for k, (addr, ln, fl) in enumerate(segs):
            flags = fl | (P_NEXT if k + 1 < len(segs) else 0)
            flags |= P_AVAIL if self.wrap else P_USED
            descs.append((self.slot, struct.pack("<QIH", GPA_BASE + addr, ln, i), flags))
            self.slot += 1
            if self.slot == QSIZE:
                self.slot, self.wrap = 0, not self.wrap
        for slot, body, _ in descs:
            self.w(DESC + 16 * slot, body)
        for slot, _, flags in reversed(descs):
            if publish:
                self.w(DESC + 16 * slot + 14, struct.pack("<H", flags))
        self.ndescs[i] = len(segs)
        return head

    def poll(self):
        while True:
            d = DESC + 16 * self.used_slot
            flags = struct.unpack_from("<H", self.m, d + 14)[0]
            if bool(flags & P_AVAIL) != self.used_wrap or bool(flags & P_USED) != self.used_wrap:
                return
            ln, bid = struct.unpack_from("<IH", self.m, d + 8)
            self.done.append((bid, ln))
            self.used_slot += self.ndescs.get(bid, 1)
            if self.used_slot >= QSIZE:
                self.used_slot, self.used_wrap = self.used_slot - QSIZE, not self.used_wrap

    def wait_used(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.used_idx() - self.used_seen >= count:
                return True
            time.sleep(0.01)
        return False

    def used_entry(self, k):
        self.poll()
        return self.done[k] if k < len(self.done) else (-1, -1)


class Conn:
    def __init__(self, sock, g, proto=P_REPLY_ACK | P_CONFIG | P_INFLIGHT):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(sock)
        self.s.settimeout(10)
        self.g = g
        self.proto = proto

    def send(self, req, payload=b"", fds=(), flags=1):
        hdr = struct.pack("<III", req, flags, len(payload))
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                struct.pack("%di" % len(fds), *fds))] if fds else []
        self.s.sendmsg([hdr + payload], anc)

    def recv(self, req, want_fd=False):
        msg, anc, _, _ = self.s.recvmsg(12, socket.CMSG_SPACE(4 * 4))
        while len(msg) < 12:
            chunk = self.s.recv(12 - len(msg))
            if not chunk:
                raise EOFError
            msg += chunk
        r, flags, size = struct.unpack("<III", msg)
        assert r == req and flags & 4, "reply %d flags %x to %d" % (r, flags, req)
        body = b""
        while len(body) < size:
            chunk = self.s.recv(size - len(body))
            if not chunk:
                raise EOFError
            body += chunk
        fds = []
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds += list(struct.unpack("%di" % (len(data) // 4), data[:len(data) // 4 * 4]))
        return (body, fds) if want_fd else body

    def u64(self, req):
        self.send(req)
        return struct.unpack("<Q", self.recv(req))[0]

    def acked(self, req, payload=b"", fds=()):
        self.send(req, payload, fds, flags=1 | 8)
        check(struct.unpack("<Q", self.recv(req))[0] == 0, "message %d acked" % req)

    def setup(self, base=0, get_inflight=True, backend_channel=None, features=0):
        """QEMU's order (vhost_user_blk_start): features, inflight fd,
        memory table, then the ring."""
        g = self.g
        features |= g.features
        feats = self.u64(GET_FEATURES)
        pf = self.u64(GET_PROTOCOL_FEATURES)
        check(pf & self.proto == self.proto, "protocol features 0x%x offered" % self.proto)
        self.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", pf & self.proto))
        self.send(SET_OWNER)
        if backend_channel is not None:
            self.acked(SET_BACKEND_REQ_FD, fds=[backend_channel])
        check(feats & features == features, "features 0x%x offered" % features)
        self.send(SET_FEATURES,
                  struct.pack("<Q", feats & (F_VERSION_1 | F_PROTOCOL_FEATURES | features)))
        if self.proto & P_INFLIGHT:
            if get_inflight and g.inflight is None:
                self.send(GET_INFLIGHT_FD, struct.pack("<QQHHI", 0, 0, 1, QSIZE, 0))
                body, fds = self.recv(GET_INFLIGHT_FD, want_fd=True)
                size, off, nq, qs = struct.unpack_from("<QQHH", body)
                check(len(fds) == 1, "GET_INFLIGHT_FD passes one fd")
                want = (inflight_queue_size_packed(QSIZE) if features & F_RING_PACKED else
                        inflight_queue_size(QSIZE))
                check(size >= want and nq == 1 and qs == QSIZE,
                      "GET_INFLIGHT_FD size %d (%d wanted)" % (size, want))
                g.inflight_fd = fds[0]
                g.inflight_size = size
                g.inflight = mmap.mmap(g.inflight_fd, size)
                check(g.inflight[:] == bytes(size), "a new inflight region is zero")
            self.acked(SET_INFLIGHT_FD, struct.pack("<QQHHI", g.inflight_size, 0, 1, QSIZE, 0),
                       fds=[g.inflight_fd])
        region = struct.pack("<QQQQ", GPA_BASE, MEM, UVA_BASE, 0)
        self.acked(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, fds=[g.fd])
        self.send(SET_VRING_NUM, struct.pack("<II", 0, QSIZE))
        self.send(SET_VRING_BASE, struct.pack("<II", 0, base))
        self.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, UVA_BASE + DESC, UVA_BASE + USED,
                                              UVA_BASE + AVAIL, 0))
        self.call = os.eventfd(0, os.EFD_NONBLOCK)
        self.kick = os.eventfd(0, os.EFD_NONBLOCK)
        self.send(SET_VRING_CALL, struct.pack("<Q", 0), fds=[self.call])
        self.send(SET_VRING_KICK, struct.pack("<Q", 0), fds=[self.kick])
        self.acked(SET_VRING_ENABLE, struct.pack("<II", 0, 1))

    def kick_ring(self):
        os.eventfd_write(self.kick, 1)

    def capacity(self):
        self.send(GET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8))
        return struct.unpack_from("<Q", self.recv(GET_CONFIG), 12)[0]

    def close(self):
        self.s.close()
        os.close(self.call)
        os.close(self.kick)


def stop(p, sig=signal.SIGTERM):
    p.send_signal(sig)
    try:
        return p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        return "timeout"


SLOW = "driver=null-co,node-name=d,size=16M,read-zeroes=on,latency-ns=%d"


def test_disconnect_mid_flight():
    """The front end goes away with a request in flight: the back end
    finishes it before it lets go of the memory; the next connection sees
    it done and continues."""
    sock = os.path.join(T, "a.sock")
    p = serve(sock, SLOW % 300_000_000)
    g = Guest()
    c = Conn(sock, g)
    c.setup()
    head = g.put(0, IN, 0, inlen=4096)
    c.kick_ring()
    time.sleep(0.1)
    check(g.desc_inflight(head) == 1, "the head is marked in flight in the region")
    check(g.used_idx() == 0, "request still in flight at the disconnect")
    c.close()
    check(g.wait_used(1), "the request completed after the disconnect")
    check(g.status(0) == 0 and g.used_entry(0)[0] == head, "completed request: status OK")
    check(g.desc_inflight(head) == 0, "the region no longer lists it")
    g.used_seen = g.used_idx()
    # Reconnect (QEMU restores the avail index from used.idx) and go on.
    c = Conn(sock, g)
    c.setup(base=g.used_idx())
    g.put(1, OUT, 8, data=b"\x5a" * 4096)
    c.kick_ring()
    check(g.wait_used(1), "a request on the new connection completes")
    check(g.status(1) == 0, "status OK on the new connection")
    check(g.used_idx() == 2, "exactly one more used entry (nothing ran twice)")
    c.close()
    check(stop(p) == 0, "daemon exits 0")


def test_backend_killed():
    """The back end dies (SIGKILL) with a request in flight; a new one,
    given the same inflight region, resubmits it without a kick."""
    sock = os.path.join(T, "b.sock")
    p = serve(sock, SLOW % 2_000_000_000)
    g = Guest()
    c = Conn(sock, g)
    c.setup()
    head = g.put(0, IN, 0, inlen=4096)
    g.m[REQ + 0x1000:REQ + 0x2000] = b"\xee" * 4096
    c.kick_ring()
    time.sleep(0.2)
    check(g.desc_inflight(head) == 1, "in flight before the kill")
    p.kill()
    p.wait()
    c.close()
    check(g.used_idx() == 0, "nothing completed by the killed back end")
    p = serve(sock, SLOW % 100_000_000)
    c = Conn(sock, g)
    c.setup(base=0)  # QEMU: GET_VRING_BASE failed, last_avail_idx = used_idx
    check(g.wait_used(1), "the new back end resubmitted the request")
    check(g.used_entry(0)[0] == head and g.status(0) == 0, "resubmitted request: status OK")
    check(g.data(0, 4096) == bytes(4096), "resubmitted read filled the buffer")
    time.sleep(0.3)
    check(g.used_idx() == 1, "resubmitted once, not also taken from the avail ring")
    g.used_seen = 1
    g.put(1, IN, 8, inlen=512)
    c.kick_ring()
    check(g.wait_used(1) and g.used_idx() == 2, "new requests after the resubmission")
    c.close()
    check(stop(p) == 0, "daemon exits 0")


def test_region_by_hand():
    """A region as a dead back end left it: one write taken and not done
    (resubmitted: its data reaches the file), one head whose used entry was
    published but whose flag was not cleared (last_batch_head: not run
    again)."""
    sock = os.path.join(T, "c.sock")
    img = os.path.join(T, "c.raw")
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    p = serve(sock, "driver=file,node-name=f,filename=" + img, "driver=raw,node-name=d,file=f")
    g = Guest()
    g.inflight_size = inflight_queue_size(QSIZE)
    g.inflight_fd = os.memfd_create("inflight")
    os.ftruncate(g.inflight_fd, g.inflight_size)
    g.inflight = mmap.mmap(g.inflight_fd, g.inflight_size)
    done = g.put(0, OUT, 64, data=b"\x11" * 4096)  # completed, flag stale
    todo = g.put(1, OUT, 128, data=b"\x22" * 4096)  # taken, not done
    # used ring: the first one published.
    g.w(USED + 4, struct.pack("<II", done, 1))
    g.w(USED + 2, struct.pack("<H", 1))
    # header: features, version 1, desc_num, last_batch_head, used_idx 0
    g.inflight[0:16] = struct.pack("<QHHHH", 0, 1, QSIZE, done, 0)
    g.inflight[16 + 16 * done:32 + 16 * done] = struct.pack("<B5xHQ", 1, 0, 5)
    g.inflight[16 + 16 * todo:32 + 16 * todo] = struct.pack("<B5xHQ", 1, 0, 6)
    g.used_seen = 1
    c = Conn(sock, g)
    c.setup(base=1)
    check(g.wait_used(1), "the write left in flight was resubmitted")
    check(g.used_entry(1)[0] == todo and g.status(1) == 0, "resubmitted write: status OK")
    time.sleep(0.3)
    check(g.used_idx() == 2, "the stale last batch was not run again")
    check(struct.unpack_from("<H", g.inflight, 14)[0] == 2, "region used_idx follows used.idx")
    check(g.desc_inflight(done) == 0 and g.desc_inflight(todo) == 0, "region flags cleared")
    c.close()
    check(stop(p) == 0, "daemon exits 0")
    with open(img, "rb") as f:
        f.seek(128 * 512)
        check(f.read(4096) == b"\x22" * 4096, "resubmitted write is in the file")
        f.seek(64 * 512)
        check(f.read(4096) == bytes(4096), "the completed head was not written again")


def test_packed_disconnect_mid_flight():
    """Packed rings: the front end goes away with a request in flight; the
    region has its descriptors while it runs and lets go of them when it
    completes; the next connection continues from the region's indices
    although its SET_VRING_BASE is stale."""
    sock = os.path.join(T, "pa.sock")
    p = serve(sock, SLOW % 300_000_000)
    g = PackedGuest()
    c = Conn(sock, g)
    c.setup(base=STALE_PACKED_BASE)
    g.put(0, IN, 0, inlen=4096)
    c.kick_ring()
    time.sleep(0.1)
    check(g.hdr16(PK_VERSION) == 1 and g.hdr16(PK_DESC_NUM) == QSIZE,
          "packed region initialised (version 1, desc_num)")
    inflight, _, last, num, counter, bid, flags, ln, addr = g.entry(0)
    check(inflight == 1 and num == 3 and last == 2 and counter == 0,
          "the chain is in flight in the region: %s" % (g.entry(0),))
    check(addr == GPA_BASE + REQ and ln == 16 and flags & P_NEXT,
          "the region has a copy of the head descriptor")
    check(g.entry(2)[5] == 0 and g.entry(2)[8] == GPA_BASE + REQ + 0x1FFF,
          "and of the last one (buffer id, status byte)")
    check(g.hdr16(PK_FREE_HEAD) == 3 and g.hdr16(PK_OLD_FREE_HEAD) == 3,
          "free_head past the chain")
    check(g.used_idx() == 0, "request still in flight at the disconnect")
    c.close()
    check(g.wait_used(1), "the request completed after the disconnect")
    check(g.status(0) == 0 and g.used_entry(0) == (0, 4097), "completed request: status OK")
    check(g.desc_inflight(0) == 0, "the region no longer lists it")
    check(g.hdr16(PK_USED_IDX) == 3 and g.hdr16(PK_OLD_USED_IDX) == 3 and
          g.inflight[PK_USED_WRAP] == 1 and g.inflight[PK_OLD_USED_WRAP] == 1,
          "region used index after the chain, committed")
    check(g.hdr16(PK_FREE_HEAD) == 0 and g.hdr16(PK_OLD_FREE_HEAD) == 0,
          "the chain's entries are free again")
    g.used_seen = g.used_idx()
    c = Conn(sock, g)
    c.setup(base=STALE_PACKED_BASE)
    g.put(1, OUT, 8, data=b"\x5a" * 4096)
    c.kick_ring()
    check(g.wait_used(1), "a request on the new connection completes")
    check(g.status(1) == 0 and g.used_entry(1)[0] == 1, "status OK on the new connection")
    time.sleep(0.2)
    check(g.used_idx() == 2, "exactly one more used descriptor (nothing ran twice)")
    c.close()
    check(stop(p) == 0, "daemon exits 0")


def test_packed_backend_killed():
    """Packed rings: one request completes, then the back end dies
    (SIGKILL) with two more in flight; a new one, given the same region and
    QEMU's stale ring base (slot 0, which now holds a used descriptor),
    resubmits both without a kick and takes new requests from the right
    slot."""
    sock = os.path.join(T, "pb.sock")
    p = serve(sock, SLOW % 1_000_000_000)
    g = PackedGuest()
    c = Conn(sock, g)
    c.setup(base=STALE_PACKED_BASE)
    g.put(0, IN, 0, inlen=512)
    c.kick_ring()
    check(g.wait_used(1), "a first request completes")
    g.used_seen = 1
    g.put(1, IN, 8, inlen=4096)
    g.put(2, IN, 16, inlen=512)
    for i in (1, 2):
        b = REQ + 0x2000 * i + 0x1000
        g.m[b:b + 0x1000] = b"\xee" * 4096
    c.kick_ring()
    time.sleep(0.2)
    # The first chain's entries went back to the free list, head first.
    check(g.desc_inflight(0) == 1 and g.desc_inflight(3) == 1, "both in flight before the kill")
    check(g.entry(0)[4] < g.entry(3)[4], "counters in the order they were taken")
    p.kill()
    p.wait()
    c.close()
    check(g.used_idx() == 1, "nothing more completed by the killed back end")
    p = serve(sock, SLOW % 100_000_000)
    c = Conn(sock, g)
    c.setup(base=STALE_PACKED_BASE)
    check(g.wait_used(2), "the new back end resubmitted both requests")
    ids = sorted(g.used_entry(k)[0] for k in (1, 2))
    check(ids == [1, 2], "resubmitted requests: ids %s" % ids)
    check(g.status(1) == 0 and g.status(2) == 0, "resubmitted requests: status OK")
    check(g.data(1, 4096) == bytes(4096) and g.data(2, 512) == bytes(512),
          "resubmitted reads filled their buffers")
    time.sleep(0.3)
    check(g.used_idx() == 3, "resubmitted once, not also taken from the ring")
    check(g.desc_inflight(0) == 0 and g.desc_inflight(3) == 0, "region flags cleared")
    g.used_seen = 3
    g.put(3, IN, 24, inlen=512)
    c.kick_ring()
    check(g.wait_used(1) and g.used_idx() == 4 and g.used_entry(3)[0] == 3,
          "a new request after the resubmission, from slot 9")
    c.close()
    check(stop(p) == 0, "daemon exits 0")


def packed_region_by_hand(g, published):
    """A region as a back end killed while completing requests out of
    order leaves it.  C (id 2, slots 0-2) completed; A (id 0, slots 3-5,
    entries 0-2, counter 5) and B (id 1, slots 6-8, entries 3-5, counter
    6) were taken; B was being completed first: its chain is back on the
    free list and used_idx moved past it, old_* not yet.  With @published
    its used descriptor reached the ring, at slot 3, over A's head: only
    the region still has A's descriptors."""
    g.inflight_size = inflight_queue_size_packed(QSIZE)
    g.inflight_fd = os.memfd_create("inflight")
    os.ftruncate(g.inflight_fd, g.inflight_size)
    g.inflight = mmap.mmap(g.inflight_fd, g.inflight_size)
    g.put(2, OUT, 32, data=b"\x33" * 4096)
    g.w(DESC + 8, struct.pack("<IHH", 1, 2, P_AVAIL | P_USED))
    chains = []
    for i, sector, byte in ((0, 64, 0x11), (1, 128, 0x22)):
        g.put(i, OUT, sector, data=bytes([byte]) * 4096)
        chains.append(g.chain(i, OUT, sector, data=bytes([byte]) * 4096))
    for n, segs in enumerate(chains):
        for k, (addr, ln, fl) in enumerate(segs):
            e = 3 * n + k
            flags = fl | (P_NEXT if k < 2 else 0) | P_AVAIL
            head = k == 0
            g.inflight[32 + 32 * e:64 + 32 * e] = struct.pack(
                "<BxHHHQHHIQ", 1 if head else 0, e + 1, 3 * n + 2 if head else 0,
                3 if head else 0, 5 + n if head else 0, n, flags, ln, GPA_BASE + addr)
    for e in range(6, QSIZE):
        struct.pack_into("<H", g.inflight, 32 + 32 * e + 2, e + 1)
    # Completing B: its last entry links to the old free head, free_head =
    # 3, used_idx 6; old_free_head 6, old_used_idx 3 not copied yet.
    struct.pack_into("<H", g.inflight, 32 + 32 * 5 + 2, 6)
    g.inflight[0:22] = struct.pack("<QHHHHHHBB", 0, 1, QSIZE, 3, 6, 6, 3, 1, 1)
    if published:
        g.w(DESC + 16 * 3 + 8, struct.pack("<IHH", 1, 1, P_AVAIL | P_USED))


def packed_region_test(name, published):
    sock = os.path.join(T, name + ".sock")
    img = os.path.join(T, name + ".raw")
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    p = serve(sock, "driver=file,node-name=f,filename=" + img, "driver=raw,node-name=d,file=f")
    g = PackedGuest()
    packed_region_by_hand(g, published)
    before = 2 if published else 1
    check(g.used_idx() == before, "%d used descriptors in the ring before" % before)
    g.used_seen = before
    c = Conn(sock, g)
    c.setup(base=STALE_PACKED_BASE)
    want = [0] if published else [0, 1]
    check(g.wait_used(len(want)), "the writes left in flight were resubmitted")
    ids = sorted(g.used_entry(before + k)[0] for k in range(len(want)))
    check(ids == want, "resubmitted: ids %s, %s wanted" % (ids, want))
    check(all(g.status(i) == 0 for i in want), "resubmitted writes: status OK")
    time.sleep(0.3)
    check(g.used_idx() == 3, "three used descriptors in all: nothing ran twice")
    check(g.hdr16(PK_OLD_USED_IDX) == 9 and g.hdr16(PK_USED_IDX) == 9,
          "region used index after the three chains")
    check(g.desc_inflight(0) == 0 and g.desc_inflight(3) == 0, "region flags cleared")
    c.close()
    check(stop(p) == 0, "daemon exits 0")
    with open(img, "rb") as f:
        for sector, byte, written in ((32, 0x33, False), (64, 0x11, True),
                                      (128, 0x22, not published)):
            f.seek(sector * 512)
            data = f.read(4096)
            check(data == (bytes([byte]) * 4096 if written else bytes(4096)),
                  "sector %d %s" % (sector, "written" if written else "not written again"))


def test_packed_region_committed():
    """B's used descriptor was published: B is not run again; A, whose
    head slot in the ring B's used descriptor took, is resubmitted from the
    region's copy and reaches the file."""
    packed_region_test("pc", published=True)


def test_packed_region_rolled_back():
    """B's used descriptor was not published: the completion is rolled
    back, and A and B both run again."""
    packed_region_test("pd", published=False)


def test_packed_bad_region():
    """A region whose free list loops: the connection ends, the region is
    left as it was, and the daemon serves the next front end."""
    sock = os.path.join(T, "pe.sock")
    p = serve(sock, SLOW % 1_000_000)
    g = PackedGuest()
    g.inflight_size = inflight_queue_size_packed(QSIZE)
    g.inflight_fd = os.memfd_create("inflight")
    os.ftruncate(g.inflight_fd, g.inflight_size)
    g.inflight = mmap.mmap(g.inflight_fd, g.inflight_size)
    g.inflight[0:22] = struct.pack("<QHHHHHHBB", 0, 1, QSIZE, 0, 0, 0, 0, 1, 1)
    for e in range(QSIZE):
        struct.pack_into("<H", g.inflight, 32 + 32 * e + 2, (e + 1) % 4)
    before = bytes(g.inflight)
    c = Conn(sock, g)
    closed = False
    try:
        c.setup(base=STALE_PACKED_BASE)
    except (EOFError, OSError, AssertionError, struct.error):
        closed = True
    if not closed:
        try:
            closed = c.s.recv(1) == b""
        except OSError:
            closed = True
    check(closed, "the back end closed the connection")
    check(bytes(g.inflight) == before, "the refused region was not written")
    c.s.close()
    with open(os.path.join(T, "serve.log")) as f:
        check("unusable inflight region" in f.read(), "the reason is in the log")
    check(p.poll() is None, "the daemon still runs")
    g2 = PackedGuest()
    c2 = Conn(sock, g2)
    c2.setup(base=STALE_PACKED_BASE)
    g2.put(0, IN, 0, inlen=512)
    c2.kick_ring()
    check(g2.wait_used(1) and g2.status(0) == 0, "the next front end is served")
    c2.close()
    check(stop(p) == 0, "daemon exits 0")


def test_resize():
    """block_resize: BACKEND_CONFIG_CHANGE_MSG on the back-end channel,
    then the new capacity in GET_CONFIG; a front end without the channel
    just sees the new capacity."""
    sock = os.path.join(T, "d.sock")
    qmp_path = os.path.join(T, "qmp.sock")
    img = os.path.join(T, "d.raw")
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    p = serve(sock, "driver=file,node-name=f,filename=" + img, "driver=raw,node-name=d,file=f",
              qmp=qmp_path)
    q = QMP(qmp_path)
    q.cmd("qmp_capabilities")
    g = Guest()
    front, back = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    c = Conn(sock, g, proto=P_REPLY_ACK | P_CONFIG | P_BACKEND_REQ)
    c.setup(backend_channel=back.fileno())
    back.close()
    g2 = Guest()
    c2 = Conn(sock, g2, proto=P_REPLY_ACK | P_CONFIG)
    c2.setup()
    check(c.capacity() == (16 << 20) // 512, "capacity before the resize")
    r = q.cmd("block_resize", **{"node-name": "d", "size": 32 << 20})
    check(r == {"return": {}}, "block_resize: %s" % r)
    front.settimeout(5)
    try:
        msg = front.recv(12)
    except socket.timeout:
        msg = b""
    check(len(msg) == 12, "a message on the back-end channel")
    if len(msg) == 12:
        req, flags, size = struct.unpack("<III", msg)
        check(req == CONFIG_CHANGE_MSG and flags & 3 == 1 and size == 0,
              "CONFIG_CHANGE_MSG (%d flags %x size %d)" % (req, flags, size))
    check(c.capacity() == (32 << 20) // 512, "capacity after the resize")
    check(c2.capacity() == (32 << 20) // 512, "capacity without a back-end channel")
    # The device still works past the old end.
    g.put(0, OUT, (24 << 20) // 512, data=b"\x33" * 4096)
    c.kick_ring()
    check(g.wait_used(1) and g.status(0) == 0, "write past the old end")
    c.close()
    c2.close()
    q.cmd("quit")
    check(p.wait(20) == 0, "daemon exits 0 after quit")
    check(os.path.getsize(img) == 32 << 20, "image resized")


def test_sigterm():
    """SIGTERM after allocating writes to a qcow2 image: the daemon flushes
    its metadata caches, closes the image cleanly and exits 0."""
    sock = os.path.join(T, "e.sock")
    img = os.path.join(T, "e.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"], check=True)
    p = serve(sock, "driver=file,node-name=f,filename=" + img,
              "driver=qcow2,node-name=d,file=f")
    gs = Guest()
    cs = Conn(sock, gs)
    cs.setup()
    for i in range(4):
        gs.put(i, OUT, 2048 * i, data=bytes([0x40 + i]) * 4096)
    cs.kick_ring()
    # Completed, but the cluster allocations may sit in qcow2's metadata
    # caches: SIGTERM must write them out.
    check(gs.wait_used(4), "writes completed")
    rc = stop(p)
    check(rc == 0, "SIGTERM: exit %s" % rc)
    check(all(gs.status(i) == 0 for i in range(4)), "statuses OK")
    cs.close()
    r = subprocess.run(["qemu-img", "check", "-q", img])
    check(r.returncode == 0, "qemu-img check after SIGTERM")
    for i in range(4):
        r = subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                            "read -P %d %d 4096" % (0x40 + i, 2048 * i * 512), img],
                           capture_output=True, text=True)
        check("Pattern verification failed" not in r.stdout and r.returncode == 0,
              "data of request %d on disk" % i)


def test_sigterm_slow():
    """The same with a request that takes a second: SIGTERM waits for it."""
    sock = os.path.join(T, "f.sock")
    p = serve(sock, SLOW % 1_000_000_000)
    g = Guest()
    c = Conn(sock, g)
    c.setup()
    g.put(0, IN, 0, inlen=4096)
    c.kick_ring()
    time.sleep(0.1)
    check(g.used_idx() == 0, "in flight at SIGTERM")
    rc = stop(p)
    check(rc == 0, "SIGTERM with a slow request: exit %s" % rc)
    check(g.used_idx() == 1 and g.status(0) == 0, "the slow request completed before exit")
    c.close()


tests = [test_disconnect_mid_flight, test_backend_killed, test_region_by_hand,
         test_packed_disconnect_mid_flight, test_packed_backend_killed,
         test_packed_region_committed, test_packed_region_rolled_back, test_packed_bad_region,
         test_resize, test_sigterm, test_sigterm_slow]
only = os.environ.get("VHOST_USER_TESTS")
if only:
    tests = [t for t in tests if t.__name__ in only.split(",")]
for t in tests:
    before = failures
    t()
    print("%s: %s" % (t.__name__, "ok" if failures == before else "FAILED"), flush=True)
if failures:
    sys.exit(1)
print("ok")
