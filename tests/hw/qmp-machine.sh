#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The machine's QMP commands (query-status, stop, cont, quit with STOP,
# RESUME and SHUTDOWN events, as QEMU 7.2 sends them), -S, and -drive
# reaching query-block.  The scenario is qmp-machine.py.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"
vd_setup python3
python3 "$here/qmp-machine.py" "$VDISK" "$T"
