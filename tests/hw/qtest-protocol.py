# SPDX-License-Identifier: MIT
"""Scenario for tests/hw/qtest-protocol.sh (argv[1]: the vdisk binary)."""

import base64
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qtest import QTest  # noqa: E402

VDISK = sys.argv[1]
failures = 0


def check(cond, what):
    global failures
    if cond:
        print("ok   " + what)
    else:
        print("FAIL " + what)
        failures += 1


def expect(qt, line, reply):
    got = qt.raw(line)
    check(got == reply, "%-40s -> %r (want %r)" % (line, got, reply))


with QTest.vdisk(VDISK, "-m", "256M") as qt:
    # Port I/O: the formats of QEMU 7.2.
    expect(qt, "outb 0x80 0x12", "OK")
    expect(qt, "inb 0x1234", "OK 0x00ff")
    expect(qt, "inw 0x1234", "OK 0xffff")
    expect(qt, "inl 0x1234", "OK 0xffffffff")
    expect(qt, "outw 0x1234 0x5678", "OK")
    expect(qt, "outl 0x1234 0x5678", "OK")
    # Memory: RAM through writeX/readX, little-endian.
    expect(qt, "writeb 0x1000 0x12", "OK")
    expect(qt, "readb 0x1000", "OK 0x0000000000000012")
    expect(qt, "writew 0x1000 0x3456", "OK")
    expect(qt, "readw 0x1000", "OK 0x0000000000003456")
    expect(qt, "writel 0x1000 0x89abcdef", "OK")
    expect(qt, "readl 0x1000", "OK 0x0000000089abcdef")
    expect(qt, "writeq 0x1000 0x0123456789abcdef", "OK")
    expect(qt, "readq 0x1000", "OK 0x0123456789abcdef")
    expect(qt, "read 0x1000 0x8", "OK 0xefcdab8967452301")
    # write zero-fills what the data does not cover.
    expect(qt, "write 0x2000 0x4 0xaabb", "OK")
    expect(qt, "read 0x2000 0x4", "OK 0xaabb0000")
    expect(qt, "b64write 0x3000 0x3 " + base64.b64encode(b"\x01\x02\x03").decode(), "OK")
    expect(qt, "b64read 0x3000 0x3", "OK AQID")
    expect(qt, "b64read 0x3000 0", "OK ")
    expect(qt, "memset 0x4000 0x10 0x5a", "OK")
    expect(qt, "read 0x4000 0x10", "OK 0x" + "5a" * 16)
    expect(qt, "memset 0x4000 0 0x5a", "OK")
    expect(qt, "endianness", "OK little")
    expect(qt, "module_load block foo", "FAIL")
    # Unassigned memory reads as all ones.
    expect(qt, "readl 0xe0000000", "OK 0x00000000ffffffff")

    # Client helpers agree with raw bytes.
    qt.memwrite(0x5000, b"hello")
    check(qt.memread(0x5000, 5) == b"hello", "memread/memwrite")
    qt.bufwrite(0x6000, bytes(range(256)))
    check(qt.bufread(0x6000, 256) == bytes(range(256)), "bufread/bufwrite 256 bytes")

    # fw_cfg: signature, ID, RAM size (libqos sizes RAM this way).
    check(qt.fw_cfg_read(0, 4) == b"QEMU", "fw_cfg signature")
    check(qt.fw_cfg_ram_size() == 256 << 20, "fw_cfg RAM size = 256 MiB")
    check(qt.fw_cfg_read(0x01, 4)[0] & 1 == 1, "fw_cfg ID: traditional interface")
    check(qt.fw_cfg_read(0x3FFF, 2) == b"\0\0", "fw_cfg: a missing key reads 0")

    # PCI config mechanism #1 and enumeration.
    expect(qt, "outl 0xcf8 0x80000000", "OK")
    expect(qt, "inl 0xcfc", "OK 0x12378086")
    expect(qt, "inw 0xcfe", "OK 0x1237")
    expect(qt, "inb 0xcfd", "OK 0x0080")
    expect(qt, "inl 0xcf8", "OK 0x80000000")
    expect(qt, "outl 0xcf8 0x0", "OK")
    expect(qt, "inl 0xcfc", "OK 0xffffffff")  # enable bit clear
    devs = qt.pci_enumerate()
    check(sorted(devs) == [0x00, 0x08, 0x09],
          "bus 0 has 00.0, 01.0 and the IDE at 01.1: %s" % sorted(devs))
    check(devs[8]["header_type"] == 0x80, "PIIX3 is multi-function")
    check(qt.pci_cfg_readl(0x08, 0x60) == 0x80808080, "PIRQ routing disabled at reset")
    qt.pci_cfg_writeb(0x08, 0x61, 0x0B)
    check(qt.pci_cfg_readl(0x08, 0x60) == 0x80800B80, "PIRQB routed to IRQ 11")
    # RCR at 0xcf9 overlaps CONFIG_ADDRESS; QEMU reads it four times.
    expect(qt, "outb 0xcf9 0x2", "OK")
    expect(qt, "inl 0xcf9", "OK 0x2020202")

    # IRQ interception.  No device on this board raises an interrupt yet, so
    # the interrupt lines are driven through the IOAPIC's inputs
    # (set_irq_in), which is where PIRQ routing and ISA devices end too.
    expect(qt, "irq_intercept_in foo", "FAIL Unknown device")
    expect(qt, "irq_intercept_in ioapic", "OK")
    expect(qt, "irq_intercept_in ioapic", "OK")
    expect(qt, "set_irq_in ioapic unnamed-gpio-in 14 1", "OK")
    check(qt.get_irq(14), "IRQ raise 14 seen")
    expect(qt, "set_irq_in ioapic unnamed-gpio-in 14 1", "OK")
    expect(qt, "set_irq_in ioapic unnamed-gpio-in 14 0", "OK")
    check(not qt.get_irq(14), "IRQ lower 14 seen")
    check(qt.irq_events == [(14, True), (14, False)], "one line per level change: %s" % qt.irq_events)

    # Virtual clock: only clock_step/clock_set move it.
    expect(qt, "clock_step", "OK 0")  # no timer pending: no move
    expect(qt, "clock_step 1000", "OK 1000")
    expect(qt, "clock_step 0x10", "OK 1016")
    expect(qt, "clock_set 5000", "OK 5000")
    expect(qt, "clock_set 10", "OK 5000")  # never backwards
    expect(qt, "clock_step -7", "OK 5000")
    time.sleep(0.05)
    expect(qt, "clock_step 0", "OK 5000")  # wall-clock time does not count

    # Malformed lines: an error line each, and the machine goes on.
    for line, reply in [
        ("bogus", "FAIL Unknown command 'bogus'"),
        ("OUTB 0x80 1", "FAIL Unknown command 'OUTB'"),
        ("", None),
        ("outb", None),
        ("outb 0x80", None),
        ("outb zz 1", None),
        ("outb 0x10000 1", None),
        ("inb", None),
        ("inb 0x80junk", None),
        ("readq", None),
        ("writel 0x1000", None),
        ("read 0x1000", None),
        ("read 0x1000 0", None),
        ("read 0x1000 0xffffffffffffffff", None),
        ("write 0x1000 4", None),
        ("write 0x1000 4 0x", "ERR invalid argument size"),
        ("write 0x1000 4 0xzz", None),
        ("b64write 0x1000 4 ab", "ERR invalid argument size"),
        ("b64write 0x1000 4 !!!!", None),
        ("memset 0x1000 4", None),
        ("memset 0x1000 4 x", None),
        ("clock_step x", None),
        ("clock_set", None),
        ("set_irq_in ioapic unnamed-gpio-in 99 1", None),
    ]:
        got = qt.raw(line)
        if reply is None:
            check(got.startswith("ERR ") or got.startswith("FAIL "), "%-40r -> %r" % (line, got))
        else:
            check(got == reply, "%-40r -> %r (want %r)" % (line, got, reply))
    # An overlong line (over 64 MiB) is not needed to show the bound; a long
    # one is still one line and one answer.
    check(qt.raw("x" * 100000).startswith("FAIL Unknown command 'xxx"), "long unknown command")
    expect(qt, "endianness", "OK little")
    check(qt.alive(), "the machine is still running")
    qt.close()
    check(qt.proc.returncode == 0, "end of input ends the machine with status 0")

# The unix socket front end: vdisk connects, as QEMU's -qtest unix:PATH.
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "qtest.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    proc = subprocess.Popen([VDISK, "machine", "-m", "64", "--qtest", "unix:" + path])
    srv.settimeout(10)
    conn, _ = srv.accept()
    conn.settimeout(10)
    conn.sendall(b"outl 0xcf8 0x80000800\ninl 0xcfc\nclock_step 5\n")
    data = b""
    while data.count(b"\n") < 3:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    check(data == b"OK\nOK 0x70008086\nOK 5\n", "unix socket: %r" % data)
    conn.close()
    check(proc.wait(timeout=10) == 0, "socket closed: the machine quits")
    srv.close()

print("%d failures" % failures)
sys.exit(1 if failures else 0)
