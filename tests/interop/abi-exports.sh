#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# libvdisk.so.0 exports its public API and nothing else.
#
# The public API is what include/vdisk/*.h declares (scripts/public-symbols.py
# reads the declarations).  Fails when:
#   - libvdisk.map is not what the headers give (run `make abi-map`);
#   - the shared library exports a symbol the headers do not declare (an
#     internal helper such as block/internal.h's vd_node_init_io);
#   - a declared function or variable is defined in the library but not
#     exported, or declared and defined nowhere (a program using it cannot
#     link);
#   - a library symbol that a public inline function or macro uses is not
#     exported.
set -eu

SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$(dirname "$0")/../lib/common.sh"
need nm python3
SO=$BUILD/libvdisk.so.0
AR=$BUILD/libvdisk.a
[ -f "$SO" ] || fail "$SO not built"
[ -f "$AR" ] || fail "$AR not built"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

python3 "$SRCDIR/scripts/public-symbols.py" >"$T/public"
python3 "$SRCDIR/scripts/public-symbols.py" --referenced >"$T/referenced"
python3 "$SRCDIR/scripts/public-symbols.py" --map >"$T/map"
[ -s "$T/public" ] || fail "no declarations found in include/vdisk/*.h"
echo "$(wc -l <"$T/public") names declared in include/vdisk/*.h"

status=0
if ! diff -u "$SRCDIR/libvdisk.map" "$T/map" >"$T/map.diff"; then
	echo "libvdisk.map is out of date with include/vdisk/*.h; run 'make abi-map' and commit it:"
	cat "$T/map.diff"
	status=1
fi

# Defined dynamic symbols, without version suffixes; the version node itself
# (VDISK_0.1, type A) is not a symbol of ours.
nm -D --defined-only "$SO" | awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' | sort -u >"$T/exported"
# Global symbols the library's objects define (any section).
nm -g --defined-only "$AR" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u >"$T/defined"
echo "$(wc -l <"$T/exported") symbols exported by $(basename "$SO")"

report()
{
	local what=$1 file=$2
	if [ -s "$file" ]; then
		echo "$what:"
		sed 's/^/    /' "$file"
		status=1
	fi
}

comm -23 "$T/exported" "$T/public" >"$T/extra"
report "exported but not declared in include/vdisk/*.h" "$T/extra"
comm -12 "$T/public" "$T/defined" | comm -23 - "$T/exported" >"$T/hidden"
report "declared in include/vdisk/*.h and defined, but not exported" "$T/hidden"
comm -23 "$T/public" "$T/defined" >"$T/undefined"
report "declared in include/vdisk/*.h but defined nowhere in the library" "$T/undefined"
comm -12 "$T/referenced" "$T/defined" | comm -23 - "$T/exported" >"$T/inline"
report "used by a public inline function or macro but not exported" "$T/inline"

[ $status = 0 ] || fail "the shared library's exports do not match the public headers"
echo PASS
