#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Internal snapshots, both ways: snapshots made by vdisk are listed and
# applied by qemu-img, and the other way round; the two tools list the same
# table (dates normalised); data reads back with qemu-io -P after each
# apply; qemu-img check and vdisk check are clean after every step.
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-img qemu-io

clean() { # IMG STEP
	qemu-img check -q "$1" || fail "qemu-img check after $2"
	"$VDISK" check -q "$1" || fail "vdisk check after $2"
}

# Both tools list the same snapshots (the date column normalised).
same_list() { # IMG STEP
	qemu-img snapshot -l "$1" | sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}/DATE/' >q.txt
	"$VDISK" snapshot -l "$1" | sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}/DATE/' >v.txt
	diff -u q.txt v.txt || fail "snapshot lists differ after $2"
}

readback() { # IMG STEP qemu-io-commands...
	local img=$1 step=$2 args=()
	shift 2
	for c in "$@"; do args+=(-c "$c"); done
	qemu-io "${args[@]}" "$img" >out 2>&1 || fail "$step: qemu-io: $(cat out)"
	! grep -q "verification failed" out || fail "$step: data differs: $(cat out)"
}

for opts in "" "compat=0.10" "cluster_size=4096" "extended_l2=on" "refcount_bits=64"; do
	rm -f s.qcow2
	qemu-img create -q -f qcow2 ${opts:+-o "$opts"} s.qcow2 64M
	qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 8M 64k' s.qcow2 >/dev/null

	# vdisk creates, qemu-img sees and applies.
	"$VDISK" snapshot -c first s.qcow2 || fail "vdisk snapshot -c ($opts)"
	clean s.qcow2 "vdisk -c first ($opts)"
	same_list s.qcow2 "vdisk -c first ($opts)"
	qemu-io -c 'write -P 3 0 512k' -c 'write -P 4 8M 64k' s.qcow2 >/dev/null
	qemu-img snapshot -c second s.qcow2
	clean s.qcow2 "qemu-img -c second ($opts)"
	same_list s.qcow2 "qemu-img -c second ($opts)"
	"$VDISK" io -f qcow2 -c 'write -P 5 0 64k' -c 'write -P 6 16M 64k' s.qcow2 >/dev/null
	clean s.qcow2 "vdisk writes ($opts)"

	qemu-img snapshot -a first s.qcow2
	clean s.qcow2 "qemu-img -a first ($opts)"
	readback s.qcow2 "qemu-img -a first ($opts)" 'read -P 1 0 1M' 'read -P 2 8M 64k' \
		'read -P 0 16M 64k'

	# vdisk applies the one qemu-img made, then its own.
	"$VDISK" snapshot -a second s.qcow2 || fail "vdisk snapshot -a second ($opts)"
	clean s.qcow2 "vdisk -a second ($opts)"
	readback s.qcow2 "vdisk -a second ($opts)" 'read -P 3 0 512k' 'read -P 1 512k 512k' \
		'read -P 4 8M 64k' 'read -P 0 16M 64k'
	"$VDISK" snapshot -a 1 s.qcow2 || fail "vdisk snapshot -a 1 ($opts)"
	clean s.qcow2 "vdisk -a 1 ($opts)"
	readback s.qcow2 "vdisk -a 1 ($opts)" 'read -P 1 0 1M' 'read -P 2 8M 64k'

	# Writes after an apply do not change the snapshots.
	"$VDISK" io -f qcow2 -c 'write -P 7 0 1M' s.qcow2 >/dev/null
	clean s.qcow2 "write after apply ($opts)"
	qemu-img snapshot -a first s.qcow2
	readback s.qcow2 "first again ($opts)" 'read -P 1 0 1M'

	# A second vdisk snapshot gets the next free ID.
	"$VDISK" snapshot -c third s.qcow2
	"$VDISK" snapshot -l s.qcow2 | grep -Eq '^3 +third' || fail "ID of third ($opts)"
	same_list s.qcow2 "vdisk -c third ($opts)"

	# Deletes, by each tool.
	"$VDISK" snapshot -d second s.qcow2 || fail "vdisk snapshot -d ($opts)"
	clean s.qcow2 "vdisk -d second ($opts)"
	same_list s.qcow2 "vdisk -d second ($opts)"
	qemu-img snapshot -d third s.qcow2
	clean s.qcow2 "qemu-img -d third ($opts)"
	"$VDISK" snapshot -d 1 s.qcow2 || fail "vdisk snapshot -d 1 ($opts)"
	clean s.qcow2 "vdisk -d 1 ($opts)"
	[ -z "$(qemu-img snapshot -l s.qcow2)" ] || fail "snapshots left ($opts)"
	readback s.qcow2 "after deletes ($opts)" 'read -P 1 0 1M' 'read -P 2 8M 64k'
done

# Errors: unknown snapshot, duplicate ID is impossible (IDs are picked).
rc=0
"$VDISK" snapshot -a nosuch s.qcow2 2>err || rc=$?
[ $rc != 0 ] || fail "applying a missing snapshot succeeded"
echo PASS
