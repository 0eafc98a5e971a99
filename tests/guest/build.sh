#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# tests/guest/build.sh -- build the test guest once, into a cache folder:
# Debian's packaged kernel (the versioned linux-image package that
# linux-image-amd64 depends on, unpacked with dpkg -x, never installed) and
# a busybox-static initramfs whose /init (tests/guest/init.sh) loads the
# virtio and ext4 modules and runs the guest side of the test.
#
#   tests/guest/build.sh            prints the cache folder on success
#
# Cache: $VDISK_GUEST_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/vdisk-guest.
# Needs apt-get (download only), dpkg, python3 (writes the cpio), gzip, busybox-static
# (/bin/busybox statically linked).  Exit 77 when something is missing.
set -euo pipefail

SRC=$(cd "$(dirname "$0")" && pwd)
CACHE=${VDISK_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vdisk-guest}
# The virtio modules, then ext4 (mounts ext2) with its dependencies; crc32c
# is requested through the crypto API, which cannot load modules here.
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
crc16 mbcache jbd2 crc32c_generic ext4"
MODULES=$(echo $MODULES)

skip() {
	echo "SKIP: $*"
	exit 77
}

# Rebuild the initramfs when init.sh changes; the kernel is downloaded once.
if [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initramfs.gz" ] && [ -f "$CACHE/init.sh" ] &&
	cmp -s "$CACHE/init.sh" "$SRC/init.sh" && [ "$(cat "$CACHE/order" 2>/dev/null)" = "$MODULES" ]; then
	echo "$CACHE"
	exit 0
fi

for t in dpkg apt-get python3 gzip; do
	command -v "$t" >/dev/null || skip "$t not installed"
done
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || skip "busybox-static not installed"
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
	ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic' || skip "$BUSYBOX is not static (install busybox-static)"

mkdir -p "$CACHE/deb"
# Unpack again when the module list changed (the package stays cached).
if [ ! -f "$CACHE/vmlinuz" ] || [ ! -d "$CACHE/modules" ] ||
	[ "$(cat "$CACHE/order" 2>/dev/null)" != "$MODULES" ]; then
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
	[ -n "$pkg" ] || skip "cannot resolve linux-image-amd64 (run apt-get update)"
	if ! ls "$CACHE/deb/${pkg}_"*.deb >/dev/null 2>&1; then
		(cd "$CACHE/deb" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
			skip "cannot download $pkg"
	fi
	rm -rf "$CACHE/x"
	mkdir -p "$CACHE/x"
	dpkg -x "$CACHE/deb/${pkg}_"*.deb "$CACHE/x"
	rm -rf "$CACHE/modules"
	mkdir -p "$CACHE/modules"
	for m in $MODULES; do
		f=$(find "$CACHE/x/lib/modules" -name "$m.ko*" | head -n1)
		[ -n "$f" ] || continue # built in
		case "$f" in
		*.ko.xz) xz -dc "$f" >"$CACHE/modules/$m.ko" ;;
		*.ko.zst) zstd -qdc "$f" >"$CACHE/modules/$m.ko" ;;
		*.ko.gz) gzip -dc "$f" >"$CACHE/modules/$m.ko" ;;
		*) cp "$f" "$CACHE/modules/$m.ko" ;;
		esac
	done
	cp "$CACHE/x"/boot/vmlinuz-* "$CACHE/vmlinuz"
	rm -rf "$CACHE/x"
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$BUSYBOX" "$root/bin/busybox"
cp "$CACHE"/modules/*.ko "$root/lib/modules/" 2>/dev/null || true
echo "$MODULES" >"$root/lib/modules/order"
cp "$SRC/init.sh" "$root/init"
chmod 755 "$root/init" "$root/bin/busybox"
# A newc cpio archive, written by python3 so that cpio need not be installed.
python3 - "$root" <<'PY' | gzip -1 >"$CACHE/initramfs.gz.tmp"
import os, sys
root = sys.argv[1]
out = sys.stdout.buffer
ino = [1]
def entry(name, mode, data=b"", nlink=1):
    hdr = "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X" % (
        ino[0], mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
    ino[0] += 1
    b = hdr.encode() + name.encode() + b"\0"
    b += b"\0" * (-len(b) % 4) + data + b"\0" * (-len(data) % 4)
    out.write(b)
for d, dirs, files in os.walk(root):
    rel = os.path.relpath(d, root)
    if rel != ".":
        entry(rel, 0o040755, nlink=2)
    for f in sorted(files):
        p = os.path.join(d, f)
        with open(p, "rb") as fh:
            entry(os.path.normpath(os.path.join(rel, f)), 0o100000 | (os.stat(p).st_mode & 0o777), fh.read())
entry("TRAILER!!!", 0)
PY
mv "$CACHE/initramfs.gz.tmp" "$CACHE/initramfs.gz"
cp "$SRC/init.sh" "$CACHE/init.sh"
echo "$MODULES" >"$CACHE/order"
echo "$CACHE"
