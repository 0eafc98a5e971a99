#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Probing, against QEMU 7.2:
#  - every format QEMU 7.2 probes for has a driver here: images qemu-img
#    makes (vhdx, qed, qcow, parallels) probe as what qemu-img says they
#    are, and -f with a name no driver has is "Unknown driver";
#  - vmdk (sparse, or a text descriptor file) is probed as QEMU does, and
#    treated as qcow2 is: info opens it alone, io with what it names;
#  - qed, qcow and parallels images qemu-img makes probe as what qemu-img
#    says they are;
#  - crafted bochs, cloop and dmg files that fail to open, and truncated
#    headers, are never raw: they fail naming their format, untouched;
#  - a probed raw image refuses a block-0 write of a qcow2 header or a vmdk
#    magic with EPERM, as qemu-io does, accepts ordinary writes, and -f raw
#    lifts the restriction; the warning is QEMU's, and only for read-write.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io python3

sum() { md5sum "$1" | cut -d' ' -f1; }

# Images made by qemu-img; qemu-img info probes them as their format.
for fmt in vhdx qed qcow parallels; do
	qemu-img create -q -f "$fmt" "img.$fmt" 1M
	qemu-img info "img.$fmt" | grep -qx "file format: $fmt" ||
		fail "qemu-img does not probe img.$fmt as $fmt"
	"$VDISK" info "img.$fmt" | grep -qx "file format: $fmt" || fail "img.$fmt not probed as $fmt"
done
# A format name no driver has.
"$VDISK" info -f nosuchfmt img.vhdx 2>err && fail "vdisk info -f nosuchfmt accepted"
grep -q "Unknown driver 'nosuchfmt'" err || fail "info -f nosuchfmt: $(cat err)"

# vmdk, sparse or a descriptor file (text) naming its extent: vmdk, never
# raw.  As for qcow2, info opens it (without a parent), io and resize ask
# for -f, and the file is left as it was.
qemu-img create -q -f vmdk img.vmdk 1M
qemu-img create -q -f vmdk -o subformat=monolithicFlat desc.vmdk 1M
head -c 20 desc.vmdk | grep -q '^#' || fail "desc.vmdk is not a text descriptor"
for f in img.vmdk desc.vmdk; do
	qemu-img info "$f" | grep -qx "file format: vmdk" || fail "qemu-img: $f"
	"$VDISK" info "$f" | grep -qx "file format: vmdk" || fail "vdisk info $f"
	# io opens it as vmdk, as qemu-io does: the write is guest data.
	"$VDISK" io -c 'write -P 0xaa 0 4k' "$f" >out 2>&1 || fail "vdisk io on a probed $f: $(cat out)"
	qemu-io -f vmdk -r -c 'read -P 0xaa 0 4k' "$f" | grep -q "read 4096" ||
		fail "$f: the write through a probed vmdk is not guest data"
	before=$(sum "$f")
	"$VDISK" resize "$f" +1M 2>err && fail "vdisk resize grew a vmdk"
	[ "$(sum "$f")" = "$before" ] || fail "$f changed"
done
printf '# comment\n   \r\nversion=1\r\n' >crlf.vmdk
"$VDISK" info crlf.vmdk >out 2>&1 && fail "crlf.vmdk opened: $(cat out)"
grep -q raw out && fail "crlf.vmdk taken for raw: $(cat out)"
grep -q "invalid VMDK image descriptor" out || fail "crlf.vmdk: $(cat out)"

# Crafted files for the formats qemu-img cannot create.
python3 - <<'PY'
import struct
h = bytearray(512)
h[0:23] = b"Bochs Virtual HD Image\0"
h[32:40] = b"Redolog\0"
h[48:56] = b"Growing\0"
h[64:68] = struct.pack("<I", 0x20000)
open("crafted.bochs", "wb").write(bytes(h) + bytes(512))
magic = (b"#!/bin/sh\n#V2.0 Format\n"
         b"modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")
