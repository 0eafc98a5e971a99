#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Differential QMP test: the same requests to qemu-system-x86_64 (QEMU 7.2)
# and `vdisk machine` with the same -drive; replies and events must have the
# same shape and errors the same class and text (tests/hw/qmp-diff.py).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"
need qemu-system-x86_64
vd_setup python3 qemu-img
python3 "$here/qmp-diff.py" "$VDISK" "$(command -v qemu-system-x86_64)" "$T"
