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
qemu-img create -q -f raw img.raw 1M
"$VDISK" nbd -f raw -t -e 0 --handshake-limit 2 -k "$T/s.sock" img.raw &
pid=$!
trap 'if [ -n "$pid" ]; then kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; fi; rm -rf "$T"' EXIT
wait_socket "$T/s.sock"
python3 "$SRCDIR/tests/interop/nbd-cve.py" "$T/s.sock" || fail "nbd-cve.py"
kill -0 $pid || fail "vdisk nbd died"
kill $pid
wait $pid || fail "vdisk nbd exit status after SIGTERM"
pid=
echo PASS
