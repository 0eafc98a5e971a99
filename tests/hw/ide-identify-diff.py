# SPDX-License-Identifier: MIT
"""Scenario for tests/hw/ide-identify-diff.sh: IDENTIFY DEVICE and IDENTIFY
PACKET DEVICE words of `vdisk machine` against QEMU 7.2 (-machine pc, TCG,
-bios HALT.bin, -qtest stdio, -nodefaults) for the same images and drive
options: all 256 words must be equal except the masked ones, each with its
reason.  argv: vdisk qemu tmpdir.

QEMU 7.2 no longer takes serial=/model= on -drive; the same values go to
it as -global ide-hd.serial=/ide-hd.model= (ide-cd.* for the CD-ROM), and
to vdisk as -drive serial=,model=.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qtest import QTest, make_halt_bios  # noqa: E402

VDISK, QEMU, TMP = sys.argv[1:4]

# word -> reason.  Empty: every word matches for the configurations below,
# including the CHS words 1, 3, 6 and 54-58 that both guess from an MBR
# partition table as QEMU's hd_geometry_guess does.
MASKED = {}


def sparse(name, size, mbr=None):
    """A sparse image; mbr=(end_head, end_sector) writes a one-partition MBR."""
    p = os.path.join(TMP, name)
    with open(p, "wb") as f:
        f.truncate(size)
        if mbr:
            part = bytes([0x80, 1, 1, 0, 0x83, mbr[0], mbr[1], 0xFF])
            part += (63).to_bytes(4, "little") + (size // 512 - 63).to_bytes(4, "little")
            f.seek(0x1BE)
            f.write(part)
            f.seek(510)
            f.write(b"\x55\xaa")
    return p


def identify(qt, base, cmd):
    qt.outb(base + 6, 0)
    qt.outb(base + 7, cmd)
    end = time.monotonic() + 10
    while qt.inb(base + 0x206) & 0x80 and time.monotonic() < end:
        time.sleep(0.001)
    st = qt.inb(base + 7)
    words = [qt.inw(base) for _ in range(256)] if st & 0x08 else None
    return st, words


def set_features(qt, base, feature, count=0):
    qt.outb(base + 6, 0)
    qt.outb(base + 1, feature)
    qt.outb(base + 2, count)
    qt.outb(base + 7, 0xEF)
    end = time.monotonic() + 10
    while qt.inb(base + 0x206) & 0x80 and time.monotonic() < end:
        time.sleep(0.001)
    return qt.inb(base + 7)


def scenario(qt):
    out = {}
    out["hd"] = identify(qt, 0x1F0, 0xEC)
    out["cd_ata"] = identify(qt, 0x170, 0xEC)[0]
    out["cd"] = identify(qt, 0x170, 0xA1)
    # Write cache off, UDMA 2, then IDENTIFY again (words 85 and 88).
    out["wce_off"] = set_features(qt, 0x1F0, 0x82)
    out["udma2"] = set_features(qt, 0x1F0, 0x03, 0x42)
    out["hd_after"] = identify(qt, 0x1F0, 0xEC)
    return out


CONFIGS = [
    # (name, hd image size, hd options, global/drive serial, model)
    ("64M-serial-model", 64 << 20, "cache=writeback", "testdisk", "vdisk test model"),
    ("1G-defaults", 1 << 30, "cache=writeback", None, None),
    ("200G-writethrough", 200 << 30, "cache=writethrough", "QM-LONG-SERIAL-12345", None),
    ("odd-size", (7 << 20) + 3 * 512, "cache=writeback", None, "M"),
    ("mbr-4h-32s", 100 << 20, "cache=writeback", None, None, (3, 32)),
    ("mbr-255h-63s", 2 << 30, "cache=writeback", None, None, (254, 63)),
    ("mbr-no-end-head", 50 << 20, "cache=writeback", None, None, (0, 63)),
]


def run(kind, bios, hd, hdopts, serial, model, iso):
    if kind == "qemu":
        args = ["-drive", "file=%s,if=ide,index=0,format=raw,%s" % (hd, hdopts),
                "-drive", "file=%s,if=ide,index=2,media=cdrom,format=raw" % iso]
        if serial:
            args += ["-global", "ide-hd.serial=%s" % serial]
        if model:
            args += ["-global", "ide-hd.model=%s" % model]
        qt = QTest.qemu(QEMU, bios, *args, stderr=open(os.devnull, "w"))
    else:
        d = "file=%s,if=ide,index=0,format=raw,%s" % (hd, hdopts)
        if serial:
            d += ",serial=%s" % serial
        if model:
            d += ",model=%s" % model
        qt = QTest.vdisk(VDISK, "-drive", d, "-drive",
                         "file=%s,if=ide,index=2,media=cdrom,format=raw" % iso)
    with qt:
        return scenario(qt)


def vdisk_has_ide():
    """The board gets the PIIX3 IDE at 01.1 from machine/pc.c; skip until
    then rather than fail."""
    with QTest.vdisk(VDISK, stderr=open(os.devnull, "w")) as qt:
        return qt.pci_cfg_readl(0x09, 0) == 0x70108086


def main():
    if not vdisk_has_ide():
        print("SKIP: vdisk machine has no PIIX3 IDE at 01.1 (board not wired)")
        return 77
    bios = make_halt_bios(os.path.join(TMP, "HALT.bin"))
    iso = sparse("cd.iso", 4 << 20)
    failures = 0
    for name, size, opts, serial, model, *mbr in CONFIGS:
        hd = sparse("hd-%s.img" % name, size, mbr[0] if mbr else None)
        ref = run("qemu", bios, hd, opts, serial, model, iso)
        ours = run("vdisk", bios, hd, opts, serial, model, iso)
        for key in ref:
            a, b = ref[key], ours[key]
            if key == "cd_ata" or key in ("wce_off", "udma2"):
                if a != b:
                    print("FAIL   %s %s: status QEMU 0x%02x, vdisk 0x%02x" % (name, key, a, b))
                    failures += 1
                continue
            (sa, wa), (sb, wb) = a, b
            if sa != sb or (wa is None) != (wb is None):
                print("FAIL   %s %s: status QEMU 0x%02x, vdisk 0x%02x" % (name, key, sa, sb))
                failures += 1
                continue
            bad = [i for i in range(256) if wa[i] != wb[i] and i not in MASKED]
            for i in bad:
                print("FAIL   %s %s word %d: QEMU 0x%04x, vdisk 0x%04x" % (name, key, i, wa[i],
                                                                        wb[i]))
            masked = [i for i in range(256) if wa[i] != wb[i] and i in MASKED]
            for i in masked:
                print("masked %s %s word %d: QEMU 0x%04x, vdisk 0x%04x (%s)"
                      % (name, key, i, wa[i], wb[i], MASKED[i]))
            failures += len(bad)
            if not bad:
                print("same   %s %s: 256 words (%d masked differ)" % (name, key, len(masked)))
    print("%d differences" % failures)
    return 1 if failures else 0


sys.exit(main())
