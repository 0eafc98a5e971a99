#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted seeds of tests/fuzz/corpus/virtio-pci/: one guest
scenario each, named, in the operation encoding of
tests/fuzz/fuzz-virtio-pci.c (an operation byte, a selector byte whose bit 0
picks the device, 04.0 modern or 05.0 transitional, and bits 1-2 the access
width, then the operation's arguments, little-endian).

usage: tests/fuzz/make-virtio-pci-corpus.py [OUTDIR]
"""

import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "corpus", "virtio-pci")

RAM_SIZE = 2 << 20
QSIZE = 16
C_STATUS, C_Q_SELECT, C_Q_SIZE, C_Q_ENABLE, C_Q_DESC = 20, 22, 24, 28, 32
W = {1: 0, 2: 1, 4: 2, 8: 3}


def sel(dev=0, width=1, extra=0):
    return dev | W[width] << 1 | extra


def bar4_write(off, val, width=4, dev=0):
    return struct.pack("<BBHQ", 0, sel(dev, width), off, val)


def common(off, val, width=4, dev=0):
    return struct.pack("<BBBQ", 2, sel(dev, width), off, val)


def bar4_read(off, width=4, dev=0):
    return struct.pack("<BBH", 3, sel(dev, width), off)


def msix(off, val, width=4, dev=0, read=False):
    b = dev | {1: 0, 2: 1, 4: 2, 8: 3}[width] << 5 | (0x80 if read else 0)
    return struct.pack("<BBHQ", 4, b, off, val)


def notify(q, dev=0, raw=None):
    b = dev | q << 3
    if raw is not None:
        return struct.pack("<BBH", 5, b | 0x80, raw)
    return struct.pack("<BB", 5, b)


def cfg_write(at, val, width=4, dev=0):
    return struct.pack("<BBBI", 6, sel(dev, width), at, val)


def cfg_read(at, width=4, dev=0):
    return struct.pack("<BBB", 7, sel(dev, width), at)


def legacy_out(port, val, width=4):
    return struct.pack("<BBBI", 8, sel(1, width), port, val)


def legacy_in(port, width=4):
    return struct.pack("<BBB", 8, sel(1, width, 0x80), port)


def ram(at, data):
    out = b""
    while data:
        chunk, data = data[:255], data[255:]
        out += struct.pack("<BBIB", 9, 0, at, len(chunk)) + chunk
        at += len(chunk)
    return out


def gpa(addr):
    """Any address: selector bit 0 (raw) and bit 1 (64 bits)."""
    return struct.pack("<BQ", 3, addr)


def desc(slot, addr, length, flags, nxt, q=0, dev=0):
    return struct.pack("<BBB", 10, dev, slot << 1 | q) + gpa(addr) + \
        struct.pack("<IHH", length, flags, nxt)


def avail(head, q=0, dev=0, kick=True):
    return struct.pack("<BBBH", 11, dev, q | (4 if kick else 0), head)


def avail_raw(flags, idx, q=0, dev=0, kick=True):
    return struct.pack("<BBBHH", 11, dev, q | 2 | (4 if kick else 0), flags, idx)


def turn(n=32, us=1000):
    return struct.pack("<BBBH", 12, 0, n - 1, us)


def setup(dev=0, packed=False, msix_on=False, nq=1, ring_features=False, blk_features=False,
          driver_ok=True):
    """ring_features: INDIRECT_DESC and EVENT_IDX; blk_features: FLUSH,
    CONFIG_WCE, MQ, DISCARD, WRITE_ZEROES (those offered)."""
    return struct.pack("<BB", 14, dev | (2 if packed else 0) | (4 if msix_on else 0) |
                       (nq - 1) << 3 | (0x20 if ring_features else 0) |
                       (0x40 if blk_features else 0) | (0 if driver_ok else 0x80))


def request(typ=0, sector=0, nsect=1, slot=0, q=0, dev=0):
    t = {0: 0, 1: 1, 4: 2, 8: 3, 11: 4, 13: 5, 99: 7}[typ]
    if sector > 255:
        s = struct.pack("<BQ", t | 0x80, sector)
    else:
        s = struct.pack("<BB", t, sector)
    return struct.pack("<BB", 15, dev | q << 3) + s + struct.pack("<HB", nsect - 1, slot)


def reset(kind, dev=0, q=0):
    return struct.pack("<BB", 16, dev | kind << 1 | q << 3)


def reset_regs(pfn=False):
    """Both devices reset by their drivers' register writes (modern status
    0; legacy status 0 or queue PFN 0); nothing may reach RAM after."""
    return struct.pack("<BB", 16, 0x80 | (0x40 if pfn else 0))


def system_reset():
    """PIIX3 RCPU at 0xCF9; nothing may reach RAM after; BARs again."""
    return struct.pack("<BB", 18, 0x40)


def command(val, dev=0):
    return struct.pack("<BB", 17, dev | val << 3)


def bus_master_off():
    """Both functions lose bus mastering; nothing may reach RAM after."""
    return struct.pack("<BB", 17, 0x80)


def stop():
    return struct.pack("<BB", 18, 0x80)


def cont():
    return struct.pack("<BB", 18, 0)


def isr(dev=0):
    return struct.pack("<BB", 19, sel(dev, 1, 0x80))


def devcfg(off, width=4, dev=0):
    return struct.pack("<BBB", 19, sel(dev, width), off)


def wait():
    return turn(32, 1000) * 4


# Queue 0 of device 0: descriptors at 0x10000, avail 0x11000, used 0x12000.
QB = 0x10000
BUF = 0x100000


def legacy_setup():
    """The transitional device driven through BAR0 (virtio 1.2 4.1.5.1):
    status, features, a queue by PFN, a read kicked through QUEUE_NOTIFY."""
    base = 0x40000
    s = legacy_out(18, 0, 1) + legacy_out(18, 1, 1) + legacy_out(18, 3, 1)
    s += legacy_in(0) + legacy_out(4, 0)
    s += legacy_out(14, 0, 2) + legacy_in(12, 2) + legacy_out(8, base >> 12)
    s += legacy_out(18, 7, 1)
    # The legacy ring of 16: descriptors, avail at +256, used aligned to 4096.
    hdr, data, st = 0x50000, 0x50100, 0x50300
    s += ram(hdr, struct.pack("<IIQ", 0, 0, 0))
    s += ram(base, struct.pack("<QIHH", hdr, 16, 1, 1) +
             struct.pack("<QIHH", data, 512, 3, 2) + struct.pack("<QIHH", st, 1, 2, 0))
    s += ram(base + 256, struct.pack("<HHH", 0, 1, 0))
    s += legacy_out(16, 0, 2) + wait() + legacy_in(19, 1)
    return s


def legacy_kick_again():
    """legacy_setup's read once more (avail slot 1), kicked: in flight."""
    return ram(0x40000 + 256, struct.pack("<HHHH", 0, 2, 0, 0)) + legacy_out(16, 0, 2)


