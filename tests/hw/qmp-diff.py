# SPDX-License-Identifier: MIT
"""Scenario for tests/hw/qmp-diff.sh: the same QMP requests to QEMU 7.2 and
to `vdisk machine`, with the same drives; the replies and events must have
the same shape (keys and value types, recursively) and errors the same class
and description.  argv = vdisk, qemu-system-x86_64, temp dir."""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qmp import QMP  # noqa: E402

VDISK, QEMU, TMP = sys.argv[1:4]

# Values whose content may differ (names of temporary files, counters, times)
# are compared by type only; errors are compared exactly.
REQUESTS = [
    {"execute": "query-status"},
    {"execute": "query-block"},
    {"execute": "query-blockstats"},
    {"execute": "block_resize", "arguments": {"device": "d0", "size": 2097152}},
    {"execute": "query-block"},
    {"execute": "block_resize", "arguments": {"device": "nosuch", "size": 512}},
    {"execute": "block_resize", "arguments": {"device": "d0"}},
    {"execute": "block_resize", "arguments": {"device": "d0", "size": "big"}},
    {"execute": "eject", "arguments": {"id": "nosuch"}},
    {"execute": "stop"},
    {"execute": "query-status"},
    {"execute": "cont"},
    {"execute": "query-status"},
    {"execute": "no-such-command"},
    {"execute": "query-status", "arguments": {"bogus": 1}},
    {"arguments": {}},
    {"execute": 42},
]


def shape(v, exact=False):
    if isinstance(v, dict):
        return {k: shape(x, exact or k == "error")
                for k, x in sorted(v.items()) if k != "timestamp"}
    if isinstance(v, list):
        return [shape(x, exact) for x in v]
    return v if exact else type(v).__name__


def scenario(argv, sock):
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    out = []
    try:
        qmp = QMP(sock)
        out.append(("greeting", shape(qmp.greeting)))
        qmp.cmd("qmp_capabilities")
        for req in REQUESTS:
            qmp.wf.write(json.dumps(req) + "\n")
            qmp.wf.flush()
            while True:
                r = json.loads(qmp.rf.readline())
                if "event" in r:
                    out.append(("event", shape(r)))
                    continue
                out.append((json.dumps(req), shape(r)))
                break
        qmp.cmd("quit")
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def drive(img):
    return ["-drive", "file=%s,format=raw,if=none,id=d0" % img]


for name in ("q", "v"):
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw",
                    os.path.join(TMP, name + ".raw"), "1M"], check=True)
bios = os.path.join(TMP, "halt.bin")
with open(bios, "wb") as f:
    f.write(b"\xf4" * 65536)

qsock, vsock = os.path.join(TMP, "q.sock"), os.path.join(TMP, "v.sock")
q = scenario([QEMU, "-machine", "pc", "-accel", "tcg", "-bios", bios, "-display", "none",
              "-nodefaults", "-S", *drive(os.path.join(TMP, "q.raw")),
              "-qmp", "unix:%s,server=on,wait=off" % qsock], qsock)
v = scenario([VDISK, "machine", "-S", *drive(os.path.join(TMP, "v.raw")),
              "--qmp", "unix:%s,server=on,wait=off" % vsock], vsock)

failures = 0
for i, (qa, va) in enumerate(zip(q, v)):
    if qa != va:
        failures += 1
        print("FAIL step %d:\n  qemu:  %s\n  vdisk: %s" % (i, json.dumps(qa), json.dumps(va)))
if len(q) != len(v):
    failures += 1
    print("FAIL: qemu gave %d replies and events, vdisk %d" % (len(q), len(v)))
print("%d steps compared, %d differ" % (len(q), failures))
sys.exit(1 if failures else 0)
