#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# IDE with QMP, against QEMU 7.2 and `vdisk machine`: CD-ROM media change
# (eject, blockdev-change-medium, DEVICE_TRAY_MOVED, NOT READY then UNIT
# ATTENTION, a locked tray) and rerror=stop with QMP cont retrying the
# failed DMA read.  The scenario is ide-qmp.py.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"
QEMU=${QEMU:-qemu-system-x86_64}
command -v "$QEMU" >/dev/null ||
	skip "$QEMU not installed (scripts/install-deps installs qemu-system-x86)"
vd_setup python3
python3 "$here/ide-qmp.py" "$VDISK" "$QEMU" "$T"
