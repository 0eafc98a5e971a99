#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Every debug event the qcow2 driver raises, failed in turn through blkdebug
# below it (driver=qcow2,file.driver=blkdebug,...: the events go to the
# blkdebug node under qcow2, as in QEMU), with EIO: once=on, once=off, and
# once=off with after=N (our extension: the failure starts in the middle of
# the workload, so that there is durable data written before it):
#  - the events are enumerated from block/drivers/qcow2/*.c; the list must
#    not be empty and must hold the metadata events issue 3 names;
#  - each event is proven reached: its once=on rule must fail the workload
#    in at least one of the configurations (and with no rule at all, the
#    workload must not fail);
#  - afterwards `qemu-img check` finds no corruption (exit 0, or 3 for
#    leaks only) and `vdisk check` gives the same verdict, exit code and
#    counts;
#  - data that was durable reads back through qemu-io and vdisk io: what
#    qemu-io wrote before the run, and every write that succeeded and was
#    followed by a successful flush (each write has its own 64 KiB slot;
#    the flushes are FUA writes, whose failure, unlike flush's, is printed).
# The workload has compressed writes (write -c, one whole cluster), and
# after it `vdisk resize` grows the image on the same blkdebug graph (its own
# process, so a once=on rule fires again there), with `vdisk snapshot -c`
# before and `-d` after the resize (QCOW2_FAULT_SNAPSHOTS=0 leaves them
# out): a failed write in snapshot create/delete used to leave OFLAG_COPIED
# mismatches; they switch to the new tables with one header write now
# (docs/reliability.md).
# Configurations: 512-byte clusters with 64-bit refcounts (new refcount
# blocks and a growing refcount table within a few MiB), and 64 KiB clusters
# over a raw backing file (copy-on-write from the backing file).
# The workload is seeded (QCOW2_FAULT_SEED, printed).  For debugging,
# QCOW2_FAULT_ONLY="c512-rc64 l2_update once" runs one case and leaves its
# script, blkdebug options, output and image in a scratch directory it keeps.
set -eu

. "$(dirname "$0")/../lib/common.sh"
# Scratch space in memory when there is some: the tools flush after each
# write (writethrough, FUA), which costs more on disk than the rest.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
vd_setup qemu-img qemu-io python3

