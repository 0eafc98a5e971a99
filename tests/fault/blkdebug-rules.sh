#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blkdebug fault injection through `vdisk io`:
#  1. QEMU parity: the same raw-over-blkdebug option trees and qemu-io
#     commands give the same output from `vdisk io` and `qemu-io` (timing
#     lines normalised): read_aio/write_aio/flush_to_disk events, once, sector,
#     errno, sticky rules without once, a config file.
#  2. Our extensions (no QEMU reference): request-type events, after=N,
#     offset/length, align.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup

# A hung request is a failure, not a stuck suite.
vio() { timeout 30 "$VDISK" io "$@" 2>&1 | sed -E 's/; [0-9:.]+ sec \(.*\)$/; TIME/'; }
qio() { qemu-io "$@" 2>&1 | sed -E 's/; [0-9:.]+ sec \(.*\)$/; TIME/'; }

if command -v qemu-img >/dev/null; then
	qemu-img create -q -f raw img 1M
else
	"$VDISK" create -q -f raw img 1M
fi

# parity NAME OPTS CMD...: vdisk io and qemu-io agree.
parity() {
	local name=$1 opts=$2
	shift 2
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	vio --image-opts "${args[@]}" "$opts" >"$name.vdisk" || true
	qio --image-opts "${args[@]}" "$opts" >"$name.qemu" || true
	diff -u "$name.qemu" "$name.vdisk" || fail "$name: vdisk io differs from qemu-io"
}

base="driver=raw,file.driver=blkdebug,file.image.filename=img"
if command -v qemu-io >/dev/null; then
	parity once "$base,file.inject-error.0.event=read_aio,file.inject-error.0.errno=28,file.inject-error.0.once=on" \
		'read 0 512' 'read 0 512' 'write 0 512'
	parity sector "$base,file.inject-error.0.event=write_aio,file.inject-error.0.sector=8" \
		'write 0 4096' 'write 4096 512' 'write 4096 4096' 'read 4096 512'
	# Without once an armed rule stays armed, also for other request types.
	parity sticky "$base,file.inject-error.0.event=read_aio,file.inject-error.0.errno=5" \
		'write 0 512' 'read 0 512' 'write 0 512' 'read 512 512'
	parity flush "$base,file.inject-error.0.event=flush_to_disk,file.inject-error.0.errno=22,file.inject-error.0.once=on" \
		'write 0 512' 'flush' 'flush'
	parity immediately "$base,file.inject-error.0.event=read_aio,file.inject-error.0.immediately=on" \
		'read 0 512' 'read 0 512'
	# Events raw never raises: nothing fails.
	parity unraised "$base,file.inject-error.0.event=l2_update" 'write 0 512' 'read 0 512'
	printf '# comment\n[inject-error]\nevent = "read_aio"\nerrno = "7"\nonce = "on"\n' >conf
	parity config "$base,file.config=conf" 'read 0 512' 'read 0 512'
else
	echo "note: qemu-io not installed, parity part skipped"
fi

# expect NAME OPTS EXPECTED-FIRST-WORDS CMD...: each command's first output
# line starts with the matching word ("read"/"wrote"/"flush" for success is
# the tool's own text; a failure starts with "read failed:" etc.).
expect() {
	local name=$1 opts=$2 want=$3
	shift 3
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	vio --image-opts "${args[@]}" "$opts" >"$name.out" || true
	got=$(grep -E '^(read|wrote|write|flush|discard)' "$name.out" | grep -v ' bytes, ' |
		sed -E 's/^(read|wrote|write|flush|discard) failed: .*/FAIL/; s/^(read|wrote|discard) [0-9].*/OK/' |
		tr '\n' ' ')
	[ "$got" = "$want" ] || { cat "$name.out"; fail "$name: got '$got', want '$want'"; }
}

top="driver=blkdebug,image.driver=file,image.filename=img"
expect after "$top,inject-error.0.event=read,inject-error.0.after=2,inject-error.0.once=on" \
	"OK OK FAIL OK " 'read 0 512' 'read 0 512' 'read 0 512' 'read 0 512'
expect range "$top,inject-error.0.event=write,inject-error.0.offset=64k,inject-error.0.length=4k" \
	"OK FAIL OK FAIL " 'write 0 64k' 'write 60k 8k' 'write 68k 4k' 'write 65k 1'
expect reqtypes "$top,inject-error.0.event=discard,inject-error.1.event=read,inject-error.1.offset=0" \
	"FAIL OK FAIL OK " 'discard 0 4k' 'write 0 4k' 'read 0 1' 'read 4k 1'
expect align "$top,align=4096" "OK OK " 'write -P 0x5a 100 1000' 'read -P 0x5a 100 1000'
grep -q 'Pattern verification failed' align.out && fail "align: data did not round-trip"

# Bad rules are refused with the key named.
rc=0
"$VDISK" io --image-opts -c 'read 0 1' "$top,inject-error.0.event=nosuch" >bad.out 2>&1 || rc=$?
[ "$rc" != 0 ] || fail "an unknown event was accepted"
grep -q "inject-error.0.event" bad.out || { cat bad.out; fail "the error does not name the key"; }
echo "PASS"
