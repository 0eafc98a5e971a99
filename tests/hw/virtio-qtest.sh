#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# virtio-blk-pci over the qtest protocol: the virtio-blk-test cases (QEMU
# tests/qtest/virtio-blk-test.c) plus multiqueue, NEEDS_RESET, queue reset,
# reset with requests in flight, the drive's rerror=/werror= (blkdebug
# errors: report, ignore, stop and enospc with QMP cont retrying), kicks
# while stopped, the transitional device's legacy interface, and requests in
# flight across a legacy reset, a bus-master clear, QMP stop and a system
# reset at port 0xCF9, driven against `vdisk machine` and QEMU 7.2's virtio-blk-pci
# (disable-legacy=on, and off for the legacy cases) with the same images;
# observations must match (virtio-qtest.py lists each masked field and
# why).  Without QEMU the cases still run against vdisk alone with
# virtio-blk-test's own assertions.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"
QEMU=${QEMU:-qemu-system-x86_64}
vd_setup python3
command -v "$QEMU" >/dev/null || QEMU=-
python3 "$here/virtio-qtest.py" "$VDISK" "$QEMU" "$T"
