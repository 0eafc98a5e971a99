# SPDX-License-Identifier: MIT
"""virtio-blk part of tests/fault/enospc.sh: a write to a qcow2 image on a
full tmpfs, through `vdisk machine` with a virtio-blk-pci device driven over
the test protocol by tests/hw/virtio-qtest.py's small virtio driver.

 - werror=report: the request completes with VIRTIO_BLK_S_IOERR, the machine
   runs on, BLOCK_IO_ERROR (action report); after space returns the same
   write succeeds;
 - werror=enospc (the default): the machine stops (BLOCK_IO_ERROR nospace,
   io-status nospace), the request stays unanswered; after freeing space,
   cont retries it to S_OK and io-status is ok again.
Each time the data reads back through qemu-io and qemu-img check is clean.

argv: vdisk, temp dir, the tmpfs mount point.
"""
import importlib.util
import os
import subprocess
import sys
import time

VDISK, TMP, MNT = sys.argv[1:4]
here = os.path.dirname(os.path.abspath(__file__))
sys.argv = [sys.argv[0], VDISK, "-", TMP]
spec = importlib.util.spec_from_file_location("vq", os.path.join(here, "..", "hw",
                                                                 "virtio-qtest.py"))
vq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vq)

SECTOR = 2048  # 1 MiB: a fresh qcow2 cluster, so the write allocates
DATA = bytes([0x5A]) * 65536
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
        except OSError:
            pass


def unfill():
    os.unlink(os.path.join(MNT, "fill"))


def readback(img):
    p = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c",
                        "read -P 0x5a %d %d" % (SECTOR * 512, len(DATA)), img],
                       capture_output=True, text=True)
    return p.returncode == 0 and "fail" not in p.stdout.lower()


def qemu_img_check(img):
    return subprocess.run(["qemu-img", "check", "-q", img]).returncode in (0, 3)


def machine(img, werror, sock):
    drive = "if=none,id=drv0,file=%s,format=qcow2" % img
    if werror:
        drive += ",werror=" + werror
    qt = vq.QTest.vdisk(VDISK, "-m", "128M", "-drive", drive, "-device",
                        "virtio-blk-pci,drive=drv0,addr=04.0,disable-legacy=on",
                        "--qmp", "unix:%s,server=on,wait=off" % sock)
    qmp = vq.EventQMP(sock)
    qmp.cmd("qmp_capabilities")
    g = vq.Guest(qt, qmp, False, None)
    g.init(vq.WANT)
    return qt, g


def events(g, timeout=5.0):
    """The BLOCK_IO_ERROR events so far, waiting up to @timeout for the first:
    an event sent after the last reply is only read with the next one."""
    ev = [e for e in g.qmp.take_events() if e["event"] == "BLOCK_IO_ERROR"]
    end = time.monotonic() + timeout
    while not ev and time.monotonic() < end:
        time.sleep(0.02)
        vq.run_state(g)  # a round trip reads what came before its reply
        ev = [e for e in g.qmp.take_events() if e["event"] == "BLOCK_IO_ERROR"]
    return ev


def report():
    img = os.path.join(MNT, "report.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "32M"], check=True)
    qt, g = machine(img, "report", os.path.join(TMP, "v-report.sock"))
    try:
        fill()
        r = vq.submit(g, g.vqs[0], vq.Req(g, vq.T_OUT, SECTOR, DATA))
        check(r["status"] == vq.S_IOERR, "werror=report: VIRTIO_BLK_S_IOERR (status %d)"
              % r["status"])
        check(vq.run_state(g) == "running", "the machine keeps running")
        ev = events(g)
        check(len(ev) == 1 and ev[0]["data"].get("action") == "report" and
              ev[0]["data"].get("reason") == "No space left on device",
              "BLOCK_IO_ERROR action report, ENOSPC: %r" % ev)
        unfill()
        r = vq.submit(g, g.vqs[0], vq.Req(g, vq.T_OUT, SECTOR, DATA))
        check(r["status"] == vq.S_OK, "the same write succeeds once space returns (status %d)"
              % r["status"])
        g.qmp.cmd("quit")
    finally:
        qt.close()
    check(readback(img), "the write reads back")
    check(qemu_img_check(img), "qemu-img check: no corruption")
    os.unlink(img)


def stop():
    img = os.path.join(MNT, "stop.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "32M"], check=True)
    qt, g = machine(img, None, os.path.join(TMP, "v-stop.sock"))
    try:
        fill()
        req = vq.Req(g, vq.T_OUT, SECTOR, DATA)
        head = vq.submit(g, g.vqs[0], req, wait=False)
        end = time.monotonic() + 10
        while vq.run_state(g) == "running" and time.monotonic() < end:
            time.sleep(0.01)
        st = vq.run_state(g)
        check(st != "running", "werror=enospc (default): the machine stops (%s)" % st)
        ev = events(g)
        check(len(ev) >= 1 and ev[0]["data"].get("nospace") is True and
              ev[0]["data"].get("action") == "stop", "BLOCK_IO_ERROR nospace, stop: %r" % ev[:1])
        check(vq.io_status(g) == "nospace", "io-status nospace (%r)" % vq.io_status(g))
        time.sleep(0.1)
        check(req.status() == 0xFF and g.vqs[0].used_idx() == 0,
              "the request is kept unanswered while stopped")
        unfill()
        g.qmp.cmd("cont")
        g.wait_interrupt(g.vqs[0])
        e = g.vqs[0].pop_used()
        check(e is not None and e[0] == head and req.status() == vq.S_OK,
              "cont after freeing space: the write completes with S_OK (%r, status %d)"
              % (e, req.status()))
        check(vq.io_status(g) == "ok", "io-status ok again (%r)" % vq.io_status(g))
        g.qmp.cmd("quit")
    finally:
        qt.close()
    check(readback(img), "the retried write reads back")
    check(qemu_img_check(img), "qemu-img check: no corruption")
    os.unlink(img)


for fn in (report, stop):
    try:
        fn()
    except Exception as ex:  # a hang, a closed socket, a failed check()
        check(False, "virtio-blk %s: %s: %s" % (fn.__name__, type(ex).__name__, ex))
        try:
            unfill()
        except OSError:
            pass
sys.exit(1 if failures else 0)
