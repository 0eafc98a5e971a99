#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vpc (VHD) against QEMU 7.2's qemu-img and qemu-io:
#  - the interop matrix of tests/lib/formats.sh for dynamic and fixed
#    images, with and without force_size, at sizes CHS geometry rounds up;
#  - create: the sizes and geometry qemu-img gives (CHS rounding, force_size,
#    the maximum geometry beyond 127 GiB), and its refusals;
#  - probing: a dynamic image is vpc without -f, a fixed one is raw (its
#    footer is at the end), as for qemu-img;
#  - `vdisk check` says the format has no checks (63), as qemu-img does.
# Rerun with FORMATS_SEED=N; FORMATS_OPS sets the workload length.
set -uo pipefail

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3
. "$SRCDIR/tests/lib/formats.sh"

interop_row dynamic vpc "" 64M
interop_row fixed vpc subformat=fixed 20M
interop_row dyn-force vpc force_size=on 33M
interop_row fixed-force vpc subformat=fixed,force_size=on 5M

# Sizes, geometry: qemu-img's and vdisk's footers agree (bytes 40..64:
# original and current size, cylinders, heads, sectors per track).
for spec in "1M" "100M" "1G" "127G" "130G" "2040G" "10G force_size=on" "3M subformat=fixed"; do
	set -- $spec
	o=${2:+-o $2}
	qemu-img create -q -f vpc $o q.vhd "$1" || fail "qemu-img create $spec"
	"$VDISK" create -f vpc $o v.vhd "$1" >/dev/null || fail "vdisk create $spec"
	if [[ "$spec" == *fixed* ]]; then
		qf=$(tail -c 512 q.vhd | od -An -tx1 -j40 -N24)
		vf=$(tail -c 512 v.vhd | od -An -tx1 -j40 -N24)
	else
		qf=$(od -An -tx1 -j40 -N24 q.vhd)
		vf=$(od -An -tx1 -j40 -N24 v.vhd)
	fi
	[ "$qf" = "$vf" ] || fail "create $spec: footer sizes/geometry differ: $qf / $vf"
	cmp -s <(od -An -tx1 -j512 -N1024 q.vhd) <(od -An -tx1 -j512 -N1024 v.vhd) ||
		[[ "$spec" == *fixed* ]] || fail "create $spec: dynamic headers differ"
	[ "$(stat -c %s q.vhd)" = "$(stat -c %s v.vhd)" ] || fail "create $spec: file sizes differ"
	qemu-img info -f vpc v.vhd >/dev/null || fail "qemu-img cannot open vdisk's $spec"
	rm -f q.vhd v.vhd
done
"$VDISK" create -f vpc -o force_size=on big.vhd 2041G >/dev/null 2>err && fail "2041G accepted"
grep -q "2040 GiB" err || fail "2041G: $(cat err)"
"$VDISK" create -f vpc -o subformat=sparse x.vhd 1M >/dev/null 2>&1 && fail "subformat=sparse accepted"

# Probing.
qemu-img create -q -f vpc d.vhd 8M
qemu-img create -q -f vpc -o subformat=fixed f.vhd 8M
"$VDISK" info d.vhd | grep -qx "file format: vpc" || fail "dynamic vpc not probed"
"$VDISK" info f.vhd | grep -qx "file format: raw" || fail "fixed vpc probed as other than raw"
[ "$("$VDISK" info -f vpc f.vhd | grep "virtual size")" = "$(qemu-img info -f vpc f.vhd | grep "virtual size")" ] ||
	fail "fixed vpc size: $("$VDISK" info -f vpc f.vhd)"
"$VDISK" info -f vpc d.vhd | grep -qx "cluster_size: 2097152" || fail "cluster_size"

# Holes: a fresh dynamic image maps as zeroes, a written block as data.
"$VDISK" io -f vpc -c 'write -P 7 2M 4k' d.vhd >/dev/null
qemu-img map -f vpc --output=json d.vhd >qm.json
python3 - <<'PY' || fail "qemu-img map of vdisk's write: $(cat qm.json)"
import json
m = json.load(open("qm.json"))
data = [e for e in m if e["data"]]
assert len(data) == 1 and data[0]["start"] == 2 << 20 and data[0]["length"] == 2 << 20, m
PY

# No checks for vpc, as qemu-img.
"$VDISK" check -f vpc d.vhd >/dev/null 2>&1
[ $? = 63 ] || fail "vdisk check on vpc should exit 63"
echo "PASS"
