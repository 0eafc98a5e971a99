#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The NBD server (export/nbd) against the real clients: qemu-io and qemu-img
# (patterns, write -z, discard, map, convert, compare), nbdinfo (--json,
# --map, --list, --can, socket activation), nbdcopy both ways and fio's nbd
# engine with verify; over a unix socket and TCP, from `vdisk nbd` and from
# `vdisk serve --nbd-server --export type=nbd`.
set -eu
. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-io qemu-img nbdinfo nbdcopy

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$T" ${SHM:+"$SHM"}
}
SHM=
trap cleanup EXIT

S=$T/nbd.sock
U="nbd+unix:///?socket=$S"
qemu-img create -q -f raw img.raw 64M

"$VDISK" nbd -f raw -t -e 0 -k "$S" img.raw &
PIDS+=($!)
wait_socket "$S"

# --- qemu-io: patterns, write -z, discard, flush, read back -------------------
qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'write -z 1M 1M' -c 'discard 2M 1M' -c flush \
	-c 'write -f -P 0xcd 5M 64k' -c 'read -P 0xab 0 1M' -c 'read -P 0 1M 2M' \
	-c 'read -P 0xcd 5M 64k' -c 'aio_write -P 0x11 8M 4k' -c 'aio_write -P 0x22 9M 4k' \
	-c aio_flush -c 'read -P 0x11 8M 4k' -c 'read -P 0x22 9M 4k' "$U" >io.out 2>&1 ||
	{ cat io.out; fail "qemu-io over NBD"; }
! grep -q "Pattern verification failed\|error\|failed" io.out || { cat io.out; fail "qemu-io verify"; }
# Unaligned I/O (block size minimum 1).
qemu-io -f raw -c 'write -P 0x77 12345 1000' -c 'read -P 0x77 12345 1000' "$U" >io2.out 2>&1 ||
	{ cat io2.out; fail "unaligned qemu-io"; }
! grep -q "verification failed" io2.out || fail "unaligned pattern"

# --- qemu-img map, convert, compare ---------------------------------------------
qemu-img map -f raw --output=json "$U" >map.json
grep -q '"data": false' map.json || { cat map.json; fail "qemu-img map shows no hole"; }
grep -q '"data": true' map.json || { cat map.json; fail "qemu-img map shows no data"; }
qemu-img convert -f raw -O raw "$U" copy.raw
qemu-img compare -f raw -F raw "$U" copy.raw >/dev/null || fail "qemu-img compare after convert"
cmp img.raw copy.raw || fail "convert from NBD differs from the image"
# And into the export.
qemu-img create -q -f qcow2 src.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x5a 3M 2M' -c 'write -P 0x5b 40M 64k' src.qcow2 >/dev/null
qemu-img convert -n -f qcow2 -O raw src.qcow2 "$U"
qemu-img compare -f qcow2 -F raw src.qcow2 "$U" >/dev/null || fail "compare after convert into NBD"

# --- nbdinfo ------------------------------------------------------------------
nbdinfo --json "$U" >info.json
for k in '"structured": true' '"can_multi_conn": true' '"can_flush": true' '"can_fua": true' \
	'"can_trim": true' '"can_zero": true' '"can_fast_zero": true' '"can_cache": true' \
	'"is_read_only": false' '"block_size_maximum": 33554432' '"export-size": 67108864' \
	'"base:allocation"' '"qemu:allocation-depth"'; do
	grep -qF "$k" info.json || { cat info.json; fail "nbdinfo --json lacks $k"; }
done
nbdinfo --map "$U" >map.txt
grep -q "hole,zero" map.txt || { cat map.txt; fail "nbdinfo --map shows no hole,zero"; }
grep -q "data" map.txt || fail "nbdinfo --map shows no data"
nbdinfo --map=qemu:allocation-depth "$U" >depth.txt || fail "allocation-depth map"
nbdinfo --can flush "$U" || fail "--can flush"
nbdinfo --can multi-conn "$U" || fail "--can multi-conn"
! nbdinfo --is read-only "$U" || fail "--is read-only on a writable export"
nbdinfo --list "$U" | grep -q 'export=""' || fail "nbdinfo --list"

