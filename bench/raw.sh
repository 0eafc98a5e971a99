#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/raw.sh -- raw-image I/O: `vdisk bench` side by side with
# `qemu-img bench` (QEMU 7.2) and, for io_uring, fio.
#
# For every row of {read, write} x depth {1, 32} x size {4k, 64k} x engine
# {io_uring, threads}, with -t none (O_DIRECT), it runs
#
#   qemu-img bench -f raw -t none -i ENGINE -d D -s S -c C [-w] FILE
#   $BUILD/vdisk bench -f raw -t none -i ENGINE -d D -s S -c C [-w] FILE
#   fio ... --ioengine=io_uring --direct=1 --rw=read|write --bs=S --iodepth=D
#           (io_uring rows only; the same sequential I/O, C requests)
#
# interleaved, RUNS times each, and prints a markdown table of the median IOPS
# (C / the seconds each reports) and the ratios vdisk/qemu-img and vdisk/fio.
# C is calibrated per row with one short qemu-img run so that a run takes about
# TARGET_SECONDS.  Requests walk the file sequentially from offset 0 and wrap
# around at its end (qemu-img bench takes the offset modulo the image size;
# fio's io_size > size does the same), so FILE's size is a multiple of every
# request size and no request crosses the end.
#
# Environment:
#   BUILD           build tree holding vdisk (default: build)
#   BENCH_DIR       where the test file lives (default: build/bench-data)
#   BENCH_SIZE      its size (default 1G; 64M with QUICK=1)
#   RUNS            runs per tool and row (default 5; 1 with QUICK=1)
#   TARGET_SECONDS  wanted duration of one run (default 1.5)
#   QUICK=1         smoke run: tiny fixed counts, no calibration
#   ROWS            only these rows, as OP:DEPTH:SIZE:ENGINE words
#                   (e.g. ROWS="read:1:4k:io_uring write:1:4k:io_uring")
#
# The file is written in full once (so reads hit real blocks, not holes) and
# kept for later runs; it is rewritten when its size changes.
set -euo pipefail

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$SRCDIR"
BUILD=${BUILD:-build}
VDISK=${VDISK:-$BUILD/vdisk}
BENCH_DIR=${BENCH_DIR:-build/bench-data}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	BENCH_SIZE=${BENCH_SIZE:-64M}
	RUNS=${RUNS:-1}
else
	BENCH_SIZE=${BENCH_SIZE:-1G}
	RUNS=${RUNS:-5}
fi
TARGET_SECONDS=${TARGET_SECONDS:-1.5}

. "$SRCDIR/bench/lib.sh"

for tool in qemu-img fio python3 numfmt; do
	command -v "$tool" >/dev/null || die "$tool not found (run scripts/install-deps)"
done
[ -x "$VDISK" ] || die "$VDISK not built (run make)"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"

bytes=$(numfmt --from=iec "${BENCH_SIZE^^}") || die "bad BENCH_SIZE '$BENCH_SIZE'"
bytes=$((bytes / 65536 * 65536)) # a multiple of every request size
[ "$bytes" -ge $((1024 * 1024)) ] || die "BENCH_SIZE must be at least 1M"
mkdir -p "$BENCH_DIR"
file=$BENCH_DIR/raw-$bytes.img

# --- the test file -----------------------------------------------------------
if [ ! -f "$file.done" ] || [ "$(stat -c %s "$file" 2>/dev/null || echo 0)" != "$bytes" ]; then
	log "writing $file ($bytes bytes) in full..."
	rm -f "$file" "$file.done"
	dd if=/dev/urandom of="$file" bs=1M count=$((bytes / 1048576)) iflag=fullblock \
		status=none conv=fsync
	rest=$((bytes % 1048576))
	if [ $rest -gt 0 ]; then
		head -c $rest /dev/urandom >>"$file"
	fi
	sync "$file"
	touch "$file.done"
fi
dd if="$file" of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null ||
	die "$BENCH_DIR does not support O_DIRECT (-t none); set BENCH_DIR to another file system"

# --- the runs ----------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# bench_iops TOOL OP D S C ENGINE: run one qemu-img or vdisk bench; print IOPS
# or "-" (failure, with the output on stderr).
bench_iops()
{
	local tool=$1 op=$2 d=$3 s=$4 c=$5 engine=$6 out=$tmp/out
	local cmd=(-f raw -t none -i "$engine" -d "$d" -s "$s" -c "$c")
	[ "$op" = write ] && cmd+=(-w)
	if [ "$tool" = qemu-img ]; then
		cmd=(qemu-img bench "${cmd[@]}" "$file")
	else
		cmd=("$VDISK" bench "${cmd[@]}" "$file")
	fi
	if ! "${cmd[@]}" >"$out" 2>&1 || [ -z "$(run_seconds "$out")" ]; then
		log "FAILED: ${cmd[*]}"
		sed 's/^/    /' "$out" >&2
		echo -
		return
	fi
	iops_of "$c" "$out"
}

