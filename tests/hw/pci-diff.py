# SPDX-License-Identifier: MIT
"""Scenario for tests/hw/pci-diff.sh: argv = vdisk, qemu, temp dir."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from qtest import QTest, make_halt_bios  # noqa: E402

VDISK, QEMU, TMP = sys.argv[1:4]
# Functions QEMU's pc has that we do not have yet; reported, not failed.
EXPECTED_ABSENT = {
    0x09: "PIIX3 IDE (8086:7010), added by the IDE device model",
    0x0B: "PIIX4 ACPI/PM (8086:7113)",
}
FIELDS = ["vendor", "device", "revision", "class", "header_type", "interrupt_pin",
          "subsystem_vendor", "subsystem", "bars", "writable"]


def name(devfn):
    return "%02x.%x" % (devfn >> 3, devfn & 7)


# Registers whose writable bits are compared (write all ones, read back,
# restore): command/status, cache line/latency/BIST, interrupt line/pin and
# samples of the device-specific space (PIIX3 PIRQ routing at 0x60).
WMASK_OFFSETS = [0x04, 0x0C, 0x3C, 0x40, 0x60, 0xFC]


def probe(qt):
    devs = qt.pci_enumerate()
    for devfn, d in devs.items():
        wm = {}
        for off in WMASK_OFFSETS:
            old = qt.pci_cfg_readl(devfn, off)
            qt.pci_cfg_writel(devfn, off, 0xFFFFFFFF)
            wm[off] = qt.pci_cfg_readl(devfn, off)
            qt.pci_cfg_writel(devfn, off, old)
        d["writable"] = {"0x%02x" % k: "0x%08x" % v for k, v in wm.items()}
    # Also what the host bridge answers for a function nobody has, and with
    # the enable bit clear (PCI 3.0 3.2.2.3.2).
    qt.outl(0xCF8, 0x8000F800)
    none = qt.inl(0xCFC)
    qt.outl(0xCF8, 0x00000000)
    disabled = qt.inl(0xCFC)
    qt.outl(0xCF8, 0x80000000)
    partial = (qt.inb(0xCFC), qt.inw(0xCFE), qt.inb(0xCFF))
    return devs, (none, disabled, partial)


bios = make_halt_bios(os.path.join(TMP, "HALT.bin"))
with QTest.qemu(QEMU, bios, "-m", "256", stderr=open(os.devnull, "w")) as qt:
    ref, ref_misc = probe(qt)
with QTest.vdisk(VDISK, "-m", "256M") as qt:
    ours, our_misc = probe(qt)

failures = 0
for devfn in sorted(set(ref) | set(ours)):
    if devfn not in ours:
        why = EXPECTED_ABSENT.get(devfn)
        d = ref[devfn]
        desc = "%04x:%04x class %06x" % (d["vendor"], d["device"], d["class"])
        if why:
            print("absent %s (%s): expected, %s" % (name(devfn), desc, why))
        else:
            print("FAIL   %s (%s): QEMU has it, we do not" % (name(devfn), desc))
            failures += 1
        continue
    if devfn not in ref:
        print("FAIL   %s: we have it, QEMU does not" % name(devfn))
        failures += 1
        continue
    for f in FIELDS:
        a, b = ref[devfn].get(f), ours[devfn].get(f)
        if a != b:
            print("FAIL   %s %s: QEMU %r, vdisk %r" % (name(devfn), f, a, b))
            failures += 1
    if all(ref[devfn].get(f) == ours[devfn].get(f) for f in FIELDS):
        d = ours[devfn]
        print("same   %s %04x:%04x rev %02x class %06x hdr %02x subsys %04x:%04x bars %s"
              % (name(devfn), d["vendor"], d["device"], d["revision"], d["class"],
                 d["header_type"], d.get("subsystem_vendor", 0), d.get("subsystem", 0),
                 d.get("bars")))
if ref_misc != our_misc:
    print("FAIL   host bridge edge cases: QEMU %r, vdisk %r" % (ref_misc, our_misc))
    failures += 1
else:
    print("same   absent function / enable bit clear / byte and word data reads: %r"
          % (our_misc,))
print("%d differences" % failures)
sys.exit(1 if failures else 0)
