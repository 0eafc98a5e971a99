#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk commit killed with SIGKILL: base <- mid <- top (qcow2), the commit
# slowed down with -r so that the kill lands while data is copied, or (no
# -r, larger top) while the top image is being emptied.  After each kill:
#  - qemu-img check on base, mid and top reports at most leaks (exit 0 or 3);
#  - the top image still reads exactly what it read before (qemu-img
#    compare against a raw copy taken before); mid (the commit's base)
#    reads, cluster by cluster, what it did or what the top shows;
#  - the base alone opens and reads to the end;
#  - running the commit again to the end gives the expected images.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

KILLS=${COMMIT_KILLS:-6}
[ -n "${VDISK_QUICK:-}" ] && KILLS=3

# Random data so that a wrong cluster shows.
head -c $((24 << 20)) /dev/urandom >rand.bin

make_chain() {
	rm -f base.qcow2 mid.qcow2 top.qcow2
	qemu-img create -q -f qcow2 base.qcow2 64M
	qemu-io -f qcow2 -c 'write -P 1 0 8M' base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
	qemu-io -f qcow2 -c 'write -P 2 4M 8M' mid.qcow2 >/dev/null
	# top: mid's content with 24 MiB of random data at 16M and small
	# random writes every 1.5M, written as an overlay of mid.
	qemu-img convert -f qcow2 -O raw mid.qcow2 top.raw
	dd if=rand.bin of=top.raw bs=1M seek=16 conv=notrunc status=none
	for i in $(seq 0 40); do
		dd if=rand.bin of=top.raw bs=4k count=1 skip=$i seek=$((i * 384)) conv=notrunc \
			status=none
	done
	qemu-img convert -f raw -O qcow2 -o cluster_size=512 -B mid.qcow2 -F qcow2 top.raw top.qcow2
	rm -f top.raw
	qemu-img convert -f qcow2 -O raw top.qcow2 top.expect
	own_bytes top.qcow2 >own.before
	qemu-img convert -f qcow2 -O raw mid.qcow2 mid.expect
}

# own_bytes IMG: bytes the image itself allocates (depth 0 in qemu-img map).
own_bytes() {
	qemu-img map -f qcow2 --output=json "$1" |
		python3 -c 'import json,sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0))'
}

check_state() {
	local what=$1 f rc
	for f in base.qcow2 mid.qcow2 top.qcow2; do
		rc=0
		qemu-img check -q "$f" >ck.out 2>&1 || rc=$?
		[ "$rc" = 0 ] || [ "$rc" = 3 ] || fail "$what: qemu-img check $f: exit $rc: $(cat ck.out)"
	done
	qemu-img compare -q -f qcow2 -F raw top.qcow2 top.expect ||
		fail "$what: the top image no longer reads what it did"
	# The middle image (the commit's base) reads, cluster by cluster,
	# either what it did or what the top shows there.
	qemu-img convert -f qcow2 -O raw mid.qcow2 mid.now
	python3 - mid.now mid.expect top.expect <<'PY' || fail "$what: mid reads something else"
import sys
now, old, new = (open(f, "rb") for f in sys.argv[1:4])
off = 0
while True:
    a, b, c = now.read(65536), old.read(65536), new.read(65536)
    if not a and not b:
        break
    if a != b and a != c:
        sys.exit("cluster at %#x is neither the old nor the committed data" % off)
    off += 65536
PY
	rm -f mid.now
	qemu-io -f qcow2 -c 'read 0 64M' base.qcow2 >/dev/null || fail "$what: base unreadable"
}

killed=0 tries=0 emptying=0
while [ "$killed" -lt "$KILLS" ] && [ "$tries" -lt $((KILLS * 3)) ]; do
	tries=$((tries + 1))
	make_chain
	case $((tries % 3)) in
	0) args="-r 16M" delay=0.$((RANDOM % 9 + 1)) ;;     # while copying
	1) args="-r 64M" delay=0.$((RANDOM % 5 + 1)) ;;     # copying, faster
	2) args="" delay=0.$((RANDOM % 3))$((RANDOM % 10)) ;; # copy or emptying
	esac
	# shellcheck disable=SC2086
	"$VDISK" commit -q -f qcow2 $args top.qcow2 >commit.out 2>&1 &
	pid=$!
	sleep "$delay"
	if kill -KILL "$pid" 2>/dev/null; then
		wait "$pid" 2>/dev/null || true
		killed=$((killed + 1))
		# The kernel tears an io_uring instance down after the process is
		# gone: its files (and their image locks) go a moment later, one
		# by one.  qemu-img info opens only the top; map opens the chain.
		for _ in $(seq 100); do
			qemu-img map -f qcow2 top.qcow2 >/dev/null 2>&1 && break
			sleep 0.1
		done
		# Killed while the top was being emptied?
		now=$(own_bytes top.qcow2)
		[ "$now" -lt "$(cat own.before)" ] && emptying=$((emptying + 1))
	else
		wait "$pid" || fail "commit failed on its own: $(cat commit.out)"
	fi
	check_state "kill $tries ($args, after ${delay}s)"
	# Finish the job: the result is what an uninterrupted commit gives.
	"$VDISK" commit -q -f qcow2 top.qcow2 || fail "commit after the kill"
	qemu-img compare -q -f qcow2 -F raw top.qcow2 top.expect || fail "top after re-commit"
	qemu-img compare -q -f qcow2 -F raw mid.qcow2 top.expect || fail "mid after re-commit"
	qemu-img check -q mid.qcow2 >/dev/null 2>&1 || [ $? = 3 ] || fail "mid check after re-commit"
done
[ "$killed" -gt 0 ] || fail "no commit was still running when killed"
echo "PASS ($killed kills in $tries runs, $emptying of them while the top was emptied)"
