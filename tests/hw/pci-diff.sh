#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Differential PCI enumeration: bus 0 of `vdisk machine` against QEMU 7.2's
# `-machine pc` (TCG, -bios HALT.bin, -qtest stdio, -nodefaults), through the
# same qtest script.  The scenario is pci-diff.py.
set -euo pipefail
SRCDIR=${SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
VDISK=${VDISK:-$SRCDIR/build/vdisk}
QEMU=${QEMU:-qemu-system-x86_64}
if ! command -v "$QEMU" >/dev/null; then
	echo "SKIP: $QEMU not installed (scripts/install-deps installs qemu-system-x86)"
	exit 77
fi
if [ ! -x "$VDISK" ]; then
	echo "SKIP: $VDISK not built"
	exit 77
fi
if ! command -v python3 >/dev/null; then
	echo "SKIP: python3 not installed"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
exec python3 "$SRCDIR/tests/hw/pci-diff.py" "$VDISK" "$QEMU" "$tmp"
