#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Differential IDENTIFY: the 256 words of IDENTIFY DEVICE and IDENTIFY
# PACKET DEVICE from `vdisk machine` and from QEMU 7.2 (-machine pc -accel
# tcg -bios HALT.bin -qtest stdio -display none -nodefaults) for the same
# images, serial, model and cache mode, before and after SET FEATURES.
# The scenario and the masked-word list are in ide-identify-diff.py.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"
QEMU=${QEMU:-qemu-system-x86_64}
command -v "$QEMU" >/dev/null ||
	skip "$QEMU not installed (scripts/install-deps installs qemu-system-x86)"
vd_setup python3
python3 "$here/ide-identify-diff.py" "$VDISK" "$QEMU" "$T"
