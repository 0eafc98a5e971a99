# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Helpers shared by the side-by-side benchmarks (bench/*.sh).

die()
{
	echo "${0##*/}: $*" >&2
	exit 1
}

log()
{
	echo "$*" >&2
}

# Seconds from "Run completed in X seconds." in a bench output, or nothing.
run_seconds()
{
	sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p' "$1" | tail -n 1
}

# iops_of COUNT OUTPUT-FILE: COUNT / the seconds the run reported, or "-".
iops_of()
{
	local secs
	secs=$(run_seconds "$2")
	[ -n "$secs" ] || {
		echo -
		return
	}
	awk -v c="$1" -v t="$secs" 'BEGIN { if (t > 0) printf "%.0f\n", c / t; else print "-" }'
}

# The median of the numbers given ("-" entries are failures and ignored).
median()
{
	printf '%s\n' "$@" | grep -v '^-$' | sort -n | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "-"; exit }
			if (NR % 2) print v[(NR + 1) / 2]
			else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
		}'
}

# ratio A B: A / B with two decimals, or "-".
ratio()
{
	if [ "$1" = - ] || [ "$2" = - ] || [ "$2" = 0 ]; then
		echo -
	else
		awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a / b }'
	fi
}

# One line per tool version, for the report header.
versions()
{
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- host: $(uname -sr), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1))"
	echo "- $(qemu-img --version | head -n 1); $("$VDISK" --version 2>/dev/null | head -n 1)"
}
