#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/convert.sh -- `vdisk convert` against `qemu-img convert -m 16 -W`
# (QEMU 7.2) on the same files, whole-process wall time, runs interleaved,
# median of RUNS.  Both tools get the same command line.
#
# Rows:
#   raw-qcow2      SIZE of random data, raw -> qcow2
#   qcow2-raw      the same data, qcow2 -> raw
#   qcow2-zlib     CSIZE of compressible data (base64 text), qcow2 -> -c qcow2
#   qcow2-zstd     the same with -o compression_type=zstd
#   sparse-raw     an 8 GiB qcow2 with 1 GiB of data in 64 scattered
#                  extents -> raw
#   chain-qcow2    a qcow2 over a 3-deep backing chain (SIZE each layer
#                  writing a quarter), flattened -> qcow2
#   vmdk-qcow2     SIZE of random data in a monolithicSparse vmdk (made by
#                  qemu-img convert), vmdk -> qcow2
#   compare        vdisk compare / qemu-img compare, two copies of a 16 GiB
#                  sparse qcow2 (1 GiB of data)
#   map            vdisk map / qemu-img map --output=json of that image
#   vhdx-qcow2     the SIZE of random data in a dynamic VHDX (made by
#                  qemu-img convert) -> qcow2
#   cp-floor       not vdisk: `cp` of the SIZE raw file (coreutils 9 copies
#                  with copy_file_range, one in-kernel copy, no zero
#                  detection) against qemu-img convert raw -> raw.  It is the
#                  least any tool that writes the bytes can take on this
#                  file system: a convert row cannot go far below its ratio.
# (target: vdisk <= 0.7x qemu-img on the convert rows, <= 1x on the others)
#
# Environment: BUILD, BENCH_DIR (default /dev/shm/vdisk-bench, tmpfs as in
# perf-anchors.md), RUNS (default 5), SIZE (default 2G), CSIZE (default
# 256M), ROWS (subset), QUICK=1 (small sizes, one run).
set -euo pipefail

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$SRCDIR"
BUILD=${BUILD:-build}
VDISK=$(realpath "${VDISK:-$BUILD/vdisk}")
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	RUNS=${RUNS:-1} SIZE=${SIZE:-64M} CSIZE=${CSIZE:-16M} SPARSE=${SPARSE:-256M}
	BIG=${BIG:-512M}
else
	RUNS=${RUNS:-5} SIZE=${SIZE:-2G} CSIZE=${CSIZE:-256M} SPARSE=${SPARSE:-8G} BIG=${BIG:-16G}
fi
ROWS=${ROWS:-raw-qcow2 qcow2-raw qcow2-zlib qcow2-zstd sparse-raw chain-qcow2 vmdk-qcow2 compare map vhdx-qcow2 cp-floor}
. "$SRCDIR/bench/lib.sh"

command -v qemu-img >/dev/null || die "qemu-img not found (run scripts/install-deps)"
command -v qemu-io >/dev/null || die "qemu-io not found"
[ -x "$VDISK" ] || die "$VDISK not built (run make)"

default_dir=build/bench-data
[ -d /dev/shm ] && default_dir=/dev/shm/vdisk-bench
BENCH_DIR=$(realpath -m "${BENCH_DIR:-$default_dir}")
mkdir -p "$BENCH_DIR"
tmp=$(mktemp -d -p "$BENCH_DIR")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

bytes() { numfmt --from=iec "$1"; }
mib=$(($(bytes "$SIZE") / 1048576))

need_row() { [[ " $ROWS " == *" $1 "* ]]; }

log "preparing images in $tmp..."
if need_row raw-qcow2 || need_row qcow2-raw || need_row vmdk-qcow2 || need_row vhdx-qcow2 ||
	need_row cp-floor; then
	head -c "$(bytes "$SIZE")" /dev/urandom >rand.raw
	qemu-img convert -f raw -O qcow2 rand.raw rand.qcow2
fi
if need_row vmdk-qcow2; then
	qemu-img convert -f raw -O vmdk rand.raw rand.vmdk
fi
if need_row vhdx-qcow2; then
	qemu-img convert -f raw -O vhdx rand.raw rand.vhdx
fi
if need_row qcow2-zlib || need_row qcow2-zstd; then
	head -c "$(($(bytes "$CSIZE") * 3 / 4))" /dev/urandom | base64 -w 0 | head -c "$(bytes "$CSIZE")" >text.raw
	qemu-img convert -f raw -O qcow2 text.raw text.qcow2
	rm -f text.raw
fi
# scattered IMG SIZE DATA: DATA bytes in 64 extents spread over the image.
scattered() {
	local img=$1 size=$2 data=$3 i args=()
	local ext=$((data / 64)) step=$((size / 64))
	qemu-img create -q -f qcow2 "$img" "$size"
	for i in $(seq 0 63); do
		args+=(-c "write -P $((i + 1)) $((i * step + step / 3 / 65536 * 65536)) $ext")
	done
	qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null
}
if need_row sparse-raw; then
	scattered sparse.qcow2 "$(bytes "$SPARSE")" $(($(bytes "$SPARSE") / 8))
