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
echo "VDISK-RESULT ok queues=$nq packed=$packed hostread=$hostread written=$written readback=$readback write_rc=$wrc discard_rc=$drc"
poweroff -f
