#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# scripts/check-layering.sh: the library's dependencies point one way
# (docs/architecture.md), and the library never prints.  Run by
# `tests/run.sh layering` (part of make check).
#
# Layers, from the bottom; a file may include headers of its own layer and of
# the layers it lists:
#
#   util      nothing of ours but util's own public headers
#   block     util
#   memory    util block
#   hw        util block memory
#   monitor   util block memory hw                 (QMP: serves machine and export)
#   machine   util block memory hw monitor
#   export    util block memory hw monitor         (machine and export are peers)
#   tools     everything
#
# A file's layer is its top folder; a public header's layer is in PUBLIC_LAYER
# below, from what it declares.  Two more rules:
#   - <vdisk/block_driver.h> is for drivers: only block/ may include it;
#   - a private header "dir/x.h" is included only from dir/ and below.
# And one about output: no library source writes to stderr or stdout
# (fprintf(stderr), printf, perror, puts...); messages go through
# vd_message() (<vdisk/error.h>).  util/trace.c is the exception: trace
# points write to stderr by contract (<vdisk/trace.h>).
#
# scripts/layering-exceptions.txt lists known violations ("FILE HEADER" a
# line, HEADER as written between the <> or ""); they are reported as known
# exceptions.  A line that no longer matches a violating include fails the
# check too, so the list only shrinks.
#
# Exit 0 when clean, 1 on a new violation, a stale exception or a print.
set -uo pipefail

