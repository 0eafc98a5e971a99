#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Power cuts at every write of a mixed qcow2 workload, through crash-sim.

usage: crash-sim.py VDISK [--points N] [--seed S] [--only K[:MODE[:SEED[:torn]]]] [--steps KINDS] [--with-apply]
                          [--keep DIR]

The workload (seeded) is a list of steps, each one process opened on
driver=qcow2,file.driver=crash-sim,file.image.filename=img over a raw
backing file, 512-byte clusters: `vdisk io` scripts (allocating writes,
partial-cluster writes over the backing file (COW), write -z, discard,
compressed writes, flushes), `vdisk snapshot -c/-d`, `vdisk resize`.

1. A counting run (cut-at=0) learns W, the writes reaching crash-sim, per
   step (trace point crash_sim_write), and keeps the image after each step.
2. For each point k (all of 1..W, then again with other modes and seeds, up
   to --points; or an even sample of --points when fewer than W): start from
   the image before k's step, rerun that step with cut-at=k (local to the
   step), and check that
   - the cut happened (the workload is deterministic);
   - `qemu-img check` finds no corruption (exit 0, or 3: leaks only, as
     after a QEMU crash);
   - every write acknowledged before the last completed flush reads back
     through qemu-io (the steps before were closed cleanly: all durable);
   - the image opens in vdisk again, takes a write, and still checks clean
     (every 8th point).
