#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/guest/run.sh [--server vdisk|qsd] -- boot a real Linux guest (TCG, no
# KVM) on a vhost-user-blk export and check what it read and wrote.
#
# The guest (tests/guest/build.sh: Debian's kernel, a busybox initramfs)
# reads a pattern the host wrote, writes another with O_DIRECT, reads it
# back, discards a range and flushes (tests/guest/init.sh), then prints
# "VDISK-RESULT ..." on ttyS0 and powers off.  After the guest and the
# server are gone, the host checks the image: qemu-img check (qcow2), vdisk
# check, and the written range read with qemu-img convert.
#
# Scenarios: raw with 1 queue; raw with packed=on; qcow2 on a qcow2 backing
# file with 2 queues and 2 vCPUs (when vdisk has the qcow2 driver).  --server qsd runs the same
# against qemu-storage-daemon, to prove the test itself.
#
# Environment: BUILD, VDISK (the binary), VDISK_GUEST_CACHE (see build.sh).
set -eu

SRCDIR=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$SRCDIR/$BUILD ;; esac
VDISK=${VDISK:-$BUILD/vdisk}
SERVER=vdisk
[ "${1:-}" = "--server" ] && SERVER=$2

fail() {
	echo "FAIL: $*"
	exit 1
}
skip() {
	echo "SKIP: $*"
	exit 77
}

for t in qemu-system-x86_64 qemu-img python3; do
	command -v $t >/dev/null || skip "$t not installed"
done
if [ "$SERVER" = vdisk ]; then
	[ -x "$VDISK" ] || fail "$VDISK not built"
else
	command -v qemu-storage-daemon >/dev/null || skip "qemu-storage-daemon not installed"
fi
rc=0
GUEST=$("$SRCDIR/tests/guest/build.sh") || rc=$?
[ $rc = 77 ] && skip "${GUEST#SKIP: }"
[ $rc = 0 ] || fail "guest build failed: $GUEST"
GUEST=$(echo "$GUEST" | tail -n1)

T=$(mktemp -d)
server_pid=
cleanup() {
	if [ -n "$server_pid" ]; then
		kill -TERM "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$T"
}
trap cleanup EXIT
cd "$T"

md5() { md5sum | cut -d' ' -f1; }
HOST_MD5=$(yes host-pattern | head -c 1048576 | md5)
GUEST_MD5=$(yes vdisk-guest-pattern | head -c 1048576 | md5)

# run_scenario NAME FORMAT QUEUES SMP [DEVICE-OPTIONS]
run_scenario() {
	local name=$1 fmt=$2 nq=$3 smp=$4 devopts=${5:-} img line start
	yes host-pattern | head -c 1048576 >pattern.raw
	truncate -s 64M pattern.raw
	if [ "$fmt" = raw ]; then
		img=$name.raw
		cp pattern.raw "$img"
		blockdevs=(--blockdev "driver=file,node-name=f,filename=$img"
			--blockdev "driver=raw,node-name=d,file=f")
	else
		# The pattern lives in the backing file: reads go through the chain.
		qemu-img convert -q -f raw -O qcow2 pattern.raw base.qcow2
		img=$name.qcow2
		qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$img"
		blockdevs=(--blockdev "driver=file,node-name=f,filename=$img"
			--blockdev "driver=qcow2,node-name=d,file=f")
	fi
	local export="type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=$T/vub.sock,writable=on,num-queues=$nq"
	rm -f vub.sock
	if [ "$SERVER" = vdisk ]; then
		"$VDISK" serve "${blockdevs[@]}" --export "$export" 2>server.log &
	else
		qemu-storage-daemon "${blockdevs[@]}" --export "$export" 2>server.log &
	fi
	server_pid=$!
	for _ in $(seq 100); do
		[ -S vub.sock ] && break
		sleep 0.05
	done
	[ -S vub.sock ] || fail "$name: no socket from $SERVER"
	start=$SECONDS
	timeout 90 qemu-system-x86_64 -accel tcg -machine q35,memory-backend=mem -m 256M -smp "$smp" \
		-object memory-backend-memfd,id=mem,size=256M,share=on \
		-chardev socket,id=c,path="$T/vub.sock" \
		-device vhost-user-blk-pci,chardev=c,num-queues="$nq""$devopts" \
		-kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.gz" \
		-append "console=ttyS0 quiet panic=-1" \
		-nodefaults -display none -serial file:console.log -no-reboot >qemu.log 2>&1 ||
		{ cat qemu.log console.log server.log; fail "$name: qemu failed"; }
	line=$(grep -a -m1 '^VDISK-RESULT' console.log || true)
	echo "$name ($SERVER): ${line:-no result} [$((SECONDS - start))s]"
	kill -TERM "$server_pid"
	local src=0
	wait "$server_pid" || src=$?
	server_pid=
	[ $src = 0 ] || { cat server.log; fail "$name: $SERVER exited $src on SIGTERM"; }
	case "$line" in
	"VDISK-RESULT ok "*) ;;
	*) tail -n 30 console.log; cat server.log; fail "$name: the guest did not finish" ;;
	esac
	[[ "$line" == *"hostread=$HOST_MD5 "* ]] || fail "$name: the guest read wrong data"
	[[ "$line" == *"written=$GUEST_MD5 readback=$GUEST_MD5 "* ]] || fail "$name: read-back differs"
	[[ "$line" == *"write_rc=0 discard_rc=0"* ]] || fail "$name: a guest command failed"
	[ "$nq" = 1 ] || [[ "$line" == *"queues=$nq "* ]] || fail "$name: guest does not see $nq queues"
	[[ "$devopts" != *packed=on* ]] || [[ "$line" == *"packed=1 "* ]] ||
		fail "$name: the guest did not negotiate packed rings"
	# The host's view after shutdown.
	if [ "$fmt" = qcow2 ]; then
		qemu-img check -q "$img" || fail "$name: qemu-img check"
		if [ "$SERVER" = vdisk ]; then
			# 63: the qcow2 driver has no checks yet (qemu-img check ran).
			crc=0
			"$VDISK" check -q -f qcow2 "$img" 2>/dev/null || crc=$?
			[ $crc = 0 ] || [ $crc = 63 ] || fail "$name: vdisk check exited $crc"
		fi
	fi
	qemu-img convert -q -f "$fmt" -O raw "$img" out.raw
	[ "$(dd if=out.raw bs=64k count=16 status=none | md5)" = "$HOST_MD5" ] ||
		fail "$name: host pattern damaged"
	[ "$(dd if=out.raw bs=64k skip=32 count=16 status=none | md5)" = "$GUEST_MD5" ] ||
		fail "$name: the image does not hold what the guest wrote"
	rm -f out.raw
}

run_scenario raw1q raw 1 1
# Packed virtqueues (virtio 1.2 section 2.8); libvhost-user (qsd) has none.
[ "$SERVER" = qsd ] || run_scenario raw-packed raw 1 1 ,packed=on
if [ "$SERVER" = qsd ] || "$VDISK" --version | grep -q '^formats:.* qcow2'; then
	run_scenario qcow2-backing-2q qcow2 2 2
else
	echo "qcow2 scenario skipped: vdisk has no qcow2 driver"
fi
echo "ok"
