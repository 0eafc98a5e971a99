#!/bin/busybox sh
# SPDX-License-Identifier: MIT
#
# /init of the test guest (tests/guest/build.sh packs it): load the virtio
# modules, exercise /dev/vda and print one result line on the console, then
# power off.  The host (tests/guest/run.sh) compares the line with what it
# wrote into the image and what it finds there afterwards.
#
# Layout on the disk (all 1 MiB, chosen by the host):
#   [0, 1M)    host-written pattern: the guest reads and checksums it
#   [2M, 3M)   the guest writes `yes vdisk-guest-pattern` with O_DIRECT
#   [4M, 5M)   the guest discards it
#   [64M, 128M) /dev/vda1, an MBR partition the host wrote: the guest makes
#              an ext2 filesystem there (busybox mke2fs; the kernel's ext4
#              driver mounts it), fills it with files until it is full,
#              unmounts, mounts it again and checksums what it reads back;
#              the host runs e2fsck on the partition afterwards
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do
	[ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
if [ ! -b /dev/vda ]; then
	echo "VDISK-RESULT fail no-vda"
	poweroff -f
fi
# Reconnection (tests/guest/run.sh --reconnect): write and read back with
# O_DIRECT for a while; the host kills and restarts the server meanwhile.
if grep -q 'vdisk.mode=reconnect' /proc/cmdline; then
	echo "VDISK-READY"
	i=0
	bad=0
	while [ $i -lt 60 ]; do
		yes "vdisk-round-$i" | head -c 262144 >/tmp/r
		off=$((128 + (i % 8) * 4))
		dd if=/tmp/r of=/dev/vda bs=64k seek=$off oflag=direct conv=fsync 2>/dev/null || bad=$((bad + 1))
		dd if=/dev/vda bs=64k skip=$off count=4 iflag=direct 2>/dev/null | cmp -s - /tmp/r || bad=$((bad + 1))
		i=$((i + 1))
		sleep 0.2
	done
	# The host resized the disk meanwhile (block_resize on the server).
	echo "VDISK-RESULT reconnect rounds=$i bad=$bad sectors=$(cat /sys/block/vda/size)"
	poweroff -f
fi
nq=$(ls /sys/block/vda/mq 2>/dev/null | wc -l)
# Negotiated features, one character per bit: bit 34 is VIRTIO_F_RING_PACKED.
packed=$(cut -c35 /sys/block/vda/device/features 2>/dev/null)
hostread=$(dd if=/dev/vda bs=64k count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
yes vdisk-guest-pattern | head -c 1048576 >/tmp/w
written=$(md5sum </tmp/w | cut -d' ' -f1)
dd if=/tmp/w of=/dev/vda bs=64k seek=32 oflag=direct conv=fsync 2>/dev/null
wrc=$?
readback=$(dd if=/dev/vda bs=64k skip=32 count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
blkdiscard -o 4194304 -l 1048576 /dev/vda 2>/dev/null
drc=$?
sync
# The filesystem: fill /dev/vda1 with 1 MiB files of known content until it
# is full, plus a directory of small ones; read them back after a remount.
fs=none
if [ -b /dev/vda1 ]; then
	fs=fail
	mkdir -p /mnt
	if mke2fs -F -q -b 4096 /dev/vda1 >/dev/null 2>&1 || mke2fs -F -b 4096 /dev/vda1 >/dev/null 2>&1; then
		if mount -t ext2 /dev/vda1 /mnt; then
			mkdir /mnt/small
			i=0
			while [ $i -lt 200 ]; do
				echo "small file $i" >/mnt/small/s$i
				i=$((i + 1))
			done
			n=0
			while yes "vdisk-fs-$n" | head -c 1048576 >/mnt/f$n 2>/dev/null; do
				n=$((n + 1))
				[ $n -lt 200 ] || break
			done
			# The last file is short (the disk filled up): drop it.
			rm -f /mnt/f$n
			df -k /mnt | tail -n1 >/tmp/df
			sync
			umount /mnt
			mount -t ext2 -o ro /dev/vda1 /mnt
			# A sample here (TCG is slow); the host checks every file.
			bad=0
			for i in 0 $((n / 2)) $((n - 1)); do
				yes "vdisk-fs-$i" | head -c 1048576 | cmp -s - /mnt/f$i || bad=$((bad + 1))
			done
			[ "$(cat /mnt/small/s199)" = "small file 199" ] || bad=$((bad + 1))
			umount /mnt
			fs="files=$n,bad=$bad,avail_kb=$(awk '{ print $4 }' /tmp/df)"
		fi
	fi
fi
echo "VDISK-RESULT ok fs=$fs queues=$nq packed=$packed hostread=$hostread written=$written readback=$readback write_rc=$wrc discard_rc=$drc"
poweroff -f
