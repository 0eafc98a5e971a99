#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Backing chains through qemu-img and vdisk side by side: the same command
# line run by each tool on its own copy of the same images (directories q/
# and v/, so that file names match), then compared.
#
#   create -b/-F/-u   the overlays' info JSON equal, qemu-img check clean
#   info              --backing-chain and the snapshot table: human text and
#                     JSON identical on the same images (bitmaps too)
#   rebase            safe (to a deeper image, to a foreign one, -b "") and
#                     unsafe: images equal under qemu-img compare, chains'
#                     JSON equal, check clean
#   commit            default, -d, -b BASE: every image of the chain equal,
#                     the top's allocation map equal (emptied or not)
#   errors            exit codes equal, vdisk's message a "vdisk: " line
#
# Chains: qcow2 v3, v2 (compat=0.10), extended L2, compressed base, raw
# base, with internal snapshots; 2 and 3 deep.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

# json_same A B [DROP...]: equal after dropping keys only one side has and
# the keys named (recursively, in arrays too).
json_same() {
	python3 - "$@" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
b = json.load(open(sys.argv[2]))
drop = set(sys.argv[3:])
def norm(x, y):
    if isinstance(x, dict) and isinstance(y, dict):
        keys = (set(x) & set(y)) - drop
        return ({k: norm(x[k], y[k])[0] for k in keys}, {k: norm(x[k], y[k])[1] for k in keys})
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        pairs = [norm(p, q) for p, q in zip(x, y)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return x, y
na, nb = norm(a, b)
if na != nb:
    sys.exit("JSON differs:\nqemu-img %s\nvdisk    %s" % (json.dumps(na, sort_keys=True), json.dumps(nb, sort_keys=True)))
PY
}

# run_both CMD...: run "qemu-img CMD" in q/ and "vdisk CMD" in v/; exit
# codes must be equal; outputs in q.out/v.out, errors in q.err/v.err.
run_both() {
	local qrc=0 vrc=0
	(cd q && qemu-img "$@") >q.out 2>q.err || qrc=$?
	(cd v && "$VDISK" "$@") >v.out 2>v.err || vrc=$?
	[ "$qrc" = "$vrc" ] ||
		fail "$*: qemu-img exit $qrc, vdisk exit $vrc: $(cat q.err v.err)"
	RC=$qrc
}

# run_same CMD...: both tools in q/ (on the very same files, so that even
# the host allocation "disk size" shows agree).
run_same() {
	local qrc=0 vrc=0
	(cd q && qemu-img "$@") >q.out 2>q.err || qrc=$?
	(cd q && "$VDISK" "$@") >v.out 2>v.err || vrc=$?
	[ "$qrc" = "$vrc" ] ||
		fail "$*: qemu-img exit $qrc, vdisk exit $vrc: $(cat q.err v.err)"
	RC=$qrc
}

# check_clean DIR FILE...: qemu-img check finds nothing (QEMU warns that
# "backing": "" is deprecated: only the exit code counts).
check_clean() {
	local d=$1 f
	shift
	for f in "$@"; do
		# The image alone (its backing file need not exist).
		(cd "$d" && qemu-img check -q --image-opts \
			"driver=qcow2,file.filename=$f,backing=") >ck.out 2>&1 ||
			fail "qemu-img check $d/$f: $(cat ck.out)"
	done
}

# same_images FILE...: q/FILE and v/FILE read the same (through their chains).
same_images() {
	local f
	for f in "$@"; do
		qemu-img compare -q "q/$f" "v/$f" || fail "q/$f and v/$f differ"
	done
}

# chain_json DIR FILE: info --backing-chain JSON of DIR/FILE by qemu-img.
chain_json() {
	(cd "$1" && qemu-img info -U --backing-chain --output=json "$2")
}

# build KIND: b0 <- b1 <- top in q/, copied to v/.
build() {
	local kind=$1 fmt=qcow2 o=""
	rm -rf q v
	mkdir q
	case $kind in
	v2) o="-o compat=0.10" ;;
	xl) o="-o extended_l2=on,cluster_size=64k" ;;
	esac
	(
		cd q
		case $kind in
		raw)
			qemu-img create -q -f raw b0.img 8M
			qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 5 6M 64k' b0.img >/dev/null
			;;
		comp)
			qemu-img create -q -f raw src.raw 8M
			qemu-io -f raw -c 'write -P 1 0 1M' -c 'write -P 5 6M 64k' src.raw >/dev/null
			qemu-img convert -c -f raw -O qcow2 src.raw b0.img
			rm src.raw
			;;
		*)
			qemu-img create -q -f qcow2 $o b0.img 8M
			qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 5 6M 64k' b0.img >/dev/null
			;;
		esac
		[ "$kind" = raw ] && fmt=raw
		qemu-img create -q -f qcow2 $o -b b0.img -F $fmt b1.img
		qemu-io -f qcow2 -c 'write -P 2 512k 1M' -c 'write -P 0 6M 4k' \
			-c 'write -z 7M 128k' b1.img >/dev/null
		qemu-img create -q -f qcow2 $o -b b1.img -F qcow2 top.img
		qemu-io -f qcow2 -c 'write -P 3 3M 64k' -c 'write -P 4 700k 4k' \
			-c 'write -P 6 6M 8k' top.img >/dev/null
		if [ "$kind" = v3 ]; then
			qemu-img snapshot -c s1 top.img
			qemu-io -f qcow2 -c 'write -P 7 3M 4k' top.img >/dev/null
			qemu-img snapshot -c s0 b0.img
		fi
	)
	# Both copies made alike (holes where zeroes are), so that the host
	# allocation that qemu-img map reports is the same in q/ and v/.
	mv q orig
	cp -r --sparse=always orig q
	cp -r --sparse=always orig v
	rm -rf orig
}

