# SPDX-License-Identifier: MIT
"""Device part of tests/fault/enospc.sh: an IDE DMA write to a qcow2 image on
a full tmpfs, through `vdisk machine` over the test protocol and QMP.

argv: vdisk, temp dir, the tmpfs mount point.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qtest import QTest  # noqa: E402
from qmp import QMP  # noqa: E402

VDISK, TMP, MNT = sys.argv[1:4]
P0, BM = 0x1F0, 0xC000
LBA, SECTORS = 2048, 64  # 32 KiB at 1 MiB
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1


def fill():
    with open(os.path.join(MNT, "fill"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def unfill():
    os.unlink(os.path.join(MNT, "fill"))


def dma_write(qt):
    """WRITE DMA (0xCA) of SECTORS sectors of 0x5a from guest 0x100000."""
    qt.pci_cfg_writel(0x09, 0x20, BM | 1)
    qt.pci_cfg_writew(0x09, 0x04, 0x05)
    qt.bufwrite(0x1000, (0x100000).to_bytes(4, "little") +
                (0x80000000 | SECTORS * 512).to_bytes(4, "little"))
    qt.memset(0x100000, SECTORS * 512, 0x5A)
    qt.outb(P0 + 6, 0x40)
    qt.outb(BM, 0)
    qt.outb(BM + 2, 4)
    qt.outl(BM + 4, 0x1000)
    for r, v in ((2, SECTORS), (3, LBA & 0xFF), (4, (LBA >> 8) & 0xFF), (5, (LBA >> 16) & 0xFF)):
        qt.outb(P0 + r, v)
    qt.outb(P0 + 7, 0xCA)
    qt.outb(BM, 0x01)  # start, from memory to the device


def wait_status(qmp, want_stopped, timeout=10):
    end = time.monotonic() + timeout
    st = None
    while time.monotonic() < end:
        st = qmp.cmd("query-status")["return"]["status"]
        if (st != "running") == want_stopped:
            break
        time.sleep(0.01)
    return st


def wait_bm_done(qt, timeout=10):
    end = time.monotonic() + timeout
    while (qt.inb(BM + 2) & 5) == 1 and time.monotonic() < end:
        time.sleep(0.002)
    return qt.inb(BM + 2)


def machine(img, werror, sock):
    qt = QTest.vdisk(VDISK, "-m", "64M", "--qmp", "unix:%s,server=on,wait=off" % sock,
                     "-drive", "file=%s,format=qcow2,if=ide,werror=%s" % (img, werror),
                     stderr=subprocess.DEVNULL)
    qmp = QMP(sock, whole_events=True)
    qmp.cmd("qmp_capabilities")
    return qt, qmp


def readback(img):
    p = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c",
                        "read -P 0x5a %d %d" % (LBA * 512, SECTORS * 512), img],
                       capture_output=True, text=True)
    return p.returncode == 0 and "fail" not in p.stdout.lower()


def qemu_img_check(img):
    return subprocess.run(["qemu-img", "check", "-q", img]).returncode in (0, 3)


def enospc_stop():
    img = os.path.join(MNT, "stop.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "32M"], check=True)
    qt, qmp = machine(img, "enospc", os.path.join(TMP, "stop.sock"))
    with qt:
        fill()
        dma_write(qt)
        st = wait_status(qmp, True)
        check(st == "io-error" or st == "paused", "werror=enospc: the machine stops (%s)" % st)
        ev = qmp.take_events()
        errs = [e for e in ev if e["event"] == "BLOCK_IO_ERROR"]
        check(len(errs) >= 1 and errs[0]["data"].get("nospace") is True and
              errs[0]["data"].get("action") == "stop" and
              errs[0]["data"].get("operation") == "write",
              "BLOCK_IO_ERROR nospace, action stop: %r" % (errs[:1],))
        check(any(e["event"] == "STOP" for e in ev), "STOP event")
        blk = qmp.cmd("query-block")["return"][0]
        check(blk.get("io-status") == "nospace", "query-block io-status %r" % blk.get("io-status"))
        check(qt.inb(BM + 2) & 1 == 1, "the request is kept (BM still active)")
        unfill()
        qmp.cmd("cont")
        bm = wait_bm_done(qt)
        check(bm & 5 == 4, "cont after freeing space: the DMA completes (BM status %#x)" % bm)
        stat = qt.inb(P0 + 7)
        check(stat & 0x89 == 0, "no ATA error after the retry (status %#x)" % stat)
        blk = qmp.cmd("query-block")["return"][0]
        check(blk.get("io-status") == "ok", "io-status ok again: %r" % blk.get("io-status"))
        qmp.cmd("quit")
    check(readback(img), "the retried write reads back")
    check(qemu_img_check(img), "qemu-img check: no corruption")
    os.unlink(img)


def enospc_report():
    img = os.path.join(MNT, "report.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "32M"], check=True)
    qt, qmp = machine(img, "report", os.path.join(TMP, "report.sock"))
    with qt:
        fill()
        dma_write(qt)
        bm = wait_bm_done(qt)
        stat, err = qt.inb(P0 + 7), qt.inb(P0 + 1)
        check(stat & 0x01 == 1 and err & 0x04, "werror=report: ATA error (status %#x, error %#x)"
              % (stat, err))
        st = qmp.cmd("query-status")["return"]["status"]
        check(st == "running", "the machine keeps running (%s)" % st)
        ev = [e for e in qmp.take_events() if e["event"] == "BLOCK_IO_ERROR"]
        # No "nospace" here: QEMU sends it only when the io-status is
        # enabled (werror=enospc|stop or rerror=stop: blk_iostatus_is_enabled).
        check(len(ev) == 1 and ev[0]["data"].get("action") == "report" and
              "nospace" not in ev[0]["data"] and
              ev[0]["data"].get("reason") == "No space left on device",
              "BLOCK_IO_ERROR action report: %r" % ev)
        unfill()
        dma_write(qt)
        bm = wait_bm_done(qt)
        stat = qt.inb(P0 + 7)
        check(bm & 5 == 4 and stat & 0x01 == 0, "the same write succeeds once space returns "
              "(BM %#x, status %#x)" % (bm, stat))
        qmp.cmd("quit")
    check(readback(img), "the write reads back")
    check(qemu_img_check(img), "qemu-img check: no corruption")
    os.unlink(img)


for fn in (enospc_stop, enospc_report):
    try:
        fn()
    except Exception as e:  # a hang or a closed socket: report, go on
        check(False, "%s: %s: %s" % (fn.__name__, type(e).__name__, e))
        try:
            unfill()
        except OSError:
            pass
sys.exit(1 if failures else 0)
