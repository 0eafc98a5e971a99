#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Regression test: a power cut inside `vdisk snapshot -c`, `-a` or `-d` must not
# leave a corrupt image.  It used to: the refcounts of the data clusters and
# the COPIED flags of the active L2 entries that mirror them were updated in
# place, in different clusters, so a cut between them left OFLAG_COPIED
# mismatches that qemu-img check counts as corruption (QEMU 7.2 has the same
# window).  Snapshot create and delete now write the new tables, refcount
# blocks and snapshot table beside the old ones and switch with one header
# sector (docs/reliability.md).  The crash-sim campaign of
# tests/image/crash-sim.sh with an apply step added (`snapshot -a s1` after
# overwrites), restricted to the writes of the three snapshot steps: every
# write, in each of the three modes (drop, reorder, prefix; one per write
# under VDISK_QUICK), torn or not; qemu-img check must find no corruption
# (leaks allowed), and the data reads back as before the step (or, for the
# apply, as after it).
set -eu

. "$(dirname "$0")/../lib/common.sh"
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
vd_setup qemu-img qemu-io python3
python3 "$SRCDIR/tests/image/crash-sim.py" "$VDISK" --seed "${CRASH_SIM_SEED:-1}" \
	--steps snap-c,snap-a,snap-d --with-apply