open("crafted.cloop", "wb").write(magic + bytes(1024))
open("crafted.dmg", "wb").write(b"\x55" * 4096)
# Truncated headers: the magic alone, shorter than the header.
open("short.vhdx", "wb").write(b"vhdxfile")
open("short.qed", "wb").write(b"QED\0")
open("short.qcow", "wb").write(b"QFI\xfb\0\0\0\1")
open("short.luks", "wb").write(b"LUKS\xba\xbe\0\1")
open("short.vdi", "wb").write(bytes(64) + struct.pack("<I", 0xbeda107f))
open("short.qcow2", "wb").write(b"QFI\xfb\0\0\0\3")
PY
# not_raw FILE FORMAT: a file that probes as FORMAT but does not open
# fails naming it (one line), is never written, and never taken for raw.
not_raw() {
	local f=$1 fmt=$2 before
	before=$(sum "$f")
	"$VDISK" info "$f" >out 2>err && fail "$f: vdisk info opened a broken $fmt: $(cat out)"
	[ "$(wc -l <err)" = 1 ] || fail "$f: more than one line of error: $(cat err)"
	grep -qi "raw" err && fail "$f: taken for raw: $(cat err)"
	"$VDISK" info -f "$fmt" "$f" >/dev/null 2>&1 && fail "$f: vdisk info -f $fmt opened it"
	"$VDISK" io -c 'write -P 0xaa 0 4k' "$f" >out 2>&1 && fail "$f: vdisk io wrote into it"
	[ "$(sum "$f")" = "$before" ] || fail "$f: the $fmt file changed"
}
not_raw crafted.bochs bochs
not_raw crafted.cloop cloop
not_raw crafted.dmg dmg
not_raw short.qed qed
not_raw short.qcow qcow
# A truncated vhdx is vhdx (which then fails to open), never raw.
"$VDISK" info short.vhdx >out 2>&1 && fail "vdisk opened short.vhdx: $(cat out)"
grep -q "VHDX" out || fail "short.vhdx: $(cat out)"
# A truncated vdi header is vdi (which then fails to open), never raw.
"$VDISK" info short.vdi >out 2>&1 && fail "vdisk opened short.vdi: $(cat out)"
grep -q "VDI" out || fail "short.vdi: $(cat out)"
# A truncated luks header is luks (which then fails to open), never raw.
"$VDISK" info short.luks >out 2>&1 && fail "vdisk opened short.luks: $(cat out)"
grep -q "not in LUKS format" out || fail "short.luks: $(cat out)"
# A truncated qcow2 header is qcow2 (which then fails to open), never raw;
# qemu-img fails on it too.
qemu-img info short.qcow2 >/dev/null 2>&1 && fail "qemu-img opened short.qcow2"
"$VDISK" info short.qcow2 >out 2>&1 && fail "vdisk opened short.qcow2: $(cat out)"
grep -q raw out && fail "short.qcow2 taken for raw: $(cat out)"
# A qcow2 image without -f: info opens it without its backing chain; io,
# bench and resize probe it as qemu-io / qemu-img do, backing chain included.
qemu-img create -q -f raw base.raw 1M
qemu-io -f raw -c 'write -P 0x5a 0 64k' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw img.qcow2 1M
"$VDISK" info img.qcow2 | grep -qx "file format: qcow2" || fail "info img.qcow2"
"$VDISK" io -c 'read -P 0x5a 0 64k' img.qcow2 >out 2>err || fail "io on qcow2: $(cat err)"
grep -q "read 65536/65536" out || fail "io on probed qcow2: $(cat out)"
"$VDISK" io -c 'write -P 0x33 64k 4k' img.qcow2 >/dev/null || fail "io write on probed qcow2"
"$VDISK" bench -c 4 img.qcow2 >/dev/null 2>err || fail "bench on qcow2: $(cat err)"
"$VDISK" resize img.qcow2 2M >out 2>err || fail "resize on qcow2: $(cat err)"
qemu-img info --output=json img.qcow2 | grep -q '"virtual-size": 2097152' ||
	fail "resize of a probed qcow2 did not reach the image"
qemu-io -f qcow2 -c 'read -P 0x5a 0 64k' -c 'read -P 0x33 64k 4k' img.qcow2 >/dev/null ||
	fail "data written through a probed qcow2 is not what qemu-io reads"

