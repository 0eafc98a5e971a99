#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Check that every C source and header is formatted as .clang-format says.
# Lists the files that are not and exits 1; `make format` fixes them.
#
# Files: what git tracks plus new files git does not ignore (so a file is
# checked before its first commit); outside a git checkout, every *.c and *.h
# below the source root except the build trees.
set -uo pipefail

SRCDIR=${SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "$SRCDIR" || exit 1

CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
if ! command -v "$CLANG_FORMAT" >/dev/null 2>&1; then
	echo "SKIP: $CLANG_FORMAT not installed (scripts/install-deps installs it)"
	exit 77
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	mapfile -t candidates < <(git ls-files --cached --others --exclude-standard -- '*.c' '*.h')
else
	mapfile -t candidates < <(find . \( -path ./.git -o -path './build*' \) -prune -o \
		-type f \( -name '*.c' -o -name '*.h' \) -print | sed 's|^\./||' | sort)
fi
files=()
for f in "${candidates[@]}"; do
	[ -f "$f" ] && files+=("$f") # skip tracked files deleted in the work tree
done
if [ ${#files[@]} -eq 0 ]; then
	echo "no C sources to check"
	exit 0
fi

"$CLANG_FORMAT" --version
echo "checking ${#files[@]} files"
out=$("$CLANG_FORMAT" --dry-run -Werror "${files[@]}" 2>&1)
rc=$?
if [ $rc -eq 0 ]; then
	echo "all formatted"
	exit 0
fi

# Diagnostics look like "path:line:col: error: code should be clang-formatted".
mapfile -t bad < <(sed -n 's/^\(.*\):[0-9]*:[0-9]*: error: .*/\1/p' <<<"$out" | sort -u)
if [ ${#bad[@]} -eq 0 ]; then
	# Not a formatting diagnostic: a broken .clang-format or the like.
	echo "$out" | head -n 40
	echo "clang-format failed (exit $rc)"
	exit 1
fi
echo "$out" | head -n 60
echo
echo "${#bad[@]} file(s) not formatted (run 'make format' or clang-format -i FILE):"
printf '  %s\n' "${bad[@]}"
exit 1
