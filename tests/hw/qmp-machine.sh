#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The machine's QMP commands (query-status, stop, cont, quit with STOP,
# RESUME and SHUTDOWN events, as QEMU 7.2 sends them), -S, and -drive
# reaching query-block.  The scenario is qmp-machine.py.
set -euo pipefail
SRCDIR=${SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
VDISK=${VDISK:-$SRCDIR/build/vdisk}
if [ ! -x "$VDISK" ]; then
	echo "SKIP: $VDISK not built"
	exit 77
fi
if ! command -v python3 >/dev/null; then
	echo "SKIP: python3 not installed"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
exec python3 "$SRCDIR/tests/hw/qmp-machine.py" "$VDISK" "$tmp"
