#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Persistent dirty bitmaps made by QEMU: vdisk check counts their clusters
# (directory, tables, data) as QEMU does, so a clean image stays clean; a
# read-write open by vdisk keeps them; once a program without bitmap
# support cleared the autoclear bit, both tools see the same leaks and
# repair them the same way; a damaged bitmap directory is reported, not followed.
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

img=$T/bm.qcow2
qemu-img create -q -f qcow2 "$img" 64M
qemu-img bitmap --add "$img" b0
qemu-img bitmap --add -g 65536 "$img" b1
qemu-io -c 'write -P 1 0 4M' -c 'write -P 2 32M 1M' "$img" >/dev/null
qemu-img info "$img" | grep -q 'name: b1' || fail "qemu-img did not store the bitmaps"

# 1. Clean for both, same numbers.
qemu-img check "$img" >"$T/q.out" 2>&1 || fail "qemu-img check: $(cat "$T/q.out")"
rc=0
"$VDISK" check "$img" >"$T/v.out" 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "vdisk check on a clean image with bitmaps: exit $rc: $(cat "$T/v.out")"
cmp -s "$T/q.out" "$T/v.out" || fail "check output differs: $(diff "$T/q.out" "$T/v.out")"
! "$VDISK" check --output=json "$img" | grep -q '"leaks"' ||
	fail "vdisk check --output=json reports leaks"

# 2. A read-write open by vdisk keeps them (tests/image/qcow2-bitmap-dirty.sh
#    checks their contents); a program without bitmap support clears the
#    autoclear bit: then both tools see the same leaks.
"$VDISK" io -f qcow2 -c 'write -P 3 8M 64k' "$img" >/dev/null
qemu-img info "$img" | grep -q 'name: b0' || fail "bitmaps dropped by a vdisk write"
qemu-img check "$img" >"$T/q.out" 2>&1 || fail "qemu-img check after a vdisk write: $(cat "$T/q.out")"
python3 - "$img" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(88)  # autoclear_features
    f.write(bytes(8))
EOF
qrc=0 vrc=0
qemu-img check "$img" >"$T/q.out" 2>&1 || qrc=$?
"$VDISK" check "$img" >"$T/v.out" 2>&1 || vrc=$?
[ "$qrc" = 3 ] || fail "qemu-img check after invalidation: exit $qrc (want 3, leaks)"
[ "$vrc" = 3 ] || fail "vdisk check after invalidation: exit $vrc (want 3, leaks)"
ql=$(grep -o '^[0-9]* leaked clusters' "$T/q.out")
vl=$(grep -o '^[0-9]* leaked clusters' "$T/v.out")
[ -n "$ql" ] && [ "$ql" = "$vl" ] || fail "leaks differ: qemu-img '$ql', vdisk '$vl'"
"$VDISK" check -r leaks "$img" >/dev/null 2>&1 || true
qemu-img check "$img" >/dev/null 2>&1 || fail "qemu-img check after vdisk check -r leaks"
qemu-io -c 'read -P 1 0 4M' -c 'read -P 3 8M 64k' -c 'read -P 2 32M 1M' "$img" >"$T/r.out" ||
	fail "data lost: $(cat "$T/r.out")"

# 3. A bitmap directory pointing past the end of the file is a corruption
#    report, not a read out of range.
bad=$T/bad.qcow2
qemu-img create -q -f qcow2 "$bad" 64M
qemu-img bitmap --add "$bad" b0
python3 - "$bad" <<'EOF'
import struct, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    h = f.read(65536)
    i = h.find(struct.pack(">I", 0x23852875), 104)
    assert i > 0, "no bitmaps extension"
    f.seek(i + 8 + 16)  # directory offset
    f.write(struct.pack(">Q", 1 << 40))
EOF
rc=0
"$VDISK" check "$bad" >"$T/b.out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "damaged bitmap directory: exit $rc (want 2): $(cat "$T/b.out")"
grep -q 'bitmap directory' "$T/b.out" || fail "no bitmap directory error: $(cat "$T/b.out")"
echo "ok: bitmap clusters counted, kept by a write, invalidation and repair agree with qemu-img"
