#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Metadata overlap protection on crafted images: each ol-* image of
# tests/fuzz/corpus/qcow2/ (made by tests/fuzz/make-qcow2-overlap-corpus.py)
# gets its command from tests/image/qcow2-overlap.expect; qcow2-overlap.py
# checks the outcome, the message, the corrupt bit, that the metadata bytes
# did not change and that qemu-img check finds nothing new, and prints what
# qemu-io does beside it.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

python3 "$SRCDIR/tests/image/qcow2-overlap.py" "$VDISK" "$SRCDIR/tests/fuzz/corpus/qcow2" \
	"$SRCDIR/tests/image/qcow2-overlap.expect" "$T" || fail "see the cases above"
echo PASS
