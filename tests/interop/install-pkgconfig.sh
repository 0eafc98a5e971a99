#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `make install PREFIX=` installs a usable library: a program that includes
# <vdisk/block.h> builds with `pkg-config --cflags --libs vdisk` against the
# installed shared library, and statically against libvdisk.a with the
# private libraries the .pc file names, and both open an image.
set -eu

SRCDIR=${SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$(dirname "$0")/../lib/common.sh"
need pkg-config cc qemu-img qemu-io
# The sanitizer build's objects need the sanitizer runtime at link time: the
# install check belongs to the plain build.
if [ -n "${VDISK_QUICK:-}" ]; then
	skip "install check runs in the plain build only (VDISK_QUICK set)"
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

make -s -C "$SRCDIR" BUILD="$BUILD" install PREFIX="$T/inst" >"$T/make.log" 2>&1 ||
	{ cat "$T/make.log"; fail "make install"; }
for f in bin/vdisk lib/libvdisk.a lib/libvdisk.so.0 lib/pkgconfig/vdisk.pc \
	include/vdisk/block.h share/man/man1/vdisk.1; do
	[ -e "$T/inst/$f" ] || fail "$f not installed"
done
grep -qx "prefix=$T/inst" "$T/inst/lib/pkgconfig/vdisk.pc" || fail "vdisk.pc does not name the prefix"

cat >"$T/embed.c" <<'C'
#include <stdio.h>
#include <vdisk/block.h>
int main(int argc, char **argv)
{
	struct vd_loop *loop;
	struct vd_node *n;
	struct vd_error err = { 0 };
	char buf[512];

	if (argc != 2 || vd_loop_new(&loop) < 0)
		return 2;
	vd_loop_set_current(loop);
	if (vd_node_open(argv[1], "raw", NULL, 0, &n, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	if (vd_node_pread(n, 0, buf, sizeof(buf)) < 0 || buf[0] != 0x5a)
		return 1;
	printf("%lld\n", (long long)vd_node_size(n));
	vd_node_unref(n);
	vd_loop_free(loop);
	return 0;
}
C
export PKG_CONFIG_PATH="$T/inst/lib/pkgconfig"
qemu-img create -q -f raw "$T/img" 1M
qemu-io -f raw -c 'write -q -P 0x5a 0 512' "$T/img"

# shellcheck disable=SC2046
cc -o "$T/shared" "$T/embed.c" $(pkg-config --cflags --libs vdisk) -Wl,-rpath,"$T/inst/lib" ||
	fail "build against the shared library"
[ "$("$T/shared" "$T/img")" = 1048576 ] || fail "shared build: wrong result"

# shellcheck disable=SC2046
cc -o "$T/static" "$T/embed.c" $(pkg-config --cflags vdisk) "$T/inst/lib/libvdisk.a" \
	$(pkg-config --static --libs vdisk | sed 's/-lvdisk//') || fail "static build"
[ "$("$T/static" "$T/img")" = 1048576 ] || fail "static build: wrong result"
echo PASS