Prints one line per failing point and a summary; exits 1 on any failure.
"""
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

CLUSTER = 512
SIZE = 2 << 20
GROW = 512 << 10
BACKING = 1 << 20
SLOT = 4096
MODES = ("drop", "reorder", "prefix")


def gen_workload(seed, with_apply=False):
    """Steps: ("io", [cmd...]) | ("snap-c", name) | ("snap-d", name) | ("resize", size).
    A cmd is (kind, slot, offset, length, pattern), kind in write, zero,
    discard, cwrite, sync."""
    r = random.Random(seed)
    nslots = SIZE // SLOT
    free = list(range(nslots))
    r.shuffle(free)
    pat = [0]

    def p():
        pat[0] += 1
        return 1 + pat[0] % 250

    def sync():
        # A flush whose completion shows: a FUA write (its own slot) prints
        # "wrote" only after the flush the core makes of it; "flush" prints
        # nothing either way, and a discard or zero write after a failed
        # flush may still succeed in the qcow2 metadata cache.
        s = free.pop()
        return ("sync", s, s * SLOT, 512, p())

    def io(n, slots, overwrite=()):
        cmds = []
        for i in range(n):
            x = r.random()
            if overwrite and x < 0.2:
                s = r.choice(overwrite)
            else:
                s = slots.pop()
            base = s * SLOT
            if x < 0.55:
                # sub-cluster start and end: COW at both ends
                off = base + r.randrange(0, 4) * 128
                ln = r.randrange(1, SLOT // 128 - 4) * 128
                cmds.append(("write", s, off, ln, p()))
            elif x < 0.7:
                off = base + r.randrange(0, 4) * CLUSTER
                cmds.append(("cwrite", s, off, CLUSTER, p()))
            elif x < 0.85:
                off = base + r.randrange(0, 2) * 512
                cmds.append(("zero", s, off, r.randrange(1, 6) * 512, 0))
            else:
                cmds.append(("discard", s, base, SLOT, 0))
            if i % 5 == 4:
                cmds.append(sync())
        cmds.append(sync())
        return ("io", cmds)

    steps = [io(24, [free.pop() for _ in range(24)])]
    first = sorted({c[1] for c in steps[0][1] if c[0] in ("write", "cwrite")})
    r.shuffle(first)
    steps.append(("snap-c", "s1"))
    steps.append(io(16, [free.pop() for _ in range(20)], overwrite=first[: len(first) // 2]))
    if with_apply:
        # Back to s1 (the overwrites of the step before are undone).
        steps.append(("snap-a", "s1"))
    steps.append(("resize", SIZE + GROW))
    grown = list(range(SIZE // SLOT, (SIZE + GROW) // SLOT))
    r.shuffle(grown)
    steps.append(io(12, grown[:16] + [free.pop() for _ in range(4)]))
    steps.append(("snap-d", "s1"))
    steps.append(io(12, [free.pop() for _ in range(16)], overwrite=first[len(first) // 2 :]))
    return steps


def cmd_text(c):
    kind, _, off, ln, pat = c
    return {
        "write": "write -P %d %d %d" % (pat, off, ln),
        "cwrite": "write -c -P %d %d %d" % (pat, off, ln),
        "zero": "write -z %d %d" % (off, ln),
        "discard": "discard %d %d" % (off, ln),
        "sync": "write -f -P %d %d %d" % (pat, off, ln),
    }[kind]


def spec(img, cut=0, mode="drop", seed=0, torn=False):
    s = "driver=qcow2,file.driver=crash-sim,file.image.filename=" + img
    if cut:
        s += ",file.cut-at=%d,file.mode=%s,file.seed=%d" % (cut, mode, seed)
        if torn:
            s += ",file.torn-writes=on"
    return s


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def run_step(vdisk, step, sp, trace=False):
    """Returns (returncode, stdout, stderr)."""
    env = dict(os.environ)
    env["VDISK_TRACE"] = "crash_sim_*" if trace else "crash_sim_cut"
    kind = step[0]
    if kind == "io":
        script = "".join(cmd_text(c) + "\n" for c in step[1])
        p = run([vdisk, "io", "-t", "writeback", "--image-opts", sp], input=script, env=env)
    elif kind == "snap-c":
        p = run([vdisk, "snapshot", "--image-opts", "-c", step[1], sp], env=env)
    elif kind == "snap-d":
        p = run([vdisk, "snapshot", "--image-opts", "-d", step[1], sp], env=env)
    elif kind == "snap-a":
        p = run([vdisk, "snapshot", "--image-opts", "-a", step[1], sp], env=env)
    else:
        p = run([vdisk, "resize", "--image-opts", sp, str(step[1])], env=env)
    return p.returncode, p.stdout, p.stderr


def io_results(cmds, rc, out):
    """Per command: acknowledged, and durable (acknowledged, then a sync
    acknowledged: a FUA write, a flush of everything before it)."""
    chunks = out.split("vdisk io> ")[1:]
    ok = []
    for i, c in enumerate(cmds):
        ch = chunks[i] if i < len(chunks) else "failed"
        ok.append("failed" not in ch and "error" not in ch.lower())
    n = len(cmds)
    durable = [False] * n
    later = False
    for i in range(n - 1, -1, -1):
        if cmds[i][0] == "sync" and ok[i]:
            later = True
        durable[i] = ok[i] and later
    return ok, durable


def expected_reads(steps, upto_step, cut_durable):
    """The reads that must succeed: per slot, its last attempted command,
    if durable and not a discard.  Steps before upto_step are all durable;
    cut_durable: list of (cmd, durable, attempted) of the cut step."""
    last = {}
    saved = {}
    for i in range(upto_step):
        if steps[i][0] == "io":
            for c in steps[i][1]:
                last[c[1]] = (c, True)
        elif steps[i][0] == "snap-c":
            saved[steps[i][1]] = dict(last)
        elif steps[i][0] == "snap-a":
            last = dict(saved[steps[i][1]])
    for c, d, attempted in cut_durable:
        if attempted:
            last[c[1]] = (c, d)
    reads = []
    for c, d in last.values():
        if not d or c[0] == "discard":
            continue
        pat = 0 if c[0] == "zero" else c[4]
        reads.append("read -q -P %d %d %d" % (pat, c[2], c[3]))
    return reads


def check_image(img):
    """None if consistent (leaks allowed), else what is wrong; and the exit code."""
    q = run(["qemu-img", "check", "--output=json", "-f", "qcow2", img])
    if q.returncode not in (0, 3):
        return ("qemu-img check exit %d: %s %s" %
                (q.returncode, q.stdout[-600:], q.stderr[-300:])), q.returncode
    try:
        j = json.loads(q.stdout)
    except ValueError:
        return "qemu-img check output: %s" % q.stdout[-300:], q.returncode
    if j.get("corruptions", 0):
        return "corruptions: %s %s" % (j, q.stderr[-600:]), q.returncode
    return None, q.returncode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vdisk")
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="")
    ap.add_argument("--keep", default="")
    # Only the writes of these step kinds (e.g. snap-c,snap-d), each in
    # every mode, torn and not.
    ap.add_argument("--steps", default="")
    # A `vdisk snapshot -a s1` step after the overwrites (not in the
    # default workload, whose cut points stay as documented).
    ap.add_argument("--with-apply", action="store_true")
    a = ap.parse_args()
    vdisk = a.vdisk
    t0 = time.time()
    steps = gen_workload(a.seed, a.with_apply)

    with open("base.raw", "wb") as f:
        f.write(bytes([0x11]) * BACKING)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    "cluster_size=%d" % CLUSTER, "-b", "base.raw", "-F", "raw",
                    "img0", str(SIZE)], check=True)
    # Counting run: writes per step, and the image before each step.
    shutil.copy("img0", "img")
    counts = []
    for i, st in enumerate(steps):
        shutil.copy("img", "state%d" % i)
        rc, out, err = run_step(vdisk, st, spec("img"), trace=True)
        if rc != 0:
            print("FAIL: the workload fails without a cut: step %d %s rc %d: %s %s" %
                  (i, st[0], rc, out[-300:], err[-300:]))
            return 1
        counts.append(len(re.findall(r"crash_sim_write .* write \d+ ", err)))
    err, _ = check_image("img")
    if err:
        print("FAIL: the uncut workload leaves a bad image: " + err)
        return 1
    W = sum(counts)
    print("workload seed %d: %d steps, %d writes (per step: %s)" %
          (a.seed, len(steps), W, " ".join(map(str, counts))))

    # The points: (k, mode, seed, torn).
    points = []
    if a.only:
        f = a.only.split(":")
        points.append((int(f[0]), f[1] if len(f) > 1 else "drop",
                       int(f[2]) if len(f) > 2 else 0, len(f) > 3 and f[3] == "torn"))
    elif a.steps:
        kinds = set(a.steps.split(","))
        k0 = 0
        for i, st in enumerate(steps):
            if st[0] in kinds:
                for k in range(k0 + 1, k0 + counts[i] + 1):
                    for m, mode in enumerate(MODES):
                        # VDISK_QUICK (sanitizer runs): one mode per write.
                        if os.environ.get("VDISK_QUICK") and m != k % 3:
                            continue
                        points.append((k, mode, a.seed * 1000003 + k * 3 + m, (k + m) % 2 == 1))
            k0 += counts[i]
    elif a.points <= W:
        r = random.Random(a.seed)
        for i in range(a.points):
            k = 1 + (i * W) // a.points
            points.append((k, MODES[i % 3], r.randrange(1 << 30), i % 2 == 1))
    else:
        rnd = 0
        while len(points) < a.points:
            for k in range(1, W + 1):
                if len(points) >= a.points:
                    break
                points.append((k, MODES[(k + rnd) % 3], rnd * 1000003 + k, rnd % 2 == 1))
            rnd += 1

    failures = 0
    corrupt = 0
    leaks = 0
    for n, (k, mode, seed, torn) in enumerate(points):
        # Which step, and k within it.
        i, local = 0, k
        while local > counts[i]:
            local -= counts[i]
            i += 1
        st = steps[i]
        tag = "k=%d (step %d %s, write %d) mode=%s seed=%d%s" % (
            k, i, st[0], local, mode, seed, " torn" if torn else "")
        shutil.copy("state%d" % i, "img")
        rc, out, errout = run_step(vdisk, st, spec("img", local, mode, seed, torn))
        problems = []
        if "crash_sim_cut" not in errout:
            problems.append("no cut happened (the workload is not deterministic)")
        if rc > 1 or "Assertion" in errout or "Sanitizer" in errout:
            problems.append("vdisk crashed (exit %d): %s" % (rc, errout[-400:]))
        e, crc = check_image("img")
        if crc == 3:
            leaks += 1
        if e:
            corrupt += 1
            problems.append(e)
        cut = []
        if st[0] == "io":
            ok, durable = io_results(st[1], rc, out)
            first_fail = next((j for j, x in enumerate(ok) if not x), len(ok))
            cut = [(c, durable[j], j <= first_fail) for j, c in enumerate(st[1])]
        reads = expected_reads(steps, i, cut)
        # A cut inside an apply leaves the state before it or after it.
        alt = expected_reads(steps, i + 1, []) if st[0] == "snap-a" else None
        if reads and not e:
            for rs in ([reads, alt] if alt else [reads]):
                args = ["qemu-io", "-r", "-f", "qcow2"]
                for r_ in rs:
                    args += ["-c", r_]
                p = run(args + ["img"])
                bad = [l for l in (p.stdout + p.stderr).splitlines() if "fail" in l.lower()]
                if not (p.returncode or bad):
                    break
            if p.returncode or bad:
                problems.append("flushed data lost (%d reads): %s" %
                                (len(reads), "; ".join(bad[:3]) or p.stderr[-200:]))
        if not problems and n % 8 == 0:
            # Reopened by vdisk after the crash: writable, still consistent.
            p = run([vdisk, "io", "-f", "qcow2", "-c", "write -P 77 %d 4096" % (SIZE - 4096),
                     "-c", "read -P 77 %d 4096" % (SIZE - 4096), "img"])
            if p.returncode or "fail" in p.stdout.lower():
                problems.append("vdisk cannot write after the crash: %s %s" %
                                (p.stdout[-200:], p.stderr[-200:]))
            else:
                e, _ = check_image("img")
                if e:
                    problems.append("after a write on reopen: " + e)
        if problems:
            failures += 1
            print("FAIL %s: %s" % (tag, " | ".join(problems)))
            print("     rerun: tests/image/crash-sim.sh with CRASH_SIM_SEED=%d "
                  "CRASH_SIM_ONLY=%d:%s:%d%s" % (a.seed, k, mode, seed, ":torn" if torn else ""))
            if a.keep:
                os.makedirs(a.keep, exist_ok=True)
                shutil.copy("img", os.path.join(a.keep, "img-k%d" % k))
    dt = time.time() - t0
    print("%d points over %d writes: %d failed, %d corrupt images, %d with leaks; %.1fs" %
          (len(points), W, failures, corrupt, leaks, dt))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
