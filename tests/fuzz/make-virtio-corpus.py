#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted seed corpora of fuzz-virtqueue.c and fuzz-vhost-user.c
(tests/fuzz/corpus/virtqueue/ and tests/fuzz/corpus/vhost-user/); the input
formats are described at the top of each target.

    tests/fuzz/make-virtio-corpus.py [OUTDIR]   (default tests/fuzz/corpus)
"""

import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")

# --- fuzz-virtqueue --------------------------------------------------------

PACKED, INDIRECT, EVENT_IDX, BLK, INFLIGHT, RO, KILLED = 1, 2, 4, 8, 16, 32, 64
GPA0, GPA1, RSIZE = 0x1000, 0x9000, 0x8000
DESC, AVAIL, USED = 0x000, 0x800, 0xC00
NEXT, WRITE, IND = 1, 2, 4
P_AVAIL, P_USED = 1 << 7, 1 << 15


class VQ:
    def __init__(self, flags=0, log2=3, max_iov=0, base=0, bump=0):
        self.hdr = struct.pack("<BBBIH", flags, log2, max_iov, base, bump)
        self.num = 1 << log2
        self.ram = bytearray(2 * RSIZE)
        self.avail_idx = 0
        self.inflight = None

    def w(self, gpa, data):
        off = gpa - GPA0 if gpa < GPA1 else RSIZE + gpa - GPA1
        self.ram[off:off + len(data)] = data

    def desc(self, i, addr, ln, flags, nxt=0):
        self.w(GPA0 + DESC + 16 * i, struct.pack("<QIHH", addr, ln, flags, nxt))

    def pdesc(self, i, addr, ln, flags, buf_id, wrap=True):
        f = flags | ((P_AVAIL) if wrap else P_USED)
        self.w(GPA0 + DESC + 16 * i, struct.pack("<QIHH", addr, ln, buf_id, f))

    def avail(self, head):
        self.w(GPA0 + AVAIL + 4 + 2 * (self.avail_idx % self.num), struct.pack("<H", head))
        self.avail_idx += 1
        self.w(GPA0 + AVAIL + 2, struct.pack("<H", self.avail_idx & 0xFFFF))

    def blkreq(self, i, rtype, sector, data_len, data_write, at, ndesc=3):
        """A virtio-blk request in descriptors i.. (split); buffers at gpa."""
        self.w(at, struct.pack("<IIQ", rtype, 0, sector))
        if ndesc == 3:
            self.desc(i, at, 16, NEXT, i + 1)
            self.desc(i + 1, at + 0x100, data_len, NEXT | (WRITE if data_write else 0), i + 2)
            self.desc(i + 2, at + 0x100 + data_len, 1, WRITE)
        else:  # header and data in one descriptor
            self.desc(i, at, 16 + data_len, NEXT, i + 1)
            self.desc(i + 1, at + 0x100 + data_len, 1, WRITE)
        self.avail(i)

    def bytes(self):
        end = len(self.ram)
        while end > 0 and self.ram[end - 1] == 0:
            end -= 1
        return self.hdr + (self.inflight or b"") + bytes(self.ram[:max(end, 1)])


def packed_region(num, free_head=None, old_free_head=None, used=(0, 1), old_used=None,
                  chains=(), version=1, links=None):
    """A QueueRegionPacked (vhost-user.rst "Inflight I/O tracking") for a
    ring of @num: @chains are (head entry, [(addr, len, flags, id)...],
    counter) taking consecutive entries, in flight; the free list is every
    other entry in order unless @links ({entry: next}) says otherwise."""
    reg = bytearray((32 + 32 * num + 63) & ~63)
    taken = set()
    for head, descs, counter in chains:
        for k, (addr, ln, flags, bid) in enumerate(descs):
            e = head + k
            taken.add(e)
            first = k == 0
            struct.pack_into("<BxHHHQHHIQ", reg, 32 + 32 * e, 1 if first else 0, e + 1,
                             head + len(descs) - 1 if first else 0, len(descs) if first else 0,
                             counter if first else 0, bid, flags, ln, addr)
    free = [e for e in range(num) if e not in taken]
    for a, b in zip(free, free[1:] + [num]):
        struct.pack_into("<H", reg, 32 + 32 * a + 2, b)
    for e, nxt in (links or {}).items():
        struct.pack_into("<H", reg, 32 + 32 * e + 2, nxt)
    fh = free[0] if free else num
    free_head = fh if free_head is None else free_head
    old_free_head = free_head if old_free_head is None else old_free_head
    old_used = used if old_used is None else old_used
    struct.pack_into("<QHHHHHHBB", reg, 0, 0, version, num, free_head, old_free_head, used[0],
                     old_used[0], used[1], old_used[1])
    return reg


def virtqueue_cases():
    c = {}
    v = VQ()
    v.desc(0, GPA0 + 0x2000, 64, NEXT, 1)
    v.desc(1, GPA0 + 0x3000, 64, WRITE)
    v.avail(0)
    c["split-raw-chain"] = v

    v = VQ(BLK)
    v.blkreq(0, 0, 8, 4096, True, GPA0 + 0x2000)
    v.blkreq(3, 1, 16, 512, False, GPA0 + 0x4000)
    c["split-blk-in-out"] = v

    v = VQ(BLK, log2=4)
    for k, (t, ln, wr, data) in enumerate([(4, 0, False, b""), (8, 20, True, b""),
                                           (11, 16, False, struct.pack("<QII", 0, 8, 0)),
                                           (13, 16, False, struct.pack("<QII", 8, 8, 1)),
                                           (3, 16, True, b"")]):
        at = GPA0 + 0x2000 + 0x400 * k
        v.w(at + 0x100, data)
        if ln:
            v.blkreq(3 * k, t, 0, ln, wr, at)
        else:
            v.w(at, struct.pack("<IIQ", t, 0, 0))
            v.desc(3 * k, at, 16, NEXT, 3 * k + 1)
            v.desc(3 * k + 1, at + 0x100, 1, WRITE)
            v.avail(3 * k)
    c["split-blk-types"] = v

    v = VQ(BLK)
    v.blkreq(0, 0, 0, 512, True, GPA0 + 0x2000, ndesc=2)
    c["split-blk-2desc"] = v

    v = VQ(BLK | INDIRECT)
    at = GPA0 + 0x2000
    v.w(at, struct.pack("<IIQ", 0, 0, 0))
    tbl = GPA0 + 0x1800
    v.w(tbl, struct.pack("<QIHH", at, 16, NEXT, 1) + struct.pack("<QIHH", at + 0x100, 512,
                                                                   NEXT | WRITE, 2)
        + struct.pack("<QIHH", at + 0x400, 1, WRITE, 0))
    v.desc(0, tbl, 48, IND)
    v.avail(0)
    c["split-blk-indirect"] = v

    v = VQ()
    v.desc(0, GPA0 + 0x2000, 16, NEXT, 1)
    v.desc(1, GPA0 + 0x2000, 16, NEXT, 0)
    v.avail(0)
    c["split-loop"] = v

    v = VQ()
    v.desc(0, GPA0 + 0x2000, 16, NEXT, 200)
    v.avail(0)
    c["split-next-out-of-range"] = v

    v = VQ()
    v.desc(0, GPA0 + 0x2000, 16, NEXT | WRITE, 1)
    v.desc(1, GPA0 + 0x2000, 16, 0)
    v.avail(0)
    c["split-readable-after-writable"] = v

    v = VQ()
    v.desc(0, 0x10, 16, 0)
    v.avail(0)
    c["split-outside-memory"] = v

    v = VQ()
    v.desc(0, GPA1 - 0x10, 0x20, WRITE)
    v.desc(1, GPA1 + RSIZE - 8, 0x10, WRITE)
    v.avail(0)
    v.avail(1)
    c["split-spans-regions"] = v

    v = VQ(INDIRECT)
    v.w(GPA0 + 0x1800, struct.pack("<QIHH", GPA0 + 0x1800, 16, IND, 0))
    v.desc(0, GPA0 + 0x1800, 16, IND)
    v.avail(0)
    c["split-nested-indirect"] = v

    v = VQ()
    v.desc(0, GPA0 + 0x1800, 16, IND)
    v.avail(0)
    c["split-indirect-not-negotiated"] = v

    v = VQ()
    v.w(GPA0 + AVAIL + 2, struct.pack("<H", 100))
    c["split-avail-too-far"] = v

    v = VQ()
    v.w(GPA0 + AVAIL + 4, struct.pack("<H", 99))
    v.w(GPA0 + AVAIL + 2, struct.pack("<H", 1))
    c["split-head-out-of-range"] = v

    v = VQ(BLK)
    v.desc(0, GPA0 + 0x2000, 16, 0)
    v.avail(0)
    c["split-blk-missing-status"] = v

    v = VQ(EVENT_IDX, base=0xFFFE, bump=3)
    v.avail_idx = 0xFFFE
    v.desc(0, GPA0 + 0x2000, 16, WRITE)
    v.avail(0)
    v.avail(0)
    c["split-event-idx-wrap"] = v

    v = VQ(max_iov=2)
    v.desc(0, GPA0 + 0x2000, 16, NEXT, 1)
    v.desc(1, GPA0 + 0x3000, 16, NEXT, 2)
    v.desc(2, GPA0 + 0x4000, 16, WRITE)
    v.avail(0)
    c["split-too-many-iov"] = v

    v = VQ(BLK | RO)
    v.blkreq(0, 1, 0, 512, False, GPA0 + 0x2000)
    c["split-blk-read-only-write"] = v

    v = VQ(BLK | INFLIGHT)
    v.blkreq(0, 0, 0, 512, True, GPA0 + 0x2000)
    v.blkreq(3, 1, 8, 512, False, GPA0 + 0x3000)
    reg = bytearray((16 + 16 * 8 + 63) & ~63)
    reg[0:16] = struct.pack("<QHHHH", 0, 1, 8, 0, 0)
    reg[16 + 48:32 + 48] = struct.pack("<B5xHQ", 1, 0, 7)
    reg[16:32] = struct.pack("<B5xHQ", 1, 0, 9)
    v.inflight = bytes(reg)
    c["split-inflight-resubmit"] = v

    v = VQ(PACKED)
    v.pdesc(0, GPA0 + 0x2000, 64, NEXT, 0)
    v.pdesc(1, GPA0 + 0x3000, 64, WRITE, 7)
    c["packed-raw-chain"] = v

    v = VQ(PACKED | BLK)
    v.w(GPA0 + 0x2000, struct.pack("<IIQ", 0, 0, 8))
    v.pdesc(0, GPA0 + 0x2000, 16, NEXT, 0)
    v.pdesc(1, GPA0 + 0x2100, 4096, NEXT | WRITE, 0)
    v.pdesc(2, GPA0 + 0x3100, 1, WRITE, 5)
    c["packed-blk-in"] = v

    v = VQ(PACKED | BLK | INDIRECT)
    at = GPA0 + 0x2000
    v.w(at, struct.pack("<IIQ", 1, 0, 0))
    v.w(GPA0 + 0x1800, struct.pack("<QIHH", at, 16, 0, 0) +
        struct.pack("<QIHH", at + 0x100, 512, 0, 0) + struct.pack("<QIHH", at + 0x400, 1, WRITE, 0))
    v.pdesc(0, GPA0 + 0x1800, 48, IND, 3)
    c["packed-blk-indirect"] = v

    v = VQ(PACKED, base=0x7FFF)
    v.pdesc(0, GPA0 + 0x2000, 64, 0, 0)
    c["packed-bad-base"] = v

    # Regression: a packed ring base out of range broke the queue while the
    # device stayed out of NEEDS_RESET (found by the first campaign).
    v = VQ(PACKED | INDIRECT | BLK, base=0xFFFF0000)
    v.pdesc(0, GPA0 + 0x2000, 16, 0, 0)
    c["crash-packed-bad-base-not-needs-reset"] = v

    v = VQ(PACKED, log2=1)
    v.pdesc(0, GPA0 + 0x2000, 64, NEXT, 0)
    v.pdesc(1, GPA0 + 0x2000, 64, NEXT, 0)
    c["packed-chain-longer-than-ring"] = v

    # Packed inflight regions (8 entries, 320 bytes), and the ring base QEMU
    # sends after a back end died (its own, from the start: slot 0, lap 1).
    STALE = 0x8000 | 0x8000 << 16
    # Two chains a dead back end took (the ring shows neither any more),
    # resubmitted oldest first from the region's copies, then a new chain
    # from the ring.
    chain_a = [(GPA0 + 0x2000, 64, NEXT | P_AVAIL, 0), (GPA0 + 0x3000, 64, WRITE | P_AVAIL, 4)]
    chain_b = [(GPA0 + 0x2400, 16, P_AVAIL, 9)]
    v = VQ(PACKED | INFLIGHT, base=STALE)
    v.inflight = bytes(packed_region(8, used=(2, 1), chains=[(0, chain_a, 7), (2, chain_b, 3)]))
    v.pdesc(5, GPA0 + 0x2800, 16, WRITE, 6)
    c["packed-inflight-resubmit"] = v

    v = VQ(PACKED | INFLIGHT | BLK | INDIRECT, base=STALE)
    at = GPA0 + 0x2000
    v.w(at, struct.pack("<IIQ", 0, 0, 8))
    # A packed indirect table: addr, len, id, flags (2.8.19).
    v.w(GPA0 + 0x1800, struct.pack("<QIHH", at, 16, 0, 0) +
        struct.pack("<QIHH", at + 0x100, 512, 0, WRITE) +
        struct.pack("<QIHH", at + 0x400, 1, 0, WRITE))
    v.inflight = bytes(packed_region(8, used=(7, 1), chains=[
        (3, [(GPA0 + 0x1800, 48, IND | P_AVAIL, 2)], 0),
        (4, [(at, 16, NEXT | P_AVAIL, 0), (at + 0x100, 512, NEXT | WRITE | P_AVAIL, 0),
             (at + 0x400, 1, WRITE | P_AVAIL, 5)], 1)]))
    c["packed-blk-inflight-resubmit"] = v

    # A completion cut short: chain 0 back on the free list and used_idx
    # moved (3), old_* not; its used descriptor reached slot 0: committed.
    v = VQ(PACKED | INFLIGHT, base=STALE)
    reg = packed_region(8, free_head=0, old_free_head=3, used=(3, 1), old_used=(0, 1),
                        chains=[(0, [(GPA0 + 0x2000, 16, NEXT, 1), (GPA0 + 0x2100, 16, NEXT, 1),
                                     (GPA0 + 0x2200, 16, WRITE, 1)], 0)], links={2: 3})
    reg[32] = 1
    v.inflight = bytes(reg)
    v.w(GPA0 + DESC + 8, struct.pack("<IHH", 16, 1, P_AVAIL | P_USED))
    c["packed-inflight-commit"] = v
    # The same, not published: rolled back, the chain runs again.
    v = VQ(PACKED | INFLIGHT, base=STALE)
    v.inflight = bytes(reg)
    for k in range(3):
        v.pdesc(k, GPA0 + 0x2000 + 0x100 * k, 16, NEXT if k < 2 else WRITE, 1)
    c["packed-inflight-rollback"] = v

    # Regions that do not hold together: refused (tracking stays off).
    bad = {
        "free-loop": packed_region(8, links={5: 2}),
        "unaccounted": packed_region(8, links={3: 5}),
        "chain-overlap": packed_region(8, chains=[(0, chain_a, 0), (1, chain_b, 1)]),
        "chain-past-last": packed_region(8, chains=[(0, chain_a + chain_b, 0)], links={}),
        "used-out-of-range": packed_region(8, used=(8, 1)),
        "wrap": packed_region(8, used=(0, 2)),
        "free-head": packed_region(8, free_head=9),
    }
    reg = packed_region(8, chains=[(0, chain_a, 0)])
    struct.pack_into("<H", reg, 32 + 6, 0)  # a chain of no entries
    bad["chain-empty"] = reg
    reg = packed_region(8, chains=[(0, chain_a, 0)])
    struct.pack_into("<H", reg, 32 + 4, 0)  # last is not where it ends
    bad["chain-last"] = reg
    for name, reg in bad.items():
        v = VQ(PACKED | INFLIGHT, base=STALE)
        v.inflight = bytes(reg)
        v.pdesc(0, GPA0 + 0x2000, 16, WRITE, 1)
        c["packed-inflight-bad-" + name] = v
    # A back end killed with every other request in flight, and a new one
    # that starts over from the region: fresh regions (5 chains over the
    # wrap, all 8 slots, one indirect), and one with chains a previous back
    # end left.
    v = VQ(PACKED | INFLIGHT | INDIRECT | KILLED, base=6 | 0x8000 | (6 | 0x8000) << 16)
    v.inflight = bytes((32 + 32 * 8 + 63) & ~63)
    slot, wrap = 6, True
    for bid, n in ((1, 2), (2, 1), (3, 3), (4, 1), (5, 1)):
        for k in range(n):
            last = k + 1 == n
            if bid == 4:
                v.w(GPA0 + 0x1800, struct.pack("<QIHH", GPA0 + 0x2000, 16, 0, 0) +
                    struct.pack("<QIHH", GPA0 + 0x2100, 16, 0, WRITE))
                v.pdesc(slot, GPA0 + 0x1800, 32, IND, bid, wrap)
            else:
                v.pdesc(slot, GPA0 + 0x2000 + 0x100 * k, 16, WRITE if last else NEXT, bid, wrap)
            slot += 1
            if slot == 8:
                slot, wrap = 0, not wrap
    c["packed-killed"] = v
    v = VQ(INFLIGHT | KILLED)
    v.inflight = bytes((16 + 16 * 8 + 63) & ~63)
    for i in range(4):
        v.desc(2 * i, GPA0 + 0x2000 + 0x100 * i, 16, NEXT, 2 * i + 1)
        v.desc(2 * i + 1, GPA0 + 0x3000 + 0x100 * i, 16, WRITE)
        v.avail(2 * i)
    c["split-killed"] = v
    v = VQ(PACKED | INFLIGHT | KILLED, base=STALE)
    v.inflight = bytes(packed_region(8, used=(2, 1), chains=[(0, chain_a, 7), (2, chain_b, 3)]))
    for k in range(3):
        v.pdesc(5 + k, GPA0 + 0x2800 + 0x100 * k, 16, WRITE, 10 + k)
    c["packed-killed-resubmit"] = v
    # Holds together, but a copy names memory outside the guest's: the
    # queue breaks when it is resubmitted.
    v = VQ(PACKED | INFLIGHT | BLK, base=STALE)
    v.inflight = bytes(packed_region(8, used=(0, 1), chains=[
        (0, [(0x100000, 16, NEXT | P_AVAIL, 0), (GPA0 + 0x2000, 1, WRITE | P_AVAIL, 0)], 0)]))
    c["packed-inflight-copy-outside-memory"] = v
    return {k: x.bytes() for k, x in c.items()}


# --- fuzz-vhost-user -------------------------------------------------------

MEMFD, SHORT = 4, 8
(GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE) = 1, 2, 3, 4, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = 15, 16, 17
SET_VRING_ENABLE, SET_BACKEND_REQ_FD, GET_CONFIG, SET_CONFIG = 18, 21, 24, 25
GET_INFLIGHT_FD, SET_INFLIGHT_FD = 31, 32
UVA = 0x7F0000000000


def rec(data, nfds=0, mem=False):
    c = nfds | (MEMFD if mem else 0)
    return struct.pack("<BH", c, len(data)) + data


def msg(req, payload=b"", flags=1, nfds=0, mem=False):
    return rec(struct.pack("<III", req, flags, len(payload)) + payload, nfds, mem)


def u64(req, v, **kw):
    return msg(req, struct.pack("<Q", v), **kw)


def state(req, idx, num):
    return msg(req, struct.pack("<II", idx, num))


def mem_table(size=0x10000, gpa=0, off=0):
    return msg(SET_MEM_TABLE, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", gpa, size, UVA, off),
               nfds=1, mem=True)


def ring(q=0, num=16, desc=0, avail=0x1000, used=0x2000, features=1 << 32 | 1 << 30):
    return (u64(SET_FEATURES, features) + mem_table() + state(SET_VRING_NUM, q, num) +
            state(SET_VRING_BASE, q, 0) +
            msg(SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, UVA + desc, UVA + used, UVA + avail, 0)) +
            u64(SET_VRING_CALL, q, nfds=1) + u64(SET_VRING_ERR, q, nfds=1) +
            u64(SET_VRING_KICK, q, nfds=1) + state(SET_VRING_ENABLE, q, 1))


def inflight_msg(req, size, off=0, nq=1, qs=16, **kw):
    return msg(req, struct.pack("<QQHHI", size, off, nq, qs, 0), **kw)


def vhost_user_cases():
    c = {}
    c["negotiate"] = (msg(GET_FEATURES) + msg(GET_PROTOCOL_FEATURES) +
                      u64(SET_PROTOCOL_FEATURES, 0x1229) + msg(GET_QUEUE_NUM) + msg(SET_OWNER) +
                      msg(GET_CONFIG, struct.pack("<III", 0, 60, 0) + bytes(60)))
    c["ring-setup"] = msg(GET_FEATURES) + u64(SET_PROTOCOL_FEATURES, 0x1209) + ring()
    c["ring-stop"] = ring() + state(GET_VRING_BASE, 0, 0) + ring()
    c["two-queues"] = ring(0) + ring(1, desc=0x4000, avail=0x5000, used=0x6000)
    c["inflight"] = (u64(SET_PROTOCOL_FEATURES, 0x1209) + inflight_msg(GET_INFLIGHT_FD, 0) +
                     inflight_msg(SET_INFLIGHT_FD, 0x1000, nfds=1, mem=True) + ring())
    c["inflight-bad"] = (inflight_msg(GET_INFLIGHT_FD, 0, nq=0) +
                         inflight_msg(SET_INFLIGHT_FD, 0x1000, off=5, nfds=1, mem=True))
    c["inflight-too-small"] = inflight_msg(SET_INFLIGHT_FD, 0x10, nfds=1, mem=True) + ring()
    c["inflight-past-eof"] = inflight_msg(SET_INFLIGHT_FD, 0x100000, qs=1024, nfds=1, mem=True)
    c["backend-channel"] = (u64(SET_PROTOCOL_FEATURES, 0x229) + msg(SET_BACKEND_REQ_FD, nfds=1) +
                            ring())
    # Regression: a memory region larger than its memfd, with the rings in
    # the missing part, used to be mapped and then fault (SIGBUS).
    c["crash-mem-table-past-eof"] = (
        u64(SET_FEATURES, 1 << 32) +
        msg(SET_MEM_TABLE, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 0x40000, UVA, 0),
            nfds=1, mem=True) + state(SET_VRING_NUM, 0, 16) +
        msg(SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, UVA + 0x20000, UVA + 0x22000,
                                        UVA + 0x21000, 0)) + u64(SET_VRING_KICK, 0, nfds=1))
    c["bad-version"] = rec(struct.pack("<III", 1, 0, 0))
    c["huge-size"] = rec(struct.pack("<III", 1, 1, 1 << 30))
    c["unknown-request"] = msg(200) + msg(GET_FEATURES)
    c["truncated"] = rec(struct.pack("<III", SET_FEATURES, 1, 8) + b"\x01\x02")
    c["unexpected-fds"] = msg(GET_FEATURES, nfds=2)
    c["mem-table-fd-count"] = msg(SET_MEM_TABLE, struct.pack("<II", 2, 0) + bytes(64), nfds=1,
                                  mem=True)
    c["vring-num-bad"] = state(SET_VRING_NUM, 0, 3) + state(SET_VRING_NUM, 9, 16)
    c["config"] = (msg(GET_CONFIG, struct.pack("<III", 250, 6, 0) + bytes(6)) +
                   msg(SET_CONFIG, struct.pack("<III", 32, 1, 0) + b"\x00") +
                   msg(GET_CONFIG, struct.pack("<III", 0, 4096, 0)))
    c["reset-owner"] = ring() + msg(RESET_OWNER) + ring()
    c["kick-polling"] = ring() + u64(SET_VRING_KICK, 0x100)
    c["packed-ring"] = ring(features=1 << 32 | 1 << 30 | 1 << 34)
    packed = 1 << 32 | 1 << 30 | 1 << 34
    c["packed-get-inflight"] = (u64(SET_PROTOCOL_FEATURES, 0x1209) + u64(SET_FEATURES, packed) +
                                inflight_msg(GET_INFLIGHT_FD, 0) +
                                inflight_msg(SET_INFLIGHT_FD, 576, nfds=1, mem=True) +
                                ring(features=packed))
    # A region laid out for split rings, then the front end negotiates a
    # packed ring: too small for it (the ring runs untracked).
    c["packed-inflight-too-small"] = (inflight_msg(SET_INFLIGHT_FD, 320, nfds=1, mem=True) +
                                      ring(features=packed))
    # A split ring tracked, then the front end switches to packed rings.
    c["packed-features-mid-run"] = (u64(SET_PROTOCOL_FEATURES, 0x1209) +
                                    inflight_msg(SET_INFLIGHT_FD, 0x1000, nfds=1, mem=True) +
                                    ring() + u64(SET_FEATURES, packed) +
                                    u64(SET_VRING_KICK, 0, nfds=1))
    # Regions the front end wrote: the memfds hold the input, repeated, so
    # the region (at offset 4096) sits in the payload of a message nobody
    # reads (GET_FEATURES ignores it).
    chain = [(0x3000, 16, 1 | 1 << 7, 0), (0x3100, 512, 3 | 1 << 7, 0), (0x3400, 1, 2 | 1 << 7, 7)]
    regions = {
        "packed-inflight-resubmit": packed_region(16, used=(3, 1), chains=[(0, chain, 0)]),
        "packed-inflight-bad-loop": packed_region(16, links={9: 4}),
        "packed-inflight-bad-chain": packed_region(16, chains=[(0, chain, 0), (2, chain, 1)]),
    }
    for name, reg in regions.items():
        first = msg(GET_FEATURES, bytes(4000))
        pad = 4096 - len(first) - 15
        second = msg(GET_FEATURES, bytes(pad) + bytes(reg) + bytes(4000 - pad - len(reg)))
        c[name] = (first + second + u64(SET_FEATURES, packed) +
                   inflight_msg(SET_INFLIGHT_FD, len(reg), off=4096, nfds=1, mem=True) +
                   ring(features=packed))
    c["ring-outside-memory"] = (mem_table() + state(SET_VRING_NUM, 0, 16) +
                                msg(SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, 0, 0, 0, 0)))
    c["need-reply"] = (u64(SET_PROTOCOL_FEATURES, 0x8) + msg(SET_OWNER, flags=9) +
                       u64(SET_FEATURES, 1 << 32, flags=9))
    return c


def write(sub, cases):
    d = os.path.join(OUT, sub)
    os.makedirs(d, exist_ok=True)
    for name, data in cases.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


write("virtqueue", virtqueue_cases())
write("vhost-user", vhost_user_cases())
