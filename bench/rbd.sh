#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/rbd.sh -- Ceph RBD: `vdisk bench` on rbd: against `qemu-img bench`
# on rbd: (QEMU 7.2's librbd driver) and fio's rbd engine, on the same
# cluster and the same image, runs interleaved, medians of RUNS.
#
# Rows: 4 KiB random read and write at depth 1 and 32, 1 MiB sequential read
# and write at depth 8.  qemu-img bench has no random mode, so "random" is a
# stride of 769 blocks (a prime: the walk visits every 4 KiB block of the
# image once per lap, never two neighbours in a row) for both bench tools;
# fio uses its own random offsets (randread/randwrite).  Every tool opens the
# image without the librbd cache (-t none for the bench tools, a ceph.conf
# with "rbd cache = false" for fio).
#
#   qemu-img bench -f raw -t none -d D -s S -S STEP -c C [-w] rbd:POOL/IMG:conf=CONF
#   $BUILD/vdisk bench -f raw -t none -d D -s S -S STEP -c C [-w] rbd:POOL/IMG:conf=CONF
#   fio --ioengine=rbd --pool=POOL --rbdname=IMG --rw=rand* --bs=S --iodepth=D --number_ios=C
#
# The cluster: CEPH_CONF/CEPH_POOL of a running one (tests/lib/ceph-cluster.sh
# start), or a throw-away one started here (1 mon, 1 mgr, 3 memstore OSDs,
# replica size 2, on 127.0.0.1).
#
# Environment: BUILD (default build), RUNS (default 5; 1 with QUICK=1),
# COUNT4K / COUNT1M (requests per run; default 4000 / 200, QUICK: 300 / 30),
# IMAGE_SIZE (default 256M; 64M with QUICK=1), ROWS (only these rows, as
# OP:DEPTH:SIZE words, e.g. ROWS="randread:1:4k write:8:1M").
set -euo pipefail

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$SRCDIR"
BUILD=${BUILD:-build}
VDISK=${VDISK:-$BUILD/vdisk}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	RUNS=${RUNS:-1} COUNT4K=${COUNT4K:-300} COUNT1M=${COUNT1M:-30} IMAGE_SIZE=${IMAGE_SIZE:-64M}
else
	RUNS=${RUNS:-5} COUNT4K=${COUNT4K:-4000} COUNT1M=${COUNT1M:-200} IMAGE_SIZE=${IMAGE_SIZE:-256M}
fi
. "$SRCDIR/bench/lib.sh"
for tool in qemu-img fio python3 numfmt rbd; do
	command -v "$tool" >/dev/null || die "$tool not found (run scripts/install-deps)"
done
[ -x "$VDISK" ] || die "$VDISK not built (run make)"
fio --enghelp 2>/dev/null | grep -qw rbd || die "this fio has no rbd engine"

if [ -z "${CEPH_CONF:-}" ]; then
	. "$SRCDIR/tests/lib/ceph-cluster.sh"
	ceph_cluster_start || die "the ceph cluster did not start"
	started=1
fi
POOL=${CEPH_POOL:-rbd}
IMG=vdisk-bench
NAME="rbd:$POOL/$IMG:conf=$CEPH_CONF"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; [ -z "${started:-}" ] || ceph_cluster_stop' EXIT

# fio's rbd engine reads $CEPH_CONF and cannot turn the librbd cache off,
# which acknowledges writes before the OSDs have them (pacific's default
# rbd_cache_policy is writearound): it gets a copy of the conf that does.
FIO_CONF=$tmp/fio-ceph.conf
{
	cat "$CEPH_CONF"
	printf '[client]\nrbd cache = false\n'
} >"$FIO_CONF"

bytes=$(numfmt --from=iec "${IMAGE_SIZE^^}")
bytes=$((bytes / 1048576 * 1048576))
rbd -c "$CEPH_CONF" rm "$POOL/$IMG" >/dev/null 2>&1 || true
rbd -c "$CEPH_CONF" create --size "$((bytes / 1048576))M" "$POOL/$IMG" >/dev/null
log "filling $POOL/$IMG ($bytes bytes)..."
rbd -c "$CEPH_CONF" bench --io-type write --io-size 4M --io-threads 4 --io-total "$bytes" \
	--io-pattern seq "$POOL/$IMG" >/dev/null

