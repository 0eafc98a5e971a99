#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The test protocol of `vdisk machine --qtest stdio`: every command, the
# replies QEMU 7.2 gives, malformed lines answered with an error while the
# machine keeps running, the virtual clock, fw_cfg, and the unix socket
# front end.  The scenario is qtest-protocol.py.
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
exec python3 "$SRCDIR/tests/hw/qtest-protocol.py" "$VDISK"