# --- nbdcopy both ways -------------------------------------------------------
head -c 8M /dev/urandom >rand.bin
truncate -s 64M rand.bin
nbdcopy rand.bin "$U" || fail "nbdcopy into the export"
nbdcopy "$U" back.bin || fail "nbdcopy out of the export"
cmp rand.bin back.bin || fail "nbdcopy round trip differs"
nbdcopy "$U" null: || fail "nbdcopy to null:"

# --- fio's nbd engine with verify ---------------------------------------------
if fio --enghelp 2>/dev/null | grep -qw nbd; then
	fio --name=v --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k-64k --iodepth=16 \
		--size=16M --verify=crc32c --verify_fatal=1 --do_verify=1 >fio.out 2>&1 ||
		{ cat fio.out; fail "fio verify over NBD"; }
fi

# --- read-only, TCP, the last client leaving -----------------------------------
S2=$T/ro.sock
"$VDISK" nbd -r -f raw -t -x ro -D "read only" -k "$S2" img.raw &
PIDS+=($!)
wait_socket "$S2"
U2="nbd+unix:///ro?socket=$S2"
nbdinfo --is read-only "$U2" || fail "-r export is not read-only"
nbdinfo --json "$U2" | grep -q '"description": "read only"' || fail "description"
! qemu-io -f raw -c 'write 0 4k' "$U2" >/dev/null 2>&1 || fail "write on a read-only export"
qemu-io -r -f raw -c 'read -P 0xab 0 64k' "$U2" | grep -q "read 65536" || fail "read-only read"
! nbdinfo "nbd+unix:///nosuch?socket=$S2" >/dev/null 2>&1 || fail "unknown export accepted"

PORT=$((20000 + $$ % 20000))
cp copy.raw tcp.raw
"$VDISK" nbd -f raw -p "$PORT" -b 127.0.0.1 tcp.raw &
P=$!
for _ in $(seq 100); do nbdinfo --size "nbd://127.0.0.1:$PORT" >/dev/null 2>&1 && break; sleep 0.05; done
# The probe above was a client: without -t the server has gone.
for _ in $(seq 100); do kill -0 $P 2>/dev/null || break; sleep 0.05; done
! kill -0 $P 2>/dev/null || { kill $P; fail "vdisk nbd did not exit after its last client"; }
wait $P || fail "vdisk nbd exit status"
"$VDISK" nbd -f raw -t -p "$PORT" -b 127.0.0.1 tcp.raw &
PIDS+=($!)
for _ in $(seq 100); do nbdinfo --size "nbd://127.0.0.1:$PORT" >/dev/null 2>&1 && break; sleep 0.05; done
qemu-io -f raw -c 'read -P 0xab 0 1M' "nbd://127.0.0.1:$PORT" | grep -q "read 1048576" ||
	fail "TCP read"

# --- socket activation: libnbd runs the server in brackets -----------------------
nbdinfo --size -- [ "$VDISK" nbd -r -f raw img.raw ] | grep -qx 67108864 || fail "socket activation"

# --- vdisk serve: --nbd-server and --export type=nbd -------------------------------
S3=$T/serve.sock
qemu-img create -q -f qcow2 q.qcow2 32M
"$VDISK" serve --blockdev driver=file,node-name=f,filename=copy.raw \
	--blockdev driver=file,node-name=g,filename=q.qcow2 --blockdev driver=qcow2,node-name=q,file=g \
	--nbd-server addr.type=unix,addr.path="$S3" \
	--export type=nbd,id=e1,node-name=f,name=one,writable=on \
	--export type=nbd,id=e2,node-name=q &
PIDS+=($!)
wait_socket "$S3"
nbdinfo --list "nbd+unix:///?socket=$S3" >list.txt
grep -q 'export="one"' list.txt && grep -q 'export="q"' list.txt || { cat list.txt; fail "serve list"; }
qemu-io -f raw -c 'write -P 0x42 0 64k' -c 'read -P 0x42 0 64k' "nbd+unix:///one?socket=$S3" |
	grep -q "read 65536" || fail "serve export one"
