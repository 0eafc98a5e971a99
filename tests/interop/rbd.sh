#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The rbd driver against a real Ceph 16 cluster (tests/lib/ceph-cluster.sh:
# one mon, one mgr, three memstore OSDs on 127.0.0.1) and the real clients:
# images vdisk writes are read by qemu-io/qemu-img (rbd:) and `rbd export`,
# and the other way round; `rbd snap create` snapshots read by vdisk; both
# spellings (rbd:pool[/ns]/image[@snap][:k=v] and driver=rbd,...); create
# with cluster_size, resize, map, qcow2 in an RBD image and a qcow2 overlay
# on an RBD backing image, convert in and out, and `vdisk serve` exporting
# an RBD image over NBD and vhost-user-blk, and a real Linux guest filling a
# filesystem on an RBD-backed vhost-user-blk export (tests/guest/run.sh --rbd).
# The cluster starts once.
set -eu
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-io qemu-img nbdinfo python3
[ -e /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so ] ||
	ls /usr/lib/*/qemu/block-rbd.so >/dev/null 2>&1 || skip "qemu-block-extra (qemu's rbd:) not installed"
"$VDISK" --version | grep -q '^formats:.* rbd' || skip "vdisk was built without librbd (librbd-dev)"
. "$SRCDIR/tests/lib/ceph-cluster.sh"

PIDS=()
stop_servers() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
}
trap 'stop_servers; rm -rf "$T"' EXIT
# An escaped '@' (no snapshot): the ':conf=' after it is still an option (read,
# and missing here), not part of the image name.
"$VDISK" info 'rbd:pool/a\@b:conf=/nonexistent/ceph.conf' >out 2>&1 && fail "opened a bad name"
grep -q "error reading conf file /nonexistent/ceph.conf" out || fail "escaped @: $(cat out)"
ceph_cluster_start || fail "the ceph cluster did not start"
"$VDISK" info "rbd:$CEPH_POOL/none:conf=$CEPH_CONF" >/dev/null 2>&1 && fail "an absent image opened"
C=$CEPH_CONF
P=$CEPH_POOL
R() { echo "rbd:$P/$1:conf=$C"; }
RBD() { timeout 60 rbd -c "$C" "$@"; }

# --- vdisk create/write, read by qemu-io, qemu-img and rbd export -------------
"$VDISK" create -q -f raw -o cluster_size=1M "$(R a)" 64M || fail "create on rbd"
RBD info "$P/a" >a.info
grep -q 'size 64 MiB in 64 objects' a.info && grep -q 'order 20' a.info ||
	{ cat a.info; fail "rbd info after vdisk create"; }
"$VDISK" info "$(R a)" >info.txt
grep -qx 'cluster_size: 1048576' info.txt && grep -qx 'disk size: unavailable' info.txt &&
	grep -qx 'virtual size: 64 MiB (67108864 bytes)' info.txt || { cat info.txt; fail "info"; }
qemu-img info "$(R a)" | grep -qx 'cluster_size: 1048576' || fail "qemu-img info cluster_size"

IO="-c 'write -P 0xa1 0 1M' -c 'write -P 0xa2 3M 4k' -c 'write -P 0xa3 2102152 3000' \
	-c 'write -z 8M 2M' -c 'write -P 0xa4 20M 1M' -c 'discard 20M 1M' -c 'write -P 0xa5 63M 1M' \
	-c 'aio_write -P 0xa6 40M 64k' -c 'aio_write -P 0xa7 41M 64k' -c aio_flush -c flush"
qemu-img create -q -f raw ref.raw 64M
eval "\"\$VDISK\" io -f raw $IO ref.raw" >/dev/null || fail "vdisk io on a file"
eval "\"\$VDISK\" io -f raw $IO \"\$(R a)\"" >io.out 2>&1 || { cat io.out; fail "vdisk io on rbd"; }
grep -qi 'error\|failed' io.out && { cat io.out; fail "vdisk io on rbd"; }
RBD export "$P/a" export.raw >/dev/null 2>&1 || fail "rbd export"
cmp ref.raw export.raw || fail "rbd export differs from what vdisk wrote"
qemu-io -f raw -c 'read -P 0xa1 0 1M' -c 'read -P 0xa2 3M 4k' -c 'read -P 0xa3 2102152 3000' \
	-c 'read -P 0 8M 2M' -c 'read -P 0 20M 1M' -c 'read -P 0xa5 63M 1M' \
	-c 'read -P 0xa6 40M 64k' "$(R a)" >q.out || fail "qemu-io read"
grep -q 'verification failed' q.out && { cat q.out; fail "qemu-io sees other data"; }
qemu-img compare -f raw -F raw "$(R a)" ref.raw >/dev/null || fail "qemu-img compare"

# Block status from rbd_diff_iterate2 (fast-diff): same map as qemu-img.
"$VDISK" map -f raw --output=json "$(R a)" | python3 -c '
import json, sys; print(json.dumps([(e["start"], e["length"], e["data"], e["zero"]) for e in json.load(sys.stdin)]))' >map.vd
qemu-img map -f raw --output=json "$(R a)" | python3 -c '
import json, sys; print(json.dumps([(e["start"], e["length"], e["data"], e["zero"]) for e in json.load(sys.stdin)]))' >map.qemu
cmp map.vd map.qemu || { cat map.vd map.qemu; fail "vdisk map differs from qemu-img map"; }
grep -q 'false, true' map.vd || { cat map.vd; fail "map shows no hole"; }

# Without fast-diff (only layering): block status asks object by object,
# exact where qemu-img reports everything as data.
RBD create --size 32M --image-feature layering "$P/nofd" || fail "create without fast-diff"
"$VDISK" io -f raw -c 'write -P 0x12 8M 4k' "$(R nofd)" >/dev/null
"$VDISK" map -f raw --output=json "$(R nofd)" | python3 -c '
import json, sys
m = [(e["start"], e["length"], e["data"]) for e in json.load(sys.stdin)]
data = [(s, l) for s, l, d in m if d]
assert len(data) == 1 and data[0][0] <= 8 << 20 < data[0][0] + data[0][1] <= 12 << 20, m
assert sum(l for s, l, d in m) == 32 << 20, m' || fail "map without fast-diff"

# --- the other way: qemu-io and rbd import write, vdisk reads ---------------------
qemu-img create -q -f raw "$(R b)" 16M
qemu-io -f raw -c 'write -P 0xb1 0 64k' -c 'write -P 0xb2 15M 1M' "$(R b)" >/dev/null
"$VDISK" io -f raw -c 'read -P 0xb1 0 64k' -c 'read -P 0xb2 15M 1M' -c 'read -P 0 1M 1M' \
	"$(R b)" >v.out || fail "vdisk read of a qemu-written image"
grep -q 'verification failed' v.out && { cat v.out; fail "vdisk sees other data"; }
RBD import ref.raw "$P/imported" >/dev/null 2>&1 || fail "rbd import"
"$VDISK" compare -f raw -F raw "$(R imported)" ref.raw >/dev/null ||
	fail "vdisk compare of an rbd-imported image"

# --- driver=rbd spelling, namespaces, escapes ---------------------------------------
"$VDISK" io --image-opts -c 'read -P 0xa1 0 1M' \
	"driver=raw,file.driver=rbd,file.pool=$P,file.image=a,file.conf=$C" >/dev/null ||
	fail "driver=rbd,pool=,image=,conf="
"$VDISK" io --image-opts -c 'read -P 0xa1 0 1M' \
	"driver=raw,file.driver=rbd,file.pool=$P,file.image=a,file.conf=$C,file.user=admin" \
	>/dev/null || fail "user="
RBD namespace create "$P/ns1" || fail "rbd namespace create"
"$VDISK" create -q -f raw "rbd:$P/ns1/img:conf=$C" 8M || fail "create in a namespace"
RBD ls "$P/ns1" | grep -qx img || fail "image not in the namespace"
"$VDISK" io -f raw -c 'write -P 0x77 0 4k' "rbd:$P/ns1/img:conf=$C" >/dev/null
qemu-io -f raw -c 'read -P 0x77 0 4k' "rbd:$P/ns1/img:conf=$C" | grep -q 'read 4096' ||
	fail "qemu-io reads the namespaced image"
"$VDISK" io --image-opts -c 'read -P 0x77 0 4k' \
	"driver=raw,file.driver=rbd,file.pool=$P,file.namespace=ns1,file.image=img,file.conf=$C" \
	>/dev/null || fail "namespace="
# A colon in the image name, escaped; librados options in the name.
"$VDISK" create -q -f raw "rbd:$P/we\\:ird:conf=$C" 1M || fail "escaped name"
RBD ls "$P" | grep -qx 'we:ird' || fail "escaped name not unescaped"
"$VDISK" info "rbd:$P/a:conf=$C:rados_osd_op_timeout=10:rados_mon_op_timeout=10" >/dev/null ||
	fail "librados options in the name"
out=$("$VDISK" info "rbd:$P/a:conf=$C:no_such_option=1" 2>&1) && fail "unknown librados option"
grep -q 'invalid conf option no_such_option' <<<"$out" || fail "message: $out"
out=$("$VDISK" info "rbd:nopool" 2>&1) && fail "no pool"
grep -q 'Pool name is required' <<<"$out" || fail "message: $out"
out=$("$VDISK" info "rbd:$P/a:conf" 2>&1) && fail "option without a value"
grep -q 'conf option conf has no value' <<<"$out" || fail "message: $out"
# No monitor there: an error after client_mount_timeout, not a hang.
out=$(timeout 30 "$VDISK" info "rbd:$P/a:mon_host=127.0.0.1\\:9:client_mount_timeout=3" 2>&1) &&
	fail "opened without a monitor"
grep -q 'error connecting: Connection timed out' <<<"$out" || fail "message: $out"
out=$("$VDISK" create -f raw -o cluster_size=3000 "$(R bad)" 1M 2>&1) && fail "odd cluster_size"
grep -q 'power of 2' <<<"$out" || fail "message: $out"

# --- snapshots: rbd snap create, read by vdisk; vdisk snapshot -l ------------------
RBD snap create "$P/a@s1" >/dev/null 2>&1 || fail "rbd snap create"
"$VDISK" io -f raw -c 'write -P 0xee 0 1M' "$(R a)" >/dev/null
"$VDISK" io -f raw -r -c 'read -P 0xa1 0 1M' -c 'read -P 0xa5 63M 1M' "rbd:$P/a@s1:conf=$C" \
	>snap.out || fail "read at the snapshot"
grep -q 'verification failed' snap.out && { cat snap.out; fail "snapshot data"; }
"$VDISK" io -f raw -c 'read -P 0xee 0 1M' "$(R a)" | grep -q 'read 1048576' ||
	fail "head after the snapshot"
out=$("$VDISK" io -f raw -c 'write 0 4k' "rbd:$P/a@s1:conf=$C" 2>&1) && fail "wrote a snapshot"
"$VDISK" snapshot -l "$(R a)" >sn.vd 2>/dev/null || fail "vdisk snapshot -l"
grep -q 's1' sn.vd || { cat sn.vd; fail "snapshot not listed"; }
qemu-img snapshot -l "$(R a)" >sn.qemu 2>/dev/null
diff sn.vd sn.qemu || fail "snapshot list differs from qemu-img's"
"$VDISK" snapshot -c s2 "$(R a)" || fail "vdisk snapshot -c"
RBD snap ls "$P/a" | grep -q ' s2 ' || fail "rbd does not see s2"
"$VDISK" compare -f raw -F raw "rbd:$P/a@s1:conf=$C" ref.raw >/dev/null ||
	fail "snapshot s1 differs from the reference"
"$VDISK" snapshot -d s2 "$(R a)" || fail "vdisk snapshot -d"
# Rollback (-a) on a scratch image.
"$VDISK" create -q -f raw "$(R sa)" 8M
"$VDISK" io -f raw -c 'write -P 0x01 0 64k' "$(R sa)" >/dev/null
"$VDISK" snapshot -c one "$(R sa)" || fail "snapshot -c one"
"$VDISK" io -f raw -c 'write -P 0x02 0 64k' "$(R sa)" >/dev/null
"$VDISK" snapshot -a one "$(R sa)" || fail "vdisk snapshot -a"
"$VDISK" io -f raw -c 'read -P 0x01 0 64k' "$(R sa)" | grep -q 'verification failed' &&
	fail "rollback did not restore the data"

# --- resize --------------------------------------------------------------------------
"$VDISK" resize -f raw "$(R b)" 32M || fail "resize"
RBD info "$P/b" | grep -q 'size 32 MiB' || fail "rbd size after resize"

# --- qcow2 in an RBD image, both creators --------------------------------------------
"$VDISK" create -q -f qcow2 "$(R q1)" 64M || fail "create qcow2 on rbd"
"$VDISK" io -f qcow2 -c 'write -P 0x5a 0 1M' -c 'write -P 0x5b 30M 64k' "$(R q1)" >/dev/null ||
	fail "qcow2 on rbd write"
qemu-img check -f qcow2 "$(R q1)" >/dev/null || fail "qemu-img check of qcow2 on rbd"
qemu-io -f qcow2 -c 'read -P 0x5a 0 1M' -c 'read -P 0x5b 30M 64k' -c 'read -P 0 2M 1M' \
	"$(R q1)" >q1.out
grep -q 'verification failed' q1.out && { cat q1.out; fail "qemu-io on qcow2 in rbd"; }
qemu-img create -q -f qcow2 "$(R q2)" 64M
"$VDISK" io -f qcow2 -c 'write -P 0x6a 10M 2M' "$(R q2)" >/dev/null || fail "vdisk on qemu's qcow2"
"$VDISK" check -f qcow2 "$(R q2)" >/dev/null || fail "vdisk check"
qemu-img check -f qcow2 "$(R q2)" >/dev/null || fail "qemu-img check after vdisk wrote"
qemu-io -f qcow2 -c 'read -P 0x6a 10M 2M' "$(R q2)" | grep -q 'read 2097152' || fail "read q2"

# --- a qcow2 overlay whose backing file is an RBD image --------------------------------
"$VDISK" create -q -f qcow2 -o "backing_file=$(R a),backing_fmt=raw" ov.qcow2 64M ||
	fail "overlay on rbd"
qemu-img info ov.qcow2 | grep -q "backing file: $(R a)" || fail "backing name in the overlay"
# vdisk never follows a protocol name found in an image header (a hostile
# image must not make it connect anywhere): the user names the backing.
OV="driver=qcow2,file.driver=file,file.filename=ov.qcow2,backing=$(R a)"
"$VDISK" io --image-opts -c 'write -P 0x99 4M 64k' "$OV" >/dev/null || fail "write the overlay"
qemu-io -f qcow2 -c 'read -P 0xee 0 1M' -c 'read -P 0x99 4M 64k' -c 'read -P 0xa5 63M 1M' \
	ov.qcow2 >ov.out || { cat ov.out; fail "qemu-io through the overlay"; }
grep -q 'verification failed' ov.out && { cat ov.out; fail "overlay data"; }
"$VDISK" io --image-opts -c 'read -P 0xee 0 1M' -c 'read -P 0x99 4M 64k' -c 'read -P 0xa5 63M 1M' \
	"$OV" >ov2.out || { cat ov2.out; fail "vdisk through the overlay"; }
grep -q 'verification failed' ov2.out && { cat ov2.out; fail "vdisk overlay data"; }
out=$("$VDISK" io -f qcow2 -c 'read 0 4k' ov.qcow2 2>&1) && fail "followed a header's rbd: name"
grep -q 'names a protocol' <<<"$out" || fail "a header's rbd: name was followed: $out"

# --- convert into and out of RBD ----------------------------------------------------------
qemu-img create -q -f qcow2 src.qcow2 32M
qemu-io -f qcow2 -c 'write -P 0x31 0 1M' -c 'write -P 0x32 17M 3M' src.qcow2 >/dev/null
"$VDISK" convert -f qcow2 -O raw src.qcow2 "$(R conv)" || fail "convert into rbd"
qemu-img compare -f qcow2 -F raw src.qcow2 "$(R conv)" >/dev/null || fail "compare after convert in"
"$VDISK" convert -f raw -O qcow2 "$(R conv)" back.qcow2 || fail "convert out of rbd"
qemu-img compare -f qcow2 -F qcow2 src.qcow2 back.qcow2 >/dev/null || fail "compare after convert out"
"$VDISK" convert -f raw -O qcow2 "$(R a)" "$(R conv2)" || fail "convert rbd to qcow2 in rbd"
qemu-img compare -f raw -F qcow2 "$(R a)" "$(R conv2)" >/dev/null || fail "compare rbd->qcow2-in-rbd"

# --- vdisk serve: an RBD image over NBD and vhost-user-blk ------------------------------------
S=$T/nbd.sock
"$VDISK" create -q -f raw "$(R srv)" 16M
"$VDISK" serve --blockdev "driver=rbd,node-name=r,pool=$P,image=srv,conf=$C" \
	--blockdev "driver=rbd,node-name=r2,pool=$P,image=b,conf=$C" \
	--nbd-server addr.type=unix,addr.path="$S" \
	--export type=nbd,id=e1,node-name=r,name=srv,writable=on \
	--export "type=vhost-user-blk,id=e2,node-name=r2,addr.type=unix,addr.path=$T/vu.sock,writable=on" \
	2>serve.log &
PIDS+=($!)
wait_socket "$S"
wait_socket "$T/vu.sock"
U="nbd+unix:///srv?socket=$S"
qemu-io -f raw -c 'write -P 0xc1 0 1M' -c 'write -P 0xc2 7M 64k' -c 'write -z 9M 1M' -c flush \
	-c 'read -P 0xc1 0 1M' -c 'read -P 0xc2 7M 64k' -c 'read -P 0 9M 1M' "$U" >nbd.out 2>&1 ||
	{ cat nbd.out serve.log; fail "qemu-io over NBD on rbd"; }
grep -q 'verification failed\|error' nbd.out && { cat nbd.out; fail "NBD data"; }
nbdinfo --size "$U" | grep -qx 16777216 || fail "nbdinfo size"
qemu-io -f raw -c 'read -P 0xc1 0 1M' -c 'read -P 0xc2 7M 64k' "$(R srv)" >srv.out
grep -q 'verification failed' srv.out && { cat srv.out; fail "rbd content after NBD writes"; }
python3 "$SRCDIR/tests/interop/vhost-user-proto.py" "$T/vu.sock" none $((32 << 20)) >vu.out 2>&1 ||
	{ cat vu.out serve.log; fail "vhost-user-blk on rbd"; }
stop_servers
grep -qi 'error' serve.log && { cat serve.log; fail "serve logged errors"; }

# --- a real Linux guest (TCG) fills a filesystem on an RBD-backed export -------------------
# tests/guest/run.sh --rbd on this cluster: vhost-user-blk, 2 queues, I/O thread.
if [ -n "${VDISK_QUICK:-}" ]; then
	echo "guest on rbd: not run under VDISK_QUICK"
elif ! command -v qemu-system-x86_64 >/dev/null; then
	echo "guest on rbd: qemu-system-x86_64 not installed"
else
	rc=0
	RBD_GUEST_ONE=1 "$SRCDIR/tests/guest/run.sh" --rbd >guest.out 2>&1 || rc=$?
	cat guest.out
	case $rc in
	0) ;;
	77) echo "guest on rbd: $(grep SKIP guest.out)" ;;
	*) fail "the guest on an RBD export" ;;
	esac
fi
echo "PASS"
