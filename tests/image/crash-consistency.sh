#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Crash consistency: a `vdisk io` workload is killed with SIGKILL at a random
# point, CRASH_ITERATIONS times (default 50; `make check-crash` runs more) per
# format in CRASH_FORMATS (default "qcow2 raw", each skipped if vdisk lacks
# it; raw, which has no metadata, gets a fifth of the kills).  Only a kill of
# a running workload counts (one that already ended is retried, at most as
# many times again; one that failed on its own fails the test).  After each kill:
#  - `qemu-img check` reports at most leaked clusters (exit 0 or 3), for
#    formats that have checks;
#  - every write that completed before the last completed flush reads back
#    with its pattern through qemu-io (the flushed data survived).
# Each write goes to its own region, written once, so "what must be there"
# is exact.  A flush has completed when the command after it has printed its
# result: `vdisk io` runs commands in order and flushes its output after each.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

ITER=${CRASH_ITERATIONS:-50}
[ -n "${VDISK_QUICK:-}" ] && ITER=${CRASH_ITERATIONS:-10}
FORMATS=${CRASH_FORMATS:-qcow2 raw}
SEED=${CRASH_SEED:-$RANDOM}
echo "seed $SEED, $ITER iterations per format"

# The workload: 400 writes of 1..48 KiB into separate 64 KiB regions of a
# 32 MiB image, some as write-zeroes; a flush after every 8 commands.
python3 - "$SEED" >workload <<'PY'
import random, sys
r = random.Random(int(sys.argv[1]))
regions = list(range(512))
r.shuffle(regions)
for i, reg in enumerate(regions[:400]):
    off = reg * 65536 + r.randrange(0, 16) * 512
    length = r.randrange(1, 97) * 512
    pat = 1 + i % 250
    if r.random() < 0.15:
        print("write -z %d %d" % (off, length))
    else:
        print("write -P %d %d %d" % (pat, off, length))
    if i % 8 == 7:
        print("flush")
PY

# verify FMT IMG LOG: the writes before the last flush whose successor ran.
verify() {
	python3 - "$1" "$2" "$3" workload <<'PY'
import subprocess, sys
fmt, img, log, wl = sys.argv[1:5]
cmds = [l.rstrip("\n") for l in open(wl)]
# (lines may start with the "vdisk io> " prompt, as qemu-io's do)
done = open(log).read().count("wrote ")
# Commands that printed: the first `done` writes (flushes print nothing).
# The flushes that completed are those followed by a write that printed.
writes_seen = 0
durable_upto = 0  # index into cmds: all before it are durable
for idx, c in enumerate(cmds):
    if c.startswith("write"):
        if writes_seen >= done:
            break
        writes_seen += 1
    elif c == "flush":
        # this flush completed if the next write printed
        if writes_seen < done:
            durable_upto = idx
checks = []
for c in cmds[:durable_upto]:
    if not c.startswith("write"):
        continue
    parts = c.split()
    if parts[1] == "-z":
        checks.append("read -q -P 0 %s %s" % (parts[2], parts[3]))
    else:
        checks.append("read -q -P %s %s %s" % (parts[2], parts[3], parts[4]))
if not checks:
    sys.exit(0)
args = ["qemu-io", "-f", fmt, "-r"]
for c in checks:
    args += ["-c", c]
out = subprocess.run(args + [img], capture_output=True, text=True)
bad = [l for l in (out.stdout + out.stderr).splitlines() if "failed" in l.lower()]
if bad or out.returncode != 0:
    print("flushed data lost (%d writes checked):" % len(checks))
    print("\n".join(bad[:10]) or out.stderr)
    sys.exit(1)
PY
}

tested=0
kills=
for fmt in $FORMATS; do
	if ! "$VDISK" --version | grep -qw "$fmt"; then
		echo "format $fmt: not built, skipped"
		continue
	fi
	tested=1
	# raw has no metadata to corrupt: a few kills check the harness there.
	n=$ITER
	[ "$fmt" = raw ] && n=$(((ITER + 4) / 5))
	# Only a SIGKILL of a running workload counts: one that ended before
	# its kill is not a kill, one that failed on its own fails the test.
	# Kill points are drawn within the time a whole run takes on this
	# machine (timed once, uninterrupted), so that a fast machine does not
	# see its workloads end before the kill.
	rm -f img
	qemu-img create -q -f "$fmt" img 32M
	t0=$EPOCHREALTIME
	"$VDISK" io -f "$fmt" img <workload >log 2>err || {
		cat err
		fail "$fmt: the uninterrupted workload failed"
	}
	full=$(python3 -c "print('%.3f' % max(0.02, 0.8 * ($EPOCHREALTIME - $t0)))")
	echo "$fmt: a whole run takes about $(python3 -c "print('%.3f' % ($full / 0.8))") s; kills within the first $full s"
	killed=0
	i=0
	while [ $killed -lt "$n" ]; do
		i=$((i + 1))
		[ $i -le $((2 * n)) ] || fail "$fmt: only $killed of $i workloads were still running at the kill"
		rm -f img
		qemu-img create -q -f "$fmt" img 32M
		delay=$(python3 -c "import random; r=random.Random($SEED*1000+$i); print('%.3f' % r.uniform(0.005, $full))")
		"$VDISK" io -f "$fmt" img <workload >log 2>err &
		pid=$!
		sleep "$delay"
		kill -9 "$pid" 2>/dev/null || true
		st=0
		wait "$pid" 2>/dev/null || st=$?
		case $st in
		137) killed=$((killed + 1)) ;;
		0) echo "iteration $i: the workload ended before the kill (delay $delay s)" ;;
		*)
			cat err
			fail "$fmt iteration $i: vdisk io exited $st on its own"
			;;
		esac
		# A killed process's io_uring instance is torn down by the kernel
		# after the process is reaped (a workqueue, on recent kernels): the
		# file, and its OFD image lock, may stay held for a moment.  Wait
		# for the lock to go (at most 10 s) rather than fail on it.
		for _ in $(seq 100); do
			qemu-img info img >/dev/null 2>&1 && break
			sleep 0.1
		done
		if [ "$fmt" != raw ]; then
			rc=0
			qemu-img check -q img >check.out 2>&1 || rc=$?
			if [ $rc != 0 ] && [ $rc != 3 ]; then
				cat check.out
				fail "$fmt iteration $i (delay $delay s): qemu-img check exited $rc"
			fi
		fi
		# Self-test of the checker: CRASH_CORRUPT_FOR_TEST=1 overwrites the
		# image after the kill, and the verification must then fail.
		[ -n "${CRASH_CORRUPT_FOR_TEST:-}" ] &&
			qemu-io -f "$fmt" -c 'write -q -P 0xee 0 32M' img >/dev/null
		verify "$fmt" img log || fail "$fmt iteration $i (delay $delay s)"
		kills="$kills $(grep -o 'wrote ' log | wc -l)"
	done
	echo "format $fmt: writes completed at each kill:$kills"
	kills=
	echo "format $fmt: $killed kills, no corruption, flushed data intact"
done
[ $tested = 1 ] || skip "none of the formats $FORMATS is built"
echo PASS
