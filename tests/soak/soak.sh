#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `make soak`: `vdisk serve` (a qcow2 image exported over NBD) under 8
# concurrent verifying clients for SOAK_SECONDS (default 600), sampling the
# server's RSS.  Not part of `make check` (it is long by design).  Each
# client owns a region of the disk and, until the time is up, connects with
# qemu-io, writes random extents with a fresh pattern, reads them back, and
# re-reads an extent it wrote in an earlier connection; at the end every
# extent's last pattern is read back again and `qemu-img check` must be
# clean.  Fails on any mismatch or I/O error, on the server dying, or when
# the server's RSS grows by more than SOAK_RSS_SLACK_KB (default 16384) from
# its peak in the first quarter of the run (after warm-up: caches filled,
# coroutine pool grown) to its peak in the last quarter.  See
# docs/reliability.md.
set -eu

. "$(dirname "$0")/../lib/common.sh"
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
vd_setup qemu-img qemu-io python3
python3 "$SRCDIR/tests/soak/soak.py" "$VDISK" "${SOAK_SECONDS:-600}" "${SOAK_CLIENTS:-8}" \
	"${SOAK_RSS_SLACK_KB:-16384}"
