# SPDX-License-Identifier: MIT
"""Scenario for tests/hw/virtio-qtest.sh: the cases of QEMU's
tests/qtest/virtio-blk-test.c (basic with 3- and 2-descriptor layouts,
indirect, config, resize with the config interrupt, idx, a nonexistent
queue, the invalid discard/write-zeroes requests, MSI-X and INTx) plus
multiqueue, NEEDS_RESET, queue reset, bus mastering, the drive's
rerror=/werror= policies (blkdebug errors; stop with QMP cont retrying),
kicks while the machine is stopped, the transitional device's legacy
interface, and requests in flight (a slow null-co drive) across a legacy
reset, a bus-master clear, QMP stop and a system reset at port 0xCF9,
played by a small virtio-pci driver over the
qtest protocol against `vdisk machine` and QEMU 7.2's `-device
virtio-blk-pci,disable-legacy=on` (and `=off`) with the same images.

Each case asserts what virtio-blk-test asserts and returns what it observed:
status bytes, used-ring entries, ISR values, which MSI-X messages arrived,
the INTx line, configuration bytes, data digests.  The observations of the
two machines must be equal after the masks in MASKS (each with its reason).

argv: vdisk qemu tmpdir [case...]; "-" for a missing vdisk or qemu runs the
cases against the other alone.
"""

import hashlib
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qmp import QMP  # noqa: E402
from qtest import QTest, make_halt_bios, print_diff  # noqa: E402

VDISK, QEMU, TMP = sys.argv[1:4]
ONLY = set(sys.argv[4:])

IMG_SIZE = 64 << 20
DEVFN = 0x20  # 04.0
PIIX3_DEVFN = 0x08
INTX_IRQ = 11  # slot 4 INTA -> PIRQD (i440FX swizzle), routed to ISA IRQ 11
BAR4_ADDR = 0xE0000000
BAR1_ADDR = 0xE0100000
BAR0_PORT = 0xC100  # legacy I/O BAR of the transitional device
SERIAL = "vdisk-virtio-test"
TIMEOUT = 10.0

# Device status (virtio 1.2 section 2.1), features (6, 5.2.3).
ACK, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET = 1, 2, 4, 8, 64
F_INDIRECT, F_EVENT_IDX, F_VERSION_1, F_PACKED, F_RING_RESET = 28, 29, 32, 34, 40
F_BLK_SEG_MAX, F_BLK_GEOMETRY, F_BLK_BLK_SIZE, F_BLK_FLUSH, F_BLK_MQ = 2, 4, 6, 9, 12
F_BLK_DISCARD, F_BLK_WRITE_ZEROES = 13, 14
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
DESC_NEXT, DESC_WRITE, DESC_INDIRECT = 1, 2, 4

# struct virtio_pci_common_cfg (4.1.4.3).
DFSELECT, DF, GFSELECT, GF, MSIX_CONFIG, NUMQ, STATUS, CFGGEN = 0, 4, 8, 12, 16, 18, 20, 21
Q_SELECT, Q_SIZE, Q_MSIX, Q_ENABLE, Q_NOFF = 22, 24, 26, 28, 30
Q_DESC, Q_DRIVER, Q_DEVICE, Q_RESET = 32, 40, 48, 58
NO_VECTOR = 0xFFFF

# Observations that legitimately differ, by case and key, with the reason.
# The value is applied to both sides before comparing: a function of the
# observed value (a mask) or None (not compared).
MASKS = {
    ("config", "device_features"): (
        lambda f: f & ~(1 << F_BLK_GEOMETRY),
        "GEOMETRY (4): vdisk reports no CHS geometry (QEMU's is a guess from "
        "the size); every other offered bit must match",
    ),
    ("legacy_config", "host_features"): (
        lambda f: f & ~((1 << F_BLK_GEOMETRY) | (1 << 24)),
        "GEOMETRY (4) as in config; NOTIFY_ON_EMPTY (24): QEMU offers it to "
        "legacy drivers, vdisk does not implement it",
    ),
    ("legacy_config", "blk_config"): (
        lambda c: c[:16] + c[20:26] + c[28:],
        "geometry and min_io_size, as in config",
    ),
    ("config", "blk_config"): (
        lambda c: c[:16] + c[20:26] + c[28:],
        "geometry (16-19): no CHS geometry in vdisk (see GEOMETRY); min_io_size "
        "(26-27): vdisk reports the block layer's request alignment in blocks "
        "(1), QEMU its min_io_size property (default 0)",
    ),
}


class EventQMP(QMP):
    """tests/lib/qmp.py's client, keeping whole events (with their data)."""

    def __init__(self, path):
        super().__init__(path, whole_events=True)


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def digest(b):
    return hashlib.sha256(b).hexdigest()[:16]


class Guest:
    """A virtio-pci driver: PCI setup, capabilities, feature negotiation,
    split virtqueues, MSI-X messages into guest RAM (as libqos does)."""

    def __init__(self, qt, qmp=None, msix=False, legacy=None):
        """legacy: None for the modern device; False for the transitional
        device driven through its modern interface, True through BAR0."""
        self.qt = qt
        self.qmp = qmp
        self.obs = []
        self.next_alloc = 0x100000
        self.msix = msix
        self.legacy = bool(legacy)
        qt.irq_intercept_in("ioapic")
        ids = qt.pci_cfg_readl(DEVFN, 0)
        want = 0x10421AF4 if legacy is None else 0x10011AF4
        check(ids == want, "no virtio-blk-pci %08x at 04.0 (0x%08x)" % (want, ids))
        qt.pci_cfg_writel(DEVFN, 0x20, BAR4_ADDR)
        qt.pci_cfg_writel(DEVFN, 0x24, 0)
        qt.pci_cfg_writel(DEVFN, 0x14, BAR1_ADDR)
        if legacy is not None:
            qt.pci_cfg_writel(DEVFN, 0x10, BAR0_PORT)
        qt.pci_cfg_writew(DEVFN, 0x04, 0x07)  # I/O, memory, bus master
        # Route PIRQD to IRQ 11 for INTx (PIIX3 PIRQRC at 0x60..0x63).
        qt.pci_cfg_writeb(PIIX3_DEVFN, 0x63, INTX_IRQ)
        self.caps = {}
        p = qt.pci_cfg_readb(DEVFN, 0x34)
        while p:
            cid = qt.pci_cfg_readb(DEVFN, p)
            if cid == 0x09:
                typ = qt.pci_cfg_readb(DEVFN, p + 3)
                bar = qt.pci_cfg_readb(DEVFN, p + 4)
                off = qt.pci_cfg_readl(DEVFN, p + 8)
                check(typ == 5 or bar == 4, "capability %d not in BAR4" % typ)
                self.caps[typ] = off
                if typ == 2:
                    self.notify_mult = qt.pci_cfg_readl(DEVFN, p + 16)
            elif cid == 0x11:
                self.msix_cap = p
            p = qt.pci_cfg_readb(DEVFN, p + 1)
        self.common = BAR4_ADDR + self.caps[1]
        self.isr_addr = BAR4_ADDR + self.caps[3]
        self.device = BAR4_ADDR + self.caps[4]
        self.notify = BAR4_ADDR + self.caps[2]
        self.vectors = {}
        if msix:
            ctl = qt.pci_cfg_readw(DEVFN, self.msix_cap + 2)
            qt.pci_cfg_writew(DEVFN, self.msix_cap + 2, ctl | 0x8000)

    def note(self, key, value):
        self.obs.append((key, value))

    def malloc(self, n, align=16):
        a = (self.next_alloc + align - 1) & ~(align - 1)
        self.next_alloc = a + n
        return a

    # -- registers --
    def cr8(self, off):
        return self.qt.readb(self.common + off)

    def cr16(self, off):
        return self.qt.readw(self.common + off)

    def cr32(self, off):
        return self.qt.readl(self.common + off)

    def cw8(self, off, v):
        self.qt.writeb(self.common + off, v)

    def cw16(self, off, v):
        self.qt.writew(self.common + off, v)

    def cw32(self, off, v):
        self.qt.writel(self.common + off, v)

    def cw64(self, off, v):
        self.cw32(off, v & 0xFFFFFFFF)
        self.cw32(off + 4, v >> 32)

    def status(self):
        if self.legacy:
            return self.qt.inb(BAR0_PORT + 18)
        return self.cr8(STATUS)

    def set_status(self, v):
        if self.legacy:
            self.qt.outb(BAR0_PORT + 18, v)
        else:
            self.cw8(STATUS, v)

    def isr(self):
        if self.legacy:
            return self.qt.inb(BAR0_PORT + 19)
        return self.qt.readb(self.isr_addr)

    def legacy_config_port(self):
        return BAR0_PORT + (24 if self.msix else 20)

    def config(self, off, n):
        if self.legacy:
            return bytes(self.qt.inb(self.legacy_config_port() + off + i) for i in range(n))
        return bytes(self.qt.readb(self.device + off + i) for i in range(n))

    def capacity(self):
        if self.legacy:
            p = self.legacy_config_port()
            return self.qt.inl(p) | self.qt.inl(p + 4) << 32
        return self.qt.readl(self.device) | self.qt.readl(self.device + 4) << 32

    def features(self):
        if self.legacy:
            return self.qt.inl(BAR0_PORT)
        f = 0
        for sel in (0, 1):
            self.cw32(DFSELECT, sel)
            f |= self.cr32(DF) << (32 * sel)
        return f

    # -- MSI-X: vector v writes data 0x4000 + v to its own guest dword --
    def setup_vector(self, v):
        addr = self.malloc(4, 4)
        self.qt.writel(addr, 0)
        entry = BAR1_ADDR + 16 * v
        self.qt.writel(entry, addr & 0xFFFFFFFF)
        self.qt.writel(entry + 4, addr >> 32)
        self.qt.writel(entry + 8, 0x4000 + v)
        self.qt.writel(entry + 12, 0)  # unmask
        self.vectors[v] = addr

    def msi_fired(self, v):
        """True (and re-armed) if vector v's message arrived."""
        if self.qt.readl(self.vectors[v]) == 0x4000 + v:
            self.qt.writel(self.vectors[v], 0)
            return True
        return False

    # -- initialisation (3.1.1) --
    def init_legacy(self, want, queues=1):
        """4.1.4.10 / 3.1.2: no FEATURES_OK, queues by page frame number."""
        self.set_status(0)
        check(self.status() == 0, "status not 0 after reset")
        self.set_status(ACK)
        self.set_status(ACK | DRIVER)
        offered = self.features()
        check(offered & (1 << 30), "BAD_FEATURE not offered on the legacy interface")
        self.acked = offered & want & 0xFFFFFFFF
        self.qt.outl(BAR0_PORT + 4, self.acked)
        if self.msix:
            for v in range(queues + 1):
                self.setup_vector(v)
            self.qt.outw(BAR0_PORT + 20, 0)
            check(self.qt.inw(BAR0_PORT + 20) == 0, "config vector refused")
        self.vqs = [VQ(self, q, vector=(q + 1 if self.msix else None)) for q in range(queues)]
        self.set_status(ACK | DRIVER | DRIVER_OK)
        return self.acked

    def init(self, want, queues=1, vectors=True, driver_ok=True):
        if self.legacy:
            return self.init_legacy(want, queues)
        self.set_status(0)
        check(self.status() == 0, "status not 0 after reset")
        self.set_status(ACK)
        self.set_status(ACK | DRIVER)
        offered = self.features()
        check(offered & (1 << F_VERSION_1), "VERSION_1 not offered")
        acked = offered & want
        for sel in (0, 1):
            self.cw32(GFSELECT, sel)
            self.cw32(GF, (acked >> (32 * sel)) & 0xFFFFFFFF)
        self.set_status(ACK | DRIVER | FEATURES_OK)
        check(self.status() & FEATURES_OK, "FEATURES_OK refused")
        self.acked = acked
        if self.msix and vectors:
            for v in range(queues + 1):
                self.setup_vector(v)
            self.cw16(MSIX_CONFIG, 0)
            check(self.cr16(MSIX_CONFIG) == 0, "config vector refused")
        cls = PackedVQ if acked & (1 << F_PACKED) else VQ
        self.vqs = [cls(self, q, vector=(q + 1 if self.msix and vectors else None))
                    for q in range(queues)]
        if driver_ok:
            self.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK)
        return acked

    # -- waiting --
    def poll(self, cond, timeout=TIMEOUT):
        end = time.monotonic() + timeout
        while True:
            r = cond()
            if r:
                return r
            if time.monotonic() > end:
                return r
            time.sleep(0.0005)

    def wait_interrupt(self, vq=None, config=False):
        """Wait for a queue or config interrupt; returns what signalled it:
        ('msix', vector) or ('isr', value, intx_line_before_read)."""
        if self.msix:
            v = 0 if config else vq.vector
            ok = self.poll(lambda: self.msi_fired(v))
            check(ok, "no MSI-X message on vector %d" % v)
            return ("msix", v)
        # INTx: wait for the used element (for a queue), then for the line
        # (QEMU may raise it a little after the used ring is updated), read
        # the ISR (which clears it and lowers the line) and sample again.
        if not config:
            ok = self.poll(vq.has_used)
            check(ok, "no used element")
        line = self.poll(lambda: self.qt.get_irq(INTX_IRQ))
        v = self.isr()
        after = self.qt.get_irq(INTX_IRQ)
        check(v and line and not after, "INTx: line %s, ISR %d, line after read %s"
              % (line, v, after))
        check(self.isr() == 0, "reading the ISR did not clear it")
        return ("isr", v, line, after)


