#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Read-only commands and image locks, against qemu-img 7.2: info, check and
# snapshot -l open a qcow2 image read-only but take the shared lock as
# qemu-img does (QEMU's BDRV_CHILD_METADATA: a qcow2's file is never shared
# for write or resize, bytes 100, 201, 203), so they refuse while another
# process writes it ("Failed to get shared "write" lock" / "Is another
# process using the image [img]?", exit 1), unless -U; a reader in turn
# keeps writers out.  A raw image has no metadata: QEMU reads it while
# another process writes.  Each case runs both tools: same exit status,
# same messages (but for the program name), same output.
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

qemu-img create -q -f qcow2 img 1M
qemu-io -f qcow2 -c 'write -P 7 0 64k' img >/dev/null
qemu-img snapshot -c snap1 img
qemu-img create -q -f raw r.raw 1M

# start_holder IMAGE COMMAND...: run COMMAND reading commands from a fifo
# we keep open on fd 3, until it holds a lock on IMAGE (10 s).
start_holder() {
	local img=$1 ino
	shift
	ino=$(stat -c %i "$img")
	rm -f fifo
	mkfifo fifo
	"$@" <fifo >holder.out 2>&1 &
	holder=$!
	exec 3>fifo
	for _ in $(seq 100); do
		grep -q ":$ino " /proc/locks && return 0
		kill -0 "$holder" 2>/dev/null || { cat holder.out; fail "$1 exited early"; }
		sleep 0.1
	done
	fail "$* never locked $img"
}

stop_holder() {
	exec 3>&-
	wait "$holder" || { cat holder.out; fail "the lock holder exited with an error"; }
	holder=
}

# both EXPECTED_RC ARGS...: `qemu-img ARGS` and `vdisk ARGS` exit with
# EXPECTED_RC, print the same (stdout and stderr, program names aside), and
# print what they did (output compared but for info's).
both() {
	local want=$1 qrc=0 vrc=0
	shift
	qemu-img "$@" >q.out 2>q.err || qrc=$?
	"$VDISK" "$@" >v.out 2>v.err || vrc=$?
	sed -i 's/^qemu-img: /PROG: /' q.err
	sed -i 's/^vdisk: /PROG: /' v.err
	printf '%-16s qemu-img %s, vdisk %s: %s\n' "$*" "$qrc" "$vrc" "$(head -n 1 v.err)"
	[ "$qrc" = "$want" ] || { cat q.err; fail "qemu-img $* exited $qrc, not $want"; }
	[ "$vrc" = "$want" ] || { cat v.out v.err; fail "vdisk $* exited $vrc, not $want"; }
	cmp -s q.err v.err || { diff q.err v.err; fail "vdisk $*: other messages than qemu-img's"; }
	# (vdisk info does not list snapshots yet: its output is compared
	# with qemu-img's elsewhere, tests/image/qcow2-info.sh.)
	[ "$1" = info ] || cmp -s q.out v.out ||
		{ diff q.out v.out; fail "vdisk $*: other output than qemu-img's"; }
}

# refused_all: every read-only command refuses without -U, works with it.
refused_all() {
	local cmd
	for cmd in info check "snapshot -l"; do
		# shellcheck disable=SC2086
		both 1 $cmd img
		grep -qx "PROG: Could not open 'img': Failed to get shared \"write\" lock" v.err ||
			{ cat v.err; fail "vdisk $cmd: not the lock message"; }
		grep -qx 'Is another process using the image \[img\]?' v.err ||
			fail "vdisk $cmd: no hint"
		# shellcheck disable=SC2086
		both 0 $cmd -U img
	done
}

allowed_all() {
	local cmd
	for cmd in info check "snapshot -l"; do
		# shellcheck disable=SC2086
		both 0 $cmd img
	done
}

echo "# qemu-io writes the qcow2 image"
start_holder img qemu-io -f qcow2 img
refused_all
stop_holder

echo "# vdisk io writes the qcow2 image"
start_holder img "$VDISK" io -f qcow2 img
refused_all
stop_holder

echo "# vdisk serve exports the qcow2 image"
"$VDISK" serve --blockdev driver=file,node-name=f,filename=img \
	--blockdev driver=qcow2,node-name=q,file=f \
	--export type=vhost-user-blk,id=e,node-name=q,addr.type=unix,addr.path=$T/s.sock,writable=on \
	2>serve.log &
holder=$!
wait_socket s.sock
refused_all
kill -TERM $holder
wait $holder || { cat serve.log; fail "vdisk serve exited with an error"; }
holder=

echo "# qemu-io reads the qcow2 image (-r)"
start_holder img qemu-io -r -f qcow2 img
allowed_all
stop_holder

# A reader keeps writers out: vdisk io -r holds bytes 100, 201, 203.
echo "# vdisk io -r reads the qcow2 image"
start_holder img "$VDISK" io -r -f qcow2 img
allowed_all
rc=0
qemu-io -f qcow2 -c 'write 0 512' img >out 2>err || rc=$?
grep -q 'Failed to get "write" lock' err || { cat out err; fail "qemu-io wrote while vdisk read"; }
rc=0
"$VDISK" io -f qcow2 -c 'write 0 512' img >out 2>err || rc=$?
[ "$rc" = 1 ] && grep -q 'Failed to get "write" lock' err ||
	{ cat out err; fail "vdisk io wrote while vdisk read (exit $rc)"; }
stop_holder
# ... and -U readers do not.
echo "# vdisk io -U -r reads the qcow2 image"
start_holder img "$VDISK" io -U -r -f qcow2 img
qemu-io -f qcow2 -c 'write -P 7 0 512' img >out 2>err ||
	{ cat out err; fail "qemu-io could not write beside a -U reader"; }
stop_holder

echo "# qemu-io writes a raw image"
start_holder r.raw qemu-io -f raw r.raw
for cmd in info "snapshot -l"; do
	# shellcheck disable=SC2086
	both 0 $cmd r.raw
	# shellcheck disable=SC2086
	both 0 $cmd -U r.raw
done
stop_holder

# Nobody holds the image: no lock is left behind.
ino=$(stat -c %i img)
! grep -q ":$ino " /proc/locks || fail "a lock is left on img"
allowed_all
echo "PASS"
