#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The ide-test cases (QEMU tests/qtest/ide-test.c) plus LBA48, MULTIPLE,
# 32-bit PIO, ATAPI sense/TOC/mode pages and SRST signatures, driven over
# the qtest protocol against `vdisk machine` and QEMU 7.2 with the same
# images; observations must match (ide-qtest.py lists the known, designed
# differences).  Without QEMU the cases still run against vdisk alone with
# ide-test's own assertions.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"
QEMU=${QEMU:-qemu-system-x86_64}
vd_setup python3
command -v "$QEMU" >/dev/null || QEMU=-
python3 "$here/ide-qtest.py" "$VDISK" "$QEMU" "$T"
