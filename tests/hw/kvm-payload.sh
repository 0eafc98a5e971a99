#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The KVM front end's payload (tests/payload/ide-rw.S: a real-mode program
# that writes, flushes and reads back sectors through the legacy IDE ports):
#
#  (a) under qemu-system-x86_64 -accel tcg as its -bios, against QEMU's own
#      PIIX3 IDE: it must exit through isa-debug-exit with 0 (QEMU's status
#      (0 << 1) | 1 = 1), print "ide-rw: PASS" on the debug console, and
#      qemu-io must find its pattern in LBA 1..8 and zeros around them.  This
#      proves the payload before it is used to judge vdisk.
#  (b) the command line of `vdisk machine --accel kvm` where no KVM is needed
#      (tcg refused, --payload required).
#  (c) everywhere, through the KVM front end's exit handler with a stand-in
#      for the vCPU (tests/payload/fake-vcpu.c, an interpreter of the
#      payload's real-mode instructions that produces struct kvm_run exits):
#      the same checks against vdisk's IDE model, and the image equal to
#      QEMU's byte for byte.
#  (d) under `vdisk machine --accel kvm --payload`: the same again.  Needs
#      /dev/kvm (SKIP without it, which STRICT=1 accepts) and the IDE model
#      attached to if=ide (SKIP while vdisk says the drive is not attached).
set -uo pipefail
SRCDIR=${SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${BUILD:-build}
case "$BUILD" in
/*) ;;
*) BUILD=$PWD/$BUILD ;;
esac
VDISK=${VDISK:-$BUILD/vdisk}
# shellcheck source=../lib/common.sh
. "$SRCDIR/tests/lib/common.sh"

vd_setup qemu-system-x86_64 qemu-io qemu-img make ld "${CC:-cc}"

NSECT=8
FIRST_LBA=1
PATTERN_BASE=0xa0
PAYLOAD=$BUILD/tests/payload/ide-rw.bin

FAKE_VCPU=$BUILD/tests/payload/fake-vcpu

# Build the payload from source, and the stand-in vCPU
# (tests/payload/payload.mk).
make -s -C "$SRCDIR" -f tests/payload/payload.mk BUILD="$BUILD" "$PAYLOAD" "$FAKE_VCPU" \
	>build.log 2>&1 || {
	cat build.log
	fail "could not build the payload"
}
[ "$(wc -c <"$PAYLOAD")" -eq 65536 ] || fail "payload is not 64 KiB"
# The reset vector (offset 0xFFF0): ljmp $0xf000, $start (EA off16 F000).
vector=$(od -An -tx1 -j $((0xfff0)) -N 5 "$PAYLOAD" | tr -d ' \n')
case "$vector" in
ea????00f0) ;;
*) fail "no far jump to F000 at the reset vector: $vector" ;;
esac

# check_image IMG WHO: the pattern in LBA 1..N, zeros in LBA 0 and N+1.
check_image() {
	local img=$1 who=$2 cmds=() lba out
	for ((lba = FIRST_LBA; lba < FIRST_LBA + NSECT; lba++)); do
		cmds+=(-c "read -P $((PATTERN_BASE + lba)) $((lba * 512)) 512")
	done
	cmds+=(-c "read -P 0 0 512" -c "read -P 0 $(((FIRST_LBA + NSECT) * 512)) 512")
	out=$(qemu-io -f raw "${cmds[@]}" "$img" 2>&1) || {
		echo "$out"
		fail "$who: qemu-io does not find the payload's sectors"
	}
	if grep -q "verification failed" <<<"$out" ||
		[ "$(grep -c 'read 512/512' <<<"$out")" -ne $((NSECT + 2)) ]; then
		echo "$out"
		fail "$who: qemu-io does not find the payload's sectors"
	fi
}

# ---- (a) the payload against QEMU's IDE ----
qemu-img create -q -f raw qemu.img 1M || fail "qemu-img create"
timeout 120 qemu-system-x86_64 -machine pc -accel tcg -bios "$PAYLOAD" -display none \
	-nodefaults -no-reboot -drive file=qemu.img,if=ide,format=raw \
	-device isa-debug-exit,iobase=0xf4,iosize=0x04 -debugcon file:qemu.log
rc=$?
echo "--- QEMU debug console:"
cat qemu.log
[ $rc -eq 1 ] || fail "QEMU: exit status $rc, expected 1 (isa-debug-exit with 0)"
grep -qx "ide-rw: PASS" qemu.log || fail "QEMU: no 'ide-rw: PASS' on the debug console"
check_image qemu.img QEMU
echo "ok: the payload passes against QEMU's IDE"

# ---- (b) the command line, everywhere ----
out=$("$VDISK" machine --accel tcg --payload "$PAYLOAD" 2>&1) && fail "--accel tcg accepted"
grep -q "not supported: vdisk has no CPU emulator; use --qtest or --accel kvm" <<<"$out" ||
	fail "--accel tcg: $out"
out=$("$VDISK" machine --accel kvm 2>&1) && fail "--accel kvm without a payload accepted"
grep -q "needs --payload" <<<"$out" || fail "--accel kvm without --payload: $out"
out=$("$VDISK" machine --payload "$PAYLOAD" 2>&1) && fail "--payload without kvm accepted"
grep -q "accel kvm" <<<"$out" || fail "--payload without --accel kvm: $out"
echo "ok: vdisk machine's --accel/--payload command line"

# isa-debug-exit and the debug console against QEMU's, over the test protocol
# (HALT.bin: the CPU halts at the reset vector).  QEMU exits inside the
# device write, before replying; vdisk replies, then quits: compare the rest.
head -c 65536 /dev/zero | tr '\0' '\364' >halt.bin
printf 'inb 0xf4\ninb 0xe9\noutb 0xe9 0x41\noutb 0xe9 0x0a\noutl 0xf4 0x7f\n' >cmds
dev=(-device "isa-debug-exit,iobase=0xf4,iosize=0x04")
timeout 60 qemu-system-x86_64 -machine pc -accel tcg -bios halt.bin -qtest stdio -display none \
	-nodefaults -qtest-log /dev/null "${dev[@]}" -debugcon file:qemu-con.log <cmds >qemu-out
qrc=$?
timeout 60 "$VDISK" machine "${dev[@]}" -debugcon file:vdisk-con.log --qtest stdio <cmds >vdisk-out
vrc=$?
if [ $qrc -ne 255 ] || [ $vrc -ne 255 ]; then
	fail "outl 0xf4 0x7f: exit status QEMU $qrc, vdisk $vrc, expected 255 ((0x7f << 1) | 1)"
fi
[ "$(head -n 4 qemu-out)" = "$(head -n 4 vdisk-out)" ] || {
	paste qemu-out vdisk-out
	fail "isa-debug-exit/debugcon replies differ from QEMU's"
}
cmp qemu-con.log vdisk-con.log || fail "the debug consoles differ"
echo "ok: isa-debug-exit and debugcon behave as QEMU's"

# ---- (c) the payload through vd_kvm_handle_exit, without /dev/kvm ----
qemu-img create -q -f raw fake.img 1M || fail "qemu-img create"
timeout 120 "$FAKE_VCPU" "$PAYLOAD" -drive file=fake.img,if=ide,format=raw 2>fake.log
rc=$?
echo "--- fake-vcpu:"
cat fake.log
[ $rc -eq 1 ] || fail "fake-vcpu: exit status $rc, expected 1 (isa-debug-exit with 0)"
grep -qx "ide-rw: PASS" fake.log || fail "fake-vcpu: no 'ide-rw: PASS' on the debug console"
check_image fake.img fake-vcpu
cmp qemu.img fake.img || fail "the images QEMU and vdisk (fake vCPU) left differ"
echo "ok: the payload passes through the KVM exit handler against vdisk's IDE"

# ---- (d) the payload under vdisk's KVM front end ----
# Run it everywhere: without /dev/kvm it must fail cleanly, and what it says
# about the drive tells whether the IDE model is attached yet.
qemu-img create -q -f raw vdisk.img 1M || fail "qemu-img create"
timeout 120 "$VDISK" machine --accel kvm --payload "$PAYLOAD" \
	-drive file=vdisk.img,if=ide,format=raw -debugcon file:vdisk.log 2>vdisk.err
rc=$?
cat vdisk.err
echo "--- vdisk debug console:"
cat vdisk.log 2>/dev/null
ide_note=
if grep -q "not attached" vdisk.err; then
	ide_note="; if=ide is not attached to an IDE controller yet either"
fi
if [ ! -e /dev/kvm ]; then
	if [ $rc -ne 1 ] || ! grep -q "/dev/kvm" vdisk.err; then
		fail "vdisk without /dev/kvm: status $rc, expected a clean error naming /dev/kvm"
	fi
	skip "needs /dev/kvm for the run under vdisk machine --accel kvm (the payload passed against QEMU's IDE, and through the exit handler against vdisk's$ide_note)"
fi
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
	skip "needs read-write access to /dev/kvm for vdisk machine --accel kvm (the payload passed against QEMU's IDE, and through the exit handler against vdisk's$ide_note)"
fi
if [ -n "$ide_note" ]; then
	skip "vdisk machine does not attach if=ide drives to an IDE controller yet (hw/ide is not wired into machine/pc.c)"
fi
[ $rc -eq 1 ] || fail "vdisk: exit status $rc, expected 1 (isa-debug-exit with 0)"
grep -qx "ide-rw: PASS" vdisk.log || fail "vdisk: no 'ide-rw: PASS' on the debug console"
check_image vdisk.img vdisk
cmp qemu.img vdisk.img || fail "the images QEMU and vdisk left differ"
echo "ok: the payload passes under vdisk machine --accel kvm"