# --- the probing attack on a raw image ------------------------------------
head -c 512 img.qcow2 >qcow2-header
printf 'KDMV' >vmdk-magic
vdisk_io() { "$VDISK" io "$@"; }
# attempt TOOL FILE CMD: run the write, say "ok" or "EPERM".
attempt() {
	local tool=$1 f=$2 cmd=$3
	if "$tool" -c "$cmd" "$f" >out 2>err && ! grep -q "failed" out err; then
		echo ok
	elif grep -q "Operation not permitted" out err; then
		echo EPERM
	else
		cat out err >&2
		echo "other"
	fi
}
for tool in qemu-io vdisk_io; do
	rm -f raw.img
	qemu-img create -q -f raw raw.img 1M
	for cmd in 'write -s qcow2-header 0 512' 'write -s vmdk-magic 0 4'; do
		before=$(sum raw.img)
		r=$(attempt "$tool" raw.img "$cmd")
		[ "$r" = EPERM ] || fail "$tool '$cmd' on a probed raw image: $r"
		[ "$(sum raw.img)" = "$before" ] || fail "$tool '$cmd' changed raw.img"
	done
	r=$(attempt "$tool" raw.img 'write -P 0x55 0 512')
	[ "$r" = ok ] || fail "$tool: an ordinary block-0 write: $r"
	r=$(attempt "$tool" raw.img 'write -P 0x51 0 1')
	[ "$r" = ok ] || fail "$tool: a one-byte block-0 write: $r"
	r=$(attempt "$tool" raw.img 'write -s qcow2-header 4096 512')
	[ "$r" = ok ] || fail "$tool: a header written past block 0: $r"
	# QEMU's warning, word for word, for a read-write open only.
	"$tool" -c 'read 0 512' raw.img >/dev/null 2>"warn.$tool"
	"$tool" -r -c 'read 0 512' raw.img >/dev/null 2>err
	[ -s err ] && fail "$tool -r warns: $(cat err)"
	# -f raw lifts the restriction.
	"$tool" -f raw -c 'write -s qcow2-header 0 512' raw.img >out 2>&1 ||
		fail "$tool -f raw: $(cat out)"
	qemu-img info raw.img | grep -qx "file format: qcow2" || fail "the header was not written"
done
grep -q "^WARNING: Image format was not specified for 'raw.img' and probing guessed raw.$" \
	warn.qemu-io || fail "qemu-io's warning: $(cat warn.qemu-io)"
diff -u warn.qemu-io warn.vdisk_io || fail "the warning differs from qemu-io's"

# A header cannot be assembled from pieces: a vmdk version line written
# first, then the comment line before it; and zeroes cannot complete a
# magic.  qemu-io refuses both through its read-modify-write of sector 0;
# vdisk probes the sector as the request would leave it.
python3 -c 'open("comment", "wb").write(b"#" * 99 + b"\n")'
printf 'version=1\n' >version
printf 'QEDx' >qedx
for tool in qemu-io vdisk_io; do
	rm -f raw.img
	qemu-img create -q -f raw raw.img 1M
	[ "$(attempt "$tool" raw.img 'write -s version 100 10')" = ok ] || fail "$tool: version line"
	before=$(sum raw.img)
	[ "$(attempt "$tool" raw.img 'write -s comment 0 100')" = EPERM ] ||
		fail "$tool: a vmdk descriptor assembled from two writes"
	[ "$(sum raw.img)" = "$before" ] || fail "$tool: raw.img changed"
	"$tool" -f raw -c 'write -s qedx 0 4' raw.img >/dev/null || fail "$tool: write QEDx"
	[ "$(attempt "$tool" raw.img 'write -z 3 1')" = EPERM ] ||
		fail "$tool: zeroes completing a qed magic"
	[ "$(attempt "$tool" raw.img 'write -z 0 512')" = ok ] || fail "$tool: zeroing block 0"
done
# A version line that ends past the first sector is not probed (QEMU 7.2
# reads 512 bytes), by either tool.
python3 -c 'open("edge.vmdk", "wb").write(b"#" * 505 + b"\nversion=1\n")'
qemu-img info edge.vmdk | grep -qx "file format: raw" || fail "qemu-img: edge.vmdk"
"$VDISK" info edge.vmdk | grep -qx "file format: raw" || fail "vdisk: edge.vmdk"
echo "probe-formats: ok"
