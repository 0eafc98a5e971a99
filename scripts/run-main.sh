#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/run-main.sh VDISK_BINARY  -- what `make run` runs.
#
# The main job, in two parts, every step printed before it runs; the script
# stops with a non-zero status at the first step that fails:
#
#  1. the block layer from the `vdisk` tool on a raw image: create it, show
#     it, write patterns and read them back verified, discard, map, flush,
#     and a short `vdisk bench`;
#  2. the whole guest-to-host IDE path on the same image: `vdisk machine`
#     with the image as IDE disk and a generated ISO as CD-ROM, a guest
#     driver over the qtest protocol (scripts/ide-demo.py: PIO read, DMA
#     write and read, the written bytes checked in the host file, ATAPI
#     READ(10) by PIO and DMA), then the trace of one DMA request from the
#     command-register write through the block layer and host I/O back to
#     the interrupt.
#
# Environment: RUN_DIR (default: run/ beside the binary), RUN_IMAGE_SIZE
# (default 64M).
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: scripts/run-main.sh VDISK_BINARY" >&2
	exit 2
fi
vdisk=$1
if [ ! -x "$vdisk" ]; then
	echo "run-main: $vdisk is not an executable (run make first)" >&2
	exit 1
fi
case "$vdisk" in
*/*) ;;
*) vdisk=./$vdisk ;;
esac

run_dir=${RUN_DIR:-$(dirname "$vdisk")/run}
size=${RUN_IMAGE_SIZE:-64M}
img=$run_dir/disk.raw
mkdir -p "$run_dir"

step=0
# Print a step's command line as one could paste it.
show()
{
	local a line=
	for a in "$@"; do
		case "$a" in
		*[!A-Za-z0-9_./=:,+-]*) line+=" '$a'" ;;
		*) line+=" $a" ;;
		esac
	done
	echo
	echo "[$step] \$${line}"
}

# run CMD...: print the command, run it, fail the script if it fails.
run()
{
	step=$((step + 1))
	show "$@"
	"$@"
}

# run_io CMD...: like run, and also fail on a verification or request error,
# which qemu-io reports with a message rather than its exit status.
run_io()
{
	local out
	step=$((step + 1))
	show "$@"
	out=$("$@" 2>&1) || {
		echo "$out"
		echo "run-main: step $step failed" >&2
		return 1
	}
	echo "$out"
	if grep -Eiq 'fail|error|mismatch' <<<"$out"; then
		echo "run-main: step $step reported an error" >&2
		return 1
	fi
}

trap 'echo; echo "run-main: FAILED at step $step" >&2' ERR

echo "vdisk main job: a raw image at $img ($size)"
run "$vdisk" --version
rm -f "$img"
run "$vdisk" create -f raw "$img" "$size"
run "$vdisk" info -f raw "$img"

# Patterns at a few places, including an unaligned request the block layer
# has to pad, then read back and verified with -P.
run_io "$vdisk" io -f raw \
	-c 'write -P 0xa5 0 1M' \
	-c 'write -P 0x5a 1M 64k' \
	-c 'write -P 0x3c 2M 4k' \
	-c 'write -P 0xc3 3145728 1000' \
	-c 'read -P 0xa5 0 1M' \
	-c 'read -P 0x5a 1M 64k' \
	-c 'read -P 0x3c 2M 4k' \
	-c 'read -P 0xc3 3145728 1000' \
	-c 'read -P 0 4M 64k' \
	-c 'flush' \
	"$img"
# Discard punches a hole: the range reads back as zeroes and map shows it.
run_io "$vdisk" io -f raw \
	-c 'discard 0 256k' \
	-c 'read -P 0 0 256k' \
	-c 'read -P 0xa5 256k 768k' \
	-c 'map' \
	-c 'flush' \
	"$img"
run "$vdisk" info -f raw "$img"

# O_DIRECT (-t none) where the file system supports it, as a VMM would.
cache=none
if ! dd if="$img" of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null; then
	echo "(no O_DIRECT on this file system: benchmarking with -t writeback)"
	cache=writeback
fi
run "$vdisk" bench -f raw -t "$cache" -i io_uring -d 32 -s 4k -c 20000 "$img"

# Part 2: the same image behind the emulated IDE controller.  The io steps
# above left 0xa5 at 512 KiB..1 MiB, which the demo's PIO read expects.
echo
echo "IDE: the guest-to-host path of vdisk machine (PIIX3 IDE at 00:01.1)"
command -v python3 >/dev/null || {
	echo "run-main: python3 is needed for the IDE guest driver (scripts/install-deps)" >&2
	false
}
run python3 "$(dirname "$0")/ide-demo.py" "$vdisk" "$img" "$run_dir"

trap - ERR
echo
echo "run-main: all $step steps passed"
