#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Failures of `vdisk io` (and the other subcommands) look like qemu-io's:
# same messages and exit status for failed I/O, non-zero exit with a clear
# message for bad commands, options, files and formats, and never a crash.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-io qemu-img
# Timing lines vary.
norm() {
	sed -e '/ops\/sec)$/d' -e 's/^qemu-io: /vdisk: /' "$1"
}

qemu-img create -q -f raw a.img 1M
qemu-img create -q -f raw b.img 1M

# Same commands through both tools: same stdout, stderr and exit status.
same() {
	local rq=0 rv=0
	qemu-io -f raw "$@" a.img >q.out 2>q.err || rq=$?
	"$VDISK" io -f raw "$@" b.img >v.out 2>v.err || rv=$?
	[ "$rq" = "$rv" ] || fail "[$*] exit status: qemu-io $rq, vdisk $rv"
	diff -u <(norm q.out) <(norm v.out) || fail "[$*] stdout differs"
	diff -u <(norm q.err) <(norm v.err) || fail "[$*] stderr differs"
	[ "$rv" -lt 128 ] || fail "[$*] vdisk died of a signal"
}

same -c 'read 1G 512'
grep -qx 'read failed: Input/output error' v.out || fail "no read error message"
same -c 'read 1020k 8k'
same -c 'write 1M 1'
same -c 'discard 2M 512'
same -c 'readv 1M 512'
same -c 'read -P 0x11 0 512'
grep -qx 'Pattern verification failed at offset 0, 512 bytes' v.out || fail "no pattern message"
same -c 'read 1G 512' -c 'read 0 512'   # an early failure still sets the status
same -c 'foo'
same -c 'read 0'
same -c 'read -x 0 512'
same -c 'read 0 1x'
same -c 'read -P 300 0 1'
same -c 'read 0 3G'
same -c 'write -z -P 1 0 512'
same -c 'write -u 0 512'
same -c 'map 1'
same -c 'aio_read 2M 512' -c 'aio_flush'   # aio failures do not set the status
same -c 'sleep x'
same -c 'truncate -m bogus 2M'
same -c 'help read'

# Exit status of a good run is 0, of any failed command 1.
"$VDISK" io -f raw -c 'read 0 512' b.img >/dev/null || fail "a good read failed"
rc=0
"$VDISK" io -f raw -c 'read 1G 1' -c 'read 0 1' b.img >/dev/null || rc=$?
[ "$rc" = 1 ] || fail "exit status $rc after a failed command"

# Read-only images refuse writes as qemu-io does.
rc=0
"$VDISK" io -r -f raw -c 'write 0 512' b.img >out 2>err || rc=$?
[ "$rc" = 1 ] && grep -qx 'vdisk: Block node is read-only' err || fail "write on -r: $rc $(cat err)"

# Commands from stdin: failures count too.
rc=0
printf 'read 0 512\nbogus\n' | "$VDISK" io -f raw b.img >out 2>err || rc=$?
[ "$rc" = 1 ] || fail "stdin: exit $rc"
grep -q 'read 512/512 bytes at offset 0' out || fail "stdin: read not run"
grep -qx 'command "bogus" not found' err || fail "stdin: message"

# Bad invocations: exit 1, a message, no crash.
check_fails() { # PATTERN CMD...
	local pat=$1 rc=0
	shift
	"$@" >out 2>err </dev/null || rc=$?
	[ "$rc" = 1 ] || { cat out err; fail "[$*] exit $rc, want 1"; }
	grep -qi -- "$pat" err || { cat err; fail "[$*] message lacks '$pat'"; }
}
check_fails 'No such file' "$VDISK" io -f raw -c 'read 0 1' missing.img
check_fails "Unknown driver 'nope'" "$VDISK" io -f nope -c 'read 0 1' b.img
check_fails 'unrecognized option' "$VDISK" io --bogus b.img
check_fails 'invalid option' "$VDISK" io -x b.img
check_fails 'Invalid cache option' "$VDISK" io -t bogus -f raw b.img
check_fails 'Invalid aio option' "$VDISK" io -i bogus -f raw b.img
check_fails 'mutually exclusive' "$VDISK" io --image-opts -f raw b.img
check_fails 'force-share' "$VDISK" io -U -f raw -c 'read 0 1' b.img
check_fails 'Could not open' "$VDISK" info missing.img
check_fails 'nope' "$VDISK" info -f nope b.img
check_fails 'human or json' "$VDISK" info --output=xml b.img
check_fails 'Unknown file format' "$VDISK" create -f nope c.img 1M
check_fails 'size' "$VDISK" create -f raw c.img
check_fails 'Could not open' "$VDISK" bench -f raw missing.img
check_fails 'Invalid queue depth' "$VDISK" bench -d 0 -f raw b.img
check_fails 'flush-interval' "$VDISK" bench --flush-interval=100 -f raw b.img
check_fails 'Command not found' "$VDISK" frobnicate
check_fails 'usage' "$VDISK"
[ ! -e c.img ] || fail "a failed create left c.img"
echo "PASS"
