# SPDX-License-Identifier: MIT
"""Scenario for tests/hw/qmp-machine.sh: argv = vdisk, temp dir."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qtest import QTest  # noqa: E402
from qmp import QMP  # noqa: E402

VDISK, TMP = sys.argv[1:3]
failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1



img = os.path.join(TMP, "disk.img")
with open(img, "wb") as f:
    f.truncate(1 << 20)
sock = os.path.join(TMP, "qmp.sock")

# -S: prelaunch until cont; qtest and QMP side by side.
with QTest.vdisk(VDISK, "-m", "64M", "-S", "--qmp", "unix:%s,server=on,wait=off" % sock,
                 "-drive", "file=%s,format=raw,if=ide,werror=stop,rerror=report" % img,
                 stderr=subprocess.DEVNULL) as qt:
    qmp = QMP(sock)
    check("QMP" in qmp.greeting, "greeting")
    check(qmp.cmd("qmp_capabilities") == {"return": {}}, "qmp_capabilities")
    st = qmp.cmd("query-status")["return"]
    check(st == {"status": "prelaunch", "singlestep": False, "running": False},
          "-S: prelaunch %r" % st)
    check(qmp.cmd("cont") == {"return": {}}, "cont")
    check(qmp.take_events() == ["RESUME"], "RESUME")
    st = qmp.cmd("query-status")["return"]
    check(st["status"] == "running" and st["running"] is True, "running")
    check(qmp.cmd("stop") == {"return": {}}, "stop")
    check(qmp.take_events() == ["STOP"], "STOP")
    check(qmp.cmd("query-status")["return"]["status"] == "paused", "paused")
    qmp.cmd("stop")
    check(qmp.take_events() == [], "stop while stopped: no event (QEMU do_vm_stop)")
    qmp.cmd("cont")
    qmp.cmd("cont")
    check(qmp.take_events() == ["RESUME", "STOP", "RESUME"],
          "cont while running sends STOP and RESUME (QEMU 7.2 vm_prepare_start)")
    r = qmp.cmd("stop", bogus=1)
    check(r.get("error", {}).get("class") == "GenericError", "stop with an argument: %r" % r)
    blocks = qmp.cmd("query-block")["return"]
    check(len(blocks) == 1 and blocks[0]["device"] == "ide0-hd0"
          and blocks[0]["inserted"]["file"] == img, "query-block shows the -drive")
    # The qtest side is unaffected.
    check(qt.fw_cfg_ram_size() == 64 << 20, "qtest beside QMP")
    qmp.take_events()
    check(qmp.cmd("quit") == {"return": {}}, "quit")
    # QEMU answers quit first, then sends SHUTDOWN.
    check(qmp.take_events() == [], "no event before quit's reply")
    ev = json.loads(qmp.rf.readline() or "{}")
    check(ev.get("event") == "SHUTDOWN" and
          ev.get("data") == {"guest": False, "reason": "host-qmp-quit"},
          "SHUTDOWN after quit's reply: %r" % ev)
    check(qt.proc.wait(timeout=10) == 0, "quit ends the machine with status 0")

# Drive options that are wrong are refused with the key named.
for opt, frag in [("file=%s,format=raw,if=scsi" % img, "if"),
                  ("file=%s,format=raw,rerror=enospc" % img, "rerror"),
                  ("file=%s,format=raw,cache=bogus" % img, "cache"),
                  ("file=%s,format=raw,bogus=1" % img, "bogus"),
                  ("format=raw", "file=")]:
    p = subprocess.run([VDISK, "machine", "-drive", opt, "--qtest", "stdio"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    check(p.returncode == 1 and frag in p.stderr, "-drive %s: %s" % (opt, p.stderr.strip()))
p = subprocess.run([VDISK, "machine", "-device", "ide-hd", "--qtest", "stdio"],
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
check(p.returncode == 1 and "not yet supported" in p.stderr, "-device: %s" % p.stderr.strip())

print("%d failures" % failures)
sys.exit(1 if failures else 0)
