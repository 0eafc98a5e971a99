# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Sourced by tests/image/formats-{vpc,vdi,qed}.sh after tests/lib/common.sh.
#
# interop_row NAME FORMAT CREATE_OPTS SIZE: one row of the interop matrix.
#  - qemu-img creates A, vdisk creates B with the same -o options: the same
#    virtual size;
#  - a seeded workload of $OPS commands runs through qemu-io on A and through
#    `vdisk io` on B;
#  - vdisk to QEMU: `qemu-img check B` is clean where the format has a check,
#    `qemu-img compare A B` finds them identical;
#  - QEMU to vdisk: every byte of A, as `qemu-img convert` reads it, reads back
#    through `vdisk io` on A (read -P over each run of equal bytes).
OPS=${FORMATS_OPS:-150}
[ -n "${VDISK_QUICK:-}" ] && OPS=${FORMATS_OPS:-50}
SEED=${FORMATS_SEED:-$(((RANDOM << 15) | RANDOM))}
WL=$SRCDIR/tests/image/formats-wl.py

vsize() { qemu-img info -f "$1" --output=json "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

# run_cmds TOOL FORMAT IMAGE FILE: the commands of FILE, 50 per process.
run_cmds() {
	local tool=$1 fmt=$2 img=$3 file=$4 args=() line n=0
	while IFS= read -r line; do
		args+=(-c "$line")
		n=$((n + 1))
		if [ "$n" = 50 ]; then
			"$tool" -f "$fmt" "${args[@]}" "$img" >>"$img.log" 2>&1 || return 1
			args=()
			n=0
		fi
	done <"$file"
	[ "$n" = 0 ] || "$tool" -f "$fmt" "${args[@]}" "$img" >>"$img.log" 2>&1
}

interop_row() {
	local name=$1 fmt=$2 opts=$3 size=$4 a=$1-qemu.img b=$1-vdisk.img vs
	echo "row $name: -o '$opts' $size (seed $SEED)"
	qemu-img create -q -f "$fmt" ${opts:+-o "$opts"} "$a" "$size" || fail "$name: qemu-img create"
	"$VDISK" create -f "$fmt" ${opts:+-o "$opts"} "$b" "$size" >/dev/null ||
		fail "$name: vdisk create"
	vs=$(vsize "$fmt" "$a")
	[ "$vs" = "$(vsize "$fmt" "$b")" ] || fail "$name: sizes differ: $vs vs $(vsize "$fmt" "$b")"
	[ "$("$VDISK" info -f "$fmt" --output=json "$a" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = "$vs" ] ||
		fail "$name: vdisk sees another size of the qemu-img image"
	if [ "${HAS_CHECK:-0}" = 1 ]; then
		qemu-img check -q -f "$fmt" "$b" || fail "$name: qemu-img check on vdisk's fresh image"
	fi
	python3 "$WL" gen "$SEED" "$vs" "$OPS" >wl.txt
	run_cmds qemu-io "$fmt" "$a" wl.txt || fail "$name: qemu-io workload: $(tail -3 "$a.log")"
	run_cmds vdisk_io "$fmt" "$b" wl.txt || fail "$name: vdisk workload (seed $SEED): $(tail -3 "$b.log")"
	grep -qi "fail\|error" "$a.log" && fail "$name: qemu-io: $(grep -i 'fail\|error' "$a.log" | head -3)"
	grep -qi "fail\|error" "$b.log" && fail "$name: vdisk io: $(grep -i 'fail\|error' "$b.log" | head -3)"
	if [ "${HAS_CHECK:-0}" = 1 ]; then
		qemu-img check -f "$fmt" "$b" >chk.out 2>&1 || fail "$name: qemu-img check B: $(cat chk.out)"
		"$VDISK" check -f "$fmt" "$b" >chk.out 2>&1 || fail "$name: vdisk check B: $(cat chk.out)"
		"$VDISK" check -f "$fmt" "$a" >chk.out 2>&1 || fail "$name: vdisk check A: $(cat chk.out)"
	fi
	qemu-img compare -f "$fmt" -F "$fmt" "$a" "$b" >cmp.out 2>&1 ||
		fail "$name: qemu-img compare (seed $SEED): $(cat cmp.out)"
	qemu-img convert -f "$fmt" -O raw "$a" a.raw || fail "$name: convert"
	python3 "$WL" runs a.raw >reads.txt
	: >"$a.log"
	run_cmds vdisk_io "$fmt" "$a" reads.txt || fail "$name: vdisk io reads of A: $(tail -3 "$a.log")"
	grep -qi "fail\|error\|pattern" "$a.log" && fail "$name: vdisk reads A (seed $SEED): $(grep -i 'fail\|error\|pattern' "$a.log" | head -3)"
	rm -f "$a" "$b" a.raw "$a.log" "$b.log"
}

vdisk_io() { "$VDISK" io "$@"; }
