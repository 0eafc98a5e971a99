#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The same qemu-io script through `qemu-io -f raw` on one image and
# `vdisk io -f raw` on another: the images must end up identical and the
# output (without the timing lines) must be the same text.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-io qemu-img md5sum
# Timing lines vary; the report lines before them do not.
norm() { sed -e '/ops\/sec)$/d' "$1"; }

CMDS=(
	-c 'write -P 0x11 0 64k'
	-c 'write -P 0x22 1000 3333'
	-c 'write -P 0x33 65535 1'
	-c 'write -z 8k 8k'
	-c 'write -z -u 64k 64k'
	-c 'write -P 0x44 130k 10k'
	-c 'write -f -P 0x45 150k 4k'
	-c 'write -P 0x55 512k 128k'
	-c 'discard 512k 64k'
	-c 'readv -P 0x11 16k 512 1k 2k'
	-c 'writev -P 0x66 200k 512 1k 3k'
	-c 'readv -P 0x66 200k 512 1k 3k'
	-c 'aio_write -P 0x77 300k 4k'
	-c 'aio_write -q -P 0x78 310k 8k 4k' # quiet: completion order may vary
	-c 'aio_flush'
	-c 'flush'
	-c 'read -P 0x77 300k 4k'
	-c 'read -P 0x78 310k 12k'
	-c 'read -P 0x22 1000 3333'
	-c 'read -P 0x33 65535 1'
	-c 'read -P 0 8k 8k'
	-c 'read -P 0 64k 64k'
	-c 'read -P 0x55 576k 64k'
	-c 'read -P 0x11 -s 0 -l 1000 0 4k'
	-c 'read -v 990 40'
	-c 'read -q -P 0x44 130k 10k'
	-c 'alloc 0 64k'
	-c 'alloc 1k'
	-c 'map'
	-c 'length'
	-c 'info'
	-c 'truncate 5M'
	-c 'length'
	-c 'write -P 0x7a 5000k 4k'
	-c 'read -P 0x7a 5000k 4k'
)

qemu-img create -q -f raw a.img 4M
qemu-img create -q -f raw b.img 4M

rc_q=0
qemu-io -f raw "${CMDS[@]}" a.img >q.out 2>q.err || rc_q=$?
rc_v=0
"$VDISK" io -f raw "${CMDS[@]}" b.img >v.out 2>v.err || rc_v=$?

[ "$rc_q" = 0 ] || { cat q.out q.err; fail "qemu-io itself failed ($rc_q)"; }
[ "$rc_v" = 0 ] || { cat v.out v.err; fail "vdisk io exited $rc_v"; }
[ -s v.err ] && { cat v.err; fail "vdisk io wrote to stderr"; }

# The script did something: a few of the expected report lines.
grep -qx 'wrote 3333/3333 bytes at offset 1000' v.out || fail "no report for write 1000 3333"
grep -qx 'read 12288/12288 bytes at offset 317440' v.out || fail "no report for read 310k 12k"
grep -q 'Pattern verification failed' v.out && fail "pattern verification failed in vdisk io"

if ! diff -u <(norm q.out) <(norm v.out); then
	fail "vdisk io output differs from qemu-io"
fi

cmp_out=$(qemu-img compare -f raw -F raw a.img b.img) || {
	echo "$cmp_out"
	fail "qemu-img compare: images differ"
}
[ "$cmp_out" = "Images are identical." ] || fail "qemu-img compare said: $cmp_out"
[ "$(md5sum <a.img)" = "$(md5sum <b.img)" ] || fail "md5sums differ"
[ "$(stat -c %s a.img)" = "$(stat -c %s b.img)" ] || fail "image sizes differ"

echo "PASS: ${#CMDS[@]} arguments, output and images identical"
