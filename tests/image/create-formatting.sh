#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vdisk create's "Formatting 'FILE', fmt=FMT ..." line is qemu-img 7.2's for
# every format vdisk creates (raw, qcow2, qed, vmdk, vhdx, vpc, vdi, luks):
# the same options, in the same order, with the same defaults and the same
# spelling of the values the user gave (sizes as numbers, strings with
# commas doubled, booleans as typed).  Each case runs both tools with the
# same arguments and diffs the lines; the file name is the same.
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img

qemu-img create -q -f raw base.raw 32M
qemu-img create -q -f qcow2 base.qcow2 48M
qemu-img create -q -f vmdk base.vmdk 16M
sec=(--object secret,id=sec0,data=hunter2)
n=0
same_line()
{
	local q v
	rm -f new.img
	q=$(qemu-img create "$@" new.img 64M 2>&1 | grep '^Formatting')
	rm -f new.img
	v=$("$VDISK" create "$@" new.img 64M 2>&1 | grep '^Formatting')
	rm -f new.img
	[ -n "$q" ] || fail "qemu-img create $*: no Formatting line"
	[ "$q" = "$v" ] || fail "create $*:
qemu-img: $q
vdisk:    $v"
	n=$((n + 1))
}

for f in raw qcow2 qed vmdk vhdx vpc vdi; do
	same_line -f "$f"
done
same_line -f raw -o preallocation=falloc
same_line -f raw -o preallocation=full,extent_size_hint=256k
same_line -f raw -o nocow=on
same_line -f qcow2 -o cluster_size=2M,lazy_refcounts=on,refcount_bits=64
same_line -f qcow2 -o compat=0.10,cluster_size=4k
same_line -f qcow2 -o compat=1.1,extended_l2=on,cluster_size=128k,compression_type=zstd
same_line -f qcow2 -o preallocation=metadata,refcount_bits=0x8
same_line -f qcow2 -o extent_size_hint=1M,nocow=off
same_line -f qcow2 -b base.qcow2 -F qcow2
same_line -f qcow2 -b base.raw -F raw -o cluster_size=512
same_line -f qcow2 -o data_file=data,,file.raw,data_file_raw=on
same_line -f qed -o cluster_size=128k,table_size=8
same_line -f qed -b base.raw -F raw
same_line -f vmdk -o subformat=monolithicFlat
same_line -f vmdk -o subformat=streamOptimized,adapter_type=lsilogic
same_line -f vmdk -o compat6=on,hwversion=6,zeroed_grain=on
same_line -f vmdk -o toolsversion=2147483647
same_line -f vmdk -b base.vmdk -F vmdk
same_line -f vhdx -o subformat=fixed
same_line -f vhdx -o log_size=8M,block_size=16M,block_state_zero=off
same_line -f vpc -o subformat=fixed,force_size=on
same_line -f vpc -o force_size=off
same_line -f vdi -o static=on
same_line -f vdi -o preallocation=off
same_line "${sec[@]}" -f luks -o key-secret=sec0,iter-time=10
same_line "${sec[@]}" -f luks -o key-secret=sec0,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1,iter-time=10
echo "ok: $n Formatting lines equal to qemu-img 7.2's"
