#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vhdx under power cuts: a workload of allocating and overwriting writes
# (every allocation writes a block, then its BAT entry through the log) runs
# through the crash-sim driver, cut at every modifying request in turn
# (modes drop, reorder and prefix by turn, torn writes every other point).
# After each cut:
#  - qemu-img check -r all replays whatever log the cut left and finds the
#    image clean, and vdisk check -r all replays a copy identically
#    (qemu-img compare);
#  - every write acknowledged before the last acknowledged FUA write (a
#    flush) reads back with its pattern through qemu-io;
#  - vdisk opens the image again, writes to a new block, and it checks clean.
# VHDX_CUT_POINTS caps the points (default: all of them, about 100).
set -eu

. "$(dirname "$0")/../lib/common.sh"
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
vd_setup qemu-img qemu-io python3

python3 - "$VDISK" "${VHDX_CUT_POINTS:-1000}" <<'PY'
import re, shutil, subprocess, sys

vdisk, max_points = sys.argv[1], int(sys.argv[2])
MiB = 1 << 20
# (fua, pattern, offset, length): no two writes overlap, so each range has
# one expected content once durable.
W = [(0, 11, 0, 65536), (0, 12, MiB, 4096), (1, 13, 2 * MiB, 8192), (0, 14, 65536, 65536),
     (0, 15, 3 * MiB, MiB), (1, 16, 4 * MiB, 512), (0, 17, 5 * MiB, 4096),
     (0, 18, 6 * MiB + 4096, 4096), (1, 19, 7 * MiB, 4096), (0, 20, 6 * MiB, 4096)]
script = "\n".join("write %s-P %d %d %d" % ("-f " if f else "", p, o, n) for f, p, o, n in W) + "\n"
MODES = ["drop", "reorder", "prefix"]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def fresh():
    r = run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M,block_state_zero=off",
             "img.vhdx", "8M"])
    if r.returncode:
        fail("qemu-img create: " + r.stderr)


def workload(cut=0, mode="drop", seed=0, torn=False):
    spec = "driver=vhdx,file.driver=crash-sim,file.image.filename=img.vhdx"
    if cut:
        spec += ",file.cut-at=%d,file.mode=%s,file.seed=%d" % (cut, mode, seed)
        if torn:
            spec += ",file.torn-writes=on"
    return run([vdisk, "io", "-t", "writeback", "--image-opts", spec], input=script)


fresh()
r = workload()
if r.returncode or r.stdout.count("wrote") != len(W):
    fail("the workload without a cut: %s %s" % (r.stdout, r.stderr))
points = 0
for k in range(1, max_points + 1):
    fresh()
    mode, torn = MODES[k % 3], k % 2 == 0
    r = workload(k, mode, k, torn)
    where = "cut at %d (%s%s)" % (k, mode, ", torn" if torn else "")
    done = r.stdout.count("wrote")
    if r.returncode == 0 and done == len(W):
        break  # past the last modifying request
    points += 1
    if r.returncode < 0 or "Segmentation" in r.stderr:
        fail("%s: vdisk crashed: %s" % (where, r.stderr))
    durable = 0
    for i in range(done):
        if W[i][0]:
            durable = i + 1
    shutil.copy("img.vhdx", "img2.vhdx")
    c = run(["qemu-img", "check", "-r", "all", "img.vhdx"])
    if c.returncode:
        fail("%s: qemu-img check -r all: %s %s" % (where, c.stdout, c.stderr))
    c = run([vdisk, "check", "-r", "all", "img2.vhdx"])
    if c.returncode:
        fail("%s: vdisk check -r all: %s %s" % (where, c.stdout, c.stderr))
    c = run(["qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", "img.vhdx", "img2.vhdx"])
    if c.returncode:
        fail("%s: the replays differ: %s" % (where, c.stdout))
    if durable:
        args = []
        for f, p, o, n in W[:durable]:
            args += ["-c", "read -P %d %d %d" % (p, o, n)]
        c = run(["qemu-io", "-f", "vhdx", "-r"] + args + ["img.vhdx"])
        if c.returncode or "fail" in c.stdout:
            fail("%s: a durable write is lost (%d durable): %s" % (where, durable, c.stdout))
    c = run([vdisk, "io", "-f", "vhdx", "-c", "write -P 33 %d 4096" % (8 * MiB - 4096), "img2.vhdx"])
    c2 = run(["qemu-img", "check", "img2.vhdx"])
    if c.returncode or c2.returncode:
        fail("%s: writing after the crash: %s %s %s" % (where, c.stderr, c2.stdout, c2.stderr))
else:
    if max_points >= 1000:
        fail("the workload never ended")
if points < 20:
    fail("only %d cut points: is crash-sim counting?" % points)
print("%d cut points" % points)
PY
echo PASS
