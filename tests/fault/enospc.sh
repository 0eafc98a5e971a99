#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# ENOSPC: a full host file system, on an 8 MiB tmpfs (SKIP when mounting is
# not permitted).  For raw and qcow2 images:
#  - `vdisk io` write fails with "No space left on device" and exit 1;
#  - `qemu-img check` finds no corruption (leaks allowed);
#  - once space is freed, the same write succeeds and reads back.
# Through a device (enospc.py): `vdisk machine` with an IDE disk,
#  - werror=enospc: a DMA write stops the machine with BLOCK_IO_ERROR
#    (nospace: true) and STOP, query-block says io-status "nospace", and
#    cont after freeing space completes the write, which reads back;
#  - werror=report: the guest sees an ATA error (ERR in status, ABRT).
# The same with a virtio-blk disk (enospc_virtio.py: VIRTIO_BLK_S_IOERR, or a
# stop and cont), and over NBD: `vdisk serve` replies NBD_ENOSPC.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

mkdir mnt
mount -t tmpfs -o size=8M tmpfs mnt 2>/dev/null || skip "cannot mount a tmpfs (needs root and CAP_SYS_ADMIN)"
srv=
trap 'if [ -n "$srv" ]; then kill $srv 2>/dev/null || true; fi; umount "$T/mnt" 2>/dev/null || true; rm -rf "$T"' EXIT

fill() {
	dd if=/dev/zero of=mnt/fill bs=64k 2>/dev/null || true
	sync
}

for fmt in raw qcow2; do
	img=mnt/img.$fmt
	rm -f "$img" mnt/fill
	qemu-img create -q -f $fmt "$img" 32M
	# Something durable before the disk fills up.
	"$VDISK" io -f $fmt -c "write -P 0x11 0 64k" "$img" >/dev/null
	fill
	set +e
	out=$("$VDISK" io -f $fmt -c "write -P 0x5a 1M 1M" "$img" 2>&1)
	rc=$?
	set -e
	echo "$fmt, full: exit $rc: $out"
	[ $rc -eq 1 ] || fail "$fmt: a write on a full file system exited $rc"
	[[ "$out" == *"write failed: No space left on device"* ]] ||
		fail "$fmt: the write did not fail with ENOSPC"
	if [ $fmt = qcow2 ]; then
		set +e
		qemu-img check -q "$img"
		rc=$?
		set -e
		[ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "$fmt: qemu-img check exited $rc after ENOSPC"
	fi
	qemu-io -r -f $fmt -c "read -P 0x11 0 64k" "$img" | grep -q "read 65536" ||
		fail "$fmt: data written before ENOSPC lost"
	rm -f mnt/fill
	"$VDISK" io -f $fmt -c "write -P 0x5a 1M 1M" "$img" | grep -q "wrote 1048576" ||
		fail "$fmt: the write still fails after space was freed"
	out=$(qemu-io -r -f $fmt -c "read -P 0x5a 1M 1M" -c "read -P 0x11 0 64k" "$img")
	[[ "$out" != *fail* ]] || fail "$fmt: read back after space returned: $out"
	if [ $fmt = qcow2 ]; then
		qemu-img check "$img" || fail "$fmt: qemu-img check after the retried write"
	fi
	echo "$fmt: ENOSPC reported, image consistent, write succeeds once space returns"
done

rm -f mnt/*
python3 "$SRCDIR/tests/fault/enospc.py" "$VDISK" "$T" "$T/mnt"

# virtio-blk (enospc_virtio.py): VIRTIO_BLK_S_IOERR under werror=report, a
# stop under the default werror=enospc and cont once space returns.
rm -f mnt/*
python3 "$SRCDIR/tests/fault/enospc_virtio.py" "$VDISK" "$T" "$T/mnt" ||
	fail "virtio-blk on a full file system"

# The NBD export: `vdisk serve` replies NBD_ENOSPC (28) to a write that
# finds the file system full, which QEMU's NBD client (qemu-io) turns back
# into ENOSPC; the image stays consistent and the write succeeds once space
# returns.
rm -f mnt/*
qemu-img create -q -f qcow2 mnt/nbd.qcow2 32M
"$VDISK" serve --blockdev driver=file,node-name=f,filename=mnt/nbd.qcow2 \
	--blockdev driver=qcow2,node-name=q,file=f \
	--nbd-server addr.type=unix,addr.path="$T/nbd.sock" \
	--export type=nbd,id=e,node-name=q,name=disk,writable=on &
srv=$!
wait_socket "$T/nbd.sock"
uri="nbd+unix:///disk?socket=$T/nbd.sock"
qemu-io -f raw -c "write -P 0x11 0 64k" -c flush "$uri" | grep -q "wrote 65536" ||
	fail "nbd: the first write"
fill
set +e
out=$(qemu-io -f raw -c "write -P 0x5a 1M 1M" "$uri" 2>&1)
set -e
echo "nbd, full: $out"
[[ "$out" == *"write failed: No space left on device"* ]] ||
	fail "nbd: the client did not see ENOSPC"
qemu-io -f raw -c "read -P 0x11 0 64k" "$uri" | grep -q "read 65536" ||
	fail "nbd: data written before ENOSPC lost"
rm -f mnt/fill
out=$(qemu-io -f raw -c "write -P 0x5a 1M 1M" -c "read -P 0x5a 1M 1M" -c flush "$uri" 2>&1)
[[ "$out" == *"wrote 1048576"* && "$out" != *fail* ]] ||
	fail "nbd: the write still fails after space was freed: $out"
kill -TERM $srv
wait $srv || fail "vdisk serve exited $? on SIGTERM"
srv=
qemu-img check mnt/nbd.qcow2 || fail "nbd: qemu-img check"
qemu-io -r -f qcow2 -c "read -P 0x5a 1M 1M" -c "read -P 0x11 0 64k" mnt/nbd.qcow2 | grep -c "^read" |
	grep -q 2 || fail "nbd: data after the server exited"
echo "nbd: ENOSPC replied, image consistent, write succeeds once space returns"
echo PASS