# bench_iops TOOL OP D S C: one qemu-img or vdisk bench run; IOPS or "-".
bench_iops()
{
	local tool=$1 op=$2 d=$3 s=$4 c=$5 out=$tmp/out step
	case "$op" in
	rand*) step=$((769 * 4096)) ;;
	*) step=$(numfmt --from=iec "${s^^}") ;;
	esac
	local cmd=(-f raw -t none -d "$d" -s "$s" -S "$step" -c "$c")
	case "$op" in *write) cmd+=(-w) ;; esac
	if [ "$tool" = qemu-img ]; then
		cmd=(qemu-img bench "${cmd[@]}" "$NAME")
	else
		cmd=("$VDISK" bench "${cmd[@]}" "$NAME")
	fi
	if ! "${cmd[@]}" >"$out" 2>&1 || [ -z "$(run_seconds "$out")" ]; then
		log "FAILED: ${cmd[*]}"
		sed 's/^/    /' "$out" >&2
		echo -
		return
	fi
	iops_of "$c" "$out"
}

fio_iops()
{
	local op=$1 d=$2 s=$3 c=$4 out=$tmp/fio.json rw=$1
	local cmd=(fio --name=rbd --ioengine=rbd --clientname=admin --pool="$POOL" --rbdname="$IMG"
		--rw="$rw" --bs="$s" --iodepth="$d" --size="$bytes" --number_ios="$c"
		--io_size=$((c * $(numfmt --from=iec "${s^^}"))) --randrepeat=0
		--output-format=json --output="$out")
	if ! CEPH_CONF=$FIO_CONF "${cmd[@]}" >"$tmp/fio.err" 2>&1; then
		log "FAILED: ${cmd[*]}"
		sed 's/^/    /' "$tmp/fio.err" >&2
		echo -
		return
	fi
	python3 - "$out" "$op" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])
kind = "write" if sys.argv[2].endswith("write") else "read"
print("%.0f" % doc["jobs"][0][kind]["iops"])
EOF
}

echo "## Ceph RBD: vdisk bench vs qemu-img bench vs fio (rbd engine)"
echo
echo "Produced by \`RUNS=$RUNS COUNT4K=$COUNT4K COUNT1M=$COUNT1M IMAGE_SIZE=$IMAGE_SIZE QUICK=$QUICK bench/rbd.sh\`"
echo "(runs interleaved, median of $RUNS)."
echo
versions
echo "- $(fio --version); $(ceph --version 2>/dev/null | cut -d' ' -f1-3)"
echo "- cluster: 1 mon, 1 mgr, $(ceph -c "$CEPH_CONF" osd ls 2>/dev/null | wc -l) OSDs (memstore) on 127.0.0.1," \
	"pool $POOL size $(ceph -c "$CEPH_CONF" osd pool get "$POOL" size -f json 2>/dev/null |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])' 2>/dev/null || echo '?');" \
	"image $IMAGE_SIZE, 4 MiB objects"
echo
echo "| op | depth | size | count | qemu-img IOPS | vdisk IOPS | vdisk/qemu-img | fio IOPS | vdisk/fio |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
failed=0
for row in randread:1:4k randread:32:4k randwrite:1:4k randwrite:32:4k read:8:1M write:8:1M; do
	IFS=: read -r op d s <<<"$row"
	if [ -n "${ROWS:-}" ] && ! [[ " $ROWS " == *" $row "* ]]; then
		continue
	fi
	c=$COUNT4K
	[ "$s" = 1M ] && c=$COUNT1M
	log "$op depth=$d size=$s count=$c: $RUNS runs"
	q=() v=() f=()
	for ((r = 0; r < RUNS; r++)); do
		q+=("$(bench_iops qemu-img "$op" "$d" "$s" "$c")")
		v+=("$(bench_iops vdisk "$op" "$d" "$s" "$c")")
		f+=("$(fio_iops "$op" "$d" "$s" "$c")")
	done
	if printf '%s\n' "${q[@]}" "${v[@]}" "${f[@]}" | grep -x -- - >/dev/null; then
		failed=1
	fi
	qm=$(median "${q[@]}")
	vm=$(median "${v[@]}")
	fm=$(median "${f[@]}")
	echo "| $op | $d | $s | $c | $qm | $vm | $(ratio "$vm" "$qm") | $fm | $(ratio "$vm" "$fm") |"
done
rbd -c "$CEPH_CONF" rm "$POOL/$IMG" >/dev/null 2>&1 || true
exit $failed
