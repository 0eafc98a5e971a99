#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run the metadata-overlap corpus (tests/fuzz/corpus/qcow2/ol-*) through
`vdisk io` and check each outcome against tests/image/qcow2-overlap.expect
(written by tests/fuzz/make-qcow2-overlap-corpus.py; its header says what
the fields mean).  For every case:

  - the exit status and the message ("qcow2: Marking image as corrupt:
    Preventing invalid write on metadata (overlaps with CLASS); further
    corruption events will be suppressed" for a refused write, as QEMU;
    "Preventing invalid free of metadata (...)" where a crafted L2 entry
    would make a write, discard or write-zeroes free a table, vdisk's own);
  - the corrupt bit (header byte 72, incompatible bit 1): set exactly when
    the expectation says so;
  - the protected host ranges: byte for byte unchanged (the feature words
    of the header, bytes 72-79 and 88-95, are excluded: the corrupt bit is
    judged above, and a read-write open may clear the autoclear word; so are
    the flags words of the bitmap directory entries, which a read-write open
    sets in use, as QEMU's does, and which stay so when the image turned
    corrupt before the close could store the bitmaps);
  - `qemu-img check` finds no more corruptions after the command than
    before;
  - what qemu-io does with the same image and command is printed beside
    it (informative only).

Usage: qcow2-overlap.py VDISK CORPUS-DIR EXPECT-FILE WORKDIR
"""
import json
import os
import shutil
import subprocess
import sys

VDISK, CORPUS, EXPECT, WORK = sys.argv[1:5]
SUPPRESS = "; further corruption events will be suppressed"


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    return p.returncode, p.stdout


def io(tool, img, opts, cmd):
    tool = [tool] if tool == "qemu-io" else [tool, "io"]
    if opts == "-":
        return run(tool + ["-f", "qcow2", "-c", cmd, img])
    return run(tool + ["--image-opts", "-c", cmd,
                "driver=qcow2,file.driver=file,file.filename=%s,%s" % (img, opts)])


def corruptions(img):
    rc, out = run(["qemu-img", "check", "--output=json", "-f", "qcow2", img])
    try:
        return json.loads(out[out.index("{"):]).get("corruptions", 0)
    except ValueError:
        return None


def corrupt_bit(img):
    with open(img, "rb") as f:
        h = f.read(80)
    return len(h) >= 80 and int.from_bytes(h[4:8], "big") >= 3 and (h[79] & 2) != 0


def ranges(spec):
    out = []
    for r in spec.split(","):
        off, ln = r.split("+")
        out.append((int(off), int(ln)))
    return out


def dir_flags(data):
    """(lo, hi) of the flags word of each bitmap directory entry."""
    import struct
    out = []
    try:
        off = struct.unpack(">I", data[100:104])[0]
        while off + 8 <= len(data) and off < 65536:
            t, l = struct.unpack(">II", data[off:off + 8])
            if t == 0:
                break
            if t == 0x23852875 and l >= 24:
                n, _, size, doff = struct.unpack(">IIQQ", data[off + 8:off + 32])
                pos = doff
                for _ in range(min(n, 1024)):
                    if pos + 24 > min(len(data), doff + size):
                        break
                    name, extra = struct.unpack(">HI", data[pos + 18:pos + 24])
                    out.append((pos + 12, pos + 16))
                    pos += (24 + extra + name + 7) & ~7
                break
            off += 8 + ((l + 7) & ~7)
    except struct.error:
        pass
    return out


def snap(img, spec, skip=None):
    with open(img, "rb") as f:
        data = f.read()
    res = []
    for off, ln in ranges(spec):
        b = bytearray(data[off:off + ln].ljust(ln, b"\0"))
        for lo, hi in [(72, 80), (88, 96)] + (skip or []):
            for i in range(max(lo, off), min(hi, off + ln)):
                b[i - off] = 0
        res.append(bytes(b))
    return res


def failed(rc, out):
    return rc != 0 or "failed" in out


def main():
    cases = [l.rstrip("\n").split("|") for l in open(EXPECT) if l.strip() and not l.startswith("#")]
    bad = 0
    agree = differ = 0
    for name, opts, cmd, outcome, msg, corrupt, protect in cases:
        img = os.path.join(WORK, name + ".qcow2")
        shutil.copyfile(os.path.join(CORPUS, name), img)
        before_c = corruptions(img)
        with open(img, "rb") as f:
            skip = dir_flags(f.read())
        before = snap(img, protect, skip)
        rc, out = io(VDISK, img, opts, cmd)
        problems = []
        if outcome == "refuse":
            if not msg.startswith("Preventing invalid free"):
                msg = "Preventing invalid write on metadata (overlaps with %s)" % msg
            want = "qcow2: Marking image as corrupt: " + msg + SUPPRESS
            if not failed(rc, out) or want not in out:
                problems.append("expected the write refused with '%s'" % want)
            if "failed: Input/output error" not in out:
                problems.append("expected '... failed: Input/output error'")
        elif outcome == "fail":
            if not failed(rc, out):
                problems.append("expected the command to fail")
            if msg != "-" and msg not in out:
                problems.append("expected '%s'" % msg)
        elif outcome == "openfail":
            if rc == 0 or msg not in out:
                problems.append("expected the open to fail with '%s'" % msg)
        elif outcome == "ok":
            if failed(rc, out):
                problems.append("expected success")
        if "Marking image as corrupt" in out and outcome != "refuse" and corrupt == "no":
            problems.append("unexpected corruption event")
        bit = corrupt_bit(img)
        if corrupt == "yes" and not bit:
            problems.append("corrupt bit not set")
        if corrupt == "no" and bit:
            problems.append("corrupt bit set")
        after = snap(img, protect, skip)
        for (off, ln), a, b in zip(ranges(protect), before, after):
            if a != b:
                problems.append("metadata at %#x+%#x changed" % (off, ln))
        after_c = corruptions(img)
        if before_c is not None and after_c is not None and after_c > before_c:
            problems.append("qemu-img check: %d corruptions before, %d after" % (before_c, after_c))
        # The reference, on a fresh copy.
        ref = os.path.join(WORK, name + ".ref.qcow2")
        shutil.copyfile(os.path.join(CORPUS, name), ref)
        qrc, qout = io("qemu-io", ref, opts, cmd)
        q = "refused" if "Preventing invalid" in qout else ("failed" if failed(qrc, qout) else "ok")
        v = "refused" if "Preventing invalid" in out else ("failed" if failed(rc, out) else "ok")
        if q == v:
            agree += 1
        else:
            differ += 1
        status = "FAIL" if problems else "ok"
        print("%-4s %-40s vdisk %-7s qemu-io %-7s%s" % (status, name, v, q,
              "" if q == v else "  (differs)"))
        if problems:
            bad += 1
            for p in problems:
                print("     " + p)
            print("     vdisk said: " + out.strip().replace("\n", " | ")[:400])
        os.unlink(img)
        os.unlink(ref)
    print("%d cases, %d failed; qemu-io agrees on %d, differs on %d" % (len(cases), bad, agree, differ))
    return 1 if bad else 0


sys.exit(main())
