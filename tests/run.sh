#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/run.sh SUITE...  -- run test suites and print one summary line.
#
# Suites:
#   format       tests/format-check.sh (clang-format over the sources)
#   layering     scripts/check-layering.sh (includes point down; the library
#                never prints)
#   unit         every executable $BUILD/tests/unit/test-*
#   interop      every tests/interop/*.sh
#   image        every tests/image/*.sh (image formats against qemu-img/qemu-io)
#   hw           every tests/hw/*.sh (devices and machine over the test protocol)
#   fault        every tests/fault/*.sh
#   fuzz-corpus  tests/fuzz/run-corpus.sh (replays the fuzz corpora)
#
# A test passes with exit 0, is skipped with exit 77 (its reason is the first
# output line starting with "SKIP:"), and fails otherwise or when it runs past
# TEST_TIMEOUT seconds (default 300).  Output goes to $BUILD/test-logs/NAME.log.
# Tests run one after the other, with stdin from /dev/null and this
# environment: BUILD (absolute), VDISK=$BUILD/vdisk, SRCDIR (repo root), and
# VDISK_QUICK when set (reduced work, for sanitizer runs).
#
# STRICT=1 counts a skipped test as failed, unless its reason mentions /dev/kvm
# (hardware CI does not have).  A suite with no tests at all is reported as one
# skip ("SKIP suite: no tests") and is never turned into a failure.
#
# The last line is always "N passed, N failed, N skipped"; the exit status is 1
# if anything failed.
#
# For testing this script: TESTS_ROOT replaces SRCDIR/tests as the place the
# interop/, fault/, fuzz/ and format-check.sh are looked up.
set -uo pipefail

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in
/*) ;;
*) BUILD=$SRCDIR/$BUILD ;;
esac
TESTS_ROOT=${TESTS_ROOT:-$SRCDIR/tests}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
STRICT=${STRICT:-0}
LOGDIR=$BUILD/test-logs
VDISK=$BUILD/vdisk
export BUILD SRCDIR VDISK
[ -n "${VDISK_QUICK:-}" ] && export VDISK_QUICK

passed=0
failed=0
skipped=0

usage()
{
	echo "usage: tests/run.sh SUITE...  (suites: format layering unit interop image hw fault fuzz-corpus)" >&2
	exit 2
}

# Seconds since an $EPOCHREALTIME value, with one decimal.
elapsed()
{
	local start=$1 now=$EPOCHREALTIME
	awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }'
}

# The reason a skipped test gave: its first line starting with "SKIP:".
skip_reason()
{
	local reason
	reason=$(grep -m1 '^SKIP:' "$1" 2>/dev/null | sed -e 's/^SKIP:[[:space:]]*//' -e 's/[[:space:]]*$//')
	echo "${reason:-no reason given}"
}

show_failure()
{
	local name=$1 log=$2
	echo "FAIL $name (see $log)"
	tail -n 20 "$log" | sed 's/^/    /'
	failed=$((failed + 1))
}

# run_test NAME COMMAND...: run one test and account for it.
run_test()
{
	local name=$1
	shift
	local log=$LOGDIR/$name.log start rc reason t
	mkdir -p "$(dirname "$log")"
	start=$EPOCHREALTIME
	{
		echo "# $*"
		echo "# started $(date -u '+%Y-%m-%dT%H:%M:%SZ'), timeout ${TEST_TIMEOUT}s"
	} >"$log"
	# timeout(1) puts the test in its own process group and signals the
	# whole group, so helpers the test started go too.
	# The braces catch bash's own "Killed" notice for a test that dies by a
	# signal; the log says it anyway.
	{ (cd "$SRCDIR" && exec timeout -k 10 "$TEST_TIMEOUT" "$@") </dev/null >>"$log" 2>&1; } 2>/dev/null
	rc=$?
	t=$(elapsed "$start")
	case $rc in
	0)
		echo "PASS $name (${t}s)"
		passed=$((passed + 1))
		;;
	77)
		reason=$(skip_reason "$log")
		if [ "$STRICT" = 1 ] && [[ "$reason" != */dev/kvm* ]]; then
			echo "# skipped under STRICT=1: $reason" >>"$log"
			show_failure "$name" "$log"
		else
			echo "SKIP $name: $reason"
			skipped=$((skipped + 1))
		fi
		;;
	*)
		if [ $rc -eq 124 ] || { [ $rc -eq 137 ] && [ "${t%.*}" -ge "$TEST_TIMEOUT" ]; }; then
			echo "# TIMEOUT: stopped after ${TEST_TIMEOUT}s (set TEST_TIMEOUT to change)" >>"$log"
		elif [ $rc -gt 128 ]; then
			echo "# killed by signal $((rc - 128)) after ${t}s" >>"$log"
		else
			echo "# exit status $rc after ${t}s" >>"$log"
		fi
		show_failure "$name" "$log"
		;;
	esac
}

no_tests()
{
	echo "SKIP $1: no tests"
	skipped=$((skipped + 1))
}

# Run every script matching DIR/*.sh as SUITE/NAME.
run_scripts()
{
	local suite=$1 dir=$2 f found=0
	for f in "$dir"/*.sh; do
		[ -f "$f" ] || continue
		found=1
		run_test "$suite/$(basename "$f" .sh)" bash "$f"
	done
	[ $found = 1 ] || no_tests "$suite"
}

run_suite()
{
	local f found
	case "$1" in
	format)
		run_test format bash "$TESTS_ROOT/format-check.sh"
		;;
	layering)
		run_test layering bash "$SRCDIR/scripts/check-layering.sh"
		;;
	unit)
		found=0
		for f in "$BUILD"/tests/unit/test-*; do
			if [ ! -f "$f" ] || [ ! -x "$f" ]; then continue; fi
			case "$f" in *.o | *.d) continue ;; esac
			found=1
			run_test "unit/$(basename "$f")" "$f"
		done
		[ $found = 1 ] || no_tests unit
		;;
	interop | fault | image | hw) run_scripts "$1" "$TESTS_ROOT/$1" ;;
	fuzz-corpus)
		if compgen -G "$TESTS_ROOT/fuzz/fuzz-*.c" >/dev/null; then
			run_test fuzz-corpus bash "$TESTS_ROOT/fuzz/run-corpus.sh"
		else
			no_tests fuzz-corpus
		fi
		;;
	*)
		echo "tests/run.sh: unknown suite '$1'" >&2
		usage
		;;
	esac
}

[ $# -gt 0 ] || usage
for suite in "$@"; do
	case "$suite" in
	format | layering | unit | interop | fault | image | hw | fuzz-corpus) ;;
	*)
		echo "tests/run.sh: unknown suite '$suite'" >&2
		usage
		;;
	esac
done
mkdir -p "$LOGDIR" || exit 1

for suite in "$@"; do
	run_suite "$suite"
done

echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
