#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Power cuts at every write of a mixed qcow2 workload (allocating writes,
# COW over a backing file, discard, zero writes, compressed writes, snapshot
# create/delete, resize; 512-byte clusters), replayed through the crash-sim
# driver: qemu-img check finds no corruption and every write acknowledged
# before the last completed flush reads back.  See tests/image/crash-sim.py
# and docs/reliability.md.
#
# CRASH_SIM_POINTS (default 300; `make check-crash-sim` runs 100000) cut
# points, CRASH_SIM_SEED (default 1) the workload, CRASH_SIM_ONLY=K:MODE:SEED[:torn]
# replays one point (the FAIL lines print it) and keeps the image in
# crash-sim-failed/ of the current directory.
set -eu

. "$(dirname "$0")/../lib/common.sh"
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
here=$PWD
vd_setup qemu-img qemu-io python3

POINTS=${CRASH_SIM_POINTS:-300}
[ -n "${VDISK_QUICK:-}" ] && POINTS=${CRASH_SIM_POINTS:-60}
SEED=${CRASH_SIM_SEED:-1}
args=(--points "$POINTS" --seed "$SEED")
if [ -n "${CRASH_SIM_ONLY:-}" ]; then
	args+=(--only "$CRASH_SIM_ONLY" --keep "$here/crash-sim-failed")
fi
python3 "$SRCDIR/tests/image/crash-sim.py" "$VDISK" "${args[@]}"
