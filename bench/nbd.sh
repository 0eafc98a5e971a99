#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/nbd.sh -- `vdisk nbd` against nbdkit's file plugin and qemu-nbd on the
# same raw image (tmpfs, fully allocated), driven by the same clients: fio's
# nbd engine (4 KiB random read and write at depth 1 and 16, over a unix
# socket and TCP loopback; 1 MiB sequential reads at depth 8 over unix) and
# `nbdcopy URI null:` (the whole export).  Servers alternate run by run;
# each row prints the median of RUNS runs of SECONDS_PER_RUN seconds, and
# our ratio to each reference and to the better of them.
#
#   BUILD=build RUNS=3 SECONDS_PER_RUN=3 bench/nbd.sh
#
# SERVERS narrows the servers (default "vdisk nbdkit qemu-nbd"); ROWS the
# fio rows (names as printed); SIZE_MB the image size (default 1024).
# "vdisk-io" is an extra server: `vdisk serve` with the export on an I/O
# thread (--export type=nbd,...,iothread=io0), the handshake on the main
# thread; the thread polls as `vdisk nbd` does by default (poll-max-ns).
#
# The last columns are fio's own CPU use (user + system, % of one core;
# median over the runs) while it drove vdisk and nbdkit.  fio's nbd engine
# is one thread: a row where the client sits near 100% is bound by the
# client, and no server can raise it much (on 2 cores, the client has one).
set -eu
SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$SRCDIR/$BUILD ;; esac
VDISK=${VDISK:-$BUILD/vdisk}
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-3}
SERVERS=${SERVERS:-vdisk nbdkit qemu-nbd}
SIZE_MB=${SIZE_MB:-1024}
for t in fio nbdkit qemu-nbd nbdcopy nbdinfo python3; do
	command -v $t >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "SKIP: fio has no nbd engine"; exit 77; }
[ -x "$VDISK" ] || { echo "build first: make"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/dev/shm}/nbd-bench.XXXXXX")
pid=
trap 'if [ -n "$pid" ]; then kill $pid 2>/dev/null; wait $pid 2>/dev/null; fi; rm -rf "$T"' EXIT
IMG=$T/d.raw
# Written, not preallocated: tmpfs pages touched once before timing.
dd if=/dev/urandom of="$IMG" bs=1M count="$SIZE_MB" status=none
S=$T/nbd.sock
PORT=$((30000 + $$ % 20000))

start_server() { # NAME TRANSPORT
	local args
	rm -f "$S"
	if [ "$2" = unix ]; then args=(-k "$S"); else args=(-p $PORT -b 127.0.0.1); fi
	case $1 in
	vdisk) "$VDISK" nbd -f raw -t -e 0 "${args[@]}" "$IMG" & ;;
	vdisk-io)
		if [ "$2" = unix ]; then
			args=(addr.type=unix,addr.path="$S")
		else
			args=(addr.type=inet,addr.host=127.0.0.1,addr.port=$PORT)
		fi
		"$VDISK" serve --object iothread,id=io0,poll-max-ns=65536 \
			--blockdev driver=file,node-name=f,filename="$IMG" \
			--nbd-server "${args[0]}" \
			--export type=nbd,id=e,node-name=f,name=,writable=on,iothread=io0 &
		;;
	qemu-nbd) qemu-nbd -f raw -t -e 0 "${args[@]}" "$IMG" & ;;
	nbdkit)
		if [ "$2" = unix ]; then args=(-U "$S"); else args=(-p $PORT -i 127.0.0.1); fi
		nbdkit -f "${args[@]}" file "$IMG" &
		;;
	esac
	pid=$!
	URI=$([ "$2" = unix ] && echo "nbd+unix:///?socket=$S" || echo "nbd://127.0.0.1:$PORT/")
	for _ in $(seq 200); do
		nbdinfo --size "$URI" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "bench: $1 did not start" >&2
	exit 1
}

stop_server() {
	kill -TERM $pid
	wait $pid 2>/dev/null || true
	pid=
}

fio_run() { # RW BS DEPTH UNIT -> "IOPS-or-MB/s client-cpu%"
	fio --name=t --ioengine=nbd --uri="$URI" --rw=$1 --bs=$2 --iodepth=$3 \
		--runtime=$SECS --time_based --output-format=json 2>/dev/null |
		python3 -c '
import json, sys
s = sys.stdin.read()
j = json.loads(s[s.index("{"):])["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] else j["write"]
print("%.0f %.0f" % (d["bw_bytes"] / 1e6 if sys.argv[1] == "mb" else d["iops"],
                    j["usr_cpu"] + j["sys_cpu"]))' "$4"
}

copy_run() { # -> MB/s
	local t0 t1
	t0=$(date +%s.%N)
	nbdcopy "$URI" null: >/dev/null
	t1=$(date +%s.%N)
	python3 -c "print('%.0f' % ($SIZE_MB * 1048576 / 1e6 / ($t1 - $t0)))"
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

ROWS=${ROWS:-"unix:randread:4k:1 unix:randread:4k:16 unix:randwrite:4k:1 unix:randwrite:4k:16 tcp:randread:4k:1 tcp:randread:4k:16 tcp:randwrite:4k:1 tcp:randwrite:4k:16 unix:read:1M:8 unix:nbdcopy"}
printf "%-26s" "row"
for s in $SERVERS; do printf "%12s" "$s"; done
printf "%10s%10s%10s%8s%8s\n" "/nbdkit" "/qemu-nbd" "/best" "cli%v" "cli%k"
for row in $ROWS; do
	IFS=: read -r tr rw bs depth <<<"$row"
	declare -A res=() cpu=()
	for _ in $(seq "$RUNS"); do
		for s in $SERVERS; do
			start_server "$s" "$tr"
			if [ "$rw" = nbdcopy ]; then
				v=$(copy_run)
			else
				unit=iops
				[ "$bs" = 1M ] && unit=mb
				read -r v u < <(fio_run "$rw" "$bs" "$depth" $unit)
				cpu[$s]="${cpu[$s]:-} $u"
			fi
			stop_server
			res[$s]="${res[$s]:-} $v"
		done
	done
	unit=IOPS
	{ [ "$rw" = nbdcopy ] || [ "$bs" = 1M ]; } && unit=MB/s
	printf "%-26s" "$row ($unit)"
	declare -A med=()
	for s in $SERVERS; do
		med[$s]=$(echo "${res[$s]}" | median)
		printf "%12s" "${med[$s]}"
	done
	python3 -c '
import sys
v, k, q = (float(x) if x else 0 for x in sys.argv[1:4])
r = lambda a, b: "%.2f" % (a / b) if b else "-"
print("%10s%10s%10s" % (r(v, k), r(v, q), r(v, max(k, q))), end="")' "${med[vdisk]:-}" "${med[nbdkit]:-}" "${med[qemu-nbd]:-}"
	printf "%8s%8s\n" "$(echo "${cpu[vdisk]:-}" | median)" "$(echo "${cpu[nbdkit]:-}" | median)"
	unset res med cpu
done