class VQ:
    """A split virtqueue (2.7) in guest RAM."""

    def __init__(self, g, index, vector=None, size=None):
        self.g, self.index, self.vector = g, index, vector
        qt = g.qt
        if g.legacy:
            self.init_legacy()
            return
        g.cw16(Q_SELECT, index)
        self.max = g.cr16(Q_SIZE)
        check(self.max > 0, "queue %d has size 0" % index)
        if size:
            g.cw16(Q_SIZE, size)
        self.size = g.cr16(Q_SIZE)
        n = self.size
        self.desc = g.malloc(16 * n, 4096)
        self.avail = g.malloc(6 + 2 * n, 2)
        self.used = g.malloc(6 + 8 * n, 4096)
        qt.memset(self.desc, 16 * n, 0)
        qt.memset(self.avail, 6 + 2 * n, 0)
        qt.memset(self.used, 6 + 8 * n, 0)
        g.cw64(Q_DESC, self.desc)
        g.cw64(Q_DRIVER, self.avail)
        g.cw64(Q_DEVICE, self.used)
        if vector is not None:
            g.cw16(Q_MSIX, vector)
            check(g.cr16(Q_MSIX) == vector, "queue vector refused")
        self.notify_addr = g.notify + g.cr16(Q_NOFF) * g.notify_mult
        g.cw16(Q_ENABLE, 1)
        check(g.cr16(Q_ENABLE) == 1, "queue_enable did not stick")
        self.free = 0
        self.avail_idx = 0
        self.last_used = 0

    def init_legacy(self):
        """A legacy queue: one page-aligned area, used ring on the next
        4 KiB boundary after the available ring."""
        g, qt, p = self.g, self.g.qt, BAR0_PORT
        qt.outw(p + 14, self.index)
        n = self.size = self.max = qt.inw(p + 12)
        check(n > 0, "legacy queue %d has size 0" % self.index)
        avail_end = 16 * n + 6 + 2 * n
        used_off = (avail_end + 4095) & ~4095
        total = used_off + 6 + 8 * n
        self.desc = g.malloc(total, 4096)
        self.avail = self.desc + 16 * n
        self.used = self.desc + used_off
        qt.memset(self.desc, total, 0)
        if self.vector is not None:
            qt.outw(p + 22, self.vector)
            check(qt.inw(p + 22) == self.vector, "legacy queue vector refused")
        qt.outl(p + 8, self.desc >> 12)
        check(qt.inl(p + 8) == self.desc >> 12, "queue PFN did not stick")
        self.notify_addr = None
        self.free = 0
        self.avail_idx = 0
        self.last_used = 0

    def write_desc(self, table, i, addr, length, flags, nxt):
        self.g.qt.bufwrite(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def add(self, bufs, indirect=False):
        """bufs: [(addr, len, device_writable)]; returns the head."""
        n = len(bufs)
        if indirect:
            table = self.g.malloc(16 * n, 16)
            for i, (a, ln, w) in enumerate(bufs):
                flags = (DESC_WRITE if w else 0) | (DESC_NEXT if i + 1 < n else 0)
                self.write_desc(table, i, a, ln, flags, i + 1 if i + 1 < n else 0)
            head = self.free % self.size
            self.write_desc(self.desc, head, table, 16 * n, DESC_INDIRECT, 0)
            self.free += 1
        else:
            head = self.free % self.size
            for i, (a, ln, w) in enumerate(bufs):
                idx = (self.free + i) % self.size
                nxt = (self.free + i + 1) % self.size
                flags = (DESC_WRITE if w else 0) | (DESC_NEXT if i + 1 < n else 0)
                self.write_desc(self.desc, idx, a, ln, flags, nxt if i + 1 < n else 0)
            self.free += n
        qt = self.g.qt
        qt.writew(self.avail + 4 + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        qt.writew(self.avail + 2, self.avail_idx)
        return head

    def kick(self):
        if self.g.legacy:
            self.g.qt.outw(BAR0_PORT + 16, self.index)
        else:
            self.g.qt.writew(self.notify_addr, self.index)

    def used_idx(self):
        return self.g.qt.readw(self.used + 2)

    def has_used(self):
        return self.used_idx() != self.last_used

    def pop_used(self):
        """The next used element (id, len), or None."""
        if self.used_idx() == self.last_used:
            return None
        slot = self.used + 4 + 8 * (self.last_used % self.size)
        e = struct.unpack("<II", self.g.qt.bufread(slot, 8))
        self.last_used = (self.last_used + 1) & 0xFFFF
        return e

    def set_used_event(self, v):
        self.g.qt.writew(self.avail + 4 + 2 * self.size, v)


class PackedVQ:
    """A packed virtqueue (2.8): one descriptor ring written by both sides,
    avail/used state in each descriptor's flags with wrap counters."""

    F_AVAIL, F_USED = 1 << 7, 1 << 15

    def __init__(self, g, index, vector=None):
        self.g, self.index, self.vector = g, index, vector
        qt = g.qt
        g.cw16(Q_SELECT, index)
        n = self.size = g.cr16(Q_SIZE)
        self.desc = g.malloc(16 * n, 4096)
        self.driver = g.malloc(4, 4)
        self.device = g.malloc(4, 4)
        qt.memset(self.desc, 16 * n, 0)
        qt.memset(self.driver, 4, 0)
        qt.memset(self.device, 4, 0)
        g.cw64(Q_DESC, self.desc)
        g.cw64(Q_DRIVER, self.driver)
        g.cw64(Q_DEVICE, self.device)
        if vector is not None:
            g.cw16(Q_MSIX, vector)
        self.notify_addr = g.notify + g.cr16(Q_NOFF) * g.notify_mult
        g.cw16(Q_ENABLE, 1)
        self.next_avail, self.avail_wrap = 0, 1
        self.next_used, self.used_wrap = 0, 1
        self.next_id = 0
        self.chains = {}  # id -> number of slots

    def flags(self, write, wrap, nxt=False, extra=0):
        f = extra | (DESC_WRITE if write else 0) | (DESC_NEXT if nxt else 0)
        return f | (self.F_AVAIL if wrap else 0) | (0 if wrap else self.F_USED)

    def add(self, bufs, indirect=False):
        """Write the chain, its first descriptor last (2.8.21.1)."""
        qt = self.g.qt
        bid = self.next_id
        self.next_id = (self.next_id + 1) % self.size
        if indirect:
            table = self.g.malloc(16 * len(bufs), 16)
            for i, (a, ln, w) in enumerate(bufs):
                qt.bufwrite(table + 16 * i, struct.pack("<QIHH", a, ln, 0,
                                                        DESC_WRITE if w else 0))
            descs = [(table, 16 * len(bufs), False, DESC_INDIRECT)]
        else:
            descs = [(a, ln, w, 0) for a, ln, w in bufs]
        writes = []
        slot, wrap = self.next_avail, self.avail_wrap
        for i, (a, ln, w, extra) in enumerate(descs):
            f = self.flags(w, wrap, i + 1 < len(descs), extra)
            writes.append((slot, struct.pack("<QIHH", a, ln, bid, f)))
            slot += 1
            if slot == self.size:
                slot, wrap = 0, wrap ^ 1
        for s, data in reversed(writes):
            qt.bufwrite(self.desc + 16 * s, data)
        self.next_avail, self.avail_wrap = slot, wrap
        self.chains[bid] = len(descs)
        return bid

    def kick(self):
        self.g.qt.writew(self.notify_addr, self.index)

    def has_used(self):
        f = self.g.qt.readw(self.desc + 16 * self.next_used + 14)
        avail, used = bool(f & self.F_AVAIL), bool(f & self.F_USED)
        return avail == used == bool(self.used_wrap)

    def pop_used(self):
        if not self.has_used():
            return None
        _, ln, bid, _ = struct.unpack("<QIHH", self.g.qt.bufread(self.desc + 16 * self.next_used,
                                                                 16))
        self.next_used += self.chains.pop(bid, 1)
        if self.next_used >= self.size:
            self.next_used -= self.size
            self.used_wrap ^= 1
        return (bid, ln)


class Req:
    """A virtio-blk request in guest RAM (5.2.6)."""

    def __init__(self, g, typ, sector, data=b"", in_len=0, layout=3):
        self.g, self.typ = g, typ
        self.hdr = struct.pack("<IIQ", typ, 0, sector)
        self.data, self.in_len, self.layout = data, in_len, layout
        qt = g.qt
        base = g.malloc(16 + len(data) + in_len + 1, 16)
        self.base = base
        qt.bufwrite(base, self.hdr + data)
        self.in_addr = base + 16 + len(data)
        if in_len:
            qt.memset(self.in_addr, in_len, 0xAA)
        self.status_addr = self.in_addr + in_len
        qt.writeb(self.status_addr, 0xFF)

    def bufs(self):
        hd = 16 + len(self.data)
        if self.layout == 3:
            b = [(self.base, 16, False)]
            if self.data:
                b.append((self.base + 16, len(self.data), False))
            if self.in_len:
                b.append((self.in_addr, self.in_len, True))
            b.append((self.status_addr, 1, True))
            return b
        # 2 descriptors: header and out data together, in data and status
        # together (ANY_LAYOUT is implied by VERSION_1).
        return [(self.base, hd, False), (self.in_addr, self.in_len + 1, True)]

    def status(self):
        return self.g.qt.readb(self.status_addr)

    def result(self):
        return self.g.qt.bufread(self.in_addr, self.in_len) if self.in_len else b""


def submit(g, vq, req, indirect=False, wait=True):
    head = vq.add(req.bufs(), indirect)
    vq.kick()
    if not wait:
        return head
    how = g.wait_interrupt(vq)
    e = vq.pop_used()
    check(e is not None, "interrupt without a used element")
    check(e[0] == head, "used id %d, expected head %d" % (e[0], head))
    return {"status": req.status(), "used_len": e[1], "irq": how}


def dwz_segment(sector, num, flags):
    return struct.pack("<QII", sector, num, flags)


def sector_data(seed):
    return bytes((seed + i * 7) & 0xFF for i in range(512))


WANT = ((1 << F_VERSION_1) | (1 << F_INDIRECT) | (1 << F_BLK_SEG_MAX) | (1 << F_BLK_BLK_SIZE)
        | (1 << F_BLK_FLUSH) | (1 << F_BLK_DISCARD) | (1 << F_BLK_WRITE_ZEROES))


# ---- cases ----

def basic_rw(g, layout, indirect=False):
    """virtio-blk-test's test_basic / pci_indirect: write then read back,
    write-zeroes, discard, flush, GET_ID, out of range, unknown type."""
    vq = g.vqs[0]
    check(g.capacity() == IMG_SIZE // 512, "capacity %d" % g.capacity())
    w = Req(g, T_OUT, 0, b"TEST" + bytes(508), layout=layout)
    r = submit(g, vq, w, indirect)
    check(r["status"] == S_OK, "write status %d" % r["status"])
    g.note("write", r)
    rd = Req(g, T_IN, 0, in_len=512, layout=layout)
    r = submit(g, vq, rd, indirect)
    check(r["status"] == S_OK and rd.result()[:4] == b"TEST", "read back")
    g.note("read", (r, digest(rd.result())))
    # Two sectors written and read in one request.
    data = sector_data(1) + sector_data(2)
    r = submit(g, vq, Req(g, T_OUT, 100, data, layout=layout), indirect)
    g.note("write2", r)
    rd = Req(g, T_IN, 100, in_len=1024, layout=layout)
    r = submit(g, vq, rd, indirect)
    check(rd.result() == data, "two-sector read back")
    g.note("read2", (r, digest(rd.result())))
    if g.acked & (1 << F_BLK_WRITE_ZEROES):
        r = submit(g, vq, Req(g, T_WRITE_ZEROES, 100, dwz_segment(100, 1, 0), layout=layout),
                   indirect)
        check(r["status"] == S_OK, "write zeroes status %d" % r["status"])
        rd = Req(g, T_IN, 100, in_len=1024, layout=layout)
        submit(g, vq, rd, indirect)
        check(rd.result() == bytes(512) + sector_data(2), "write zeroes result")
        g.note("write_zeroes", (r, digest(rd.result())))
        r = submit(g, vq, Req(g, T_WRITE_ZEROES, 101, dwz_segment(101, 1, 1), layout=layout),
                   indirect)
        g.note("write_zeroes_unmap", r)
    if g.acked & (1 << F_BLK_DISCARD):
        r = submit(g, vq, Req(g, T_DISCARD, 0, dwz_segment(0, 1, 0), layout=layout),
                   indirect)
        check(r["status"] == S_OK, "discard status %d" % r["status"])
        g.note("discard", r)
    r = submit(g, vq, Req(g, T_FLUSH, 0, layout=3), indirect)
    g.note("flush", r)
    gid = Req(g, T_GET_ID, 0, in_len=20, layout=layout)
    r = submit(g, vq, gid, indirect)
    g.note("get_id", (r, gid.result().rstrip(b"\0").decode("ascii", "replace")))
    r = submit(g, vq, Req(g, T_IN, IMG_SIZE // 512, in_len=512, layout=layout), indirect)
    check(r["status"] == S_IOERR, "read past the end: status %d" % r["status"])
    g.note("read_past_end", r)
    r = submit(g, vq, Req(g, 0x77, 0, in_len=16, layout=layout), indirect)
    check(r["status"] == S_UNSUPP, "unknown type: status %d" % r["status"])
    g.note("unknown_type", r)


def case_basic(g):
    g.init(WANT)
    basic_rw(g, 3)


def case_basic_2desc(g):
    g.init(WANT)
    basic_rw(g, 2)


def case_indirect(g):
    acked = g.init(WANT)
    check(acked & (1 << F_INDIRECT), "INDIRECT_DESC not offered")
    basic_rw(g, 2, indirect=True)


def case_config(g):
    """virtio-blk-test's pci_config plus the configuration space bytes."""
    cfg = bytes(g.qt.pci_cfg_readb(DEVFN, o) for o in range(256))
    g.note("pci_config", cfg.hex())
    g.note("device_features", g.features())
    g.note("num_queues", g.cr16(NUMQ))
    g.cw16(Q_SELECT, 0)
    g.note("queue0", (g.cr16(Q_SIZE), g.cr16(Q_MSIX), g.cr16(Q_ENABLE), g.cr16(Q_NOFF)))
    g.note("notify_mult", g.notify_mult)
    g.note("blk_config", g.config(0, 57))
    g.note("config_oob", g.config(60, 4))
    # The PCI configuration access capability (4.1.4.8): num_queues and
    # the capacity through the window in configuration space.
    pcfg = 0x84
    check(g.qt.pci_cfg_readb(DEVFN, pcfg + 3) == 5, "no PCI_CFG capability at 0x84")
    window = []
    for off, ln in ((g.caps[1] + NUMQ, 2), (g.caps[4], 4), (g.caps[4] + 20, 4)):
        g.qt.pci_cfg_writeb(DEVFN, pcfg + 4, 4)
        g.qt.pci_cfg_writel(DEVFN, pcfg + 8, off)
        g.qt.pci_cfg_writel(DEVFN, pcfg + 12, ln)
        window.append(g.qt.pci_cfg_readl(DEVFN, pcfg + 16) & ((1 << (8 * ln)) - 1))
    check(window[0] == 1 and window[1] == IMG_SIZE // 512, "window reads %r" % window)
    g.note("pci_cfg_window", window)
    g.init(WANT)
    g.note("status", g.status())
    g.note("generation", g.cr8(CFGGEN))
    # Writing writeback (CONFIG_WCE not negotiated, QEMU ignores nothing).
    g.note("capacity", g.capacity())


def resize(g):
    """virtio-blk-test's config test: block_resize, config interrupt,
    capacity doubled."""
    check(g.capacity() == IMG_SIZE // 512, "capacity before")
    blk = [b for b in g.qmp.cmd("query-block")["return"] if b["device"] == "drv0"]
    check(len(blk) == 1, "query-block has no drv0")
    g.note("qdev", blk[0].get("qdev"))
    gen = g.cr8(CFGGEN)
    r = g.qmp.cmd("block_resize", device="drv0", size=2 * IMG_SIZE)
    check("return" in r, "block_resize: %r" % r)
    how = g.wait_interrupt(config=True)
    g.note("config_interrupt", how)
    check(g.capacity() == 2 * IMG_SIZE // 512, "capacity after %d" % g.capacity())
    g.note("capacity", g.capacity())
    g.note("generation_changed", g.cr8(CFGGEN) != gen)
    # The device still works on the larger disk.
    vq = g.vqs[0]
    r = submit(g, vq, Req(g, T_OUT, IMG_SIZE // 512 + 5, sector_data(9)))
    g.note("write_after_resize", r)


def case_resize(g):
    g.init(WANT)
    resize(g)


def case_resize_msix(g):
    g.init(WANT)
    resize(g)


def case_msix(g):
    g.init(WANT)
    basic_rw(g, 3)
    # A masked vector: the message waits in the PBA until unmasked.
    vq = g.vqs[0]
    g.qt.writel(BAR1_ADDR + 16 * vq.vector + 12, 1)
    req = Req(g, T_OUT, 7, sector_data(7))
    head = submit(g, vq, req, wait=False)
    g.poll(lambda: req.status() != 0xFF)
    g.poll(lambda: g.qt.readl(BAR1_ADDR + 0x800) & (1 << vq.vector), timeout=1)
    g.note("masked", (req.status(), g.msi_fired(vq.vector),
                      g.qt.readl(BAR1_ADDR + 0x800)))
    g.qt.writel(BAR1_ADDR + 16 * vq.vector + 12, 0)
    g.note("unmasked", (g.msi_fired(vq.vector), g.qt.readl(BAR1_ADDR + 0x800),
                        vq.pop_used() == (head, 1)))


def case_idx(g):
    """virtio-blk-test's idx: with EVENT_IDX, used_event = 2 suppresses the
    interrupt of the second request and the third brings one."""
    acked = g.init(WANT | (1 << F_EVENT_IDX))
    check(acked & (1 << F_EVENT_IDX), "EVENT_IDX not offered")
    vq = g.vqs[0]
    r = submit(g, vq, Req(g, T_OUT, 0, b"TEST" + bytes(508)))
    g.note("first", r)
    vq.set_used_event(2)
    w2 = Req(g, T_OUT, 1, b"TEST" + bytes(508))
    h2 = submit(g, vq, w2, wait=False)
    g.poll(lambda: w2.status() != 0xFF)
    time.sleep(0.05)
    if g.msix:
        quiet = not g.msi_fired(vq.vector)
    else:
        quiet = g.isr() == 0
    check(quiet, "interrupt for the second request despite used_event")
    g.note("second", (w2.status(), quiet, vq.used_idx()))
    rd = Req(g, T_IN, 1, in_len=512)
    h3 = submit(g, vq, rd, wait=False)
    how = g.wait_interrupt(vq)
    e2, e3 = vq.pop_used(), vq.pop_used()
    check(e2 and e2[0] == h2 and e3 and e3[0] == h3, "used elements %r %r" % (e2, e3))
    check(rd.result()[:4] == b"TEST", "read back")
    g.note("third", (how, rd.status(), e2, e3, vq.g.qt.readw(vq.used + 4 + 8 * vq.size)))


def case_nxvirtq(g):
    """virtio-blk-test's nxvirtq: a queue that does not exist has size 0."""
    g.init(WANT)
    g.cw16(Q_SELECT, 1)
    g.note("sel1", (g.cr16(Q_SELECT), g.cr16(Q_SIZE), g.cr16(Q_ENABLE)))
    check(g.cr16(Q_SIZE) == 0, "queue 1 has a size")
    g.cw16(Q_SELECT, 2000)  # beyond the spec's maximum: ignored
    g.note("sel2000", g.cr16(Q_SELECT))
    # A kick of the missing queue does nothing.
    g.qt.writew(g.notify + g.notify_mult * 1, 1)
    g.note("status", g.status())


def case_invalid_dwz(g):
    """virtio-blk-test's invalid discard/write-zeroes requests."""
    g.init(WANT)
    vq = g.vqs[0]
    cap = IMG_SIZE // 512
    cases = [
        ("wz_beyond", T_WRITE_ZEROES, dwz_segment(cap, 1, 0)),
        ("wz_straddle", T_WRITE_ZEROES, dwz_segment(cap - 1, 2, 0)),
        ("wz_flags", T_WRITE_ZEROES, dwz_segment(0, 1, 0x10)),
        ("wz_two_segments", T_WRITE_ZEROES, dwz_segment(0, 1, 0) + dwz_segment(8, 1, 0)),
        ("wz_huge", T_WRITE_ZEROES, dwz_segment(0, 0xFFFFFFFF, 0)),
        ("discard_beyond", T_DISCARD, dwz_segment(cap, 1, 0)),
        ("discard_unmap_flag", T_DISCARD, dwz_segment(0, 1, 1)),
        ("discard_flags", T_DISCARD, dwz_segment(0, 1, 0x80)),
        ("discard_two_segments", T_DISCARD, dwz_segment(0, 1, 0) + dwz_segment(8, 1, 0)),
        ("discard_huge", T_DISCARD, dwz_segment(0, 0xFFFFFFFF, 0)),
        ("discard_zero", T_DISCARD, dwz_segment(0, 0, 0)),
    ]
    for name, typ, seg in cases:
        r = submit(g, vq, Req(g, typ, 0, seg))
        check(r["status"] in (S_IOERR, S_UNSUPP, S_OK), "%s: status %d" % (name, r["status"]))
        g.note(name, r["status"])
    g.note("device_status", g.status())


def case_unaligned(g):
    """logical_block_size=4096: requests not aligned to it fail."""
    g.init(WANT)
    vq = g.vqs[0]
    g.note("blk_size", struct.unpack("<I", g.config(20, 4))[0])
    for name, req in [
        ("read_unaligned_sector", Req(g, T_IN, 1, in_len=4096)),
        ("read_short", Req(g, T_IN, 0, in_len=512)),
        ("write_unaligned", Req(g, T_OUT, 4, bytes(4096))),
        ("read_aligned", Req(g, T_IN, 8, in_len=4096)),
        ("discard_unaligned", Req(g, T_DISCARD, 0, dwz_segment(1, 8, 0))),
        ("wz_unaligned_len", Req(g, T_WRITE_ZEROES, 0, dwz_segment(8, 1, 0))),
        ("wz_aligned", Req(g, T_WRITE_ZEROES, 0, dwz_segment(8, 8, 0))),
    ]:
        g.note(name, submit(g, vq, req)["status"])


def case_multiqueue(g):
    """num-queues=2: requests on both queues, each with its own vector."""
    acked = g.init(WANT | (1 << F_BLK_MQ), queues=2)
    check(acked & (1 << F_BLK_MQ), "MQ not offered")
    g.note("num_queues", (g.cr16(NUMQ), struct.unpack("<H", g.config(34, 2))[0]))
    q0, q1 = g.vqs
    r = submit(g, q1, Req(g, T_OUT, 10, sector_data(3)))
    g.note("write_q1", r)
    rd = Req(g, T_IN, 10, in_len=512)
    r = submit(g, q0, rd)
    check(rd.result() == sector_data(3), "q0 reads what q1 wrote")
    g.note("read_q0", (r, digest(rd.result())))
    rd = Req(g, T_IN, 10, in_len=512)
    r = submit(g, q1, rd)
    g.note("read_q1", (r, digest(rd.result())))
    g.cw16(Q_SELECT, 2)
    g.note("q2_size", g.cr16(Q_SIZE))


def case_needs_reset(g):
    """A descriptor chain that points outside the table: NEEDS_RESET and a
    configuration interrupt; a reset brings the device back."""
    g.init(WANT)
    vq = g.vqs[0]
    head = vq.free % vq.size
    vq.write_desc(vq.desc, head, vq.desc, 16, DESC_NEXT, vq.size + 3)
    g.qt.writew(vq.avail + 4, head)
    g.qt.writew(vq.avail + 2, 1)
    vq.kick()
    g.poll(lambda: g.status() & NEEDS_RESET)
    g.note("status", g.status())
    g.note("interrupt", g.wait_interrupt(config=True))
    g.note("used_idx", vq.used_idx())
    g.set_status(0)
    g.note("after_reset", (g.status(), g.isr()))
    g.cw16(Q_SELECT, 0)
    g.note("queue_after_reset", (g.cr16(Q_SIZE), g.cr16(Q_ENABLE), g.cr32(Q_DESC)))
    g.next_alloc = 0x400000
    g.init(WANT)
    r = submit(g, g.vqs[0], Req(g, T_OUT, 0, sector_data(4)))
    g.note("works_again", r)


def case_reset_inflight(g):
    """Device reset with requests queued: once status reads 0 (the driver
    waits for that, 4.1.4.3.2), nothing in guest memory changes any more
    (the requests were drained, orphaned or never started)."""
    g.init(WANT)
    vq = g.vqs[0]
    reqs = [Req(g, T_OUT, 64 * i, bytes([i]) * 65536) for i in range(8)]
    for r in reqs:
        vq.add(r.bufs())
    vq.kick()
    g.set_status(0)
    check(g.poll(lambda: g.status() == 0), "status after reset")
    snap = (vq.used_idx(), [r.status() for r in reqs])
    time.sleep(0.2)
    after = (vq.used_idx(), [r.status() for r in reqs])
    check(snap == after, "guest memory written after reset: %r -> %r" % (snap, after))
    # Whatever completed, completed consistently.
    done = sum(1 for s in after[1] if s == S_OK)
    check(after[0] == done, "used.idx %d but %d statuses" % (after[0], done))
    g.note("reset_quiet", True)


def case_queue_reset(g):
    """VIRTIO_F_RING_RESET (virtio 1.2 4.1.4.3.2): reset one queue, set it up
    again, it works from index 0."""
    acked = g.init(WANT | (1 << F_RING_RESET))
    check(acked & (1 << F_RING_RESET), "RING_RESET not offered")
    submit(g, g.vqs[0], Req(g, T_OUT, 0, sector_data(5)))
    g.cw16(Q_SELECT, 0)
    g.cw16(Q_RESET, 1)
    g.note("after_reset", (g.cr16(Q_RESET), g.cr16(Q_ENABLE), g.cr16(Q_MSIX)))
    # The driver waits for queue_reset to read 0 (reset done), then finds
    # the queue disabled and set up afresh.
    check(g.cr16(Q_RESET) == 0 and g.cr16(Q_ENABLE) == 0, "queue reset state")
    vq = VQ(g, 0, vector=g.vqs[0].vector)
    g.vqs[0] = vq
    rd = Req(g, T_IN, 0, in_len=512)
    r = submit(g, vq, rd)
    check(rd.result() == sector_data(5), "read after queue reset")
    g.note("read", r)


def case_queue_reset_inflight(g):
    """A queue reset with requests queued: once queue_reset reads 0, nothing
    in guest memory changes any more, and the queue works again.  vdisk
    only: QEMU 7.2's virtio-blk has no queue_reset handler and lets the
    requests complete into the old ring."""
    acked = g.init(WANT | (1 << F_RING_RESET))
    check(acked & (1 << F_RING_RESET), "RING_RESET not offered")
    vq = g.vqs[0]
    reqs = [Req(g, T_OUT, 64 * i, bytes([i]) * 65536) for i in range(8)]
    for r in reqs:
        vq.add(r.bufs())
    g.cw16(Q_SELECT, 0)
    vq.kick()
    g.cw16(Q_RESET, 1)
    check(g.poll(lambda: g.cr16(Q_RESET) == 0), "queue_reset stays 1")
    snap = (vq.used_idx(), [r.status() for r in reqs])
    time.sleep(0.2)
    after = (vq.used_idx(), [r.status() for r in reqs])
    check(snap == after, "guest memory written after queue reset: %r -> %r" % (snap, after))
    done = sum(1 for s in after[1] if s == S_OK)
    check(after[0] == done, "used.idx %d but %d statuses" % (after[0], done))
    vq = VQ(g, 0, vector=vq.vector)
    g.vqs[0] = vq
    rd = Req(g, T_IN, 64, in_len=512)
    submit(g, vq, rd)
    check(rd.status() == S_OK, "read after queue reset")
    g.note("queue_reset_quiet", True)


def case_busmaster_off(g):
    """Clearing COMMAND.MASTER drops DRIVER_OK (as QEMU's
    virtio_write_config).  vdisk then leaves guest memory alone until bus
    mastering is back: a kick in between completes nothing (QEMU instead
    fails the DMA, so that half is checked on vdisk only)."""
    g.init(WANT)
    vq = g.vqs[0]
    submit(g, vq, Req(g, T_OUT, 0, sector_data(6)))
    g.qt.pci_cfg_writew(DEVFN, 0x04, 0x02)
    g.note("status_without_master", g.status())
    if g.kind != "vdisk":
        return
    req = Req(g, T_IN, 0, in_len=512)
    vq.add(req.bufs())
    vq.kick()
    time.sleep(0.2)
    check(req.status() == 0xFF and vq.used_idx() == vq.last_used,
          "request processed without bus mastering")
    g.qt.pci_cfg_writew(DEVFN, 0x04, 0x06)
    g.set_status(g.status() | DRIVER_OK)
    vq.kick()
    g.wait_interrupt(vq)
    check(vq.pop_used() is not None and req.result() == sector_data(6), "read after re-enable")


def case_busmaster_off_inflight(g):
    """Requests kicked on an enabled queue before DRIVER_OK are processed
    (as QEMU does); clearing COMMAND.MASTER with them in flight must leave
    guest memory alone from then on, as with DRIVER_OK set (found by
    tests/fuzz/fuzz-virtio-pci.c, corpus crash-busmaster-off-before-driver-ok:
    the drain on bus-master-off only ran with DRIVER_OK).  vdisk only: QEMU
    fails the DMA instead, which the used ring cannot tell apart."""
    g.init(WANT, driver_ok=False)
    vq = g.vqs[0]
    # Large writes, so that some are still in flight when the command
    # register write arrives.
    reqs = [Req(g, T_OUT, 4096 * i, bytes([i]) * (2 << 20)) for i in range(8)]
    for r in reqs:
        vq.add(r.bufs())
    vq.kick()
    g.qt.pci_cfg_writew(DEVFN, 0x04, 0x02)
    snap = (vq.used_idx(), [r.status() for r in reqs])
    time.sleep(0.2)
    after = (vq.used_idx(), [r.status() for r in reqs])
    check(snap == after, "guest memory written without bus mastering: %r -> %r" % (snap, after))
    done = sum(1 for s in after[1] if s == S_OK)
    check(after[0] == done, "used.idx %d but %d statuses" % (after[0], done))
    g.note("quiet_without_master", True)


def case_legacy_config(g):
    """The transitional device's identity, BARs and legacy registers."""
    cfg = bytes(g.qt.pci_cfg_readb(DEVFN, o) for o in range(256))
    g.note("pci_config", cfg.hex())
    g.note("bar0", g.qt.pci_bar_size(DEVFN, 0))
    g.note("host_features", g.features())
    g.note("queue0", (g.qt.inw(BAR0_PORT + 12), g.qt.inl(BAR0_PORT + 8)))
    g.qt.outw(BAR0_PORT + 14, 1)
    g.note("queue1", g.qt.inw(BAR0_PORT + 12))
    g.qt.outw(BAR0_PORT + 14, 0)
    g.note("blk_config", g.config(0, 57))
    g.note("unknown_reg", g.qt.inl(BAR0_PORT + 0x10))


def case_legacy_basic(g):
    g.init(WANT)
    check(not g.acked & (1 << F_VERSION_1), "VERSION_1 on the legacy interface")
    basic_rw(g, 3)
    # PFN 0 resets the device (QEMU's virtio_ioport_write).
    g.qt.outl(BAR0_PORT + 8, 0)
    g.note("after_pfn0", (g.status(), g.qt.inl(BAR0_PORT + 4)))


def case_garbage(g):
    """Random register writes and random rings: the device may end in
    NEEDS_RESET but the machine keeps answering (the check after the case
    also wants a clean exit, which ASan builds make strict)."""
    import random
    rnd = random.Random(1234)
    g.init(WANT | (1 << F_EVENT_IDX) | (1 << F_PACKED))
    vq = g.vqs[0]
    for i in range(400):
        what = rnd.randrange(5)
        if what == 0:
            off = rnd.randrange(64)
            if off == STATUS:
                continue  # a reset would only make the rest boring
            g.qt.writeb(g.common + off, rnd.randrange(256))
        elif what == 1:
            g.qt.writel(g.device + rnd.randrange(64) * 4 // 4, rnd.randrange(1 << 32))
        elif what == 2:
            g.qt.bufwrite(vq.desc + 16 * rnd.randrange(vq.size),
                          bytes(rnd.randrange(256) for _ in range(16)))
        elif what == 3:
            area = vq.driver if isinstance(vq, PackedVQ) else vq.avail + 2
            g.qt.writew(area, rnd.randrange(1 << 16))
        else:
            g.qt.writew(g.notify + g.notify_mult * rnd.randrange(4), 0)
        if i % 100 == 99:
            g.set_status(0)
            g.next_alloc = 0x800000
            g.init(WANT | (1 << F_EVENT_IDX) | (i // 100 % 2) << F_PACKED)
            vq = g.vqs[0]
    g.set_status(0)
    check(g.status() == 0, "reset after garbage")
    g.next_alloc = 0x800000
    g.init(WANT)
    rd = Req(g, T_IN, 0, in_len=512)
    r = submit(g, g.vqs[0], rd)
    check(r["status"] == S_OK, "device works after garbage and reset")


def case_packed(g):
    """VIRTIO_F_RING_PACKED (2.8): the basic requests on a packed ring,
    direct and indirect, and a ring that wraps."""
    acked = g.init(WANT | (1 << F_PACKED))
    check(acked & (1 << F_PACKED), "RING_PACKED not offered")
    basic_rw(g, 3)
    basic_rw(g, 2, indirect=True)
    vq = g.vqs[0]
    for i in range(vq.size // 3 + 5):  # 3 slots each: wraps the ring
        r = submit(g, vq, Req(g, T_OUT, 200 + i, sector_data(i)))
        check(r["status"] == S_OK, "write %d on the packed ring" % i)
    rd = Req(g, T_IN, 200 + vq.size // 3 + 4, in_len=512)
    r = submit(g, vq, rd)
    check(rd.result() == sector_data(vq.size // 3 + 4), "read after the wrap")
    g.note("wrapped", (r, vq.used_wrap, vq.next_used))


def case_if_virtio(g):
    """-drive if=virtio: the same device without -device."""
    g.init(WANT)
    basic_rw(g, 3)


# ---- the drive's rerror/werror (QEMU's virtio_blk_handle_rw_error) ----

ERR_SECTOR = 40


def qmp_events(qmp):
    """Events so far, with the fields both machines report alike."""
    qmp.cmd("query-status")
    out = []
    for e in qmp.take_events():
        d = e.get("data", {}) if isinstance(e, dict) else {}
        name = e["event"] if isinstance(e, dict) else e
        out.append((name,) + tuple(d.get(k) for k in ("device", "operation", "action",
                                                       "nospace")
                                   if name == "BLOCK_IO_ERROR"))
    return out


def run_state(g):
    return g.qmp.cmd("query-status")["return"]["status"]


def io_status(g):
    blk = [b for b in g.qmp.cmd("query-block")["return"] if b["device"] == "drv0"]
    return blk[0].get("io-status") if blk else None


def stop_and_retry(g, req, head):
    """The policy says stop: the machine stops with BLOCK_IO_ERROR, the
    request stays unanswered, cont retries it to completion."""
    vq = g.vqs[0]
    check(g.poll(lambda: run_state(g) != "running"), "the machine did not stop")
    g.note("stopped", (run_state(g), qmp_events(g.qmp), io_status(g)))
    time.sleep(0.1)
    g.note("kept", (req.status(), vq.used_idx()))
    check(req.status() == 0xFF and vq.used_idx() == 0, "request completed while stopped")
    r = g.qmp.cmd("cont")
    check("return" in r, "cont: %r" % r)
    how = g.wait_interrupt(vq)
    e = vq.pop_used()
    check(e is not None and e[0] == head, "no used element after cont")
    g.note("retried", (req.status(), how, run_state(g), qmp_events(g.qmp), io_status(g)))
    check(req.status() == S_OK, "retry status %d" % req.status())


def case_werror_stop(g):
    """werror=stop: a failed write stops the machine; cont retries it (the
    one-shot error is gone) and the data is on the disk."""
    g.init(WANT)
    vq = g.vqs[0]
    w = Req(g, T_OUT, ERR_SECTOR, sector_data(11))
    stop_and_retry(g, w, submit(g, vq, w, wait=False))
    rd = Req(g, T_IN, ERR_SECTOR, in_len=512)
    submit(g, vq, rd)
    check(rd.result() == sector_data(11), "data after the retry")
    g.note("read_back", digest(rd.result()))


def case_werror_enospc(g):
    """The default werror=enospc: ENOSPC stops (io-status nospace)."""
    g.init(WANT)
    w = Req(g, T_OUT, ERR_SECTOR, sector_data(12))
    stop_and_retry(g, w, submit(g, g.vqs[0], w, wait=False))


def case_werror_enospc_eio(g):
    """The default werror=enospc: EIO is reported, the machine runs on."""
    g.init(WANT)
    r = submit(g, g.vqs[0], Req(g, T_OUT, ERR_SECTOR, sector_data(13)))
    check(r["status"] == S_IOERR, "status %d" % r["status"])
    g.note("write", (r, run_state(g), qmp_events(g.qmp)))


def case_rerror_stop(g):
    """rerror=stop: a failed read stops; cont reads the data."""
    g.init(WANT)
    rd = Req(g, T_IN, ERR_SECTOR, in_len=512)
    stop_and_retry(g, rd, submit(g, g.vqs[0], rd, wait=False))
    g.note("data", digest(rd.result()))


def case_rerror_report(g):
    """The default rerror=report: IOERR, BLOCK_IO_ERROR, still running."""
    g.init(WANT)
    r = submit(g, g.vqs[0], Req(g, T_IN, ERR_SECTOR, in_len=512))
    check(r["status"] == S_IOERR, "status %d" % r["status"])
    g.note("read", (r, run_state(g), qmp_events(g.qmp), io_status(g)))


def case_rerror_ignore(g):
    """rerror=ignore: the failed read completes with OK."""
    g.init(WANT)
    r = submit(g, g.vqs[0], Req(g, T_IN, ERR_SECTOR, in_len=512))
    check(r["status"] == S_OK, "status %d" % r["status"])
    g.note("read", (r, run_state(g), qmp_events(g.qmp)))


def case_reset_kept(g):
    """A request kept by werror=stop, then a device reset while stopped:
    cont writes nothing for it; the device works after a new init."""
    g.init(WANT)
    vq = g.vqs[0]
    w = Req(g, T_OUT, ERR_SECTOR, sector_data(14))
    submit(g, vq, w, wait=False)
    check(g.poll(lambda: run_state(g) != "running"), "the machine did not stop")
    g.set_status(0)
    check(g.poll(lambda: g.status() == 0), "status after reset")
    g.qmp.cmd("cont")
    time.sleep(0.2)
    g.note("after_cont", (w.status(), vq.used_idx(), run_state(g)))
    check(w.status() == 0xFF and vq.used_idx() == 0, "kept request written after reset")
    g.next_alloc = 0x400000
    g.init(WANT)
    r = submit(g, g.vqs[0], Req(g, T_OUT, 0, sector_data(15)))
    g.note("works_again", r)


def case_kick_stopped(g):
    """QMP stop, then a kick: nothing is processed (no used entry, no status
    byte) until cont, as QEMU stops ioeventfd handling while the VM does not
    run; cont processes the deferred kick.  vdisk only: QEMU 7.2 under
    -accel qtest has no ioeventfd (kvm_has_many_ioeventfds() is false
    without KVM) and handles the notify write at once even while stopped."""
    g.init(WANT)
    vq = g.vqs[0]
    submit(g, vq, Req(g, T_OUT, 0, sector_data(16)))
    g.qmp.cmd("stop")
    rd = Req(g, T_IN, 0, in_len=512)
    head = submit(g, vq, rd, wait=False)
    time.sleep(0.2)
    check(rd.status() == 0xFF and not vq.has_used(), "kick processed while stopped")
    g.qmp.cmd("cont")
    g.wait_interrupt(vq)
    e = vq.pop_used()
    check(e is not None and e[0] == head and rd.result() == sector_data(16),
          "deferred kick not processed on cont")
    g.note("after_cont", (rd.status(), e))


# ---- resets, bus mastering and stop with requests in flight ----

# The drive of these cases answers every request after SLOW_NS (null-co's
# latency-ns under raw; reads return zeroes), so that requests are surely in
# flight when the register write or the QMP command arrives.
SLOW_NS = 1000000000
SLOW_S = SLOW_NS / 1e9


def slow_requests(g, vq):
    """Two reads (buffers filled with 0xAA) and a write, kicked; they stay
    in flight for SLOW_S."""
    reqs = [Req(g, T_IN, 8, in_len=4096), Req(g, T_OUT, 16, sector_data(21)),
            Req(g, T_IN, 24, in_len=512)]
    for r in reqs:
        vq.add(r.bufs())
    vq.kick()
    return reqs


def guest_view(vq, reqs):
    """What the requests left in guest memory: used.idx, status bytes,
    digests of the read buffers."""
    return (vq.used_idx(), [r.status() for r in reqs],
            [digest(r.result()) for r in reqs if r.in_len])


def timed(fn):
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def quiet_after(g, vq, reqs, what):
    """Nothing of the requests reaches guest memory from now on; what did
    reach it is consistent (as many used entries as status bytes written)."""
    snap = guest_view(vq, reqs)
    time.sleep(SLOW_S + 0.3)
    after = guest_view(vq, reqs)
    check(snap == after, "guest memory written after %s: %r -> %r" % (what, snap, after))
    written = sum(1 for st in after[1] if st != 0xFF)
    check(after[0] - vq.last_used == written, "used.idx %d (from %d) but %d status bytes"
          % (after[0], vq.last_used, written))
    return after


def case_legacy_reset_inflight(g):
    """A legacy driver resets (status 0, then queue PFN 0) with requests in
    flight.  QEMU 7.2 drains them inside the write (virtio_blk_reset's
    blk_drain); vdisk must not run its loop inside a register access, so it
    orphans them: the write returns at once (vdisk: well before the
    drive's latency), status reads 0 at once (a legacy driver does not
    wait; Linux ORs ACKNOWLEDGE into what it reads back), nothing reaches
    guest memory afterwards (not even read data), and the device works
    after a new initialisation."""
    for how in ("status", "pfn"):
        g.next_alloc = 0x100000 if how == "status" else 0x600000
        g.init(WANT)
        vq = g.vqs[0]
        reqs = slow_requests(g, vq)
        if how == "status":
            took = timed(lambda: g.set_status(0))
        else:
            took = timed(lambda: g.qt.outl(BAR0_PORT + 8, 0))
        st = g.status()
        check(st == 0, "%s reset: status reads 0x%x" % (how, st))
        if g.kind == "vdisk":
            check(took < SLOW_S / 2, "%s reset: the write took %.2fs (waited for the "
                  "requests)" % (how, took))
        after = quiet_after(g, vq, reqs, how + " reset")
        if g.kind == "vdisk":
            check(after[0] == 0 and all(x == 0xFF for x in after[1]),
                  "%s reset: orphans completed: %r" % (how, after))
        g.note(how + "_reset", (st, g.qt.inl(BAR0_PORT + 8), "quiet"))
    g.next_alloc = 0xA00000
    g.init(WANT)
    r = submit(g, g.vqs[0], Req(g, T_OUT, 0, sector_data(22)))
    rd = Req(g, T_IN, 0, in_len=512)
    r2 = submit(g, g.vqs[0], rd)
    g.note("works_again", (r["status"], r2["status"], digest(rd.result())))


def case_legacy_busmaster_inflight(g):
    """The legacy driver clears COMMAND.MASTER with requests in flight:
    the config write returns at once (no loop run inside it), nothing
    reaches guest memory while bus mastering is off (read data included),
    and once it is back the requests complete (PCI 3.0 6.2.2: the device
    only stops mastering the bus meanwhile).  vdisk only: QEMU lets them
    complete through mappings made before (virtio_write_config does not
    wait for them either)."""
    g.init(WANT)
    vq = g.vqs[0]
    reqs = slow_requests(g, vq)
    took = timed(lambda: g.qt.pci_cfg_writew(DEVFN, 0x04, 0x03))
    check(took < SLOW_S / 2, "bus master off: the write took %.2fs" % took)
    g.note("status_without_master", g.status())
    after = quiet_after(g, vq, reqs, "bus mastering off")
    check(after[0] == 0 and all(x == 0xFF for x in after[1])
          and all(d == digest(b"\xaa" * r.in_len) for d, r in
                  zip(after[2], [r for r in reqs if r.in_len])),
          "written without bus mastering: %r" % (after,))
    g.qt.pci_cfg_writew(DEVFN, 0x04, 0x07)
    check(g.poll(lambda: vq.used_idx() == len(reqs), timeout=2),
          "parked requests not completed once bus mastering is back")
    done = guest_view(vq, reqs)
    check(done[1] == [S_OK] * len(reqs) and done[2] == [digest(bytes(4096)), digest(bytes(512))],
          "parked requests completed wrongly: %r" % (done,))
    g.note("after_master_on", done)
    g.set_status(ACK | DRIVER | DRIVER_OK)
    vq.last_used = vq.used_idx()
    r = submit(g, vq, Req(g, T_OUT, 32, sector_data(23)))
    g.note("works_again", r["status"])


def case_stop_drains(g):
    """QMP stop with requests in flight: as QEMU's do_vm_stop
    (bdrv_drain_all), stop replies once they are complete, status bytes
    and used entries written; STOP comes before the reply."""
    g.init(WANT)
    vq = g.vqs[0]
    reqs = slow_requests(g, vq)
    r = g.qmp.cmd("stop")
    check("return" in r, "stop: %r" % r)
    view = guest_view(vq, reqs)
    check(view[0] == len(reqs) and view[1] == [S_OK] * len(reqs),
          "stop replied with requests in flight: %r" % (view,))
    g.note("at_stop_reply", (view, run_state(g), qmp_events(g.qmp)))
    r = g.qmp.cmd("cont")
    check("return" in r, "cont: %r" % r)
    vq.last_used = vq.used_idx()
    r = submit(g, vq, Req(g, T_OUT, 32, sector_data(24)))
    g.note("after_cont", (r["status"], run_state(g)))


def case_cf9_reset(g):
    """A system reset through the PIIX3 reset control register (0xCF9,
    RCPU) with requests in flight: it resets virtio-blk-pci too (QEMU's
    qemu_system_reset): the PCI configuration (command, BARs, MSI-X), the
    device (status 0, queues disabled, vectors gone), the requests
    (nothing written once the reset is seen), then the RESET event; the
    device works after the firmware and the driver set it up again."""
    g.init(WANT)
    vq = g.vqs[0]
    r = submit(g, vq, Req(g, T_OUT, 0, sector_data(25)))
    check(r["status"] == S_OK, "write before the reset")
    reqs = slow_requests(g, vq)
    g.qt.outb(0xCF9, 0x06)
    ok = g.poll(lambda: g.qt.pci_cfg_readw(DEVFN, 0x04) == 0)
    check(ok, "0xCF9: the command register was not reset")
    quiet_after(g, vq, reqs, "the system reset")
    cfg = (g.qt.pci_cfg_readw(DEVFN, 0x04), g.qt.pci_cfg_readl(DEVFN, 0x14),
           g.qt.pci_cfg_readl(DEVFN, 0x20), g.qt.pci_cfg_readl(DEVFN, 0x24),
           g.qt.pci_cfg_readw(DEVFN, g.msix_cap + 2), g.qt.pci_cfg_readb(PIIX3_DEVFN, 0x63))
    g.note("pci_after_reset", cfg)
    g.qmp.cmd("query-status")  # the events before its reply are read
    events = [(e["event"], e.get("data")) for e in g.qmp.take_events()
              if isinstance(e, dict)]
    g.note("events", events)
    # The firmware's part, then the driver's: device_status reads 0 (the
    # driver waits for that, 4.1.4.3.2), queue 0 disabled, no vectors, the
    # MSI-X table masked.
    h = Guest(g.qt, g.qmp, g.msix, None)
    h.kind = g.kind
    check(h.poll(lambda: h.status() == 0), "device_status %d after the system reset"
          % h.status())
    h.cw16(Q_SELECT, 0)
    dev = (h.status(), h.cr16(Q_ENABLE), h.cr16(Q_SIZE), h.cr16(Q_MSIX), h.cr16(MSIX_CONFIG),
           h.cr32(Q_DESC), h.qt.readl(BAR1_ADDR + 8), h.qt.readl(BAR1_ADDR + 12),
           h.qt.readl(BAR1_ADDR + 0x800))
    g.note("device_after_reset", dev)
    h.next_alloc = 0xA00000
    h.init(WANT)
    rd = Req(h, T_IN, 0, in_len=512)
    r = submit(h, h.vqs[0], rd)
    g.note("works_again", (r, digest(rd.result())))


# Cases on the slow drive.
SLOW_DRIVES = {"legacy_reset_inflight", "legacy_busmaster_inflight", "stop_drains",
               "cf9_reset"}


# Cases whose drive fails requests at ERR_SECTOR (blkdebug, QEMU's config
# file syntax): (event, errno, rerror, werror); None: the default.
ERR_DRIVES = {
    "werror_stop": ("write_aio", 5, None, "stop"),
    "werror_enospc": ("write_aio", 28, None, None),
    "werror_enospc_eio": ("write_aio", 5, None, None),
    "rerror_stop": ("read_aio", 5, "stop", None),
    "rerror_report": ("read_aio", 5, None, None),
    "rerror_ignore": ("read_aio", 5, "ignore", None),
    "reset_kept": ("write_aio", 5, None, "stop"),
}


# name: (function, msix, extra -device properties, qmp, vdisk only)
CASES = {
    "config": (case_config, False, "", False, False),
    "basic": (case_basic, False, "", False, False),
    "basic_2desc": (case_basic_2desc, False, "", False, False),
    "indirect": (case_indirect, False, "", False, False),
    "msix": (case_msix, True, "", False, False),
    "msix_2desc": (case_basic_2desc, True, "", False, False),
    "resize": (case_resize, False, "", True, False),
    "resize_msix": (case_resize_msix, True, "", True, False),
    "idx": (case_idx, True, "", False, False),
    "idx_intx": (case_idx, False, "", False, False),
    "nxvirtq": (case_nxvirtq, False, "", False, False),
    "invalid_dwz": (case_invalid_dwz, False, "", False, False),
    "unaligned": (case_unaligned, False, ",logical_block_size=4096,physical_block_size=4096",
                  False, False),
    "multiqueue": (case_multiqueue, True, ",num-queues=2", False, False),
    "needs_reset": (case_needs_reset, True, "", False, False),
    "needs_reset_intx": (case_needs_reset, False, "", False, False),
    "reset_inflight": (case_reset_inflight, False, "", False, True),
    "queue_reset": (case_queue_reset, True, "", False, False),
    "queue_reset_inflight": (case_queue_reset_inflight, True, "", False, True),
    "busmaster_off": (case_busmaster_off, False, "", False, False),
    "busmaster_off_inflight": (case_busmaster_off_inflight, False, "", False, True),
    "legacy_config": (case_legacy_config, False, ",disable-legacy=off", False, False),
    "legacy_basic": (case_legacy_basic, False, ",disable-legacy=off", False, False),
    "legacy_msix": (case_legacy_basic, True, ",disable-legacy=off", False, False),
    "transitional_modern": (case_basic_2desc, True, ",disable-legacy=off", False, False),
    "if_virtio": (case_if_virtio, False, "if=virtio", False, True),
    "garbage": (case_garbage, False, "", False, True),
    "packed": (case_packed, True, "", False, False),
    "packed_intx": (case_packed, False, "", False, False),
    "werror_stop": (case_werror_stop, False, "", True, False),
    "werror_enospc": (case_werror_enospc, False, "", True, False),
    "werror_enospc_eio": (case_werror_enospc_eio, False, "", True, False),
    "rerror_stop": (case_rerror_stop, True, "", True, False),
    "rerror_report": (case_rerror_report, False, "", True, False),
    "rerror_ignore": (case_rerror_ignore, False, "", True, False),
    "reset_kept": (case_reset_kept, False, "", True, False),
    "kick_stopped": (case_kick_stopped, False, "", True, True),
    "legacy_reset_inflight": (case_legacy_reset_inflight, False, ",disable-legacy=off", False,
                              False),
    "legacy_busmaster_inflight": (case_legacy_busmaster_inflight, False, ",disable-legacy=off",
                                  False, True),
    "stop_drains": (case_stop_drains, False, "", True, False),
    "cf9_reset": (case_cf9_reset, True, "", True, False),
}


def err_drive(name, img):
    """-drive options for the ERR_DRIVES cases: blkdebug over the image."""
    ev, errno, rerror, werror = ERR_DRIVES[name]
    conf = os.path.join(TMP, "blkdebug-%s.conf" % name)
    with open(conf, "w") as f:
        f.write('[inject-error]\nevent = "%s"\nerrno = "%d"\nonce = "on"\nsector = "%d"\n'
                % (ev, errno, ERR_SECTOR))
    d = ("if=none,id=drv0,format=raw,cache=writeback,file.driver=blkdebug,"
         "file.config=%s,file.image.filename=%s" % (conf, img))
    if rerror:
        d += ",rerror=" + rerror
    if werror:
        d += ",werror=" + werror
    return d


def machine_args(kind, img, extra, qmp_sock, name=None):
    # packed=on: QEMU 7.2 offers RING_PACKED only when asked; vdisk always.
    legacy = "disable-legacy=off" if "disable-legacy=off" in extra else "disable-legacy=on"
    extra = extra.replace(",disable-legacy=off", "")
    dev = ("virtio-blk-pci,drive=drv0,addr=04.0,%s,packed=on,serial=%s%s"
           % (legacy, SERIAL, extra))
    if kind == "vdisk":
        dev = dev.replace(",physical_block_size=4096", "")
    if extra == "if=virtio":
        return ["-m", "128M", "-drive", "if=virtio,file=%s,format=raw,addr=04.0,serial=%s"
                % (img, SERIAL)]
    drive = "if=none,id=drv0,file=%s,format=raw,cache=writeback" % img
    if name in ERR_DRIVES:
        drive = err_drive(name, img)
    if name in SLOW_DRIVES:
        drive = ("if=none,id=drv0,format=raw,file.driver=null-co,file.size=%d,"
                 "file.latency-ns=%d,file.read-zeroes=on" % (IMG_SIZE, SLOW_NS))
    a = ["-m", "128M" if kind == "vdisk" else "128", "-drive", drive, "-device", dev]
    if qmp_sock:
        a += ["--qmp" if kind == "vdisk" else "-qmp", "unix:%s,server=on,wait=off" % qmp_sock]
    return a


def run_case(kind, name, img, bios):
    fn, msix, extra, want_qmp, _ = CASES[name]
    with open(img, "r+b") as f:
        f.truncate(0)
        f.truncate(IMG_SIZE)
    sock = os.path.join(TMP, "qmp-%s.sock" % kind) if want_qmp else None
    if sock and os.path.exists(sock):
        os.unlink(sock)
    args = machine_args(kind, img, extra, sock, name)
    if kind == "qemu":
        qt = QTest.qemu(QEMU, bios, *args, stderr=open(os.devnull, "w"))
    else:
        qt = QTest.vdisk(VDISK, *args)
    qmp = None
    try:
        if sock:
            qmp = EventQMP(sock)
            qmp.cmd("qmp_capabilities")
        legacy = None
        if "disable-legacy=off" in extra:
            legacy = name.startswith("legacy")
        g = Guest(qt, qmp, msix, legacy)
        g.kind = kind
        fn(g)
        if kind == "vdisk":
            rc = qt.close()
            check(rc == 0, "vdisk machine exited with status %s" % rc)
        return g.obs, None
    except Failure as e:
        return None, str(e)
    except Exception as e:  # protocol errors, timeouts, crashes
        return None, "%s: %s" % (type(e).__name__, e)
    finally:
        qt.close()


def masked(name, obs):
    out = []
    for k, v in obs:
        m = MASKS.get((name, k))
        if m:
            if m[0] is None:
                continue
            v = m[0](v)
        out.append((k, v))
    return out


# Command lines vdisk must refuse, with the words the error must contain.
BAD_CLI = [
    (["-device", "virtio-blk-pci"], "drive"),
    (["-device", "virtio-blk-pci,drive=nope"], "nope"),
    (["-drive", "if=none,id=d,file=IMG,format=raw", "-device", "virtio-blk-pci,drive=d",
      "-device", "virtio-blk-pci,drive=d"], "in use"),
    (["-drive", "if=none,id=d,file=IMG,format=raw",
      "-device", "virtio-blk-pci,drive=d,num-queues=0"], "num-queues"),
    (["-drive", "if=none,id=d,file=IMG,format=raw",
      "-device", "virtio-blk-pci,drive=d,addr=01.0"], "chipset"),
    (["-drive", "if=none,id=d,file=IMG,format=raw",
      "-device", "virtio-blk-pci,drive=d,bogus=1"], "bogus"),
    (["-drive", "if=ide,file=IMG,format=raw,addr=04.0"], "addr"),
    (["-device", "virtio-net-pci"], "supported"),
]


def check_cli(img):
    import subprocess
    failures = 0
    for argv, word in BAD_CLI:
        argv = [a.replace("IMG", img) for a in argv]
        p = subprocess.run([VDISK, "machine", *argv, "--qtest", "stdio"], input=b"",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        err = p.stderr.decode(errors="replace")
        if p.returncode == 0 or word not in err:
            print("FAIL   cli %s: exit %d, %r" % (" ".join(argv), p.returncode, err.strip()))
            failures += 1
    if not failures:
        print("ok     cli                %d bad command lines refused" % len(BAD_CLI))
    return failures


def main():
    img = os.path.join(TMP, "disk.img")
    with open(img, "wb") as f:
        f.truncate(IMG_SIZE)
    bios = make_halt_bios(os.path.join(TMP, "HALT.bin"))
    targets = [t for t, path in (("qemu", QEMU), ("vdisk", VDISK)) if path != "-"]
    if os.environ.get("VDISK_QUICK") and "vdisk" in targets:
        targets = ["vdisk"]  # sanitizer runs: the cases' own assertions only
    failures = 0
    if VDISK != "-" and not ONLY:
        failures += check_cli(img)
    for name, spec in CASES.items():
        if ONLY and name not in ONLY:
            continue
        tg = [t for t in targets if t == "vdisk" or not spec[4]]
        if not tg:
            continue
        res = {t: run_case(t, name, img, bios) for t in tg}
        for t in tg:
            if res[t][1]:
                print("FAIL   %-18s %s: %s" % (name, t, res[t][1]))
                failures += 1
        if len(tg) == 2 and all(res[t][1] is None for t in tg):
            a, b = masked(name, res["qemu"][0]), masked(name, res["vdisk"][0])
            if a == b:
                s = repr(b)
                print("same   %-18s %s" % (name, s if len(s) < 100 else s[:97] + "..."))
                for (c, k), (_, why) in MASKS.items():
                    if c == name:
                        print("       masked %s: %s" % (k, why))
            else:
                print_diff(name, a, b, 18)
                failures += 1
        elif all(res[t][1] is None for t in tg):
            print("ok     %-18s %s" % (name, tg[0]))
    print("%d failures" % failures)
    return 1 if failures else 0


if __name__ == "__main__":  # tests/fault/enospc-virtio.py imports the driver
    sys.exit(main())
