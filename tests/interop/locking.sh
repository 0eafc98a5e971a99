#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Image locking against QEMU's (OFD locks on bytes 100+perm / 200+perm):
# an image that qemu-io holds open cannot be opened for writing by vdisk,
# but can with -U -r; and an image that vdisk holds open cannot be written by
# qemu-io ("Failed to get ... lock"), while qemu-img info -U still works.
set -eu

. "$(dirname "$0")/../lib/common.sh"
[ -r /proc/locks ] || skip "no /proc/locks to see who holds a lock"
vd_setup qemu-io qemu-img
holder=
cleanup() {
	exec 3>&- 2>/dev/null || true
	if [ -n "$holder" ]; then
		kill "$holder" 2>/dev/null || true
		wait "$holder" 2>/dev/null || true
	fi
	rm -rf "$T"
}
trap cleanup EXIT

qemu-img create -q -f raw img 1M
ino=$(stat -c %i img)

# Start "$@" reading commands from a fifo we keep open on fd 3, so that it
# holds the image until we close fd 3; then wait until a lock on the image
# shows up in /proc/locks (polling, up to 10 s).
start_holder() {
	rm -f fifo
	mkfifo fifo
	"$@" <fifo >holder.out 2>&1 &
	holder=$!
	exec 3>fifo
	for _ in $(seq 100); do
		if grep -q ":$ino " /proc/locks; then
			return 0
		fi
		kill -0 "$holder" 2>/dev/null || { cat holder.out; fail "$1 exited early"; }
		sleep 0.1
	done
	fail "$* never locked the image"
}

stop_holder() {
	exec 3>&-
	wait "$holder" || fail "the lock holder exited with an error"
	holder=
	! grep -q ":$ino " /proc/locks || fail "a lock is left after the holder exited"
}

# 1. qemu-io holds the image read-write.
start_holder qemu-io -f raw img
rc=0
"$VDISK" io -f raw -c 'write 0 512' img >out 2>err || rc=$?
[ "$rc" = 1 ] || { cat out err; fail "vdisk io wrote to an image qemu-io holds (exit $rc)"; }
grep -qi 'lock' err || { cat err; fail "the error does not mention the lock"; }
"$VDISK" io -U -r -f raw -c 'read 0 512' img >out 2>err ||
	{ cat out err; fail "vdisk io -U -r could not read"; }
grep -qx 'read 512/512 bytes at offset 0' out || fail "vdisk io -U -r did not read"
stop_holder

# 2. vdisk io holds the image read-write.
start_holder "$VDISK" io -f raw img
rc=0
qemu-io -f raw -c 'write 0 512' img >out 2>err || rc=$?
[ "$rc" != 0 ] || { cat out err; fail "qemu-io wrote to an image vdisk holds"; }
grep -q 'Failed to get' err || { cat err; fail "qemu-io did not report a lock failure"; }
qemu-img info -U img >out 2>err || { cat err; fail "qemu-img info -U failed"; }
grep -qx 'file format: raw' out || fail "qemu-img info -U output"
qemu-io -U -r -f raw -c 'read 0 512' img >out 2>err || { cat err; fail "qemu-io -U -r failed"; }
# A second vdisk writer is refused as well.
rc=0
"$VDISK" io -f raw -c 'write 0 512' img >out 2>err || rc=$?
[ "$rc" = 1 ] || fail "a second vdisk writer got in"
stop_holder

# 3. Once released, writing works again from both.
qemu-io -f raw -c 'write -P 1 0 512' img >/dev/null || fail "qemu-io after release"
"$VDISK" io -f raw -c 'read -P 1 0 512' -c 'write -P 2 0 512' img >/dev/null ||
	fail "vdisk after release"
echo "PASS"