# The events, from the source: every VD_EV_* the driver names.  Except
# read_aio: no qcow2 metadata read raises it, so blkdebug applies such a rule
# to the first read it sees (its documented fallback), which is the header
# read of the open, where QEMU would wait for the first data read.
all=$(grep -ohE '\bVD_EV_[A-Z0-9_]+' "$SRCDIR"/block/drivers/qcow2/*.c |
	grep -v '^VD_EV_MAX$' | sed 's/^VD_EV_//' | tr '[:upper:]' '[:lower:]' | sort -u | tr '\n' ' ')
[ -n "$all" ] || fail "no vd_debug_event in block/drivers/qcow2/*.c"
events=${all/read_aio /}
[ "$events" != "$all" ] && echo "not failed here: read_aio (fails the open through blkdebug's fallback)"
for e in l1_update l2_update l2_alloc_write refblock_update refblock_alloc reftable_update \
	cluster_alloc cow_read cow_write; do
	[[ " $events " == *" $e "* ]] || fail "the qcow2 driver does not raise $e (events: $events)"
done
for e in $events; do
	grep -q "\"$e\"" "$SRCDIR/block/node.c" || fail "event $e has no name in block/node.c"
done
SEED=${QCOW2_FAULT_SEED:-$RANDOM}
if [ -n "${QCOW2_FAULT_ONLY:-}" ] && [ -z "${QCOW2_FAULT_NOKEEP:-}" ]; then
	trap - EXIT
	echo "kept in $T"
fi
echo "events: $events"
echo "seed $SEED"

# shellcheck disable=SC2086 # one argument per event
python3 - "$VDISK" "$SEED" $events <<'PY'
import json, os, random, subprocess, sys

vdisk, seed, events = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
quick = bool(os.environ.get("VDISK_QUICK"))
SLOT = 65536
failures = []

def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)

def pattern(i):
    return 1 + i % 250

CONFIGS = [
    # name, create options, size, backing size
    ("c512-rc64", "cluster_size=512,refcount_bits=64", 16 << 20, 0),
    ("c64k-backing", "cluster_size=65536", 32 << 20, 8 << 20),
]

def plan(cfg_seed, size, csize):
    """Slots qemu-io fills first, the workload, and what it discards."""
    r = random.Random(cfg_seed)
    slots = list(range(size // SLOT))
    r.shuffle(slots)
    npre, nw = (24, 100) if not quick else (12, 40)
    pre, work = slots[:npre], slots[npre:npre + nw]
    markers = slots[npre + nw:npre + nw + nw // 4 + 1]
    pre_writes = []
    for i, s in enumerate(pre):
        off = s * SLOT + r.randrange(0, 4096)
        pre_writes.append(("write", 200 + i % 50, off, r.randrange(1, SLOT - 4096)))
    discard = set(r.sample(range(npre), npre // 4))
    cmds = []
    for i, s in enumerate(work):
        off = s * SLOT + r.randrange(0, 8192)
        ln = r.randrange(1, SLOT - 8192)
        x = r.random()
        if x < 0.15:
            cmds.append(("zero", 0, off, ln))
        elif x < 0.25:
            # A compressed write: one whole cluster at the slot's start.
            cmds.append(("cwrite", pattern(i), s * SLOT, csize))
        else:
            cmds.append(("write", pattern(i), off, ln))
        if i % 10 == 5 and discard:
            d = discard.pop()
            cmds.append(("discard", d, pre[d] * SLOT, SLOT))
        if i % 4 == 3 or i == nw - 1:
            cmds.append(("sync", pattern(i + 1000), markers.pop() * SLOT + 4096, 512))
    discarded = {c[1] for c in cmds if c[0] == "discard"}
    keep = [w for i, w in enumerate(pre_writes) if i not in discarded]
    return pre_writes, keep, cmds

def text(c):
    if c[0] == "write":
        return "write -P %d %d %d" % c[1:]
    if c[0] == "cwrite":
        return "write -c -P %d %d %d" % c[1:]
    if c[0] == "zero":
        return "write -z %d %d" % c[2:]
    if c[0] == "discard":
        return "discard %d %d" % c[2:]
    # A flush whose failure shows: qemu-io's (and vdisk io's) "flush"
    # prints nothing when it fails, a FUA write prints "write failed".
    return "write -f -P %d %d %d" % c[1:]

def readback(cmds):
    return ["read -q -P %d %d %d" % ((0 if c[0] == "zero" else c[1],) + c[2:4]) for c in cmds]

def one(cfg, event, mode):
    """mode: once (once=on), sticky (once=off), late (once=off, after=N)."""
    name, opts, size, bsize = cfg
    tag = "%s %s %s" % (name, event or "no-rule", mode)
    img = "img.qcow2"
    if os.path.exists(img):
        os.unlink(img)
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts]
    if bsize:
        with open("base.raw", "wb") as f:
            f.write(bytes([0x11]) * bsize)
        create += ["-b", "base.raw", "-F", "raw"]
    subprocess.run(create + [img, str(size)], check=True)
    csize = int(opts.split("cluster_size=")[1].split(",")[0])
    pre, keep, cmds = plan(seed * 7 + len(name), size, csize)
    args = ["qemu-io", "-f", "qcow2", "-t", "writeback"]
    for w in pre:
        args += ["-c", text(w)]
    p = run(args + [img])
    if p.returncode or "failed" in p.stdout:
        failures.append("%s: qemu-io could not prepare the image: %s" % (tag, p.stdout[-300:]))
        return None
    spec = "driver=qcow2,file.driver=blkdebug,file.image.filename=" + img
    if event:
        spec += ",file.inject-error.0.event=%s,file.inject-error.0.errno=5" % event
        spec += ",file.inject-error.0.once=%s" % ("on" if mode == "once" else "off")
        if mode == "late":
            # Our extension: the first N requests after the event pass, so
            # the failure comes in the middle of the workload.
            n = random.Random(seed + len(event)).randrange(20, 120)
            spec += ",file.inject-error.0.after=%d" % n
            tag += " after=%d" % n
    script = "".join(text(c) + "\n" for c in cmds)
    p = run([vdisk, "io", "-t", "writeback", "--image-opts", spec], input=script)
    if os.environ.get("QCOW2_FAULT_ONLY"):
        open("script", "w").write(script)
        open("spec", "w").write(spec)
        open("vdisk.out", "w").write(p.stdout + p.stderr)
    if p.returncode > 1 or "Assertion" in p.stderr or "Sanitizer" in p.stderr:
        failures.append("%s: vdisk io crashed (exit %d): %s" % (tag, p.returncode, p.stderr[-500:]))
    chunks = p.stdout.split("vdisk io> ")[1:]
    if len(chunks) < len(cmds):
        failures.append("%s: vdisk io ran %d of %d commands" % (tag, len(chunks), len(cmds)))
        return None
    ok = ["failed" not in chunks[i] for i in range(len(cmds))]
    nfailed = ok.count(False)
    # Snapshots and resize on the same graph, each its own process (so a
    # once=on rule fires again): create, overwrite some durable slots (COW
    # of shared clusters), resize, delete.  They change no data that must
    # read back; their failures count as the event being reached.
    extra = [[vdisk, "resize", "--image-opts", spec, str(size + (1 << 20))]]
    if os.environ.get("QCOW2_FAULT_SNAPSHOTS", "1") != "0":
        extra = [[vdisk, "snapshot", "--image-opts", "-c", "s1", spec]] + extra + \
                [[vdisk, "snapshot", "--image-opts", "-d", "s1", spec]]
    for args in extra:
        p = run(args)
        if p.returncode > 1 or "Assertion" in p.stderr or "Sanitizer" in p.stderr:
            failures.append("%s: %s crashed (exit %d): %s" %
                            (tag, args[1], p.returncode, p.stderr[-500:]))
        if p.returncode:
            nfailed += 1
    # Durable: a write that succeeded with a successful flush after it.
    durable = []
    for i, c in enumerate(cmds):
        if c[0] in ("write", "cwrite", "zero", "sync") and ok[i] and any(
                cmds[j][0] == "sync" and ok[j] for j in range(i, len(cmds))):
            durable.append(c)
    # No corruption; both checkers agree.
    q = run(["qemu-img", "check", "--output=json", img])
    v = run([vdisk, "check", "--output=json", img])
    if q.returncode not in (0, 3):
        failures.append("%s: qemu-img check exited %d: %s%s" % (tag, q.returncode, q.stdout[-400:], q.stderr[-400:]))
        return nfailed
    try:
        qj, vj = json.loads(q.stdout), json.loads(v.stdout)
    except ValueError:
        failures.append("%s: check output is not JSON: %s / %s" % (tag, q.stdout[-200:], v.stdout[-200:]))
        return nfailed
    if q.returncode != v.returncode or qj != vj:
        failures.append("%s: vdisk check (exit %d, %s) disagrees with qemu-img check (exit %d, %s)" %
                        (tag, v.returncode, vj, q.returncode, qj))
    # Durable data reads back through both tools.
    reads = readback(keep + durable)
    for tool in (["qemu-io", "-f", "qcow2", "-r"], [vdisk, "io", "-f", "qcow2", "-r"]):
        args = list(tool)
        for r in reads:
            args += ["-c", r]
        p = run(args + [img])
        bad = [l for l in (p.stdout + p.stderr).splitlines() if "failed" in l.lower()]
        if p.returncode or bad:
            failures.append("%s: %s lost durable data (%d reads): %s" %
                            (tag, tool[0].split("/")[-1], len(reads), "; ".join(bad[:3]) or p.stderr[-200:]))
            break
    if nfailed and q.returncode == 3:
        tag += " (leaks: %d)" % qj.get("leaks", 0)
    print("%-40s %3d commands failed, %3d durable writes read back" % (tag, nfailed, len(durable)))
    return nfailed

fired = {e: [] for e in events}
only = os.environ.get("QCOW2_FAULT_ONLY")  # "CONFIG EVENT|none once|sticky|late"
if only:
    c, e, m = only.split()
    one([x for x in CONFIGS if x[0] == c][0], None if e == "none" else e, m)
    print("\n".join("FAIL: " + f for f in failures))
    sys.exit(1 if failures else 0)
for cfg in CONFIGS:
    n = one(cfg, None, "once")
    if n:
        failures.append("%s: the workload fails without any rule" % cfg[0])
    for e in events:
        n = one(cfg, e, "once")
        if n:
            fired[e].append(cfg[0])
        one(cfg, e, "sticky")
        one(cfg, e, "late")
for e, where in fired.items():
    if not where:
        failures.append("event %s never failed the workload: not reached" % e)
    else:
        print("event %-16s reached in: %s" % (e, ", ".join(where)))
if failures:
    print("\n".join("FAIL: " + f for f in failures))
    print("(seed %d: rerun with QCOW2_FAULT_SEED=%d)" % (seed, seed))
    sys.exit(1)
print("PASS")
PY
