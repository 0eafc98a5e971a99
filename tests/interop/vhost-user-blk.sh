#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# A real Linux guest (QEMU 7.2, TCG, vhost-user-blk-pci) on `vdisk serve`:
# raw with 1 queue, qcow2 with a backing file and 2 queues.  The guest is
# built once into a cache folder (tests/guest/build.sh); see
# tests/guest/run.sh.  Skipped under VDISK_QUICK (sanitizer runs).
set -eu
. "$(dirname "$0")/../lib/common.sh"
[ -z "${VDISK_QUICK:-}" ] || skip "guest boot not run under VDISK_QUICK"
exec "$SRCDIR/tests/guest/run.sh"