fi
if need_row chain-qcow2; then
	qemu-img create -q -f qcow2 l0.qcow2 "$SIZE"
	prev=l0.qcow2
	for l in 1 2 3; do
		[ $l = 1 ] || {
			qemu-img create -q -f qcow2 -b "$prev" -F qcow2 "l$l.qcow2"
			prev=l$l.qcow2
		}
		qemu-io -f qcow2 -c "write -P $l $(((l - 1) * mib / 4))M $((mib / 4))M" \
			-c "write -P $((l + 10)) $(((l + 1) * mib / 8))M $((mib / 8))M" "$prev" >/dev/null
	done
fi
if need_row compare || need_row map; then
	scattered big.qcow2 "$(bytes "$BIG")" $(($(bytes "$BIG") / 16))
	cp big.qcow2 big2.qcow2
fi

# seconds CMD...: wall time of one run, "-" if it failed.
seconds() {
	local t0 t1
	t0=$(date +%s%N)
	"$@" >/dev/null 2>"$tmp/err" || {
		log "FAILED: $* ($(head -n 1 "$tmp/err"))"
		echo -
		return
	}
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}

median_s() { printf '%s\n' "$@" | grep -v '^-$' | sort -n | awk '{ v[NR] = $1 } END {
	if (NR == 0) { print "-"; exit } if (NR % 2) print v[(NR + 1) / 2];
	else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# floor_row NAME OUT: qemu-img convert raw -> raw against cp, alternately.
floor_row() {
	local name=$1 out=$2 q=() v=() i
	for i in $(seq "$RUNS"); do
		rm -f "$out"
		q+=("$(seconds qemu-img convert "${M[@]}" -f raw -O raw rand.raw "$out")")
		rm -f "$out"
		v+=("$(seconds cp --sparse=auto rand.raw "$out")")
	done
	rm -f "$out"
	local qm vm
	qm=$(median_s "${q[@]}")
	vm=$(median_s "${v[@]}")
	printf '| %-12s | %8s | %8s | %5s |\n' "$name (cp)" "$qm" "$vm" "$(ratio "$vm" "$qm")"
}

# row NAME OUT ARGS...: qemu-img and vdisk alternately, OUT removed (and
# the page cache of the sources warm) before each run.
row() {
	local name=$1 out=$2 q=() v=() i
	shift 2
	for i in $(seq "$RUNS"); do
		rm -f "$out"
		q+=("$(seconds qemu-img "$@")")
		rm -f "$out"
		v+=("$(seconds "$VDISK" "$@")")
	done
	rm -f "$out"
	local qm vm
	qm=$(median_s "${q[@]}")
	vm=$(median_s "${v[@]}")
	printf '| %-12s | %8s | %8s | %5s |\n' "$name" "$qm" "$vm" "$(ratio "$vm" "$qm")"
}

echo "# bench/convert.sh (RUNS=$RUNS SIZE=$SIZE CSIZE=$CSIZE SPARSE=$SPARSE BIG=$BIG, $BENCH_DIR)"
echo
versions
echo
echo "| row          | qemu-img | vdisk    | ratio |"
echo "|--------------|----------|----------|-------|"
M=(-m 16 -W)
for r in $ROWS; do
	case $r in
	raw-qcow2) row "$r" o.qcow2 convert "${M[@]}" -f raw -O qcow2 rand.raw o.qcow2 ;;
	qcow2-raw) row "$r" o.raw convert "${M[@]}" -f qcow2 -O raw rand.qcow2 o.raw ;;
	qcow2-zlib) row "$r" o.qcow2 convert "${M[@]}" -c -f qcow2 -O qcow2 text.qcow2 o.qcow2 ;;
	qcow2-zstd)
		row "$r" o.qcow2 convert "${M[@]}" -c -o compression_type=zstd -f qcow2 -O qcow2 \
			text.qcow2 o.qcow2
		;;
	sparse-raw) row "$r" o.raw convert "${M[@]}" -f qcow2 -O raw sparse.qcow2 o.raw ;;
	chain-qcow2) row "$r" o.qcow2 convert "${M[@]}" -f qcow2 -O qcow2 l3.qcow2 o.qcow2 ;;
	vmdk-qcow2) row "$r" o.qcow2 convert "${M[@]}" -f vmdk -O qcow2 rand.vmdk o.qcow2 ;;
	compare) row "$r" none compare -f qcow2 -F qcow2 big.qcow2 big2.qcow2 ;;
	map) row "$r" none map -f qcow2 --output=json big.qcow2 ;;
	vhdx-qcow2) row "$r" o.qcow2 convert "${M[@]}" -f vhdx -O qcow2 rand.vhdx o.qcow2 ;;
	cp-floor) floor_row "$r" o.raw ;;
	*) die "unknown row $r" ;;
	esac
done
