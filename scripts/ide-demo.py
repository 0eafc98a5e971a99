#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The guest-to-host IDE path of `vdisk machine`, shown end to end (make run).

    scripts/ide-demo.py VDISK DISK-IMAGE WORKDIR

Writes a small ISO 9660-looking image into WORKDIR, starts

    vdisk machine -m 64M -drive file=DISK,if=ide,index=0,format=raw
        -drive file=WORKDIR/cd.iso,if=ide,index=2,media=cdrom,format=raw
        --qtest stdio --trace TRACE_PATTERNS

and plays a guest driver over the qtest protocol (tests/lib/qtest.py):
finds the PIIX3 IDE function at 00:01.1 and enables its bus master,
IDENTIFY DEVICE, a PIO READ SECTORS, a DMA WRITE of 4 KiB, FLUSH CACHE, the
same bytes checked in the host file, a DMA READ of them back, and on the
CD-ROM READ CAPACITY and READ(10) by PIO and by DMA.  Every result is
verified; the first mismatch ends the script with status 1.  DISK-IMAGE must
hold 0xa5 from 512 KiB to 1 MiB (run-main.sh's vdisk io step writes it).

Then the trace of the DMA READ is printed, hop by hop, from the guest's
write of the command register to the interrupt: ATA command, bus-master
start and PRD walk, block request through the raw and file nodes, host I/O
submission and completion, the copy into guest RAM and IRQ 14.
"""

import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from qtest import QTest  # noqa: E402

IDE_DEVFN = 0x09
BM = 0xC000
P0, C0, P1, C1 = 0x1F0, 0x3F6, 0x170, 0x376
PRD, BUF, BUF2 = 0x1000, 0x100000, 0x200000
PIO_LBA = 1024  # 512 KiB into the disk
DEMO_LBA = 2048  # 1 MiB
TRACE = ("qtest_command,memory_region_ops_*,ide_*,block_request*,block_driver_rw,"
         "host_io_*,irq_set,irq_pin_change")

# What each trace point is, for the hop listing.
LAYER = {
    "qtest_command": "guest    qtest line",
    "memory_region_ops_write": "memory   port dispatch",
    "memory_region_ops_read": "memory   port dispatch",
    "ide_exec_cmd": "ide      ATA command",
    "ide_dma_start": "ide      DMA command",
    "ide_bmdma_cmd": "ide/bm   bus master command",
    "ide_bmdma_prepare": "ide/bm   PRD table walk",
    "ide_aio_submit": "ide      block request out",
    "block_request": "block    request",
    "block_driver_rw": "block    driver",
    "host_io_submit": "host     I/O submitted",
    "host_io_complete": "host     I/O completed",
    "block_request_done": "block    request done",
    "ide_aio_done": "ide      block request back",
    "ide_bmdma_rw": "ide/bm   DMA copy",
    "ide_dma_done": "ide      DMA done",
    "ide_irq_raise": "ide      interrupt",
    "irq_set": "irq      ISA line",
    "irq_pin_change": "irq      IOAPIC pin",
}


class Failed(Exception):
    pass


def step(msg):
    print("  - " + msg)


def check(cond, what):
    if not cond:
        raise Failed(what)


def make_iso(path, blocks=1024):
    """2 MiB: block 16 a primary volume descriptor header ("CD001"), every
    block's first 16 bytes "VDISK-CD %07d"."""
    with open(path, "wb") as f:
        for n in range(blocks):
            b = bytearray(b"VDISK-CD %07d" % n) + bytes([n & 0xFF]) * (2048 - 16)
            if n == 16:
                b[0:8] = b"\x01CD001\x01\x00"
            f.write(b)


class Driver:
    def __init__(self, qt):
        self.qt = qt

    def wait(self, ctl=C0, mask=0x80):
        for _ in range(100000):
            st = self.qt.inb(ctl)
            if not st & mask:
                return st
        raise Failed("drive stays busy (status 0x%02x)" % st)

    def lba28(self, base, lba, n, dev=0x40):
        for reg, v in ((2, n), (3, lba), (4, lba >> 8), (5, lba >> 16)):
            self.qt.outb(base + reg, v & 0xFF)
        self.qt.outb(base + 6, dev | ((lba >> 24) & 0xF))

    def pio_in(self, base, nbytes):
        return b"".join(self.qt.inw(base).to_bytes(2, "little") for _ in range(nbytes // 2))

    def dma(self, ch, cmd, prd_entries, setup, to_memory):
        """Program the PRD table and the bus master, run @setup (task file
        and command), START, poll BM status; returns it."""
        bm = BM + 8 * ch
        table = b"".join(struct.pack("<II", a, n) for a, n in prd_entries)
        self.qt.bufwrite(PRD, table)
        self.qt.outb(bm, 0)
        self.qt.outb(bm + 2, 0x06)
        self.qt.outl(bm + 4, PRD)
        setup()
        self.qt.outb(bm, 0x01 | (0x08 if to_memory else 0))
        for _ in range(100000):
            st = self.qt.inb(bm + 2)
            if st & 5 != 1:
                break
        self.qt.outb(bm, 0)
        return st

    def atapi_pio(self, cdb, bcl=0x800):
        qt = self.qt
        qt.outb(P1 + 6, 0)
        qt.outb(P1 + 1, 0)
        qt.outb(P1 + 4, bcl & 0xFF)
        qt.outb(P1 + 5, bcl >> 8)
        qt.outb(P1 + 7, 0xA0)
        self.wait(C1)
        cdb = bytes(cdb) + bytes(12 - len(cdb))
        for i in range(0, 12, 2):
            qt.outw(P1, cdb[i] | cdb[i + 1] << 8)
        data = b""
        while True:
            st = self.wait(C1)
            if not st & 0x08:
                break
            n = qt.inb(P1 + 4) | qt.inb(P1 + 5) << 8
            data += self.pio_in(P1, (n + 1) & ~1)[:n]
            qt.inb(P1 + 7)
        st = qt.inb(P1 + 7)
        check(not st & 0x01, "ATAPI 0x%02x failed: status 0x%02x error 0x%02x" % (
            cdb[0], st, qt.inb(P1 + 1)))
        return data


def workload(qt, disk):
    g = Driver(qt)
    qt.irq_intercept_in("ioapic")
    ids = qt.pci_cfg_readl(IDE_DEVFN, 0)
    check(ids == 0x70108086, "no PIIX3 IDE at 00:01.1 (0x%08x)" % ids)
    qt.pci_cfg_writel(IDE_DEVFN, 0x20, BM | 1)
    qt.pci_cfg_writew(IDE_DEVFN, 0x04, 0x05)
    step("PCI 00:01.1 is 8086:7010 (PIIX3 IDE); BAR4 (bus master) at 0x%x, "
         "I/O and bus mastering on" % BM)

    qt.outb(P0 + 6, 0xA0)
    qt.outb(P0 + 7, 0xEC)
    st = g.wait()
    check(st == 0x58, "IDENTIFY: status 0x%02x" % st)
    w = g.pio_in(P0, 512)
    words = struct.unpack("<256H", w)
    model = b"".join(x.to_bytes(2, "big") for x in words[27:47]).decode().strip()
    serial = b"".join(x.to_bytes(2, "big") for x in words[10:20]).decode().strip()
    sectors = words[100] | words[101] << 16 | words[102] << 32
    check(sectors * 512 == os.path.getsize(disk), "IDENTIFY: %d sectors" % sectors)
    step("IDENTIFY DEVICE (PIO): model %r, serial %r, %d sectors (%d MiB), LBA48 %s" % (
        model, serial, sectors, sectors >> 11, "yes" if words[83] & 1 << 10 else "no"))

    g.lba28(P0, PIO_LBA, 2)
    qt.outb(P0 + 7, 0x20)
    data = b""
    for _ in range(2):
        st = g.wait()
        check(st == 0x58, "READ SECTORS: status 0x%02x" % st)
        data += g.pio_in(P0, 512)
    check(data == b"\xa5" * 1024, "READ SECTORS: data differs from the image")
    step("READ SECTORS (PIO) LBA %d, 2 sectors: 1024 bytes of 0xa5, as vdisk io wrote them" %
         PIO_LBA)

    payload = b"".join(b"vdisk IDE demo, sector %04d. " % i + (bytes(range(256)) * 2)[:512 - 29]
                       for i in range(8))
    qt.bufwrite(BUF, payload)
    st = g.dma(0, 0xCA, [(BUF, 0x80000000 | 4096)],
               lambda: (g.lba28(P0, DEMO_LBA, 8), qt.outb(P0 + 7, 0xCA)), False)
    irq = qt.get_irq(14)
    ata = qt.inb(P0 + 7)
    check(st == 0x04 and ata == 0x50 and irq, "WRITE DMA: BM 0x%02x, status 0x%02x, IRQ %s" % (
        st, ata, irq))
    step("WRITE DMA LBA %d, 8 sectors from guest 0x%x: BM status 0x%02x, IRQ 14 raised, "
         "status 0x%02x" % (DEMO_LBA, BUF, st, ata))

    qt.outb(P0 + 6, 0x40)
    qt.outb(P0 + 7, 0xE7)
    st = g.wait()
    qt.inb(P0 + 7)
    check(st == 0x50, "FLUSH CACHE: status 0x%02x" % st)
    with open(disk, "rb") as f:
        f.seek(DEMO_LBA * 512)
        host = f.read(4096)
    check(host == payload, "the host file does not hold what the guest wrote")
    step("FLUSH CACHE; the host file %s holds the 4 KiB at offset %d" % (
        os.path.basename(disk), DEMO_LBA * 512))

    qt.memset(BUF2, 4096, 0)
    st = g.dma(0, 0xC8, [(BUF2, 0x80000000 | 4096)],
               lambda: (g.lba28(P0, DEMO_LBA, 8), qt.outb(P0 + 7, 0xC8)), True)
    irq = qt.get_irq(14)
    ata = qt.inb(P0 + 7)
    back = qt.bufread(BUF2, 4096)
    check(st == 0x04 and ata == 0x50 and irq, "READ DMA: BM 0x%02x, status 0x%02x" % (st, ata))
    check(back == payload, "READ DMA: data differs from what was written")
    step("READ DMA LBA %d, 8 sectors into guest 0x%x: the same 4 KiB back (BM 0x%02x, IRQ)" % (
        DEMO_LBA, BUF2, st))

    cap = g.atapi_pio([0x25])
    last, blksize = struct.unpack(">II", cap)
    check(blksize == 2048 and last == 1023, "READ CAPACITY: %d x %d" % (last, blksize))
    step("CD-ROM READ CAPACITY: last block %d, %d bytes per block" % (last, blksize))
    data = g.atapi_pio([0x28, 0, 0, 0, 0, 16, 0, 0, 2], bcl=0x800)
    check(len(data) == 4096 and data[1:6] == b"CD001" and data[2048:2064] == b"VDISK-CD 0000017",
          "READ(10): %r" % data[:16])
    step("CD-ROM READ(10) (PIO, bursts of 2048) blocks 16-17: 'CD001' volume descriptor and "
         "block 17's marker")
    qt.memset(BUF2, 8192, 0)

    def packet():
        qt.outb(P1 + 6, 0)
        qt.outb(P1 + 1, 0x01)  # DMA
        qt.outb(P1 + 7, 0xA0)
        g.wait(C1)
        cdb = bytes([0x28, 0, 0, 0, 0x01, 0x00, 0, 0, 4]) + bytes(3)
        for i in range(0, 12, 2):
            qt.outw(P1, cdb[i] | cdb[i + 1] << 8)
    st = g.dma(1, 0xA0, [(BUF2, 0x80000000 | 8192)], packet, True)
    data = qt.bufread(BUF2, 8192)
    ata = qt.inb(P1 + 7)
    check(st == 0x04 and ata == 0x50 and data[:16] == b"VDISK-CD 0000256",
          "ATAPI DMA: BM 0x%02x status 0x%02x %r" % (st, ata, data[:16]))
    step("CD-ROM READ(10) by DMA, blocks 256-259 into guest 0x%x: verified" % BUF2)


def show_hops(log):
    lines = [ln.rstrip("\n") for ln in open(log, errors="replace")]
    ev = []
    for ln in lines:
        parts = ln.split(" ", 2)
        if len(parts) >= 2:
            try:
                ev.append((float(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
            except ValueError:
                pass
    # The DMA READ: its ATA command, back to the qtest line that wrote it,
    # on to IRQ 14 reaching the interrupt controller.
    cmd = next(i for i, e in enumerate(ev) if e[1] == "ide_exec_cmd" and "cmd=0xc8" in e[2])
    start = max(i for i in range(cmd) if ev[i][1] == "qtest_command" and "0x1f7" in ev[i][2])
    end = next(i for i in range(cmd, len(ev))
               if ev[i][1] == "irq_pin_change" and "pin=14 level=1" in ev[i][2])
    t0 = ev[start][0]
    print()
    print("One request, traced (READ DMA, 4 KiB at LBA %d; vdisk --trace, times in us):" % DEMO_LBA)
    polls = 0
    for t, name, args in ev[start:end + 1]:
        # BM status polls while the host I/O is in flight: counted, not listed.
        if name == "qtest_command" and args.startswith("inb"):
            polls += 1
            continue
        if name == "memory_region_ops_read":
            continue
        if polls:
            print("  %9s  %-28s %s" % ("", "guest    polls", "%d BM status reads (ACTIVE)" % polls))
            polls = 0
        print("  %9.1f  %-28s %s %s" % ((t - t0) * 1e6, LAYER.get(name, name), name, args))


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    vdisk, disk, work = sys.argv[1:4]
    iso = os.path.join(work, "cd.iso")
    log = os.path.join(work, "ide-trace.log")
    make_iso(iso)
    args = ["-m", "64M",
            "-drive", "file=%s,if=ide,index=0,format=raw" % disk,
            "-drive", "file=%s,if=ide,index=2,media=cdrom,format=raw" % iso,
            "--trace", TRACE]
    print("$ %s machine %s --qtest stdio 2>%s" % (vdisk, " ".join(args), log))
    with open(log, "w") as logf:
        qt = QTest.vdisk(vdisk, *args, stderr=logf)
        try:
            workload(qt, disk)
        except Failed as e:
            print("ide-demo: FAILED: %s" % e)
            return 1
        finally:
            rc = qt.close()
    if rc != 0:
        print("ide-demo: vdisk machine exited with status %s" % rc)
        return 1
    show_hops(log)
    print()
    print("(the whole trace: %s, %d lines)" % (log, sum(1 for _ in open(log, errors="replace"))))
    return 0


sys.exit(main())
