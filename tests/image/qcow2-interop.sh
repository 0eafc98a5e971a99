#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# qcow2 interoperability with QEMU 7.2's qemu-img and qemu-io: the matrix of
# issue 3's acceptance tests.  Rows (qemu-img accepts each combination):
#   compat=1.1 with cluster sizes 512, 2K, 8K, 32K, 64K, 512K, 2M;
#   refcount_bits 1, 16 and 64 on 64 KiB clusters;
#   extended_l2 on 16K, 64K and 2M clusters;  compat=0.10 on 64K clusters;
#   zlib and zstd compressed images (their first 8 MiB made by
#   `qemu-img convert -c`, then the workload, compressing more);
#   a backing chain of 3 (raw, shorter than the overlays, under a qcow2
#   that qemu-io filled, under the qcow2 the workload writes);
#   an image with two internal snapshots (taken between thirds of the
#   workload, by qemu-img on QEMU's image and by vdisk on vdisk's; 4 KiB
#   clusters, so that the workload meets many L2 tables the snapshots share).
# Each row: a 64 MiB image and a seeded workload of QCOW2_OPS (200) commands
# (writes of odd sizes and offsets, write -z with and without -u, discard,
# flush, compressed writes of whole clusters) run by qemu-io on image A and
# by `vdisk io` on image B, one process each (per third for snapshots).
#  - vdisk to QEMU: `qemu-img check B` exits 0 (vdisk check too),
#    `qemu-img compare A B` finds them identical;
#  - QEMU to vdisk: every byte of A, as `qemu-img convert` reads it, reads
#    back through `vdisk io` (read -P over each run of equal bytes: the
#    workload only writes patterns);
#  - snapshots: qemu-img lists and applies the ones vdisk made on B, vdisk
#    lists and applies the ones qemu-img made on A; each applied snapshot
#    is clean and equals QEMU's view of it (qemu-img convert -l); then
#    vdisk deletes one of its own, qemu-img check still clean.
# Then: images made by `vdisk create` are clean for qemu-img and usable by
# qemu-io.  The bugs this matrix found have their named reproducers in
# tests/image/qcow2-regressions.sh.
#
# The seed is printed at the start and in every failure; rerun one row with
# QCOW2_SEED=N QCOW2_ROWS=NAME.  Rows run QCOW2_JOBS (2) at a time.
# VDISK_QUICK=1 (ASan) runs every row with fewer commands.
set -uo pipefail

. "$(dirname "$0")/../lib/common.sh"
# Scratch space in memory when there is some: the tools flush after each
# write (writethrough, FUA), which costs more on disk than the rest.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
vd_setup qemu-img qemu-io python3

OPS=${QCOW2_OPS:-200}
[ -n "${VDISK_QUICK:-}" ] && OPS=${QCOW2_OPS:-80}
SEED=${QCOW2_SEED:-$(((RANDOM << 15) | RANDOM))}
JOBS=${QCOW2_JOBS:-2}
SIZE=$((64 << 20))
echo "seed $SEED, $OPS commands per row"

cat >wl.py <<'PY'
# Helper of tests/image/qcow2-interop.sh (written there to $T/wl.py).
#
#   wl.py gen SEED CLUSTER SIZE NOPS COMPRESS_PCT RESERVED PHASES
#       A seeded list of qemu-io commands for an image of SIZE bytes, "#phase"
#       lines between PHASES parts.  Writes of odd sizes and offsets with
#       patterns, write -z with and without -u, discard, flush, and
#       compressed writes (whole clusters, never into a cluster touched
#       before, as qemu-io refuses to compress over an allocated cluster;
#       clusters below RESERVED count as touched).
#   wl.py runs RAW
#       "read -q -P V OFF LEN" commands covering RAW, a file made of runs of
#       constant bytes (all the workload writes), in pieces of at most 4 MiB.
#   wl.py pattern FILE SIZE SEED
#       A file of SIZE bytes made of runs of random constant bytes.
import random
import re
import sys


