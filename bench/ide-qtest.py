#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The guest driver of bench/ide.sh: 4 KiB reads from the primary IDE disk
of `vdisk machine` or QEMU 7.2 (-accel qtest), over the qtest protocol on a
unix socket, with the commands of each phase pipelined (sent in one write,
the replies read after).

    bench/ide-qtest.py vdisk|qemu BINARY IMAGE dma|pio COUNT [BIOS]

The client listens on a socket and the machine connects to it (QEMU's
-qtest unix:PATH; `vdisk machine --qtest unix:PATH`), as libqtest does.  The
same client, and the same command stream, drives both machines:

  dma  READ DMA (C8h) of 8 sectors into one 4 KiB PRD buffer: the task file,
       the command and START in one batch with a BM status read, then BM
       status polls until the transfer is done; STOP, the status read that
       clears the interrupt and the INT clear go out with the next request.
  pio  READ MULTIPLE (C4h) of 8 sectors after SET MULTIPLE MODE 8 (one DRQ
       block per request): the task file and command with an alternate
       status read, polls until DRQ, then 1024 32-bit data-port reads and the
       status read in one batch.

Requests walk the image in 4 KiB steps.  Every 1000th request's data is
checked against the image's pattern (sector N starts with N as a 64-bit
little-endian number, the rest is (N * 7 + 1) & 0xff); every request's final
ATA status must be DRDY|DSC.  Prints one line: "TOOL OP COUNT SECONDS IOPS
CPU", CPU being the machine process's user + system time per request in
microseconds (all its threads; from /proc, so in clock ticks).
"""

import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

P0, C0, BM = 0x1F0, 0x3F6, 0xC000
IDE_DEVFN = 0x09
PRD, BUF = 0x1000, 0x100000
SECTORS = 8  # 4 KiB
CHECK_EVERY = 1000
ACCEL = os.environ.get("QEMU_ACCEL", "tcg")
AIO = os.environ.get("AIO", "threads")


class Machine:
    def __init__(self, kind, binary, image, bios):
        self.dir = tempfile.mkdtemp(prefix="ide-bench-")
        path = os.path.join(self.dir, "qtest.sock")
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(1)
        if kind == "qemu":
            # This QEMU build has no qtest accelerator: TCG with a BIOS of
            # HLT instructions, whose one vCPU halts at the reset vector.
            argv = [binary, "-machine", "pc", "-accel", ACCEL, "-qtest", "unix:" + path,
                    "-qtest-log", "/dev/null", "-display", "none", "-nodefaults",
                    "-bios", bios, "-m", "128M", "-drive",
                    "file=%s,if=ide,index=0,format=raw,cache=writeback,aio=%s" % (image, AIO)]
        else:
            # The same drive; vdisk's -drive has no top-level aio= yet, so
            # the protocol node is spelt out.
            argv = [binary, "machine", "-m", "128M", "-drive",
                    "if=ide,index=0,format=raw,cache=writeback,file.driver=file,"
                    "file.filename=%s,file.aio=%s" % (image, AIO), "--qtest", "unix:" + path]
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        self.lsock.settimeout(0.1)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock, _ = self.lsock.accept()
                break
            except socket.timeout:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("%s did not connect (exit %s)" % (argv[0], self.proc.poll()))
        self.sock.setblocking(False)
        self.buf = bytearray()
        self.got = 0

    def close(self):
        self.sock.close()
        self.lsock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        os.rmdir(self.dir)

    def batch(self, text, n):
        """Send @text (n command lines), return the n reply lines.  Sending
        and receiving interleave, so that neither side blocks on a full
        socket buffer."""
        view = memoryview(text)
        sent = 0
        buf = self.buf
        got = self.got
        while got < n:
            progress = False
            if sent < len(view):
                try:
                    sent += self.sock.send(view[sent:])
                    progress = True
                except BlockingIOError:
                    pass
            try:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise SystemExit("the machine closed the connection")
                got += chunk.count(b"\n")
                buf += chunk
                progress = True
            except BlockingIOError:
                pass
            if not progress:
                r, _, _ = select.select([self.sock], [self.sock] if sent < len(view) else [],
                                        [], 30)
                if not r and sent >= len(view):
                    raise SystemExit("timeout waiting for the machine")
        lines = bytes(buf).split(b"\n", n)
        self.buf = bytearray(lines[n])
        self.got = got - n
        out = lines[:n]
        for line in out:
            if not line.startswith(b"OK"):
                raise SystemExit("unexpected reply %r" % line)
        return out

    def cmd(self, line):
        return self.batch(line.encode() + b"\n", 1)[0]

    def inb(self, port):
        return int(self.cmd("inb 0x%x" % port)[3:], 16)


def cpu_seconds(pid):
    """User + system time of a process and all its threads, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def value(reply):
    return int(reply[3:], 16)


