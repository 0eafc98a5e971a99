#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Differential PCI enumeration: bus 0 of `vdisk machine` against QEMU 7.2's
# `-machine pc` (TCG, -bios HALT.bin, -qtest stdio, -nodefaults), through the
# same qtest script.  The scenario is pci-diff.py.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"
QEMU=${QEMU:-qemu-system-x86_64}
command -v "$QEMU" >/dev/null ||
	skip "$QEMU not installed (scripts/install-deps installs qemu-system-x86)"
vd_setup python3
python3 "$here/pci-diff.py" "$VDISK" "$QEMU" "$T"
