#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk serve's vhost-user-blk export across front-end disconnects, a back
# end killed with requests in flight (inflight region: GET/SET_INFLIGHT_FD,
# split and packed rings), block_resize (BACKEND_CONFIG_CHANGE_MSG) and
# SIGTERM with requests in flight.  See vhost-user-reconnect.py.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup python3 qemu-img qemu-io
python3 "$SRCDIR/tests/interop/vhost-user-reconnect.py" "$VDISK" "$T" || {
	cat serve.log 2>/dev/null
	fail "vhost-user reconnect test"
}
