#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Regression test: a power cut inside `vdisk snapshot -c` or `-d` must not
# leave a corrupt image.  It used to: the refcounts of the data clusters and
# the COPIED flags of the active L2 entries that mirror them were updated in
# place, in different clusters, so a cut between them left OFLAG_COPIED
# mismatches that qemu-img check counts as corruption (QEMU 7.2 has the same
# window).  Snapshot create and delete now write the new tables, refcount
# blocks and snapshot table beside the old ones and switch with one header
# sector (docs/reliability.md).  The crash-sim campaign of
# tests/image/crash-sim.sh, restricted to the writes of the two snapshot
# steps: every write, in each of the three modes (drop, reorder, prefix),
# torn or not; qemu-img check must find no corruption (leaks allowed).
set -eu

. "$(dirname "$0")/../lib/common.sh"
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
vd_setup qemu-img qemu-io python3
python3 "$SRCDIR/tests/image/crash-sim.py" "$VDISK" --seed "${CRASH_SIM_SEED:-1}" --steps snap-c,snap-d