KINDS="v3 v2 xl comp raw"
[ -n "${VDISK_QUICK:-}" ] && KINDS="v3 raw"

for kind in $KINDS; do
	bfmt=qcow2
	[ "$kind" = raw ] && bfmt=raw

	# --- info --backing-chain on the same images: text and JSON equal.
	build "$kind"
	for out in human json; do
		run_same info -f qcow2 --backing-chain --output=$out top.img
		if [ $out = human ]; then
			diff -u q.out v.out || fail "$kind: info --backing-chain differs"
		else
			json_same q.out v.out || fail "$kind: info --backing-chain JSON"
		fi
	done
	run_same info -f qcow2 top.img
	diff -u q.out v.out || fail "$kind: info differs"

	# --- create -b: from the backing file's size, or given; -u.
	for args in "-b b1.img -F qcow2 ov.img" "-b top.img -F qcow2 ov.img 16M" \
		"-u -b nope.img -F qcow2 ov.img 4M" "-b b0.img -F $bfmt -o cluster_size=4k ov.img"; do
		rm -f q/ov.img v/ov.img
		run_both create -f qcow2 $args
		[ "$RC" = 0 ] || fail "$kind: create $args failed: $(cat v.err)"
		run_both info -U --output=json ov.img
		json_same q.out v.out actual-size || fail "$kind: create $args: info"
		check_clean v ov.img
	done
	rm -f q/ov.img v/ov.img
	# A chain of overlays made by vdisk reads like the one made by qemu-img.
	run_both create -f qcow2 -b top.img -F qcow2 ov.img
	same_images ov.img

	# --- rebase, safe and unsafe.
	for args in "-p -b b0.img -F $bfmt" "-b ''" "-u -b b0.img -F $bfmt" "-u" \
		"-b ../other.img -F qcow2"; do
		build "$kind"
		qemu-img create -q -f qcow2 other.img 8M
		qemu-io -f qcow2 -c 'write -P 9 0 8M' other.img >/dev/null
		eval "run_both rebase -f qcow2 $args top.img"
		[ "$RC" = 0 ] || fail "$kind: rebase $args: $(cat v.err)"
		check_clean v top.img
		same_images top.img
		chain_json q top.img >q.json
		chain_json v top.img >v.json
		json_same q.json v.json actual-size filename full-backing-filename ||
			fail "$kind: rebase $args: chains differ"
		case $args in
		-u*) ;;
		*)
			# Safe mode: what top reads did not change.
			qemu-img compare -q -f qcow2 -F qcow2 q/top.img v/top.img ||
				fail "$kind: rebase $args changed the data"
			;;
		esac
	done
	rm -f other.img

	# --- commit: into b1 (emptying top), -d, -b b0 (b1 and top kept).
	for args in "" "-q -d" "-p -b b0.img"; do
		build "$kind"
		qemu-img compare -q q/top.img v/top.img
		cp v/top.img before.img
		run_both commit -f qcow2 $args top.img
		[ "$RC" = 0 ] || fail "$kind: commit $args: $(cat v.err)"
		# -p: the steps differ (sizes of the copies), not the ends.
		for o in q v; do
			tr '\r' '\n' <$o.out | grep -v '^    ([0-9.]*/100%)$' >$o.txt || true
			tr '\r' '\n' <$o.out | grep -c '^    (100.00/100%)$' >$o.end || true
		done
		cmp -s q.txt v.txt || fail "$kind: commit $args: output differs: $(cat q.txt v.txt)"
		[ "$(cat q.end)" = 0 ] || [ "$(cat v.end)" != 0 ] || fail "$kind: commit -p: no 100%"
		[ "$kind" = raw ] || check_clean v b0.img
		check_clean v b1.img top.img
		same_images top.img b1.img b0.img
		for d in q v; do
			(cd $d && qemu-img map -f qcow2 --output=json top.img) |
				python3 -c 'import json,sys