nbdinfo --is read-only "nbd+unix:///q?socket=$S3" || fail "serve export q should be read-only"
# --- a 3-deep qcow2 chain: both contexts as qemu-nbd reports them ------------------
# Data, zeroes and holes at every depth; base:allocation and qemu:allocation-depth
# go through the whole chain (a backing cluster is data, not a hole).
qemu-img create -q -f qcow2 cb.qcow2 4M
qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -z 3M 512k' cb.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b cb.qcow2 -F qcow2 cm.qcow2
qemu-io -f qcow2 -c 'write -P 2 512k 1M' cm.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b cm.qcow2 -F qcow2 ct.qcow2
qemu-io -f qcow2 -c 'write -P 3 1M 256k' -c 'write -z 2M 64k' ct.qcow2 >/dev/null
S4=$T/chain.sock
U4="nbd+unix:///?socket=$S4"
for srv in vdisk qemu-nbd; do
	rm -f "$S4"
	if [ $srv = vdisk ]; then
		"$VDISK" nbd -t -r -f qcow2 -k "$S4" ct.qcow2 &
	else
		qemu-nbd -t -A -r -f qcow2 -k "$S4" ct.qcow2 &
	fi
	CP=$!
	PIDS+=($CP)
	wait_socket "$S4"
	nbdinfo --map "$U4" >chain-base.$srv || fail "$srv: base:allocation map"
	nbdinfo --map=qemu:allocation-depth "$U4" >chain-depth.$srv || fail "$srv: depth map"
	kill $CP
	wait $CP 2>/dev/null || true
done
diff chain-base.qemu-nbd chain-base.vdisk || fail "base:allocation over a chain differs from qemu-nbd"
diff chain-depth.qemu-nbd chain-depth.vdisk || fail "allocation-depth differs from qemu-nbd"
grep -q "backing depth 3" chain-depth.vdisk || { cat chain-depth.vdisk; fail "no depth 3 extent"; }

# --poll-max-ns: a bad value is refused; 0 (never poll) and a large value
# serve the same bytes as the default.
"$VDISK" nbd --poll-max-ns=-1 -k "$T/p.sock" img.raw >p.err 2>&1 && fail "--poll-max-ns=-1 accepted"
grep -q "Invalid poll-max-ns '-1'" p.err || fail "--poll-max-ns=-1: $(cat p.err)"
for p in 0 1000000; do
	rm -f "$T/p.sock"
	"$VDISK" nbd --poll-max-ns=$p -r -f raw -k "$T/p.sock" img.raw &
	PP=$!
	PIDS+=($PP)
	wait_socket "$T/p.sock"
	nbdcopy "nbd+unix:///?socket=$T/p.sock" "p$p.bin" || fail "nbdcopy with --poll-max-ns=$p"
	cmp img.raw "p$p.bin" || fail "--poll-max-ns=$p served other bytes"
	wait $PP 2>/dev/null || true
done

# The same image on tmpfs, where READs of 64 KiB and up leave by sendfile()
# from the file: nbdcopy (4 connections, 64 requests each) and qemu-io
# (structured replies, odd offsets) read the image's bytes.
if [ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm)" = tmpfs ]; then
	SHM=$(mktemp -d /dev/shm/nbd-server.XXXXXX)
	cp img.raw "$SHM/img.raw"
	qemu-io -f raw -c 'write -P 0x5c 1000000 3000000' "$SHM/img.raw" >/dev/null
	rm -f "$T/z.sock"
	"$VDISK" nbd -r -t -f raw -e 0 -k "$T/z.sock" "$SHM/img.raw" &
	PZ=$!
	PIDS+=($PZ)
	wait_socket "$T/z.sock"
	ZU="nbd+unix:///?socket=$T/z.sock"
	qemu-io -r -f raw -c 'read -P 0x5c 1000000 3000000' -c 'read -P 0x5c 1048576 1M' "$ZU" \
		>z.out || fail "qemu-io over the tmpfs export"
	grep -q 'Pattern verification failed' z.out && fail "tmpfs export: $(cat z.out)"
	nbdcopy "$ZU" z.bin || fail "nbdcopy from the tmpfs export"
	cmp "$SHM/img.raw" z.bin || fail "nbdcopy from the tmpfs export differs"
	kill $PZ
	wait $PZ 2>/dev/null || true
else
	echo "note: no tmpfs /dev/shm: the sendfile path was not tried"
fi
echo "PASS"