def gen(seed, cluster, size, nops, compress_pct, reserved, phases):
    r = random.Random(seed)
    nclusters = size // cluster
    touched = set(range(reserved // cluster))
    compressed = set()  # clusters holding compressed data written here
    runs_c = []  # (offset, length) of compressed writes
    hot_len = min(size, max(2 << 20, 16 * cluster))
    hot = r.randrange(0, size - hot_len + 1) // cluster * cluster
    # QEMU 7.2 (qcow2_alloc_bytes) keeps appending compressed data to a host
    # cluster after that cluster was freed and reused, which corrupts its
    # image.  So the compressed writes all come before the first command that
    # may free one of them (the first `cutoff` commands), and the commands
    # after it work on them (copy-on-write from compressed clusters).
    cutoff = nops * 6 // 10
    out = []

    def clusters(off, length):
        return range(off // cluster, (off + length - 1) // cluster + 1)

    def place(length):
        if r.random() < 0.5:
            off = hot + r.randrange(0, hot_len)
        else:
            off = r.randrange(0, size)
        k = r.random()
        if k < 0.2:  # at or around a cluster boundary
            off = off // cluster * cluster + r.choice([0, 0, 1, -1, 512, -512, 4096])
        elif k < 0.4:
            off = off // 512 * 512
        off = max(0, min(off, size - 1))
        return off, max(1, min(length, size - off))

    def length():
        k = r.random()
        if k < 0.45:
            return r.randrange(1, 9000)
        if k < 0.8:
            return r.randrange(1, 150000)
        if k < 0.9:
            return r.randrange(1, 5) * cluster + r.choice([0, 0, 1, 511, 4095])
        return r.randrange(1, 1 << 21)

    def compressed_write():
        n = r.randrange(1, 4) if cluster < (1 << 20) else 1
        for _ in range(40):
            if r.random() < 0.4:
                c = (hot + r.randrange(0, hot_len)) // cluster
            else:
                c = r.randrange(0, nclusters)
            c = min(c, nclusters - n)
            if all(x not in touched for x in range(c, c + n)):
                touched.update(range(c, c + n))
                compressed.update(range(c, c + n))
                runs_c.append((c * cluster, n * cluster))
                return "write -c -P %d %d %d" % (r.randrange(1, 256), c * cluster, n * cluster)
        return None

    per_phase = [nops // phases + (1 if i < nops % phases else 0) for i in range(phases)]
    done = 0
    for p, count in enumerate(per_phase):
        if p:
            out.append("#phase")
        for _ in range(count):
            before = done < cutoff
            done += 1
            k = r.randrange(100)
            cmd = None
            if before and k < compress_pct:
                cmd = compressed_write()
            elif not before and k < 15 and runs_c:
                # Into a compressed run: copy-on-write from it, or free it.
                off, ln = r.choice(runs_c)
                o = off + r.randrange(0, ln)
                ln = max(1, min(r.randrange(1, cluster + 1), off + ln - o))
                verb = r.choice(["write -P %d" % r.randrange(1, 256)] * 3 +
                                ["write -z", "write -z -u", "discard"])
                cmd = "%s %d %d" % (verb, o, ln)
            while cmd is None:
                k = r.randrange(100)
                off, ln = place(length())
                if before and any(c in compressed for c in clusters(off, ln)):
                    continue
                if k < 55:
                    cmd = "write -P %d %d %d" % (r.randrange(1, 256), off, ln)
                elif k < 67:
                    cmd = "write -z %d %d" % (off, ln)
                elif k < 79:
                    cmd = "write -z -u %d %d" % (off, ln)
                elif k < 95:
                    cmd = "discard %d %d" % (off, ln)
                else:
                    cmd = "flush"
                    break
                touched.update(clusters(off, ln))
            out.append(cmd)
    return out


def runs(path, chunk=4 << 20):
    data = open(path, "rb").read()
    out = []
    off, n = 0, len(data)
    while off < n:
        v = data[off]
        end, w = off, 4096
        while end < n:  # the end of the run of v (lstrip runs in C)
            seg = data[end:end + w]
            rest = seg.lstrip(bytes([v]))
            end += len(seg) - len(rest)
            if rest:
                break
            w = min(w * 2, 16 << 20)
        while off < end:
            k = min(chunk, end - off)
            out.append("read -q -P %d %d %d" % (v, off, k))
            off += k
    return out


def pattern(path, size, seed):
    r = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, r.randrange(1, 3 << 20))
            f.write(bytes([r.randrange(0, 256)]) * n)
            left -= n


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        print("\n".join(gen(*map(int, sys.argv[2:9]))))
    elif sys.argv[1] == "runs":
        print("\n".join(runs(sys.argv[2])))
    elif sys.argv[1] == "pattern":
        pattern(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
PY

# name|kind|create options.  kind: plain, compressed, chain, snapshots.
ROWS=(
	"c512|plain|compat=1.1,cluster_size=512"
	"c2k|plain|compat=1.1,cluster_size=2048"
	"c8k|plain|compat=1.1,cluster_size=8192"
	"c32k|plain|compat=1.1,cluster_size=32768"
	"c64k|plain|compat=1.1,cluster_size=65536"
	"c512k|plain|compat=1.1,cluster_size=524288"
	"c2m|plain|compat=1.1,cluster_size=2097152"
	"rc1|plain|refcount_bits=1,cluster_size=65536"
	"rc16|plain|refcount_bits=16,cluster_size=65536"
	"rc64|plain|refcount_bits=64,cluster_size=65536"
	"el2-16k|plain|extended_l2=on,cluster_size=16384"
	"el2-64k|plain|extended_l2=on,cluster_size=65536"
	"el2-2m|plain|extended_l2=on,cluster_size=2097152"
	"v2|plain|compat=0.10,cluster_size=65536"
	"zlib|compressed|compression_type=zlib"
	"zstd|compressed|compression_type=zstd"
	"chain|chain|cluster_size=65536"
	"snapshots|snapshots|cluster_size=4096"
)

# run_ops TOOL IMG FILE: the commands of FILE through qemu-io or vdisk io,
# all in one process; fails on an exit status or a "failed" line.
run_ops() {
	local tool=$1 img=$2 file=$3 args=() line rc=0
	while IFS= read -r line; do args+=(-c "$line"); done <"$file"
	[ ${#args[@]} -gt 0 ] || return 0
	if [ "$tool" = qemu ]; then
		qemu-io -f qcow2 "${args[@]}" "$img" >"$file.out" 2>&1 || rc=$?
	else
		"$VDISK" io -f qcow2 "${args[@]}" "$img" >"$file.out" 2>&1 || rc=$?
	fi
	if [ $rc != 0 ] || grep -qi "failed\|error" "$file.out"; then
		grep -i "failed\|error" "$file.out" | head -3
		return 1
	fi
}

# vdisk_reads IMG RAW: every byte of RAW reads back from IMG through vdisk io.
vdisk_reads() {
	local rc=0
	python3 ../wl.py runs "$2" >reads.cmds
	"$VDISK" io -r -f qcow2 "$1" <reads.cmds >reads.out 2>&1 || rc=$?
	if [ $rc != 0 ] || grep -qi "failed\|error" reads.out; then
		grep -i "failed\|error" reads.out | head -3
		return 1
	fi
}

# row INDEX NAME KIND OPTS: one row in directory NAME; prints "ok: ..." or
# FAIL lines, and returns 1 on failure.
row() {
	local idx=$1 name=$2 kind=$3 opts=$4
	local seed=$((SEED + 7919 * idx)) cs=65536 cpct=10 reserved=0 phases=1
	local bad=0 p s rc
	mkdir "$name" && cd "$name" || return 1
	rfail() {
		echo "FAIL [$name] $* (seed $seed; rerun: QCOW2_SEED=$SEED QCOW2_ROWS=$name)"
		bad=1
	}
	case $opts in *cluster_size=*) cs=${opts##*cluster_size=} cs=${cs%%,*} ;; esac

	case $kind in
	compressed)
		cpct=30
		reserved=$((8 << 20))
		python3 ../wl.py pattern pre.raw $reserved $((seed + 1))
		truncate -s $SIZE pre.raw
		qemu-img convert -c -O qcow2 -o "$opts" pre.raw A.qcow2 || rfail "qemu-img convert -c"
		;;
	chain)
		# raw base shorter than the overlays, a middle qcow2 that qemu-io
		# filled, the top one gets the workload.
		python3 ../wl.py pattern base.raw $(((48 << 20) + 12288)) $((seed + 1))
		qemu-img create -q -f qcow2 -o "$opts" -b base.raw -F raw mid.qcow2 $SIZE
		python3 ../wl.py gen $((seed + 2)) "$cs" $SIZE $((OPS / 2)) 10 0 1 >mid.cmds
		run_ops qemu mid.qcow2 mid.cmds || rfail "qemu-io on the middle image"
		qemu-img create -q -f qcow2 -o "$opts" -b mid.qcow2 -F qcow2 A.qcow2 $SIZE
		;;
	snapshots)
		phases=3
		qemu-img create -q -f qcow2 -o "$opts" A.qcow2 $SIZE
		;;
	*) qemu-img create -q -f qcow2 -o "$opts" A.qcow2 $SIZE ;;
	esac
	[ -f A.qcow2 ] || { rfail "no image"; cd ..; return 1; }
	cp A.qcow2 B.qcow2
	python3 ../wl.py gen "$seed" "$cs" $SIZE "$OPS" $cpct $reserved $phases >all.cmds
	csplit -s -z -f phase all.cmds '/^#phase$/' '{*}'
	p=0
	for f in phase*; do
		grep -v '^#' "$f" >"ops$p.cmds"
		run_ops qemu A.qcow2 "ops$p.cmds" || rfail "qemu-io workload part $p"
		cp "ops$p.cmds" "vops$p.cmds"
		run_ops vdisk B.qcow2 "vops$p.cmds" || rfail "vdisk io workload part $p"
		p=$((p + 1))
		if [ "$kind" = snapshots ] && [ $p -lt $phases ]; then
			qemu-img snapshot -c "s$p" A.qcow2 || rfail "qemu-img snapshot -c s$p"
			"$VDISK" snapshot -c "s$p" B.qcow2 || rfail "vdisk snapshot -c s$p"
		fi
	done

	# vdisk to QEMU.
	rc=0
	qemu-img check B.qcow2 >check.out 2>&1 || rc=$?
	[ $rc = 0 ] || { head -5 check.out; rfail "qemu-img check of vdisk's image exited $rc"; }
	rc=0
	"$VDISK" check B.qcow2 >vcheck.out 2>&1 || rc=$?
	[ $rc = 0 ] || { head -5 vcheck.out; rfail "vdisk check of its own image exited $rc"; }
	qemu-img compare -q A.qcow2 B.qcow2 || rfail "qemu-img compare: vdisk's image differs from qemu-io's"

	# QEMU to vdisk.
	rc=0
	"$VDISK" check A.qcow2 >vcheck.out 2>&1 || rc=$?
	[ $rc = 0 ] || { head -5 vcheck.out; rfail "vdisk check of QEMU's image exited $rc"; }
	qemu-img convert -O raw A.qcow2 A.raw
	vdisk_reads A.qcow2 A.raw || rfail "vdisk io reads QEMU's image differently from qemu-img"

	if [ "$kind" = snapshots ]; then
		qemu-img snapshot -l B.qcow2 >qlist || rfail "qemu-img snapshot -l"
		"$VDISK" snapshot -l A.qcow2 >vlist || rfail "vdisk snapshot -l"
		for s in s1 s2; do
			grep -Eq "^[0-9]+ +$s " qlist || rfail "qemu-img does not list vdisk's snapshot $s"
			grep -Eq "^[0-9]+ +$s " vlist || rfail "vdisk does not list qemu-img's snapshot $s"
			qemu-img convert -l "snapshot.name=$s" -O raw A.qcow2 "$s.raw"
			# vdisk's snapshot, applied by qemu-img.
			cp B.qcow2 "B-$s.qcow2"
			qemu-img snapshot -a "$s" "B-$s.qcow2" || rfail "qemu-img snapshot -a $s (vdisk's)"
			qemu-img check -q "B-$s.qcow2" || rfail "qemu-img check after qemu-img applied $s"
			qemu-img compare -q -F raw "B-$s.qcow2" "$s.raw" ||
				rfail "vdisk's snapshot $s, applied by qemu-img, differs"
			# qemu-img's snapshot, applied by vdisk.
			cp A.qcow2 "A-$s.qcow2"
			"$VDISK" snapshot -a "$s" "A-$s.qcow2" || rfail "vdisk snapshot -a $s (qemu-img's)"
			qemu-img check -q "A-$s.qcow2" || rfail "qemu-img check after vdisk applied $s"
			qemu-img compare -q -F raw "A-$s.qcow2" "$s.raw" ||
				rfail "qemu-img's snapshot $s, applied by vdisk, differs"
			vdisk_reads "A-$s.qcow2" "$s.raw" || rfail "vdisk reads snapshot $s differently"
			rm -f "A-$s.qcow2" "B-$s.qcow2" "$s.raw"
		done
		"$VDISK" snapshot -d s1 B.qcow2 || rfail "vdisk snapshot -d s1"
		qemu-img check -q B.qcow2 || rfail "qemu-img check after vdisk deleted s1"
		qemu-img snapshot -l B.qcow2 | grep -Eq "^[0-9]+ +s1 " && rfail "s1 still listed"
		qemu-img compare -q A.qcow2 B.qcow2 || rfail "deleting s1 changed the active image"
	fi
	cd .. || return 1
	[ $bad = 0 ] || return 1
	rm -rf "$name"
	echo "ok: $name ($opts, $kind, $OPS commands)"
}

# Rows QCOW2_JOBS at a time, each with its own log and status file.
idx=0
for r in "${ROWS[@]}"; do
	IFS='|' read -r name kind opts <<<"$r"
	idx=$((idx + 1))
	if [ -n "${QCOW2_ROWS:-}" ] && [[ " $QCOW2_ROWS " != *" $name "* ]]; then continue; fi
	while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
	{
		row $idx "$name" "$kind" "$opts"
		echo $? >"$name.rc"
	} >"$name.log" 2>&1 &
done
wait
failed=0
ran=0
for r in "${ROWS[@]}"; do
	IFS='|' read -r name _ <<<"$r"
	[ -f "$name.log" ] || continue
	ran=$((ran + 1))
	cat "$name.log"
	[ "$(cat "$name.rc" 2>/dev/null)" = 0 ] || failed=1
done
[ $ran -gt 0 ] || fail "no row matches QCOW2_ROWS=${QCOW2_ROWS:-}"
[ $failed = 0 ] || fail "seed $SEED: see the rows above"

# Images made by vdisk create: clean for qemu-img, usable by qemu-io, and
# vdisk reads back what qemu-io wrote.
for opts in "" "cluster_size=512,refcount_bits=1" "compat=0.10" "extended_l2=on,lazy_refcounts=on" \
	"preallocation=metadata"; do
	"$VDISK" create -q -f qcow2 ${opts:+-o "$opts"} v.qcow2 16M || fail "vdisk create $opts"
	qemu-img check -q v.qcow2 || fail "[create $opts] qemu-img check"
	qemu-io -f qcow2 -c "write -P 0x5a 1234 300000" v.qcow2 >out 2>&1 ||
		fail "[create $opts] qemu-io on a vdisk image: $(cat out)"
	"$VDISK" io -f qcow2 -c "read -P 0x5a 1234 300000" v.qcow2 >out 2>&1 ||
		fail "[create $opts] vdisk reads back qemu-io's data: $(cat out)"
	! grep -qi "fail" out || fail "[create $opts] vdisk reads back qemu-io's data: $(cat out)"
done
# Byte-identical layout for the default options.
"$VDISK" create -q -f qcow2 v.qcow2 1G && qemu-img create -q -f qcow2 q.qcow2 1G &&
	{ cmp -s v.qcow2 q.qcow2 || fail "vdisk create differs from qemu-img create (1G)"; }
echo "ok: vdisk create"
echo PASS