def taskfile(lba, cmd):
    return ("outb 0x1f2 0x%x\noutb 0x1f3 0x%x\noutb 0x1f4 0x%x\noutb 0x1f5 0x%x\n"
            "outb 0x1f6 0x%x\noutb 0x1f7 0x%x\n" % (
                SECTORS, lba & 0xFF, (lba >> 8) & 0xFF, (lba >> 16) & 0xFF,
                0x40 | ((lba >> 24) & 0xF), cmd))


def expect_sectors(lba, data):
    for i in range(SECTORS):
        s = data[i * 512:(i + 1) * 512]
        n = lba + i
        want = struct.pack("<Q", n) + bytes([(n * 7 + 1) & 0xFF]) * 504
        if s != want:
            raise SystemExit("sector %d: wrong data %r..." % (n, s[:16]))


def setup(m):
    pci = 0x80000000 | IDE_DEVFN << 8
    m.batch(("outl 0xcf8 0x%x\noutl 0xcfc 0x%x\noutl 0xcf8 0x%x\noutw 0xcfc 0x5\n"
             "write 0x%x 0x8 0x%s\noutl 0x%x 0x%x\n" % (
                 pci | 0x20, BM | 1, pci | 0x04, PRD,
                 struct.pack("<II", BUF, 0x80000000 | SECTORS * 512).hex(), BM + 4, PRD)
             ).encode(), 6)


def run_dma(m, count, span):
    pending = ""  # the previous request's epilogue
    npending = 0
    for i in range(count):
        lba = i * SECTORS % span
        text = pending + taskfile(lba, 0xC8) + "outb 0x%x 0x9\ninb 0x%x\n" % (BM, BM + 2)
        r = m.batch(text.encode(), npending + 8)
        if npending and value(r[1]) != 0x50:
            raise SystemExit("status 0x%02x after DMA" % value(r[1]))
        st = value(r[-1])
        while st & 5 == 1:
            st = m.inb(BM + 2)
        if st != 0x04:
            raise SystemExit("BM status 0x%02x" % st)
        if i % CHECK_EVERY == 0 or i == count - 1:
            data = bytes.fromhex(m.cmd("read 0x%x 0x%x" % (BUF, SECTORS * 512))[5:].decode())
            expect_sectors(lba, data)
        pending = "outb 0x%x 0x0\ninb 0x%x\noutb 0x%x 0x4\n" % (BM, P0 + 7, BM + 2)
        npending = 3
    r = m.batch(pending.encode(), npending)
    if value(r[1]) != 0x50:
        raise SystemExit("status 0x%02x after DMA" % value(r[1]))


def run_pio(m, count, span):
    # SET MULTIPLE MODE: 8 sectors per DRQ block.
    r = m.batch(b"outb 0x1f2 0x8\noutb 0x1f6 0x40\noutb 0x1f7 0xc6\ninb 0x1f7\n", 4)
    if value(r[3]) != 0x50:
        raise SystemExit("SET MULTIPLE: status 0x%02x" % value(r[3]))
    data_cmds = ("inl 0x%x\n" % P0) * (SECTORS * 128) + "inb 0x%x\n" % (P0 + 7)
    data_cmds = data_cmds.encode()
    for i in range(count):
        lba = i * SECTORS % span
        r = m.batch((taskfile(lba, 0xC4) + "inb 0x%x\n" % C0).encode(), 7)
        st = value(r[-1])
        while st & 0x88 != 0x08:
            if st & 0x01:
                raise SystemExit("READ MULTIPLE failed: status 0x%02x" % st)
            st = m.inb(C0)
        r = m.batch(data_cmds, SECTORS * 128 + 1)
        if value(r[-1]) != 0x50:
            raise SystemExit("status 0x%02x after PIO" % value(r[-1]))
        if i % CHECK_EVERY == 0 or i == count - 1:
            data = b"".join(struct.pack("<I", value(x)) for x in r[:-1])
            expect_sectors(lba, data)


def main():
    if len(sys.argv) < 6:
        raise SystemExit(__doc__)
    kind, binary, image, op, count = sys.argv[1:6]
    bios = sys.argv[6] if len(sys.argv) > 6 else None
    count = int(count)
    span = os.path.getsize(image) // 512 // SECTORS * SECTORS
    m = Machine(kind, binary, image, bios)
    try:
        setup(m)
        c0 = cpu_seconds(m.proc.pid)
        t0 = time.perf_counter()
        (run_dma if op == "dma" else run_pio)(m, count, span)
        t = time.perf_counter() - t0
        cpu = cpu_seconds(m.proc.pid) - c0
    finally:
        m.close()
    print("%s %s %d %.3f %.0f %.1f" % (kind, op, count, t, count / t, cpu / count * 1e6))


main()
