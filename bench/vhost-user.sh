#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/vhost-user.sh -- `vdisk serve` against qemu-storage-daemon on the same
# image, driven by the same front end ($BUILD/bench/vhost-user-blk: a
# vhost-user client with memfd memory and split virtqueues, no VM): 4 KiB
# random reads and writes at depth 1 and 32 (per queue), 1 and 2 queues, raw
# and qcow2 (fully allocated), cache=none (O_DIRECT), io_uring.  Runs
# alternate between the two servers; each row prints the median of RUNS runs
# of SECONDS_PER_RUN seconds and the ratio of the medians.
#
#   BUILD=build RUNS=3 SECONDS_PER_RUN=3 bench/vhost-user.sh
#
# VDISK and CLIENT override the binaries (copy them away from a tree that
# others rebuild).  FORMATS, MODES, DEPTHS, QUEUES narrow the matrix.
# IOTHREAD=1 serves the export from an I/O thread in both daemons
# (--object iothread,id=io0 and iothread=io0 on the export); POLL_MAX_NS=N
# gives vdisk's thread poll-max-ns=N (qemu-storage-daemon keeps its default,
# 32768).
set -eu
SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$SRCDIR/$BUILD ;; esac
VDISK=${VDISK:-$BUILD/vdisk}
CLIENT=${CLIENT:-$BUILD/bench/vhost-user-blk}
RUNS=${RUNS:-${ROUNDS:-3}}
SECS=${SECONDS_PER_RUN:-3}
FORMATS=${FORMATS:-raw qcow2}
MODES=${MODES:-randread randwrite}
DEPTHS=${DEPTHS:-1 32}
QUEUES=${QUEUES:-1 2}
IOTHREAD=${IOTHREAD:-0}
POLL_MAX_NS=${POLL_MAX_NS:-}
SIZE=$((1 << 30))
for t in qemu-storage-daemon qemu-img; do
	command -v $t >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
[ -x "$VDISK" ] && [ -x "$CLIENT" ] || { echo "build first: make all benches"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/var/tmp}/vub-bench.XXXXXX")
pid=
trap 'if [ -n "$pid" ]; then kill $pid 2>/dev/null; fi; rm -rf "$T"' EXIT
qemu-img create -q -f raw -o preallocation=full "$T/d.raw" $SIZE
qemu-img create -q -f qcow2 -o preallocation=full "$T/d.qcow2" $SIZE

# SIGTERM, then SIGKILL after 10 s: qemu-storage-daemon 7.2 with an iothread
# sometimes hangs on SIGTERM after its front end went away.
stop_server() {
	kill -TERM $pid
	for _ in $(seq 100); do
		kill -0 $pid 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 $pid 2>/dev/null; then
		echo "bench: $pid did not exit on SIGTERM; killed" >&2
		kill -KILL $pid
	fi
	wait $pid 2>/dev/null || true
	pid=
}

# run SERVER FMT MODE DEPTH QUEUES -> IOPS
run() {
	local server=$1 fmt=$2 mode=$3 depth=$4 nq=$5 out
	local bd=(--blockdev "driver=file,node-name=f,filename=$T/d.$fmt,cache.direct=on,aio=io_uring")
	local top=f
	if [ "$fmt" = qcow2 ]; then
		bd+=(--blockdev "driver=qcow2,node-name=q,file=f")
		top=q
	fi
	local ex="type=vhost-user-blk,id=e,node-name=$top,addr.type=unix,addr.path=$T/s.sock,writable=on,num-queues=$nq"
	if [ "$IOTHREAD" = 1 ]; then
		bd+=(--object iothread,id=io0)
		ex+=",iothread=io0"
	fi
	rm -f "$T/s.sock"
	if [ "$server" = vdisk ]; then
		[ -z "$POLL_MAX_NS" ] || [ "$IOTHREAD" != 1 ] ||
			bd=("${bd[@]/#iothread,id=io0/iothread,id=io0,poll-max-ns=$POLL_MAX_NS}")
		"$VDISK" serve "${bd[@]}" --export "$ex" &
	else
		# (its vu_panic messages when the front end closes go to a log)
		qemu-storage-daemon "${bd[@]}" --export "$ex" 2>>"$T/qsd.log" &
	fi
	pid=$!
	for _ in $(seq 100); do [ -S "$T/s.sock" ] && break; sleep 0.05; done
	out=$("$CLIENT" "$T/s.sock" -d "$depth" -q "$nq" -t "$SECS" -s $SIZE \
		$([ "$mode" = randwrite ] && echo -w))
	stop_server
	echo "$out" | sed -n 's/.*iops=//p'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

[ "$IOTHREAD" = 1 ] && echo "exports served from an I/O thread (iothread=io0${POLL_MAX_NS:+; vdisk poll-max-ns=$POLL_MAX_NS})"
printf "%-6s %-9s %5s %6s %10s %10s %6s\n" format mode depth queues vdisk qsd ratio
for fmt in $FORMATS; do
	for mode in $MODES; do
		for nq in $QUEUES; do
			for depth in $DEPTHS; do
				v=() q=()
				for _ in $(seq "$RUNS"); do
					v+=("$(run vdisk $fmt $mode $depth $nq)")
					q+=("$(run qsd $fmt $mode $depth $nq)")
				done
				vm=$(printf '%s\n' "${v[@]}" | median)
				qm=$(printf '%s\n' "${q[@]}" | median)
				printf "%-6s %-9s %5s %6s %10s %10s %6s\n" $fmt $mode $depth $nq "$vm" "$qm" \
					"$(awk -v a="$vm" -v b="$qm" 'BEGIN { if (b > 0) printf "%.2f", a / b }')"
			done
		done
	done
done
