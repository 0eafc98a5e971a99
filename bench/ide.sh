#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/ide.sh: the IDE device over the qtest protocol, vdisk machine against
# QEMU 7.2, then the in-process cost of one DMA request.
#
# The same guest driver (bench/ide-qtest.py, one client, commands pipelined
# over a unix socket) issues DMA_COUNT 4 KiB READ DMA requests and PIO_COUNT
# 4 KiB READ MULTIPLE requests (32-bit data-port reads) to the primary disk of
#
#   qemu-system-x86_64 -machine pc -accel tcg -qtest unix:S -qtest-log /dev/null
#       -display none -nodefaults -bios HALT -m 128M
#       -drive file=IMG,if=ide,index=0,format=raw,cache=writeback,aio=$AIO
#   vdisk machine -m 128M --qtest unix:S
#       -drive if=ide,index=0,format=raw,cache=writeback,file.driver=file,
#              file.filename=IMG,file.aio=$AIO
#
# on the same raw image (64 MiB, a pattern the driver checks), runs
# interleaved (qemu, vdisk, qemu, ...) RUNS times; the table has the median
# time and IOPS of each, the ratio vdisk/QEMU, and the machine process's CPU
# time per request.  The QEMU build of Debian has no qtest accelerator, so
# QEMU runs TCG with a BIOS of HLT instructions (its one vCPU halts at once).
# Then build/bench/ide-dma prints the in-process figures (command-register
# write to IRQ), on null-co and on the image.
#
# Settings: RUNS (3), DMA_COUNT (20000), PIO_COUNT (20000), AIO (threads,
# QEMU's default; io_uring also works for both), BENCH_DIR
# ($BUILD/bench-data), INPROC_COUNT (200000), QEMU, QUICK=1 (tiny counts).
set -euo pipefail

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$SRCDIR/bench/lib.sh"
BUILD=${BUILD:-build}
case "$BUILD" in
/*) ;;
*) BUILD=$SRCDIR/$BUILD ;;
esac
QEMU=${QEMU:-qemu-system-x86_64}
RUNS=${RUNS:-3}
DMA_COUNT=${DMA_COUNT:-20000}
PIO_COUNT=${PIO_COUNT:-20000}
INPROC_COUNT=${INPROC_COUNT:-200000}
export AIO=${AIO:-threads}
if [ "${QUICK:-0}" = 1 ]; then
	RUNS=1 DMA_COUNT=500 PIO_COUNT=50 INPROC_COUNT=2000
fi
BENCH_DIR=${BENCH_DIR:-$BUILD/bench-data}

command -v "$QEMU" >/dev/null || die "$QEMU not found (apt-get install qemu-system-x86)"
command -v python3 >/dev/null || die "python3 not found"
[ -x "$BUILD/vdisk" ] || die "$BUILD/vdisk not built (make)"
[ -x "$BUILD/bench/ide-dma" ] || die "$BUILD/bench/ide-dma not built (make benches)"

work=$(mktemp -d "${TMPDIR:-/tmp}/ide-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# A private copy: a concurrent rebuild must not swap the binary mid-run.
VDISK=$work/vdisk
cp "$BUILD/vdisk" "$VDISK"
mkdir -p "$BENCH_DIR"
img=$BENCH_DIR/ide-64M.img
bios=$work/halt.bin
python3 - "$img" "$bios" <<'EOF'
import os, struct, sys
img, bios = sys.argv[1:3]
size = 64 << 20
if not os.path.exists(img) or os.path.getsize(img) != size:
    with open(img + ".tmp", "wb") as f:
        for n in range(size // 512):
            f.write(struct.pack("<Q", n) + bytes([(n * 7 + 1) & 0xFF]) * 504)
    os.rename(img + ".tmp", img)
with open(bios, "wb") as f:
    f.write(b"\xf4" * 65536)
EOF
cat "$img" >/dev/null # into the page cache

echo "## IDE over qtest: vdisk machine vs QEMU 7.2"
echo
echo "- command: RUNS=$RUNS DMA_COUNT=$DMA_COUNT PIO_COUNT=$PIO_COUNT AIO=$AIO bench/ide.sh"
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- host: $(uname -sr), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- $("$QEMU" --version | head -n 1); $("$VDISK" --version 2>/dev/null | head -n 1)"
echo "- image: $img (64 MiB raw, page cache), aio=$AIO, cache=writeback"
echo

declare -A secs iops cpu
for r in $(seq 1 "$RUNS"); do
	for op in dma pio; do
		count=$DMA_COUNT
		[ "$op" = pio ] && count=$PIO_COUNT
		for tool in qemu vdisk; do
			bin=$VDISK
			[ "$tool" = qemu ] && bin=$QEMU
			out=$(python3 "$SRCDIR/bench/ide-qtest.py" "$tool" "$bin" "$img" "$op" "$count" \
				"$bios") || die "$tool $op run $r failed"
			log "run $r: $out"
			read -r _ _ _ s i c <<<"$out"
			secs[$tool.$op]+=" $s"
			iops[$tool.$op]+=" $i"
			cpu[$tool.$op]+=" $c"
		done
	done
done

# median of decimals (lib.sh's median rounds to integers)
fmedian()
{
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "| op | requests | QEMU s | vdisk s | QEMU IOPS | vdisk IOPS | vdisk/QEMU | QEMU CPU us/req | vdisk CPU us/req |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for op in dma pio; do
	count=$DMA_COUNT
	[ "$op" = pio ] && count=$PIO_COUNT
	# shellcheck disable=SC2086
	{
		qs=$(fmedian ${secs[qemu.$op]})
		vs=$(fmedian ${secs[vdisk.$op]})
		qi=$(median ${iops[qemu.$op]})
		vi=$(median ${iops[vdisk.$op]})
		qc=$(fmedian ${cpu[qemu.$op]})
		vc=$(fmedian ${cpu[vdisk.$op]})
	}
	name="4 KiB READ DMA"
	[ "$op" = pio ] && name="4 KiB READ MULTIPLE (PIO)"
	echo "| $name | $count | $qs | $vs | $qi | $vi | $(ratio "$vi" "$qi") | $qc | $vc |"
done
echo
echo "## One DMA request in process (build/bench/ide-dma $INPROC_COUNT $img)"
echo
echo '```'
"$BUILD/bench/ide-dma" "$INPROC_COUNT" "$img"
echo '```'