print([(e["start"], e["length"], e["depth"], e["zero"], e["data"]) for e in json.load(sys.stdin)])' >$d.map
		done
		cmp -s q.map v.map || fail "$kind: commit $args: top's map differs: $(cat q.map v.map)"
	done
	rm -f before.img
done

# --- Bitmaps: info shows them as qemu-img does (human and JSON).
rm -rf q v
mkdir q
qemu-img create -q -f qcow2 q/bm.img 64M
qemu-img bitmap --add q/bm.img b0
qemu-img bitmap --add -g 131072 --disable q/bm.img b1
qemu-img create -q -f qcow2 -b bm.img -F qcow2 q/top.img
qemu-img bitmap --add q/top.img t0
cp -r q v
run_same info -f qcow2 --backing-chain top.img
diff -u q.out v.out || fail "bitmaps: info differs"
run_same info -f qcow2 --backing-chain --output=json top.img
json_same q.out v.out || fail "bitmaps: info JSON differs"

# --- Bad command lines and missing files: exit 1 from both, one line.
build v3
for args in "create -f qcow2 -b b0.img ov.img" "create -f qcow2 -b nope.img -F qcow2 ov.img" \
	"create -f qcow2 -u -b nope.img -F qcow2 ov.img" "create -f raw -b b0.img -F qcow2 ov.img" \
	"create -f qcow2 -b ov.img -F qcow2 ov.img 1M" "create -f qcow2 -b '' -F qcow2 ov.img 1M" \
	"rebase -f qcow2 top.img" "rebase -f qcow2 -b b0.img -F qcow2 nope.img" \
	"rebase -f qcow2 -b nope.img -F qcow2 top.img" "rebase -f qcow2 -b b0.img -F nofmt top.img" \
	"rebase -f qcow2 -u -b b0.img top.img" "rebase -f qcow2 -b b0.img -F qcow2 a b" \
	"rebase -f qcow2 -t bad -b b0.img -F qcow2 top.img" \
	"commit -f qcow2 b0.img" "commit -f qcow2 -b nope.img top.img" "commit -f qcow2 nope.img" \
	"commit -f qcow2 -r 1x top.img" "commit -f qcow2 -t bad top.img" "commit -f qcow2" \
	"info --backing-chain -f qcow2 nope.img"; do
	rm -f q/ov.img v/ov.img
	eval "run_both $args"
	[ "$RC" = 1 ] || fail "$args: exit $RC, want 1"
	head -1 v.err | grep -q '^vdisk: ' || fail "$args: no 'vdisk: ' message: $(cat v.err)"
	[ ! -s v.out ] || [ "${args%% *}" = create ] || fail "$args: printed on stdout: $(cat v.out)"
done
# Nothing above changed the images.
same_images top.img b1.img b0.img
echo "PASS"
