#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# QEMU's -drive aio=threads|native|io_uring picks the host I/O engine of the
# drive's protocol node (native maps to io_uring): a PIO READ SECTORS on the
# IDE disk (or the geometry guess at open) goes through the engine asked
# for; a bad value is refused with a clear error.
. "$(dirname "$0")/../lib/common.sh"
vd_setup

truncate -s 16M "$T/d.raw"
read_one()
{
	printf '%s\n' 'outb 0x1f6 0xe0' 'outb 0x1f2 1' 'outb 0x1f3 0' 'outb 0x1f4 0' \
		'outb 0x1f5 0' 'outb 0x1f7 0x20' 'clock_step 1000000' 'inb 0x1f7' |
		VDISK_TRACE=host_io_submit "$VDISK" machine -drive "$1" --qtest stdio 2>&1
}
for pair in threads:threads native:io_uring io_uring:io_uring; do
	aio=${pair%%:*} want=${pair##*:}
	out=$(read_one "file=$T/d.raw,format=raw,aio=$aio")
	echo "$out" | grep -q "host_io_submit engine $want " ||
		fail "aio=$aio: no read through $want: $out"
done
out=$(read_one "file.driver=file,file.filename=$T/d.raw,driver=raw,aio=threads")
echo "$out" | grep -q "host_io_submit engine threads " || fail "aio= with file.driver=: $out"
out=$(read_one "file=$T/d.raw,format=raw,aio=posix") && fail "aio=posix accepted: $out"
echo "$out" | grep -q "Parameter 'aio' does not accept value 'posix'" || fail "message: $out"
echo "ok: -drive aio= selects the engine"
