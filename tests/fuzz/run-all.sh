#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/fuzz/run-all.sh: `make fuzz`.  Every tests/fuzz/fuzz-*.c target under
# libFuzzer with AddressSanitizer and UBSan (tests/fuzz/run-libfuzzer.sh, one
# after the other, seeded from tests/fuzz/corpus/NAME) for FUZZ_SECONDS each
# (default 60); FUZZ_TARGETS="qcow2 ide" picks some.  Crashes, leaks and
# timeouts are kept in build-fuzz/crashes/NAME/ (FUZZ_BUILD overrides
# build-fuzz), a log per target in build-fuzz/logs/NAME.log, and the summary
# (executions, corpus size, crashes per target) is printed at the end and
# written to build-fuzz/summary.txt.  A crash does not stop the campaign:
# the other targets still run, and the exit status is 1.  To turn a crash into
# a regression test, reproduce it with build-fuzz/fuzz/fuzz-NAME FILE, fix
# it, and add FILE to tests/fuzz/corpus/NAME/ as crash-WHAT (make check
# replays the corpus through tests/fuzz/run-corpus.sh).
set -uo pipefail

SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$SRCDIR"
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-60}
CLANG=${CLANG:-clang}
case "$SECONDS_EACH" in
'' | *[!0-9]*)
	echo "FUZZ_SECONDS must be a number of seconds" >&2
	exit 2
	;;
esac
command -v "$CLANG" >/dev/null || {
	echo "$CLANG not found: run scripts/install-deps" >&2
	exit 1
}

targets=${FUZZ_TARGETS:-}
if [ -z "$targets" ]; then
	for f in tests/fuzz/fuzz-*.c; do
		f=${f##*/fuzz-}
		targets+=" ${f%.c}"
	done
fi

echo "== building libvdisk with $CLANG into $FUZZ_BUILD/ (once for all targets)"
make --no-print-directory -j"$(nproc)" BUILD="$FUZZ_BUILD" CC="$CLANG" SANITIZE=1 \
	CFLAGS="-O1 -g -fsanitize=fuzzer-no-link" "$FUZZ_BUILD/libvdisk.a" || exit 1

mkdir -p "$FUZZ_BUILD/logs" "$FUZZ_BUILD/crashes"
summary=$FUZZ_BUILD/summary.txt
printf '%-14s %12s %8s %8s %s\n' target executions exec/s corpus result >"$summary"
bad=0
for t in $targets; do
	log=$FUZZ_BUILD/logs/$t.log
	crashes=$FUZZ_BUILD/crashes/$t
	mkdir -p "$crashes"
	echo "== fuzz-$t for ${SECONDS_EACH}s (log $log)"
	FUZZ_NO_BUILD=1 FUZZ_ARTIFACTS="$crashes" FUZZ_BUILD="$FUZZ_BUILD" \
		bash tests/fuzz/run-libfuzzer.sh "$t" "$SECONDS_EACH" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	corpus=$(find "$FUZZ_BUILD/corpus/$t" -type f 2>/dev/null | wc -l)
	found=$(find "$crashes" -type f | wc -l)
	if [ $rc -eq 0 ] && [ "$found" -eq 0 ]; then
		result=ok
	else
		result="FAIL (exit $rc, $found files in $crashes)"
		bad=1
		grep -m3 -E 'ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error' "$log" |
			sed 's/^/   /'
	fi
	printf '%-14s %12s %8s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$result" |
		tee -a "$summary"
done
echo "== summary ($summary)"
cat "$summary"
exit $bad
