#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk bench runs on each built-in engine and with -t none, prints
# qemu-img bench's two lines (the first one identical), and -w --pattern
# really writes that byte where the requests go.  No timing is asserted.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-io qemu-img

qemu-img create -q -f raw img 16M

check_output() { # FILE FIRST-LINE
	[ "$(sed -n 1p "$1")" = "$2" ] || { cat "$1"; fail "first line: want '$2'"; }
	grep -Eq '^Run completed in [0-9]+\.[0-9]{3} seconds\.$' "$1" || { cat "$1"; fail "no run line"; }
	grep -Eq '^IOPS: [0-9]+, MiB/s: [0-9.]+$' "$1" || { cat "$1"; fail "no IOPS line"; }
	grep -Eq '^latency \(us\): min [0-9.]+, p50 [0-9.]+, p90 [0-9.]+, p99 [0-9.]+, p99.9 [0-9.]+, max [0-9.]+$' "$1" ||
		{ cat "$1"; fail "no latency line"; }
}

engines=
for e in threads io_uring; do
	"$VDISK" --version | grep -q "^engines:.* $e" && engines="$engines $e"
done
[ -n "$engines" ] || fail "vdisk --version lists no engine"

W1='Sending 1000 write requests, 4096 bytes each, 8 in parallel (starting at offset 0, step size 4096)'
R1='Sending 1000 read requests, 4096 bytes each, 8 in parallel (starting at offset 0, step size 4096)'
for e in $engines; do
	for cache in writeback none; do
		"$VDISK" bench -c 1000 -d 8 -w -f raw -i "$e" -t "$cache" img >out ||
			{ cat out; fail "write bench $e $cache"; }
		check_output out "$W1"
		"$VDISK" bench -c 1000 -d 8 -f raw -i "$e" -t "$cache" img >out ||
			{ cat out; fail "read bench $e $cache"; }
		check_output out "$R1"
	done
done

# The first line is qemu-img bench's, for the same arguments.
for args in "-c 500 -d 4 -s 8k -S 16k -o 1M -w" "-c 300 -d 2" "-c 200 -w --flush-interval=64"; do
	qemu-img bench $args -f raw img >q.out || fail "qemu-img bench $args"
	"$VDISK" bench $args -f raw img >v.out || fail "vdisk bench $args"
	diff <(head -n -1 q.out) <(grep -v '^\(Run completed\|IOPS\|latency\)' v.out) ||
		fail "bench $args: header lines differ from qemu-img bench"
done

# -w --pattern writes that byte over exactly the requested range: 256 x 4 KiB
# from 1 MiB, wrapping at nothing.
qemu-img create -q -f raw p.img 4M
"$VDISK" bench -c 256 -d 16 -w --pattern=0x5a -o 1M -f raw p.img >out || fail "pattern bench"
qemu-io -f raw -r -c 'read -P 0x5a 1M 1M' -c 'read -P 0 0 1M' -c 'read -P 0 2M 2M' p.img >out ||
	{ cat out; fail "qemu-io does not see the bench pattern where it belongs"; }

# Requests wrap at the end of the image as in qemu-img bench.
"$VDISK" bench -c 2000 -d 4 -f raw p.img >out || fail "wrapping bench"
"$VDISK" bench -c 2000 -d 4 --random --seed=7 -f raw p.img >out || fail "random bench"
check_output out 'Sending 2000 read requests, 4096 bytes each, 4 in parallel (starting at offset 0, step size 4096)'

# --no-drain flushes without draining.
"$VDISK" bench -c 500 -d 8 -w --flush-interval=100 --no-drain -f raw p.img >out ||
	fail "--no-drain bench"
grep -qx 'Sending flush every 100 requests' out || fail "no flush line"
echo "PASS"
