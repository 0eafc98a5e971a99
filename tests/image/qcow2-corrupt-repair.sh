#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# An image marked corrupt (incompatible feature bit 1) is refused
# read-write, but `vdisk check -r all` may open it to repair it and clears
# the bit once nothing is left to fix, as `qemu-img check -r all` does;
# the data survives.
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

mark_corrupt()
{
	python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(72)
    v = struct.unpack(">Q", f.read(8))[0]
    f.seek(72)
    f.write(struct.pack(">Q", v | 2))
PY
}

img=$T/c.qcow2
qemu-img create -q -f qcow2 "$img" 64M
qemu-io -c 'write -P 7 0 1M' -c 'write -P 8 40M 64k' "$img" >/dev/null
mark_corrupt "$img"
cp "$img" "$T/q.qcow2"
qemu-img info "$img" | grep -q 'corrupt: true' || fail "the corrupt bit did not take"

"$VDISK" io -f qcow2 -c 'write 0 4k' "$img" >"$T/w.out" 2>&1 &&
	fail "a corrupt image was opened read-write"
grep -q 'corrupt' "$T/w.out" || fail "refusal does not say why: $(cat "$T/w.out")"
rc=0
"$VDISK" check -r leaks "$img" >"$T/v.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "vdisk check -r leaks on a corrupt-marked image: exit $rc: $(cat "$T/v.out")"
rc=0
"$VDISK" check -r all "$img" >"$T/v.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "vdisk check -r all: exit $rc: $(cat "$T/v.out")"
qemu-img check -r all "$T/q.qcow2" >"$T/q.out" 2>&1 || fail "qemu-img check -r all: $(cat "$T/q.out")"
cmp -s "$T/q.out" "$T/v.out" || fail "repair reports differ: $(diff "$T/q.out" "$T/v.out")"
qemu-img info "$img" | grep -q 'corrupt: false' || fail "corrupt bit still set after repair"
qemu-io -c 'read -P 7 0 1M' -c 'read -P 8 40M 64k' "$img" >"$T/r.out" || fail "data: $(cat "$T/r.out")"
"$VDISK" io -f qcow2 -c 'write -P 9 4M 4k' "$img" >/dev/null || fail "still refused read-write"
qemu-img check "$img" >/dev/null || fail "qemu-img check after a write to the repaired image"
echo "ok: corrupt-marked image repaired by vdisk check -r all, as qemu-img does"
