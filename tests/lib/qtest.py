# SPDX-License-Identifier: MIT
"""A small client for QEMU's qtest wire protocol.

It drives `vdisk machine --qtest stdio` or `qemu-system-x86_64 ... -qtest stdio`
the same way, so that one scenario can run against both:

    with QTest.vdisk(os.environ["VDISK"], "-m", "256M") as qt:
        qt.outl(0xCF8, 0x80000000)
        print(hex(qt.inl(0xCFC)))

Replies are read line by line; asynchronous "IRQ raise N" / "IRQ lower N"
lines are collected in `irq_events` and `irq_level` as libqtest does.  Lines
that start with neither OK, FAIL nor ERR are kept in `noise` (QEMU may print
warnings on the same stream).
"""

import base64
import os
import select
import subprocess
import time

PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = 0xCFC


class QTestError(Exception):
    pass


class QTest:
    def __init__(self, argv, timeout=10.0, stderr=None, quit_on_eof=True):
        self.argv = list(argv)
        # QEMU keeps running when the qtest chardev closes (libqtest's
        # qtest_quit sends SIGTERM); `vdisk machine` quits on EOF.
        self.quit_on_eof = quit_on_eof
        self.timeout = timeout
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
        )
        self.buf = b""
        self.irq_events = []
        self.irq_level = {}
        self.noise = []

    @classmethod
    def vdisk(cls, vdisk, *args, **kw):
        return cls([vdisk, "machine", *args, "--qtest", "stdio"], **kw)

    @classmethod
    def qemu(cls, qemu, bios, *args, **kw):
        return cls(
            [qemu, "-machine", "pc", "-accel", "tcg", "-bios", bios, "-qtest", "stdio",
             "-display", "none", "-nodefaults", "-qtest-log", "/dev/null", *args],
            quit_on_eof=False,
            **kw,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                if not self.quit_on_eof:
                    self.proc.terminate()
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        return self.proc.returncode

    def alive(self):
        return self.proc.poll() is None

    # ---- the wire ----

    def _readline(self):
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QTestError("timeout waiting for a reply")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise QTestError("the machine closed the stream (exit %s)" % self.proc.poll())
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def _note_irq(self, line):
        words = line.split()
        if len(words) == 3 and words[0] == "IRQ" and words[1] in ("raise", "lower"):
            n = int(words[2])
            level = words[1] == "raise"
            self.irq_events.append((n, level))
            self.irq_level[n] = level
            return True
        return False

    def raw(self, line):
        """Send one line, return the reply line (OK/FAIL/ERR ...)."""
        self.proc.stdin.write(line.encode() + b"\n")
        while True:
            reply = self._readline()
            if self._note_irq(reply):
                continue
            if reply.split(" ", 1)[0] in ("OK", "FAIL", "ERR"):
                return reply
            self.noise.append(reply)

    def cmd(self, line):
        """Send a line; return the words after OK, raise on anything else."""
        reply = self.raw(line)
        if reply != "OK" and not reply.startswith("OK "):
            raise QTestError("%r -> %r" % (line, reply))
        return reply[3:]

    # ---- commands ----

    def outb(self, a, v):
        self.cmd("outb 0x%x 0x%x" % (a, v))

    def outw(self, a, v):
        self.cmd("outw 0x%x 0x%x" % (a, v))

    def outl(self, a, v):
        self.cmd("outl 0x%x 0x%x" % (a, v))

    def inb(self, a):
        return int(self.cmd("inb 0x%x" % a), 16)

    def inw(self, a):
        return int(self.cmd("inw 0x%x" % a), 16)

    def inl(self, a):
        return int(self.cmd("inl 0x%x" % a), 16)

    def writeb(self, a, v):
        self.cmd("writeb 0x%x 0x%x" % (a, v))

    def writew(self, a, v):
        self.cmd("writew 0x%x 0x%x" % (a, v))

    def writel(self, a, v):
        self.cmd("writel 0x%x 0x%x" % (a, v))

    def writeq(self, a, v):
        self.cmd("writeq 0x%x 0x%x" % (a, v))

    def readb(self, a):
        return int(self.cmd("readb 0x%x" % a), 16)

    def readw(self, a):
        return int(self.cmd("readw 0x%x" % a), 16)

    def readl(self, a):
        return int(self.cmd("readl 0x%x" % a), 16)

    def readq(self, a):
        return int(self.cmd("readq 0x%x" % a), 16)

    def memread(self, a, n):
        return bytes.fromhex(self.cmd("read 0x%x 0x%x" % (a, n))[2:])

    def memwrite(self, a, data):
        self.cmd("write 0x%x 0x%x 0x%s" % (a, len(data), data.hex()))

    def bufread(self, a, n):
        return base64.b64decode(self.cmd("b64read 0x%x 0x%x" % (a, n)))

    def bufwrite(self, a, data):
        self.cmd("b64write 0x%x 0x%x %s" % (a, len(data), base64.b64encode(data).decode()))

    def memset(self, a, n, v):
        self.cmd("memset 0x%x 0x%x 0x%x" % (a, n, v))

    def irq_intercept_in(self, path="ioapic"):
        self.cmd("irq_intercept_in %s" % path)

    def get_irq(self, n):
        # As libqtest's qtest_get_irq: a dummy command flushes async lines.
        self.inb(0)
        return self.irq_level.get(n, False)

    def clock_step(self, ns=None):
        return int(self.cmd("clock_step" if ns is None else "clock_step %d" % ns))

    def clock_set(self, ns):
        return int(self.cmd("clock_set %d" % ns))

    # ---- PCI configuration mechanism #1 and fw_cfg ----

    def pci_addr(self, devfn, off):
        return 0x80000000 | (devfn << 8) | (off & 0xFC)

    def pci_cfg_readl(self, devfn, off):
        self.outl(PCI_CONFIG_ADDRESS, self.pci_addr(devfn, off))
        return self.inl(PCI_CONFIG_DATA)

    def pci_cfg_readw(self, devfn, off):
        self.outl(PCI_CONFIG_ADDRESS, self.pci_addr(devfn, off))
        return self.inw(PCI_CONFIG_DATA + (off & 2))

    def pci_cfg_readb(self, devfn, off):
        self.outl(PCI_CONFIG_ADDRESS, self.pci_addr(devfn, off))
        return self.inb(PCI_CONFIG_DATA + (off & 3))

    def pci_cfg_writel(self, devfn, off, v):
        self.outl(PCI_CONFIG_ADDRESS, self.pci_addr(devfn, off))
        self.outl(PCI_CONFIG_DATA, v)

    def pci_cfg_writew(self, devfn, off, v):
        self.outl(PCI_CONFIG_ADDRESS, self.pci_addr(devfn, off))
        self.outw(PCI_CONFIG_DATA + (off & 2), v)

    def pci_cfg_writeb(self, devfn, off, v):
        self.outl(PCI_CONFIG_ADDRESS, self.pci_addr(devfn, off))
        self.outb(PCI_CONFIG_DATA + (off & 3), v)

    def pci_bar_size(self, devfn, bar):
        """Size a BAR by writing all ones (PCI 3.0 6.2.5.1); restores it.
        Returns (size, kind) with kind 'io', 'mem32', 'mem64' or None."""
        off = 0x10 + 4 * bar
        orig = self.pci_cfg_readl(devfn, off)
        self.pci_cfg_writel(devfn, off, 0xFFFFFFFF)
        v = self.pci_cfg_readl(devfn, off)
        self.pci_cfg_writel(devfn, off, orig)
        if v == 0:
            return (0, None)
        if v & 1:
            mask = v & 0xFFFFFFFC
            return ((~mask & 0xFFFF) + 1 if mask else 0, "io")
        if (v & 6) == 4:
            hi_orig = self.pci_cfg_readl(devfn, off + 4)
            self.pci_cfg_writel(devfn, off + 4, 0xFFFFFFFF)
            hi = self.pci_cfg_readl(devfn, off + 4)
            self.pci_cfg_writel(devfn, off + 4, hi_orig)
            mask = (hi << 32) | (v & 0xFFFFFFF0)
            return (((~mask) & 0xFFFFFFFFFFFFFFFF) + 1, "mem64")
        mask = v & 0xFFFFFFF0
        return ((~mask & 0xFFFFFFFF) + 1, "mem32")

    def pci_enumerate(self):
        """Bus 0: {devfn: description dict} for every function present."""
        found = {}
        for slot in range(32):
            for fn in range(8):
                devfn = slot << 3 | fn
                ids = self.pci_cfg_readl(devfn, 0)
                if ids & 0xFFFF == 0xFFFF:
                    if fn == 0:
                        break
                    continue
                hdr = self.pci_cfg_readb(devfn, 0x0E)
                cls = self.pci_cfg_readl(devfn, 0x08)
                d = {
                    "vendor": ids & 0xFFFF,
                    "device": ids >> 16,
                    "revision": cls & 0xFF,
                    "class": cls >> 8,
                    "header_type": hdr,
                    "interrupt_pin": self.pci_cfg_readb(devfn, 0x3D),
                }
                if hdr & 0x7F == 0:
                    sub = self.pci_cfg_readl(devfn, 0x2C)
                    d["subsystem_vendor"] = sub & 0xFFFF
                    d["subsystem"] = sub >> 16
                    bars = []
                    bar = 0
                    while bar < 6:
                        size, kind = self.pci_bar_size(devfn, bar)
                        bars.append((bar, size, kind))
                        bar += 2 if kind == "mem64" else 1
                    d["bars"] = [b for b in bars if b[1]]
                found[devfn] = d
                if fn == 0 and not hdr & 0x80:
                    break
        return found

    def fw_cfg_read(self, key, n):
        self.outw(0x510, key)
        return bytes(self.inb(0x511) for _ in range(n))

    def fw_cfg_ram_size(self):
        return int.from_bytes(self.fw_cfg_read(0x03, 8), "little")


def print_diff(name, qemu, vdisk, width):
    """For differential tests: one DIFF line per observation (a list of
    (key, value) pairs) where QEMU and vdisk differ, and one when they made
    different numbers of observations."""
    for (k1, v1), (k2, v2) in zip(qemu, vdisk):
        if (k1, v1) != (k2, v2):
            print("DIFF   %-*s %s: QEMU %r, vdisk %r" % (width, name, k1, v1, v2))
    if len(qemu) != len(vdisk):
        print("DIFF   %-*s %d vs %d observations" % (width, name, len(qemu), len(vdisk)))


def make_halt_bios(path):
    """QEMU's firmware for register tests: 64 KiB of HLT, the CPU halts at the
    reset vector."""
    with open(path, "wb") as f:
        f.write(b"\xf4" * 65536)
    return path
