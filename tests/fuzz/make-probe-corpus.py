#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted seeds of tests/fuzz/corpus/probe/ for tests/fuzz/fuzz-probe.c.

Each seed is the start of a file: a format's magic with a truncated header,
a magic at or just past the edge of the 512-byte probe area (QEMU 7.2 probes one sector), near misses
(wrong version, missing NUL), and vmdk descriptor text in its variants.
Re-run after changing the probes:

    python3 tests/fuzz/make-probe-corpus.py tests/fuzz/corpus/probe
"""
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "probe")
PROBE = 512

BOCHS = b"Bochs Virtual HD Image\0".ljust(32, b"\0") + b"Redolog\0".ljust(16, b"\0") + \
    b"Growing\0".ljust(16, b"\0")
CLOOP = (b"#!/bin/sh\n#V2.0 Format\n"
         b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")


def seeds():
    yield "empty", b""
    yield "one-byte", b"Q"
    # Truncated headers: the magic alone, shorter than the structure.
    yield "qcow2-magic-only", b"QFI\xfb"
    yield "qcow2-v3-8-bytes", b"QFI\xfb\0\0\0\3"
    yield "qcow2-v1-is-qcow", b"QFI\xfb\0\0\0\1" + bytes(40)
    yield "qcow2-v0", b"QFI\xfb\0\0\0\0" + bytes(100)
    yield "qed-magic-only", b"QED\0"
    yield "qed-3-bytes", b"QED"
    yield "vhdx-7-bytes", b"vhdxfil"
    yield "vhdx-magic-only", b"vhdxfile"
    yield "vpc-magic-only", b"conectix"
    yield "luks-v1", b"LUKS\xba\xbe\0\1"
    yield "luks-v2", b"LUKS\xba\xbe\0\2" + bytes(504)
    yield "vdi-signature-68-bytes", bytes(64) + struct.pack("<I", 0xBEDA107F)
    yield "vdi-signature-67-bytes", bytes(64) + struct.pack("<I", 0xBEDA107F)[:3]
    yield "parallels-v2", b"WithoutFreeSpace" + struct.pack("<I", 2)
    yield "parallels-ext-v2", b"WithouFreSpacExt" + struct.pack("<I", 2) + bytes(44)
    yield "parallels-v1", b"WithoutFreeSpace" + struct.pack("<I", 1) + bytes(44)
    yield "bochs-v2", BOCHS + struct.pack("<I", 0x20000)
    yield "bochs-v1", BOCHS + struct.pack("<I", 0x10000) + bytes(444)
    yield "bochs-no-nul", b"Bochs Virtual HD ImageX".ljust(32, b"\0") + BOCHS[32:] + \
        struct.pack("<I", 0x20000)
    yield "cloop-partial", CLOOP[:40]
    yield "cloop-full", CLOOP
    yield "vmdk-kdmv", b"KDMV"
    yield "vmdk-cowd-3-bytes", b"COW"
    # vmdk descriptors: comments, blank lines, CRLF, and the version line
    # at the very end of the probe area or crossing it.
    yield "vmdk-desc", b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\n"
    yield "vmdk-desc-crlf", b"# Disk DescriptorFile\r\n  \r\nversion=3\r\n"
    yield "vmdk-desc-version-4", b"version=4\n"
    yield "vmdk-desc-leading-newline", b"\nversion=1\n"
    yield "vmdk-desc-spaces-then-text", b"   x\nversion=1\n"
    yield "vmdk-comment-to-end", b"#" * PROBE
    yield "vmdk-version-at-edge", b"#" * (PROBE - 11) + b"\nversion=1\n"
    yield "vmdk-version-cut-by-edge", b"#" * (PROBE - 10) + b"\nversion=1\n"
    yield "vmdk-crlf-at-edge", b"#" * (PROBE - 12) + b"\nversion=2\r\n"
    yield "vmdk-crlf-cut-by-edge", b"#" * (PROBE - 11) + b"\nversion=2\r\n"
    yield "vmdk-blank-lines-to-end", b" \n" * (PROBE // 2)
    # A magic just past the probe area is not looked at.
    yield "qcow2-past-probe-area", bytes(PROBE) + b"QFI\xfb\0\0\0\3"


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
