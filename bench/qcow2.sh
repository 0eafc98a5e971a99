#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/qcow2.sh -- qcow2 side by side: `vdisk bench` against `qemu-img bench`
# (QEMU 7.2) on the same images, runs interleaved, median of RUNS.
#
# Rows (all -t none, depth 32, 4 KiB requests, io_uring):
#   read-allocated   reads from a fully written qcow2 (64 KiB clusters), with
#                    vdisk on the raw file of the same data as the reference
#                    (target: qcow2 within 10% of raw, and >= qemu-img)
#   alloc-empty      writes one per new cluster (-S 65536) into an empty image
#   alloc-overlay    the same into an overlay over a fully written raw backing
#   alloc-overlay-l2 the same with extended_l2=on (32 subclusters per cluster):
#                    only the written subcluster is allocated, no COW
#                    (targets: allocating rows >= 1.5x qemu-img; extended L2
#                    overlay >= 2x the plain overlay)
# Allocating rows use a fresh image for every run of every tool.
#
# Environment: BUILD, BENCH_DIR (default build/bench-data), RUNS (default 5),
# ROWS (space-separated subset of the rows, default all),
# COUNT (requests per allocating run, default 12000), QUICK=1 (tiny smoke run).
set -euo pipefail

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$SRCDIR"
BUILD=${BUILD:-build}
VDISK=${VDISK:-$BUILD/vdisk}
BENCH_DIR=$(realpath -m "${BENCH_DIR:-build/bench-data}")
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	RUNS=${RUNS:-1} COUNT=${COUNT:-200} READS=${READS:-2000}
else
	RUNS=${RUNS:-5} COUNT=${COUNT:-12000} READS=${READS:-100000}
fi
. "$SRCDIR/bench/lib.sh"

for tool in qemu-img qemu-io python3; do
	command -v "$tool" >/dev/null || die "$tool not found (run scripts/install-deps)"
done
[ -x "$VDISK" ] || die "$VDISK not built (run make)"
"$VDISK" --version | grep -qw qcow2 || die "$VDISK has no qcow2 driver"

# Virtual size: COUNT clusters of 64 KiB, rounded up to 64 MiB.
size=$(((COUNT * 65536 + 67108863) / 67108864 * 67108864))
mkdir -p "$BENCH_DIR"
tmp=$(mktemp -d -p "$BENCH_DIR")
trap 'rm -rf "$tmp"' EXIT

log "preparing images ($size bytes)..."
backing=$tmp/backing.raw
dd if=/dev/urandom of="$backing" bs=1M count=$((size / 1048576)) status=none conv=fsync
full=$tmp/full.qcow2
qemu-img convert -f raw -O qcow2 -o cluster_size=65536 "$backing" "$full"

# one TOOL ROW IMG: run one bench, print its IOPS or "-".
one()
{
	local tool=$1 row=$2 img=$3 out=$tmp/out c args
	case "$row" in
	read-*) c=$READS args=(-c "$c" -d 32 -s 4096) ;;
	*) c=$COUNT args=(-w -c "$c" -d 32 -s 4096 -S 65536) ;;
	esac
	local fmt=qcow2
	[ "${img##*.}" = raw ] && fmt=raw
	if [ "$tool" = qemu-img ]; then
		qemu-img bench -f "$fmt" -t none -i io_uring "${args[@]}" "$img" >"$out" 2>&1 || true
	else
		"$VDISK" bench -f "$fmt" -t none -i io_uring "${args[@]}" "$img" >"$out" 2>&1 || true
	fi
	local iops
	iops=$(iops_of "$c" "$out")
	[ "$iops" = - ] && { log "FAILED: $tool $row"; sed 's/^/    /' "$out" >&2; }
	echo "$iops"
}

# fresh ROW: a new image for an allocating row.
fresh()
{
	local img=$tmp/alloc.qcow2
	rm -f "$img"
	case "$1" in
	alloc-empty) qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" "$size" ;;
	alloc-overlay)
		qemu-img create -q -f qcow2 -o cluster_size=65536 -b "$backing" -F raw "$img" ;;
	alloc-overlay-l2)
		qemu-img create -q -f qcow2 -o cluster_size=65536,extended_l2=on \
			-b "$backing" -F raw "$img" ;;
	esac
	echo "$img"
}

echo "## qcow2: vdisk bench vs qemu-img bench"
echo
echo "Produced by \`RUNS=$RUNS COUNT=$COUNT READS=$READS QUICK=$QUICK bench/qcow2.sh\`; each row"
echo "runs \`qemu-img bench\` and \`vdisk bench\` with the same options (-t none -i io_uring"
echo "-d 32 -s 4096, writes with -w -S 65536) on the same images, median of $RUNS."
echo
versions
echo
echo "| row | qemu-img IOPS | vdisk IOPS | vdisk/qemu-img | note |"
echo "|---|---:|---:|---:|---|"

declare -A med
for row in ${ROWS:-read-allocated alloc-empty alloc-overlay alloc-overlay-l2}; do
	log "$row: $RUNS runs"
	q=() v=() r=()
	for ((i = 0; i < RUNS; i++)); do
		if [ "$row" = read-allocated ]; then
			q+=("$(one qemu-img "$row" "$full")")
			v+=("$(one vdisk "$row" "$full")")
			r+=("$(one vdisk "$row" "$backing")")
		else
			q+=("$(one qemu-img "$row" "$(fresh "$row")")")
			v+=("$(one vdisk "$row" "$(fresh "$row")")")
		fi
	done
	qm=$(median "${q[@]}")
	vm=$(median "${v[@]}")
	med[$row]=$vm
	note=
	if [ "$row" = read-allocated ]; then
		rm_=$(median "${r[@]}")
		note="vdisk on raw: $rm_ IOPS; qcow2/raw $(ratio "$vm" "$rm_")"
	elif [ "$row" = alloc-overlay-l2 ]; then
		note="vdisk extended-L2 overlay / plain overlay: $(ratio "$vm" "${med[alloc-overlay]:--}")"
	fi
	echo "| $row | $qm | $vm | $(ratio "$vm" "$qm") | $note |"
done
