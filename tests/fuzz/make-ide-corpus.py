#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted seeds of tests/fuzz/corpus/ide/ for tests/fuzz/fuzz-ide.c.

Each seed is a sequence of the target's operations (see the decoder in
fuzz-ide.c): one guest-driver scenario each, so that a campaign starts from
inputs that reach deep states (DMA in flight, error policies, ATAPI bursts,
media changes) and so that the replay in `make check` covers the classic
IDE bugs.  Re-run after changing the decoder:

    python3 tests/fuzz/make-ide-corpus.py tests/fuzz/corpus/ide
"""

import os
import struct
import sys

RAM = 2 << 20
PRD = 0x1000
BUF = 0x10000


def u8(v):
    return struct.pack("<B", v & 0xFF)


def u16(v):
    return struct.pack("<H", v & 0xFFFF)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


PORTS = ([0x1F0 + i for i in range(8)] + [0x3F6, 0x3F7] + [0x170 + i for i in range(8)] +
         [0x376, 0x377] + [0xC000 + i for i in range(16)])


def outp(port, val, size=1):
    return u8({1: 0, 2: 1, 4: 2}[size]) + u8(PORTS.index(port)) + u32(val)


def inp(port, size=1):
    return u8({1: 3, 2: 23, 4: 43}[size]) + u8(PORTS.index(port))


def ata(cmd, nsect=0, lba=0, dev=0xE0, feat=0, bus=0, lba48=False, hob_nsect=0, hob_lcyl=0):
    b = bus | (2 if lba48 else 0)
    s = u8(4) + u8(b) + u8(dev) + u8(nsect) + u8(feat) + u8(cmd) + u32(lba)
    if lba48:
        s += u8(hob_nsect) + u8(hob_lcyl)
    return s


def packet(cdb, bcl=0xFFFE, dma=False, bus=1, slave=False):
    b = (0 if bus == 1 else 1) | (2 if dma else 0) | (0x10 if slave else 0)
    cdb = bytes(cdb) + bytes(12 - len(cdb))
    return u8(6) + u8(b) + u16(bcl) + cdb


def prdt(entries, at=PRD, raw_addr=False):
    """entries: (addr, count); EOT is set on the last by the target."""
    s = u8(8) + u16(at // 8) + u8(len(entries) - 1)
    for addr, count in entries:
        s += u8(1 if raw_addr else 0) + u32(addr) + u32(count)
    return s


def ram(at, data):
    out = b""
    for i in range(0, len(data), 255):
        chunk = data[i:i + 255]
        out += u8(9) + u32(at + i) + u8(len(chunk)) + chunk
    return out


def bm(cmd, ch=0, prd=PRD, clear=True):
    b = ch | 2 | (4 if clear else 0) | ((cmd & 0x09) << 3)
    return u8(10) + u8(b) + u16(prd // 8)


def step(n=8, us=100):
    return u8(12) + u8(n) + u16(us)


def pio_read(n, bus=0, dword=False):
    return u8(14) + u8(bus | (2 if dword else 0)) + u16(n - 1)


def pio_write(n, bus=0, dword=False):
    return u8(15) + u8(bus | (2 if dword else 0)) + u16(n - 1)


def ctrl(val, bus=0, after=0):
    # first write: val & 0x86, second: (b >> 4) & 0x82
    b = bus | (val & 0x86) | ((after & 0x82) << 4 & 0xF0)
    return u8(16) + u8(b)


def srst(bus=0):
    return ctrl(0x04, bus, 0)


def media(what):
    return u8(17) + u8(what)


def pci_cmd(v):
    return u8(18) + u8(v)


def cont():
    return u8(19)


def hw_reset():
    return u8(139)


def dma(cmd, lba, nsect, entries, write_dir=False, ch=0, dev=0xE0, run=True):
    s = prdt(entries) + ata(cmd, nsect, lba, dev=dev, bus=ch)
    s += bm(0x00 if write_dir else 0x08, ch)  # stop + PRD pointer
    s += bm(0x01 if write_dir else 0x09, ch)
    if run:
        s += step(16) + step(16)
    return s


def atapi_pio(cdb, bcl=0xFFFE, bursts=4):
    s = packet(cdb, bcl) + step(8)
    for _ in range(bursts):
        s += pio_read(4096, bus=1) + step(8)
    return s + inp(0x177)


SEEDS = {}

SEEDS["identify"] = ata(0xEC, dev=0xA0) + pio_read(256) + inp(0x1F7)
SEEDS["pio-read-sectors"] = (ata(0x20, 4, 10) + step() + (pio_read(256) + step()) * 4 +
                             inp(0x1F7))
SEEDS["pio-write-sectors"] = (ata(0x30, 2, 20) + pio_write(256) + step() + pio_write(256) +
                              step() + inp(0x1F7))
SEEDS["read-multiple"] = (ata(0xC6, 8) + step() + ata(0xC4, 16, 100) + step() +
                          (pio_read(2048, dword=True) + step()) * 2 + inp(0x1F7))
SEEDS["write-multiple-lba48"] = (ata(0xC6, 4) + ata(0x39, 8, 0x1000, lba48=True) +
                                 (pio_write(1024) + step()) * 2)
SEEDS["read-ext-lba48"] = (ata(0x24, 2, 0x3FFF, lba48=True, hob_nsect=0) + step() +
                           (pio_read(256) + step()) * 2)
SEEDS["dma-read"] = dma(0xC8, 0, 8, [(BUF, 4096)]) + inp(0xC002) + inp(0x1F7)
SEEDS["dma-write"] = (ram(BUF, bytes(range(256)) * 2) +
                      dma(0xCA, 16, 1, [(BUF, 512)], write_dir=True) + inp(0x1F7))
SEEDS["dma-read-ext-multi-prd"] = (dma(0x25, 0, 131, [(BUF, 512), (BUF + 0x4000, 0),
                                                      (BUF + 0x18000, 0x400)]) + inp(0x1F7))
# CVE-2014-9718: PRDs shorter than the transfer.
SEEDS["cve-2014-9718-short-prdt"] = (dma(0xC8, 0, 2, [(BUF, 256)]) + dma(0xC8, 0, 1, [(BUF, 16)]) +
                                     inp(0xC002) + inp(0x1F7))
SEEDS["dma-prd-outside-ram"] = (prdt([(RAM - 256, 512), (RAM + 0x1000, 4096), (0xFFFFFF00, 512)],
                                     raw_addr=True) + ata(0xC8, 10, 0) + bm(0x08) + bm(0x09) +
                                step(16) + inp(0xC002) + ata(0xCA, 10, 0) + bm(0x00) +
                                bm(0x01) + step(16))
SEEDS["dma-no-eot"] = (ram(PRD, (u32(BUF) + u32(512)) * 40) + ata(0xC8, 200, 0) + bm(0x08) +
                       bm(0x09) + step(16))
SEEDS["dma-read-error-stop-cont"] = (dma(0xC8, 60, 8, [(BUF, 4096)]) + inp(0xC002) + cont() +
                                     step(16) + inp(0xC002) + inp(0x1F7))
SEEDS["dma-write-enospc-stop"] = (dma(0xCA, 128, 1, [(BUF, 512)], write_dir=True) + cont() +
                                  step(16) + dma(0xCA, 129, 1, [(BUF, 512)], write_dir=True) +
                                  inp(0x1F7) + inp(0x1F1))
SEEDS["pio-read-error-stop"] = (ata(0x20, 1, 64) + step() + cont() + step() + pio_read(256) +
                                hw_reset() + step())
SEEDS["trim"] = (ram(BUF, u32(0) + u16(0) + u16(10) + u32(100) + u16(0) + u16(0xFFFF)) +
                 prdt([(BUF, 512)]) + ata(0x06, 1, 0, feat=1) + bm(0x00) + bm(0x01) + step(16) +
                 inp(0x1F7))
SEEDS["flush-setfeatures"] = (ata(0xEF, 0, 0, feat=0x82) + step() + ata(0xE7, dev=0xA0) + step() +
                              ata(0xEF, 0x45, 0, feat=0x03) + ata(0xEF, 0, 0, feat=0x02) +
                              ata(0x91, 0x11, 0, dev=0xA3) + ata(0x20, 1, 0, dev=0xA0) + step() +
                              pio_read(256) + ata(0xF8) + ata(0x27, lba48=True) + ata(0x90) +
                              ata(0x98) + ata(0x40, 5, 5) + ata(0xB0, feat=0xD4, lba=0xC24F00))
SEEDS["atapi-basic"] = (atapi_pio([0x00]) + atapi_pio([0x03, 0, 0, 0, 18]) +
                        atapi_pio([0x12, 0, 0, 0, 36]) + atapi_pio([0x25]) +
                        atapi_pio([0x28, 0, 0, 0, 0, 1, 0, 0, 3], bcl=0x800))
SEEDS["atapi-info"] = (atapi_pio([0x43, 0, 0, 0, 0, 0, 0, 0, 0xFF]) +
                       atapi_pio([0x43, 2, 0, 0, 0, 0, 0, 0, 0xFF, 0x80]) +
                       atapi_pio([0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 0xFF]) +
                       atapi_pio([0x1A, 0, 0x01, 0, 0xFF]) +
                       atapi_pio([0x46, 0, 0, 0, 0, 0, 0, 0, 0xFF]) +
                       atapi_pio([0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8]) +
                       atapi_pio([0x51, 0, 0, 0, 0, 0, 0, 0, 0xFF]) +
                       atapi_pio([0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8]) +
                       atapi_pio([0xAD, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF]) +
                       atapi_pio([0xBB]) + atapi_pio([0x2B, 0, 0, 0, 0, 5]) + atapi_pio([0xFF]))
SEEDS["atapi-dma-read"] = (prdt([(BUF, 8192)]) + bm(0x08, ch=1) +
                           packet([0x28, 0, 0, 0, 0, 2, 0, 0, 4], bcl=0, dma=True) + step() +
                           bm(0x09, ch=1) + step(16) + inp(0xC00A) + inp(0x177))
SEEDS["atapi-read-cd-raw"] = (atapi_pio([0xBE, 0, 0, 0, 0, 3, 0, 0, 2, 0xF8], bcl=0x1000) +
                              atapi_pio([0xBE, 0, 0, 0, 0, 3, 0, 0, 1, 0x10], bcl=1))
# CVE-2015-5154: data after a packet command without a data phase.
SEEDS["cve-2015-5154-start-stop"] = (packet([0x1B, 0, 0, 0, 1], bcl=0) + pio_write(4096, bus=1) +
                                     pio_write(1024, bus=1, dword=True) + inp(0x177))
# CVE-2020-29443: READ(12) / READ CD with huge LBA and length.
SEEDS["cve-2020-29443-atapi-range"] = (
    atapi_pio([0xA8, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]) +
    atapi_pio([0xA8, 0, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]) +
    atapi_pio([0xBE, 0, 0xFF, 0xFF, 0xFF, 0xF0, 0xFF, 0xFF, 0xFF, 0x10]) +
    atapi_pio([0x28, 0, 0, 0, 0x07, 0xFF, 0, 0, 2]))
SEEDS["atapi-media-change"] = (atapi_pio([0x1E, 0, 0, 0, 1]) + media(0x00) + media(0x80) +
                               media(2) + atapi_pio([0x00]) + media(3 | 0x40) + media(1) +
                               atapi_pio([0x00]) * 3 + atapi_pio([0x03, 0, 0, 0, 18]) +
                               atapi_pio([0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8]) +
                               atapi_pio([0x1B, 0, 0, 0, 2]) + atapi_pio([0x1B, 0, 0, 0, 3]) +
                               media(3) + media(4) + atapi_pio([0x25]))
SEEDS["srst-during-dma"] = (dma(0xC8, 0, 64, [(BUF, 0x8000)], run=False) + srst() + step(16) +
                            inp(0xC002) + inp(0x1F7))
SEEDS["bm-stop-and-reset"] = (dma(0xC8, 0, 128, [(BUF, 0)], run=False) + bm(0x08) + step() +
                              dma(0xCA, 0, 128, [(BUF, 0)], write_dir=True, run=False) +
                              hw_reset() + step(16) + inp(0x1F7))
SEEDS["slave-disk-ignore"] = (ata(0x20, 2, 7, dev=0xF0, bus=1) + step() + pio_read(256, bus=1) +
                              step() + pio_read(256, bus=1) + ata(0xEC, dev=0xB0) +
                              inp(0x1F7) + ata(0x90, dev=0xB0))
SEEDS["no-busmaster"] = pci_cmd(0x01) + dma(0xC8, 0, 1, [(BUF, 512)]) + inp(0xC002) + pci_cmd(5)
SEEDS["nien-hob-regs"] = (ctrl(0x02) + ata(0x20, 1, 3) + step() + ctrl(0x80) + inp(0x1F2) +
                          inp(0x1F3) + inp(0x3F6) + ctrl(0x00) + pio_read(256))
# Found by review, confirmed with this target under LeakSanitizer: a second
# command while a failed PIO read waits for its retry (test-ide.c
# test_fuzz_retry_held_request).
SEEDS["crash-retry-held-request"] = (ata(0x20, 1, 64) + step() + ata(0x20, 1, 64) + step() +
                                     cont() + step() + step())
SEEDS["atapi-dma-error-stop"] = (prdt([(BUF, 8192)]) + bm(0x08, ch=1) +
                                 packet([0x28, 0, 0, 0, 0, 9, 0, 0, 4], bcl=0, dma=True) +
                                 bm(0x09, ch=1) + step(16) + inp(0xC00A) + cont() + step(16) +
                                 media(0x80) + media(2) + cont() + step(16) +
                                 atapi_pio([0x28, 0, 0, 0, 0, 9, 0, 0, 2], bcl=0x800))
SEEDS["pio-write-errors"] = (ata(0x30, 2, 129) + pio_write(256) + step() + inp(0x1F7) +
                             inp(0x1F1) + ata(0xC6, 2) + ata(0xC5, 2, 127) + pio_write(512) +
                             step() + inp(0x1F7) + ata(0x30, 2, 128) + pio_write(256) + step() +
                             cont() + step() + pio_write(256) + step() + inp(0x1F7))
SEEDS["flush-error"] = (ata(0xE7, dev=0xA0) + step() + inp(0x1F7) + inp(0x1F1) +
                        ata(0xEA, dev=0x40) + step() + inp(0x1F7))
SEEDS["trim-error-and-empty"] = (ram(BUF, u32(98) + u16(0) + u16(4)) + prdt([(BUF, 512)]) +
                                 ata(0x06, 1, 0, feat=1) + bm(0x00) + bm(0x01) + step(16) +
                                 inp(0x1F7) + inp(0x1F1) + ata(0x06, 0, 0, feat=1) + bm(0x00) +
                                 bm(0x01) + step(16) + inp(0x1F7))
SEEDS["atapi-dma-read-cd-raw"] = (prdt([(BUF, 3 * 2352)]) + bm(0x08, ch=1) +
                                  packet([0xBE, 0, 0, 0, 0, 3, 0, 0, 3, 0xF8], bcl=0, dma=True) +
                                  bm(0x09, ch=1) + step(16) + inp(0xC00A) + inp(0x177))
SEEDS["atapi-dvd-medium"] = (media(0x00) + media(2) + media(3 | 31 << 3) + media(1) +
                             atapi_pio([0x00]) * 2 + atapi_pio([0x03, 0, 0, 0, 18]) +
                             atapi_pio([0xAD, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x04]) +
                             atapi_pio([0xAD, 0, 0, 0, 0, 0, 0, 0x01, 0, 0xFF]) +
                             atapi_pio([0xAD, 0, 0, 0, 0, 0, 0, 0x04, 0x08, 0x04]) +
                             atapi_pio([0xAD, 0, 0, 0, 0, 0, 0, 0xFF, 0, 0xFF]) +
                             atapi_pio([0x46, 0, 0, 0, 0, 0, 0, 0, 0xFF]) + atapi_pio([0x25]))
SEEDS["set-features-modes"] = (ata(0xEF, 0x12, feat=0x03) + ata(0xEF, 0x22, feat=0x03) +
                               ata(0xEF, 0x45, feat=0x03) + ata(0xEF, 0x0C, feat=0x03) +
                               ata(0xEF, 0x30, feat=0x03) + ata(0xEF, feat=0x66) +
                               ata(0xEF, feat=0x13) + ata(0xEC, dev=0xA0) + pio_read(256))
SEEDS["multiple-off"] = (ata(0xC6, 0) + ata(0xC4, 1, 0) + inp(0x1F1) + ata(0xC5, 1, 0) +
                         inp(0x1F1) + ata(0xC6, 3) + inp(0x1F1) + ata(0x29, 1, lba48=True))
SEEDS["port-sweep"] = b"".join(outp(p, 0xA5A5A5A5 ^ i, s) + inp(p, s)
                               for i, p in enumerate(PORTS) for s in (1, 2, 4))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "ide")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s" % (len(SEEDS), out))


main()
