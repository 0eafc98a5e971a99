#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The test protocol of `vdisk machine --qtest stdio`: every command, the
# replies QEMU 7.2 gives, malformed lines answered with an error while the
# machine keeps running, the virtual clock, fw_cfg, and the unix socket
# front end.  The scenario is qtest-protocol.py.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/common.sh"
vd_setup python3
python3 "$here/qtest-protocol.py" "$VDISK"
