#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Regression test (docs/reliability.md, "I/O errors at every qcow2 metadata
# event"): `vdisk snapshot -c` whose L2, refcount-block or flush write fails
# once with EIO used to leave the refcounts it had raised (and flushed) under
# L1/L2 entries still flagged COPIED: update_snapshot_refcount skipped the
# L1 write after the failed L2 flush, and nothing was put back, so
# `qemu-img check` found OFLAG_COPIED corruption.  Snapshot create and delete
# now write new tables beside the old ones and switch with one header write,
# so a failure before it leaves the old image (leaks at most).  Runs
# those cases of tests/fault/qcow2-metadata-events.sh with its snapshot steps
# (create before a resize, delete after), on both of its configurations.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
rc=0
for cfg in c512-rc64 c64k-backing; do
	for ev in l2_update refblock_update flush_to_disk; do
		out=$(QCOW2_FAULT_SNAPSHOTS=1 QCOW2_FAULT_NOKEEP=1 QCOW2_FAULT_SEED=${QCOW2_FAULT_SEED:-1} \
			QCOW2_FAULT_ONLY="$cfg $ev once" bash "$here/qcow2-metadata-events.sh" 2>&1) || {
			st=$?
			[ $st -eq 77 ] && { echo "$out" | grep SKIP; exit 77; }
			echo "$out" | grep -v '^Leaked' | tail -8
			echo "FAIL: snapshot create/delete with $ev failing once ($cfg)"
			rc=1
			continue
		}
		echo "$out" | grep -E "^$cfg " || true
	done
done
[ $rc -eq 0 ] && echo PASS
exit $rc