SEEDS = {
    "setup-read": setup() + request(0, 0) + wait() + isr(),
    "setup-write-flush": setup() + request(1, 3, 2) + wait() + request(4, 0, 1, 3) + wait(),
    "packed-read-write": setup(packed=True) + request(0, 1) + wait() + request(1, 2, 1, 3) +
    wait(),
    "msix-read": setup(msix_on=True) + request(0, 5) + wait() + msix(0x800, 0, read=True) +
    msix(12, 1) + request(0, 6, 1, 3) + wait() + msix(12, 0) + wait(),
    "intx-read-isr": setup() + request(0, 7) + wait() + isr() + isr(),
    "multiqueue": setup(nq=2) + request(0, 0, 1, 0, 0) + request(1, 9, 1, 0, 1) + wait(),
    "multiqueue-packed-msix": setup(packed=True, msix_on=True, nq=2) +
    request(0, 0, 1, 0, 0) + request(0, 1, 1, 0, 1) + wait(),
    "reset-mid-io": setup() + request(0, 0, 8) + request(1, 10, 8, 3) + reset(2) + wait() +
    setup() + request(0, 1) + wait(),
    "device-reset-mid-io": setup(nq=2) + request(0, 0, 8) + request(0, 2, 1, 0, 1) +
    reset(1) + wait(),
    "reset-all": setup() + setup(dev=1) + request(0) + request(0, dev=1) + reset(0) + wait(),
    "queue-reset": setup(nq=2) + request(0, 0, 4) + reset(3, q=0) + wait() +
    common(C_Q_SELECT, 0, 2) + common(C_Q_ENABLE, 1, 2) + request(0, 1) + wait(),
    "queue-reset-packed": setup(packed=True) + request(1, 0, 4) + reset(3) + wait() +
    common(C_Q_ENABLE, 1, 2) + request(0, 2) + wait(),
    "legacy-bar0": legacy_setup(),
    "legacy-msix": cfg_write(0x98, 0x80000000, 4, 1) + msix(0, 0, dev=1) +
    legacy_out(20, 0, 2) + legacy_out(14, 0, 2) + legacy_out(22, 0, 2) + legacy_in(20, 2) +
    legacy_setup(),
    "busmaster-off-mid-io": setup() + request(0, 0, 8) + command(0x3) + wait() + command(0x7) +
    notify(0) + wait(),
    "busmaster-off-kick": setup() + command(0x3) + request(0, 0) + wait() + command(0x7) +
    notify(0) + wait(),
    "busmaster-off-inflight": setup(nq=2) + request(0, 0, 8) + request(1, 9, 1, 0, 1) +
    request(0, 1, dev=1) + bus_master_off() + wait() + command(0x7) + command(0x7, 1) +
    setup() + request(0) + wait(),
    # Regression: a queue kicked before DRIVER_OK (the setup up to
    # FEATURES_OK and the queue, by hand), then bus mastering off with the
    # request in flight: it completed into guest RAM afterwards (the drain
    # on bus-master-off in virtio-pci.c only ran with DRIVER_OK set).
    "crash-busmaster-off-before-driver-ok": common(C_STATUS, 1, 1) + common(C_STATUS, 3, 1) +
    common(8, 1, 4) + common(12, 1, 4) + common(C_STATUS, 11, 1) +
    common(C_Q_SELECT, 0, 2) + common(C_Q_SIZE, QSIZE, 2) + common(C_Q_DESC, QB, 8) +
    common(40, QB + 0x1000, 8) + common(48, QB + 0x2000, 8) + common(C_Q_ENABLE, 1, 2) +
    request(0, 0) + bus_master_off() + wait(),
    "bad-ring-addresses": common(C_STATUS, 1, 1) + common(C_STATUS, 3, 1) +
    common(12, 1, 4) + common(8, 1, 4) + common(12, 1, 4) + common(C_STATUS, 11, 1) +
    common(C_Q_SELECT, 0, 2) + common(C_Q_DESC, RAM_SIZE - 8, 8) +
    common(40, RAM_SIZE + 0x1000, 8) + common(48, 0xFFFFFFFFFFFFF000, 8) +
    common(C_Q_ENABLE, 1, 2) + common(C_STATUS, 15, 1) + notify(0) + wait(),
    "desc-out-of-ram": setup() + desc(0, QB + 0x100, 16, 1, 1) +
    desc(1, RAM_SIZE + 0x100, 512, 3, 2) + desc(2, BUF, 1, 2, 0) + avail(0) + wait(),
    "desc-wrap-address": setup() + desc(0, 0xFFFFFFFFFFFFFFF8, 16, 1, 1) +
    desc(1, BUF, 1, 2, 0) + avail(0) + wait(),
    "desc-loop": setup() + ram(BUF, struct.pack("<IIQ", 0, 0, 0)) +
    desc(0, BUF, 16, 1, 1) + desc(1, BUF + 0x100, 512, 1, 0) + avail(0) + wait(),
    "desc-loop-writable": setup() + ram(BUF, struct.pack("<IIQ", 0, 0, 0)) +
    desc(0, BUF, 16, 1, 1) + desc(1, BUF + 0x100, 512, 3, 2) + desc(2, BUF + 0x300, 1, 3, 1) +
    avail(0) + wait(),
    "indirect-read": setup(ring_features=True, blk_features=True) +
    ram(BUF, struct.pack("<IIQ", 0, 0, 3)) +
    ram(0x60000, struct.pack("<QIHH", BUF, 16, 1, 1) +
        struct.pack("<QIHH", BUF + 0x100, 512, 3, 2) +
        struct.pack("<QIHH", BUF + 0x300, 1, 2, 0)) +
    desc(0, 0x60000, 48, 4, 0) + avail(0) + wait() + isr(),
    "packed-indirect-eventidx": setup(packed=True, msix_on=True, ring_features=True) +
    request(0, 1) + wait() + request(1, 2) + wait(),
    "discard-write-zeroes": setup(blk_features=True) + request(11, 0) + wait() +
    request(13, 0, 1, 3) + wait() + devcfg(32, 1) + bar4_write(0x2000 + 32, 0, 1),
    "kick-before-driver-ok": setup(driver_ok=False) + request(0, 0) + wait() +
    common(C_STATUS, 15, 1) + notify(0) + wait(),
    "indirect-loop": setup() + ram(0x60000, struct.pack("<QIHH", BUF, 16, 1, 1) +
                                  struct.pack("<QIHH", BUF + 0x100, 512, 3, 0)) +
    desc(0, 0x60000, 32, 4, 0) + avail(0) + wait(),
    "avail-idx-jump": setup() + request(0) + avail_raw(0, 0x8000) + wait(),
    "rerror-stop-cont": setup() + request(0, 64) + wait() + cont() + wait(),
    "werror-stop-reset": setup() + request(1, 128) + wait() + reset(1) + cont() + wait(),
    "stop-kick-cont": setup() + stop() + request(0, 0) + wait() + cont() + wait(),
    "msix-table-pba": setup(msix_on=True) + msix(0, 0x1234) + msix(8, 0x55) + msix(12, 1) +
    msix(0x800, 0, 8, read=True) + msix(0x7f8, 0, 8) + wait(),
    "pci-cfg-window": cfg_read(0x84, 4) + cfg_write(0x84 + 4, 4 << 8, 4) +
    cfg_write(0x84 + 8, 20, 4) + cfg_write(0x84 + 12, 1, 4) + cfg_write(0x84 + 16, 1, 1) +
    cfg_read(0x84 + 16, 1) + cfg_write(0x84 + 8, 0x3ffe, 4) + cfg_write(0x84 + 12, 4, 4) +
    cfg_read(0x84 + 16, 4),
    "bar-reprogram": setup() + cfg_write(0x20, 0xd0000000) + request(0) +
    cfg_write(0x20, 0xe0000000) + notify(0) + wait(),
    "devcfg-widths": devcfg(0, 8) + devcfg(0, 1) + devcfg(20, 2) + devcfg(60, 8) +
    bar4_write(0x2000 + 32, 1, 1) + bar4_read(0x2fff, 8),
    # Resets and bus mastering off without waiting: requests in flight are
    # orphaned (reads into bounce buffers) or parked.
    "legacy-reset-mid-io": legacy_setup() + legacy_kick_again() + setup() +
    request(0, 0, 8) + reset_regs() + wait() + legacy_setup(),
    "legacy-pfn0-mid-io": legacy_setup() + legacy_kick_again() + reset_regs(pfn=True) +
    wait() + legacy_setup(),
    "legacy-pfn-rewrite-mid-io": legacy_setup() + legacy_kick_again() +
    legacy_out(8, 0x48000 >> 12) + wait() + legacy_out(16, 0, 2) + wait(),
    "busmaster-off-parked-on": setup() + request(0, 0, 8) + request(1, 9, 2, 3) +
    legacy_setup() + legacy_kick_again() + bus_master_off() + command(0x7) +
    command(0x7, 1) + wait() + isr() + request(0, 1, 1, 6) + wait(),
    "system-reset-mid-io": setup(msix_on=True) + setup(dev=1) + request(0, 0, 8) +
    request(0, 0, 1, 0, 0, 1) + system_reset() + setup() + request(0) + wait(),
    "system-reset-stopped": setup() + request(1, 128) + wait() + system_reset() + cont() +
    setup() + request(0, 2) + wait(),
    "stop-mid-io": setup(nq=2) + request(0, 0, 8) + request(1, 9, 1, 0, 1) + stop() + isr() +
    cont() + wait(),
    "stale-queue-select": setup() + common(C_Q_SELECT, 0xffff, 2) + common(C_Q_SIZE, 3, 2) +
    common(C_Q_ENABLE, 1, 2) + notify(3) + notify(0, raw=0x9999) + request(99) + wait(),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s" % (len(SEEDS), OUT))


if __name__ == "__main__":
    main()