# fio_iops OP D S C: the same I/O as the bench commands, through fio.
fio_iops()
{
	local op=$1 d=$2 s=$3 c=$4 out=$tmp/fio.json
	local cmd=(fio --name=raw --filename="$file" --ioengine=io_uring --direct=1
		--rw="$op" --bs="$s" --iodepth="$d" --size="$bytes"
		--io_size=$((c * $(numfmt --from=iec "${s^^}"))) --number_ios="$c"
		--output-format=json --output="$out")
	if ! "${cmd[@]}" >"$tmp/fio.err" 2>&1; then
		log "FAILED: ${cmd[*]}"
		sed 's/^/    /' "$tmp/fio.err" >&2
		echo -
		return
	fi
	python3 - "$out" "$op" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
# fio may print notes before the JSON document.
doc = json.loads(text[text.index("{"):])
print("%.0f" % doc["jobs"][0][sys.argv[2]]["iops"])
EOF
}

# Requests for about TARGET_SECONDS, from one short qemu-img run.
calibrate()
{
	local op=$1 d=$2 s=$3 engine=$4 probe iops
	if [ "$QUICK" = 1 ]; then
		echo 64
		return
	fi
	case "$s" in 4k) probe=4000 ;; *) probe=1000 ;; esac
	iops=$(bench_iops qemu-img "$op" "$d" "$s" "$probe" "$engine")
	[ "$iops" = - ] && iops=$(bench_iops vdisk "$op" "$d" "$s" "$probe" "$engine")
	[ "$iops" = - ] && {
		echo "$probe"
		return
	}
	# Two significant digits, at least the probe count.
	awk -v i="$iops" -v t="$TARGET_SECONDS" -v p="$probe" 'BEGIN {
		c = i * t; if (c < p) c = p
		m = 1; while (c >= 100 * m) m *= 10
		printf "%d\n", int(c / m + 0.5) * m }'
}

# --- the report --------------------------------------------------------------
echo "## Raw image: vdisk bench vs qemu-img bench vs fio"
echo
echo "Produced by:"
echo
echo '```'
echo "BUILD=$BUILD BENCH_DIR=$BENCH_DIR BENCH_SIZE=$BENCH_SIZE RUNS=$RUNS TARGET_SECONDS=$TARGET_SECONDS QUICK=$QUICK bench/raw.sh"
echo '```'
echo
echo "with, for each row (C calibrated for ~${TARGET_SECONDS}s, runs interleaved, median of $RUNS):"
echo
echo '```'
echo "qemu-img bench -f raw -t none -i ENGINE -d DEPTH -s SIZE -c C [-w] $file"
echo "$VDISK bench -f raw -t none -i ENGINE -d DEPTH -s SIZE -c C [-w] $file"
echo "fio --name=raw --filename=$file --ioengine=io_uring --direct=1 --rw=read|write --bs=SIZE --iodepth=DEPTH --size=$bytes --io_size=C*SIZE --number_ios=C --output-format=json"
echo '```'
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- host: $(uname -sr), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1))"
echo "- file: $bytes bytes on $(df -T "$BENCH_DIR" | awk 'NR == 2 { print $2 " (" $1 ")" }')"
echo "- $(qemu-img --version | head -n 1); $(fio --version); $("$VDISK" --version 2>/dev/null | head -n 1)"
echo
echo "| op | depth | size | engine | count | qemu-img IOPS | vdisk IOPS | vdisk/qemu-img | fio IOPS | vdisk/fio |"
echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"

failed=0
for op in read write; do
	for d in 1 32; do
		for s in 4k 64k; do
			for engine in io_uring threads; do
				if [ -n "${ROWS:-}" ] && ! [[ " $ROWS " == *" $op:$d:$s:$engine "* ]]; then
					continue
				fi
				c=$(calibrate "$op" "$d" "$s" "$engine")
				log "$op depth=$d size=$s engine=$engine count=$c: $RUNS runs"
				q=() v=() f=()
				for ((r = 0; r < RUNS; r++)); do
					q+=("$(bench_iops qemu-img "$op" "$d" "$s" "$c" "$engine")")
					v+=("$(bench_iops vdisk "$op" "$d" "$s" "$c" "$engine")")
					if [ "$engine" = io_uring ]; then
						f+=("$(fio_iops "$op" "$d" "$s" "$c")")
					fi
				done
				if printf '%s\n' "${q[@]}" "${v[@]}" "${f[@]}" | grep -x -- - >/dev/null; then
					failed=1
				fi
				qm=$(median "${q[@]}")
				vm=$(median "${v[@]}")
				if [ "$engine" = io_uring ]; then
					fm=$(median "${f[@]}")
					fr=$(ratio "$vm" "$fm")
				else
					fm=- fr=-
				fi
				echo "| $op | $d | $s | $engine | $c | $qm | $vm | $(ratio "$vm" "$qm") | $fm | $fr |"
			done
		done
	done
done
if [ $failed = 1 ]; then
	log "bench/raw.sh: some runs failed (their output is above)"
	exit 1
fi
