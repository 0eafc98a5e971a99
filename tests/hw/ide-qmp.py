# SPDX-License-Identifier: MIT
"""Scenario for tests/hw/ide-qmp.sh: the IDE devices with QMP beside the
test protocol, against QEMU 7.2 and `vdisk machine` alike:

 - media change on the ATAPI CD-ROM: eject, blockdev-change-medium, the
   DEVICE_TRAY_MOVED events, what the guest sees (NOT READY, then UNIT
   ATTENTION, then the new capacity), a guest-locked tray refusing eject;
 - rerror=stop: a failed DMA read (blkdebug) stops the machine with
   BLOCK_IO_ERROR and STOP, keeps the request (BM still active), and QMP
   cont retries it to completion (ide-test's retry case).

argv: vdisk qemu tmpdir.  Observations of both machines must be equal.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qtest import QTest, make_halt_bios  # noqa: E402
from qmp import QMP  # noqa: E402

VDISK, QEMU, TMP = sys.argv[1:4]
P0, C0, P1, C1, BM = 0x1F0, 0x3F6, 0x170, 0x376, 0xC000


def iso(name, size):
    p = os.path.join(TMP, name)
    with open(p, "wb") as f:
        for i in range(size // 2048):
            f.write(i.to_bytes(4, "little") * 512)
    return p


def wait(qt, ctl, mask=0x80):
    end = time.monotonic() + 10
    while qt.inb(ctl) & mask and time.monotonic() < end:
        time.sleep(0.001)
    return qt.inb(ctl)


def atapi(qt, cdb, bcl=0xFFFE):
    qt.outb(P1 + 6, 0)
    qt.outb(P1 + 1, 0)
    qt.outb(P1 + 4, bcl & 0xFF)
    qt.outb(P1 + 5, bcl >> 8)
    qt.outb(P1 + 7, 0xA0)
    wait(qt, C1)
    cdb = cdb + [0] * (12 - len(cdb))
    for i in range(6):
        qt.outw(P1, cdb[2 * i] | cdb[2 * i + 1] << 8)
    data = b""
    while wait(qt, C1) & 0x08:
        n = qt.inb(P1 + 4) | qt.inb(P1 + 5) << 8
        for _ in range((n + 1) // 2):
            data += qt.inw(P1).to_bytes(2, "little")
        data = data[:len(data) - (n & 1)]
        qt.inb(P1 + 7)
    st = qt.inb(P1 + 7)
    return st, qt.inb(P1 + 1) >> 4, data


def sense(qt):
    _, _, d = atapi(qt, [0x03, 0, 0, 0, 18])
    return (d[2] & 0xF, d[12]) if len(d) >= 13 else None


def events(qt, qmp):
    """Events so far: let the machine run, then a command collects them."""
    time.sleep(0.05)
    qt.inb(0)
    qmp.cmd("query-status")
    return qmp.take_events()


def start(kind, bios, drives, sock):
    qmp_arg = "unix:%s,server=on,wait=off" % sock
    if kind == "qemu":
        args = [a for d in drives for a in ("-drive", d)]
        qt = QTest.qemu(QEMU, bios, "-qmp", qmp_arg, *args, stderr=subprocess.DEVNULL)
    else:
        args = [a for d in drives for a in ("-drive", d)]
        qt = QTest.vdisk(VDISK, "--qmp", qmp_arg, *args, stderr=subprocess.DEVNULL)
    qmp = QMP(sock)
    qmp.cmd("qmp_capabilities")
    qt.irq_intercept_in("ioapic")
    return qt, qmp


def media_change(kind, bios):
    cd1, cd2 = iso("cd1.iso", 1 << 20), iso("cd2.iso", 3 << 20)
    sock = os.path.join(TMP, "%s-media.sock" % kind)
    qt, qmp = start(kind, bios, ["file=%s,if=ide,index=2,media=cdrom,format=raw" % cd1], sock)
    obs = []
    with qt:
        obs.append(("tur", atapi(qt, [0x00])[:2]))
        r = qmp.cmd("eject", device="ide1-cd0")
        obs.append(("eject", "return" in r, qmp.take_events()))
        obs.append(("tur_open", atapi(qt, [0x00])[:2], sense(qt)))
        obs.append(("gesn_open", atapi(qt, [0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8])[2].hex()))
        r = qmp.cmd("blockdev-change-medium", device="ide1-cd0", filename=cd2, format="raw")
        time.sleep(0.1)
        qt.inb(0)
        obs.append(("change", "return" in r, r.get("error", {}).get("class"),
                    qmp.take_events()))
        obs.append(("gesn_new", atapi(qt, [0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8])[2].hex()))
        obs.append(("tur1", atapi(qt, [0x00])[:2], sense(qt)))
        obs.append(("tur2", atapi(qt, [0x00])[:2], sense(qt)))
        obs.append(("tur3", atapi(qt, [0x00])[:2]))
        st, key, cap = atapi(qt, [0x25])
        obs.append(("capacity", st, cap.hex()))
        # The guest locks the tray: eject is refused, the guest hears of
        # the request (GESN eject request).
        obs.append(("lock", atapi(qt, [0x1E, 0, 0, 0, 1])[:2]))
        r = qmp.cmd("eject", device="ide1-cd0")
        obs.append(("eject_locked", r.get("error", {}).get("class"), qmp.take_events()))
        obs.append(("gesn_req", atapi(qt, [0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8])[2].hex()))
        obs.append(("guest_eject_locked", atapi(qt, [0x1B, 0, 0, 0, 2])[:2], sense(qt)))
        atapi(qt, [0x1E])
        obs.append(("guest_eject", atapi(qt, [0x1B, 0, 0, 0, 2])[:2]))
        obs.append(("guest_eject_ev", events(qt, qmp)))
        obs.append(("guest_load", atapi(qt, [0x1B, 0, 0, 0, 3])[:2]))
        obs.append(("guest_load_ev", events(qt, qmp)))
        qmp.cmd("quit")
    return obs


def retry(kind, bios):
    img = os.path.join(TMP, "retry.img")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
        f.seek(8 * 512)
        f.write(b"\x5a" * 512)
    conf = os.path.join(TMP, "blkdebug.conf")
    with open(conf, "w") as f:
        # Sector 8 only: QEMU reads sector 0 at start-up (geometry guess).
        f.write('[inject-error]\nevent = "read_aio"\nerrno = "5"\nonce = "on"\n'
                'sector = "8"\n')
    sock = os.path.join(TMP, "%s-retry.sock" % kind)
    qt, qmp = start(kind, bios, ["if=ide,format=raw,file.driver=blkdebug,file.config=%s,"
                                 "file.image.filename=%s,rerror=stop,werror=stop"
                                 % (conf, img)], sock)
    obs = []
    with qt:
        qt.pci_cfg_writel(0x09, 0x20, BM | 1)
        qt.pci_cfg_writew(0x09, 0x04, 0x05)
        qt.bufwrite(0x1000, (0x100000).to_bytes(4, "little") + (0x80000200).to_bytes(4, "little"))
        qt.memset(0x100000, 512, 0)
        qt.outb(P0 + 6, 0x40)
        qt.outb(BM, 0)
        qt.outb(BM + 2, 4)
        qt.outl(BM + 4, 0x1000)
        for r, v in ((2, 1), (3, 8), (4, 0), (5, 0)):
            qt.outb(P0 + r, v)
        qt.outb(P0 + 7, 0xC8)
        qt.outb(BM, 0x09)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            st = qmp.cmd("query-status")["return"]["status"]
            if st != "running":
                break
            time.sleep(0.01)
        obs.append(("stopped", st, qmp.take_events()))
        obs.append(("bm_stopped", qt.inb(BM + 2)))
        blk = qmp.cmd("query-block")["return"][0]
        obs.append(("io-status", blk.get("io-status")))
        qmp.cmd("cont")
        end = time.monotonic() + 10
        while (qt.inb(BM + 2) & 5) == 1 and time.monotonic() < end:
            time.sleep(0.001)
        obs.append(("bm_done", qt.inb(BM + 2), qt.get_irq(14)))
        obs.append(("ide", qt.inb(P0 + 7), qmp.take_events()))
        obs.append(("data", qt.bufread(0x100000, 512) == b"\x5a" * 512))
        qmp.cmd("quit")
    return obs


def vdisk_has_ide():
    with QTest.vdisk(VDISK, stderr=subprocess.DEVNULL) as qt:
        return qt.pci_cfg_readl(0x09, 0) == 0x70108086


def main():
    if not vdisk_has_ide():
        print("SKIP: vdisk machine has no PIIX3 IDE at 01.1 (board not wired)")
        return 77
    bios = make_halt_bios(os.path.join(TMP, "HALT.bin"))
    failures = 0
    for name, fn in (("media_change", media_change), ("retry", retry)):
        res = {}
        for kind in ("qemu", "vdisk"):
            try:
                res[kind] = fn(kind, bios)
            except Exception as e:
                res[kind] = [("exception", "%s: %s" % (type(e).__name__, e))]
        for a, b in zip(res["qemu"], res["vdisk"]):
            if a == b:
                print("same   %s %r" % (name, a))
            else:
                print("DIFF   %s QEMU %r, vdisk %r" % (name, a, b))
                failures += 1
        if len(res["qemu"]) != len(res["vdisk"]):
            print("DIFF   %s: QEMU %r, vdisk %r" % (name, res["qemu"][-1:], res["vdisk"][-1:]))
            failures += 1
    print("%d differences" % failures)
    return 1 if failures else 0


sys.exit(main())