SRCDIR=${SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
EXCEPTIONS=${LAYERING_EXCEPTIONS:-$SRCDIR/scripts/layering-exceptions.txt}
cd "$SRCDIR" || exit 1

LIB_DIRS="util block memory hw monitor machine export"

declare -A ALLOWED=(
	[util]="util"
	[block]="util block"
	[memory]="util block memory"
	[hw]="util block memory hw"
	[monitor]="util block memory hw monitor"
	[machine]="util block memory hw monitor machine"
	[export]="util block memory hw monitor export"
	[tools]="util block memory hw monitor machine export tools"
)

declare -A PUBLIC_LAYER=(
	[aio.h]=util [coroutine.h]=util [error.h]=util [iothread.h]=util [iov.h]=util
	[loop.h]=util [opts.h]=util [secret.h]=util [tls.h]=util [trace.h]=util [crc32c.h]=util
	[block.h]=block [block_driver.h]=block [backend.h]=block [nbd-proto.h]=block
	[memory.h]=memory
	[irq.h]=hw [pci.h]=hw [ide.h]=hw [fw_cfg.h]=hw [debug-exit.h]=hw [virtio.h]=hw [virtio-blk.h]=hw [virtio-pci.h]=hw
	[qmp.h]=monitor
	[machine.h]=machine [kvm.h]=machine
	[export.h]=export
)

status=0
violations=0
known=0
declare -A EXCEPT=() # "file header" -> line number in the exceptions file
declare -A USED=()

if [ -f "$EXCEPTIONS" ]; then
	n=0
	while IFS= read -r line || [ -n "$line" ]; do
		n=$((n + 1))
		line=${line%%#*}
		read -r f h extra <<<"$line"
		[ -n "${f:-}" ] || continue
		if [ -z "${h:-}" ] || [ -n "${extra:-}" ]; then
			echo "${EXCEPTIONS#"$SRCDIR"/}:$n: want 'FILE HEADER'"
			status=1
			continue
		fi
		EXCEPT["$f $h"]=$n
	done <"$EXCEPTIONS"
fi

# The layer of a source file or public header, or "" when not checked.
layer_of()
{
	local f=$1
	case "$f" in
	include/vdisk/*)
		echo "${PUBLIC_LAYER[${f#include/vdisk/}]:-unknown}"
		;;
	*/*)
		local top=${f%%/*}
		[ -n "${ALLOWED[$top]:-}" ] && echo "$top"
		;;
	esac
}

# why FILE LAYER HEADER QUOTED: print why the include breaks a rule, or
# nothing when it is fine.
why()
{
	local f=$1 layer=$2 h=$3 quoted=$4 hl
	if [ "$quoted" = 1 ]; then
		# "dir/x.h": a private header, for dir/ and below only.
		local dir=${h%/*}
		[ "$dir" = "$h" ] && return # "x.h": beside the file
		case "$f" in
		"$dir"/*) ;;
		*) echo "private header of $dir/ included from outside it" ;;
		esac
		return
	fi
	case "$h" in
	vdisk/*) ;;
	*) return ;; # a system header
	esac
	if [ "$h" = vdisk/block_driver.h ] && [ "$layer" != block ]; then
		echo "block_driver.h is for drivers (block/) only"
		return
	fi
	hl=${PUBLIC_LAYER[${h#vdisk/}]:-}
	if [ -z "$hl" ]; then
		echo "public header with no layer: add it to PUBLIC_LAYER in $0"
		return
	fi
	case " ${ALLOWED[$layer]} " in
	*" $hl "*) ;;
	*) echo "$layer/ must not include a $hl header" ;;
	esac
}

mapfile -t files < <(
	for d in $LIB_DIRS tools; do
		[ -d "$d" ] && find "$d" -type f \( -name '*.c' -o -name '*.h' \)
	done
	find include/vdisk -type f -name '*.h'
	true
)
[ ${#files[@]} -gt 0 ] || {
	echo "no sources found below $SRCDIR"
	exit 1
}

for f in $(printf '%s\n' "${files[@]}" | sort); do
	layer=$(layer_of "$f")
	[ -n "$layer" ] || continue
	if [ "$layer" = unknown ]; then
		echo "VIOLATION $f: public header with no layer: add it to PUBLIC_LAYER in $0"
		violations=$((violations + 1))
		continue
	fi
	while IFS=: read -r lineno inc; do
		if [[ "$inc" =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\<([^>]*)\> ]]; then
			h=${BASH_REMATCH[1]}
			quoted=0
		elif [[ "$inc" =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]*)\" ]]; then
			h=${BASH_REMATCH[1]}
			quoted=1
		else
			continue
		fi
		reason=$(why "$f" "$layer" "$h" "$quoted")
		[ -n "$reason" ] || continue
		if [ -n "${EXCEPT["$f $h"]:-}" ]; then
			echo "known exception: $f:$lineno includes $h ($reason)"
			USED["$f $h"]=1
			known=$((known + 1))
		else
			echo "VIOLATION $f:$lineno includes $h: $reason"
			violations=$((violations + 1))
		fi
	done < <(grep -n '^[[:space:]]*#[[:space:]]*include' "$f")
done

for k in "${!EXCEPT[@]}"; do
	if [ -z "${USED[$k]:-}" ]; then
		echo "STALE ${EXCEPTIONS#"$SRCDIR"/}:${EXCEPT[$k]}: '$k' matches no violating include; remove the line"
		status=1
	fi
done

# No printing in the library.  Comments are blanked first (a comment may
# well say "stderr").
prints=0
for f in $(printf '%s\n' "${files[@]}" | grep -v '^tools/\|^include/' | sort); do
	[ "$f" = util/trace.c ] && continue
	out=$(awk '
		{
			line = $0; out = ""
			while (line != "") {
				if (incomment) {
					i = index(line, "*/")
					if (i == 0) { line = ""; break }
					line = substr(line, i + 2); incomment = 0
				} else {
					i = index(line, "/*"); j = index(line, "//")
					if (j > 0 && (i == 0 || j < i)) { out = out substr(line, 1, j - 1); line = ""; break }
					if (i == 0) { out = out line; line = ""; break }
					out = out substr(line, 1, i - 1); line = substr(line, i + 2); incomment = 1
				}
			}
			if (out ~ /(^|[^A-Za-z0-9_])(stderr|stdout|perror[ \t]*\(|v?printf[ \t]*\(|puts[ \t]*\()/)
				printf "%s:%d: %s\n", FILENAME, NR, $0
		}' "$f")
	if [ -n "$out" ]; then
		echo "$out" | sed 's/^/PRINTS /'
		prints=$((prints + $(wc -l <<<"$out")))
	fi
done
if [ $prints -gt 0 ]; then
	echo "$prints line(s) of the library print on stderr/stdout: use vd_message() (<vdisk/error.h>)"
	status=1
fi

echo "${#files[@]} files: $violations violation(s), $known known exception(s), $prints print(s)"
[ $violations -eq 0 ] || status=1
exit $status
