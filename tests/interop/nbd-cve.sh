#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Regression tests for the NBD CVEs (nbd-cve.py speaks the protocol byte by
# byte to `vdisk nbd`): oversized names and options, garbage and odd command
# order, clients vanishing mid-reply, STARTTLS state, handshake stalls and a
# stalled payload that must delay no other client.
set -eu
. "$(dirname "$0")/../lib/common.sh"
vd_setup python3 qemu-img
# Twice: on a disk file, and on a memory-backed one (tmpfs), where reads of
# 64 KiB and up leave by sendfile() from the file.
SHM=
[ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm)" = tmpfs ] && SHM=$(mktemp -d /dev/shm/nbd-cve.XXXXXX)
pid=
trap 'if [ -n "$pid" ]; then kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; fi; rm -rf "$T" ${SHM:+"$SHM"}' EXIT
for dir in "$T" $SHM; do
	rm -f "$T/s.sock"
	qemu-img create -q -f raw "$dir/img.raw" 1M
	"$VDISK" nbd -f raw -t -e 0 --handshake-limit 2 -k "$T/s.sock" "$dir/img.raw" &
	pid=$!
	wait_socket "$T/s.sock"
	python3 "$SRCDIR/tests/interop/nbd-cve.py" "$T/s.sock" || fail "nbd-cve.py ($dir)"
	kill -0 $pid || fail "vdisk nbd died ($dir)"
	kill $pid
	wait $pid || fail "vdisk nbd exit status after SIGTERM ($dir)"
	pid=
done
[ -n "$SHM" ] || echo "note: no tmpfs /dev/shm: the sendfile path was not tried"
echo PASS
