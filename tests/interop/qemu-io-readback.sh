#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Data written by vdisk reads back with qemu-io's pattern verification, and
# data written by qemu-io reads back with vdisk's.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-io qemu-img

# offset length pattern: unaligned ones on purpose.
REGIONS=(
	"0 4k 0x01"
	"4097 511 0x02"
	"12345 67890 0x03"
	"1M 1M 0xfe"
	"3M 1 0x7f"
)

check_clean() { # FILE: no verification failure, some reads reported
	! grep -q 'Pattern verification failed' "$1" || { cat "$1"; fail "$2"; }
	grep -q '^read ' "$1" || { cat "$1"; fail "$2: nothing was read"; }
}

for engine in threads io_uring; do
	if ! "$VDISK" --version | grep -q "engines:.* $engine"; then
		echo "note: engine $engine not built in, skipped"
		continue
	fi
	qemu-img create -q -f raw v.img 4M
	qemu-img create -q -f raw q.img 4M
	w=() r=()
	for reg in "${REGIONS[@]}"; do
		set -- $reg
		w+=(-c "write -P $3 $1 $2")
		r+=(-c "read -P $3 $1 $2")
	done

	# vdisk writes, qemu-io reads.
	"$VDISK" io -f raw -i "$engine" "${w[@]}" v.img >w.out || fail "vdisk io write ($engine)"
	qemu-io -f raw -r "${r[@]}" v.img >r.out || { cat r.out; fail "qemu-io readback of vdisk data ($engine)"; }
	check_clean r.out "qemu-io readback of vdisk data ($engine)"
	# The untouched gap between regions is still zero.
	qemu-io -f raw -r -c 'read -P 0 2M 1M' v.img >r.out || fail "qemu-io: gap not zero ($engine)"

	# qemu-io writes, vdisk reads (also with O_DIRECT).
	qemu-io -f raw "${w[@]}" q.img >w.out || fail "qemu-io write"
	"$VDISK" io -f raw -r -i "$engine" "${r[@]}" q.img >r.out ||
		{ cat r.out; fail "vdisk readback of qemu-io data ($engine)"; }
	check_clean r.out "vdisk readback of qemu-io data ($engine)"
	"$VDISK" io -f raw -r -t none -i "$engine" -c 'read -P 0xfe 1M 1M' q.img >r.out ||
		{ cat r.out; fail "vdisk -t none readback ($engine)"; }

	# The check can fail: a wrong pattern must be caught by both tools.
	if "$VDISK" io -f raw -r -c 'read -P 0x55 0 4k' q.img >r.out; then
		fail "vdisk io accepted a wrong pattern"
	fi
	grep -qx 'Pattern verification failed at offset 0, 4096 bytes' r.out ||
		fail "vdisk io did not report the mismatch"
	if qemu-io -f raw -r -c 'read -P 0x55 0 4k' v.img >r.out; then
		fail "qemu-io accepted a wrong pattern"
	fi
	cmp v.img q.img || fail "images written by the two tools differ ($engine)"
done
echo "PASS"
