#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/fuzz/run-libfuzzer.sh NAME SECONDS [LIBFUZZER-ARGS...]
#
# A coverage-guided campaign on tests/fuzz/fuzz-NAME.c with clang's libFuzzer,
# AddressSanitizer and UBSan.  Not part of `make check` or CI: run it by hand
# for as long as you like.
#
# The library is built with clang and -fsanitize=fuzzer-no-link,address,undefined
# into build-fuzz/ (a separate tree; FUZZ_BUILD overrides), the target with
# -fsanitize=fuzzer and -DVD_LIBFUZZER.  New inputs go to build-fuzz/corpus/NAME,
# seeded from tests/fuzz/corpus/NAME; crashes to build-fuzz/artifacts/
# (FUZZ_ARTIFACTS overrides; `make fuzz` uses build-fuzz/crashes/NAME/), and
# FUZZ_NO_BUILD=1 skips the library build (`make fuzz` builds it once).  Then:
#
#   - a crash: reproduce with  build-fuzz/fuzz/fuzz-NAME ARTIFACT, fix it, and
#     keep the input as tests/fuzz/corpus/NAME/crash-<what> (it is a test);
#   - to keep the new coverage: MERGE=1 folds a minimal set of the new inputs
#     into tests/fuzz/corpus/NAME (review and commit them).
#
# A file tests/fuzz/NAME.dict, if present, is passed as -dict=.
set -euo pipefail

usage()
{
	echo "usage: tests/fuzz/run-libfuzzer.sh NAME SECONDS [LIBFUZZER-ARGS...]" >&2
	local f
	printf 'targets:' >&2
	for f in "$(dirname "$0")"/fuzz-*.c; do
		[ -f "$f" ] || continue
		f=${f##*/fuzz-}
		printf ' %s' "${f%.c}" >&2
	done
	echo >&2
	exit 2
}

[ $# -ge 2 ] || usage
name=${1#fuzz-}
name=${name%.c}
seconds=$2
shift 2
case "$seconds" in
'' | *[!0-9]*) usage ;;
esac

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$SRCDIR"
src=tests/fuzz/fuzz-$name.c
[ -f "$src" ] || {
	echo "no such target: $src" >&2
	usage
}
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
CLANG=${CLANG:-clang}
command -v "$CLANG" >/dev/null || {
	echo "$CLANG not found: run scripts/install-deps" >&2
	exit 1
}

san="address,undefined"
# The library, through the Makefile so its flags and sources stay the single
# truth (a command-line CFLAGS overrides the one SANITIZE=1 sets).
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
	echo "== building libvdisk with $CLANG, fuzzer-no-link,$san into $FUZZ_BUILD/"
	make --no-print-directory -j"$(nproc)" BUILD="$FUZZ_BUILD" CC="$CLANG" SANITIZE=1 \
		CFLAGS="-O1 -g -fsanitize=fuzzer-no-link" "$FUZZ_BUILD/libvdisk.a"
fi

cflags=(-std=c11 -D_GNU_SOURCE -DVD_LIBFUZZER -O1 -g -Iinclude -I. -pthread
	-fno-omit-frame-pointer "-fsanitize=fuzzer,$san")
libs=()
for pkg in liburing libzstd libdeflate jansson gnutls nettle; do
	if pkg-config --exists "$pkg" 2>/dev/null; then
		read -ra f <<<"$(pkg-config --cflags "$pkg")"
		cflags+=("${f[@]}")
		read -ra f <<<"$(pkg-config --libs "$pkg")"
		libs+=("${f[@]}")
	fi
done
pkg-config --exists liburing 2>/dev/null && cflags+=(-DVD_HAVE_URING)
pkg-config --exists libzstd 2>/dev/null && cflags+=(-DVD_HAVE_ZSTD)
pkg-config --exists jansson 2>/dev/null || libs+=(-ljansson)
if pkg-config --exists bzip2 2>/dev/null; then
	read -ra f <<<"$(pkg-config --libs bzip2)"
	libs+=("${f[@]}")
else
	libs+=(-lbz2)
fi
libs+=(-lz -pthread)
# The rbd driver loads librbd with dlopen() (block/drivers/rbd-lib.c).
libs+=(-ldl)

bin=$FUZZ_BUILD/fuzz/fuzz-$name
artifacts=${FUZZ_ARTIFACTS:-$FUZZ_BUILD/artifacts}
mkdir -p "$FUZZ_BUILD/fuzz" "$FUZZ_BUILD/corpus/$name" "$artifacts"
echo "== building $bin"
"$CLANG" "${cflags[@]}" -o "$bin" "$src" "$FUZZ_BUILD/libvdisk.a" "${libs[@]}"

seed=tests/fuzz/corpus/$name
mkdir -p "$seed"
args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096
	-artifact_prefix="$artifacts/$name-")
[ -f "tests/fuzz/$name.dict" ] && args+=(-dict="tests/fuzz/$name.dict")

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
echo "== $bin ${args[*]} $* $FUZZ_BUILD/corpus/$name $seed"
rc=0
"$bin" "${args[@]}" "$@" "$FUZZ_BUILD/corpus/$name" "$seed" || rc=$?

if [ $rc -ne 0 ]; then
	echo "== the target failed (exit $rc); artifacts:"
	for f in "$artifacts/$name-"*; do
		[ -f "$f" ] && echo "   $f"
	done
	exit $rc
fi
if [ "${MERGE:-0}" = 1 ]; then
	echo "== merging new coverage into $seed"
	"$bin" -merge=1 "$seed" "$FUZZ_BUILD/corpus/$name"
	git status --short -- "$seed" || true
fi
