#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The nbd protocol driver against real servers: qemu-nbd (unix and TCP,
# writable and read-only, a qcow2 with holes) and nbdkit (memory, with the
# error and delay filters), a server killed and restarted under
# reconnect-delay, and a hostile server (nbd-bad-server.py).  Data written
# by vdisk is read back by qemu-io over the same export and the other way
# round; block status (holes, zeroes) reads as qemu-io sees it.  Images
# are created and converted onto an export (QEMU's create fallback).
set -eu

. "$(dirname "$0")/../lib/common.sh"
vd_setup qemu-nbd qemu-io qemu-img nbdkit python3

pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$T"
}
trap cleanup EXIT

# start_qemu_nbd SOCKET ARGS...: qemu-nbd in the background on a unix socket.
start_qemu_nbd() {
	local sock=$1
	shift
	rm -f "$sock"
	qemu-nbd -t -k "$sock" "$@" &
	QNBD=$!
	pids+=("$QNBD")
	wait_socket "$sock"
}

stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

start_nbdkit() {
	local sock=$1
	shift
	rm -f "$sock"
	nbdkit -f -U "$sock" "$@" &
	NBDKIT=$!
	pids+=("$NBDKIT")
	wait_socket "$sock"
	# The socket file appears at bind(), before listen(): a client that
	# came in between was refused (a CI flake).  nbdkit serves any number of
	# connections, so a probe connection is harmless.
	for _ in $(seq 100); do
		python3 -c 'import socket, sys
socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$sock" 2>/dev/null && return 0
		sleep 0.05
	done
	fail "nbdkit does not accept on $sock"
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

norm() {
	sed -e 's/ ([0-9.]* [KMG]*i*B\/sec and [0-9.]* ops\/sec)$//' -e 's/ 0*[0-9:.]* sec$//' \
		-e 's/ops; .*/ops/' -e 's/^qemu-io: /vdisk: /' "$@"
}

# --- names: what each spelling connects to, and the malformed ones ---------
check_name() {
	"$VDISK" io -f raw -c 'read 0 512' "$1" >n.out 2>&1 && fail "opened $1"
	grep -qF "$2" n.out || fail "$1: $(cat n.out)"
}
check_name "nbd+unix:///exp?socket=/nonexistent/s" "Failed to connect to '/nonexistent/s'"
check_name "nbd+unix:///a%20b?socket=/no%2Fpe" "Failed to connect to '/no/pe'"
check_name "nbd:unix:/nonexistent/y:exportname=e" "Failed to connect to '/nonexistent/y'"
check_name "nbd://127.0.0.1:1/exp" "Failed to connect to '127.0.0.1:1'"
check_name "nbd+tcp://127.0.0.1:1" "Failed to connect to '127.0.0.1:1'"
check_name "nbd:127.0.0.1:1" "Failed to connect to '127.0.0.1:1'"
check_name "nbd+unix://host/exp?socket=/x" "a UNIX socket URI has no host"
# The name lookup runs on the thread pool; a failure is one clear line.
check_name "nbd://no-such-host.invalid:10809/exp" "address resolution failed for no-such-host.invalid:10809"
check_name "nbd+unix:///exp" "expected ?socket=PATH"
check_name "nbd+unix:///e?socket=/x&foo=1" "expected ?socket=PATH"
check_name "nbd://" "no host"
"$VDISK" io --image-opts driver=nbd,server.type=unix,server.path=/x,tls-creds=t -c 'read 0 1' \
	>n.out 2>&1 && fail "unknown tls-creds accepted"
grep -q "No TLS credentials with id 't'" n.out || fail "tls-creds: $(cat n.out)"

# --- qemu-nbd, unix socket, writable qcow2 with holes ----------------------
qemu-img create -q -f qcow2 img.qcow2 8M
qemu-io -f qcow2 -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 1M 128k' -c 'write -z 3M 64k' \
	img.qcow2 >/dev/null
# A qemu-nbd without --persistent serves one client: probing the format
# must not take a connection of its own.
S1=$T/once.sock
qemu-nbd -k "$S1" -f qcow2 img.qcow2 &
ONCE=$!
pids+=("$ONCE")
wait_socket "$S1"
"$VDISK" info "nbd+unix:///?socket=$S1" >info1.out 2>&1 || fail "info, one client: $(cat info1.out)"
wait "$ONCE" || fail "qemu-nbd serving one client failed" # exits after its client

S=$T/q.sock
U="nbd+unix:///?socket=$S"
start_qemu_nbd "$S" -f qcow2 img.qcow2

"$VDISK" info "$U" >info.out || fail "vdisk info over nbd"
grep -q '^file format: raw$' info.out || fail "probed format: $(cat info.out)"
grep -q '^virtual size: 8 MiB (8388608 bytes)$' info.out || fail "size: $(cat info.out)"

# Block status: what qemu-io's map and alloc see, holes included.
cmds=(-c map -c 'alloc 0 64k' -c 'alloc 64k 64k' -c 'alloc 3M 64k' -c 'alloc 7M 1M')
qemu-io -f raw "${cmds[@]}" "$U" >q.map
"$VDISK" io -f raw "${cmds[@]}" "$U" >v.map
diff -u q.map v.map || fail "map/alloc differ from qemu-io"

# vdisk writes, qemu-io reads over the same export (qemu-nbd ignores discards
# unless --discard=unmap: the discarded range keeps its data).
"$VDISK" io -f raw -c 'write -P 0x11 64k 64k' -c 'writev -P 0x12 512k 4k 8k' \
	-c 'write -z 1M 4k' -c 'discard 1088k 64k' -c 'write -z -u 2M 64k' -c flush \
	-c 'write -f -P 0x13 5M 4k' "$U" >/dev/null || fail "vdisk writes"
qemu-io -f raw -c 'read -P 0xab 0 64k' -c 'read -P 0x11 64k 64k' -c 'read -P 0x12 512k 12k' \
	-c 'read -P 0 1M 4k' -c 'read -P 0xcd 1028k 124k' -c 'read -P 0 2M 64k' \
	-c 'read -P 0x13 5M 4k' "$U" >q.out
grep -q 'Pattern verification failed' q.out && fail "qemu-io sees other data: $(cat q.out)"
# And the other way round, with many requests in flight.
qemu-io -f raw -c 'write -P 0x21 6M 64k' -c 'write -P 0x22 6208k 64k' "$U" >/dev/null
"$VDISK" io -f raw -c 'aio_read -P 0x21 6M 32k' -c 'aio_read -P 0x21 6176k 32k' \
	-c 'aio_read -P 0x22 6208k 64k' -c 'aio_read -P 0xab 0 64k' -c aio_flush \
	-c 'read -P 0x21 6M 64k' "$U" >v.out || fail "vdisk reads: $(cat v.out)"
grep -q 'Pattern verification failed' v.out && fail "vdisk sees other data: $(cat v.out)"

# Other spellings of the same export: option trees, json:, a legacy name.
"$VDISK" io --image-opts "driver=nbd,server.type=unix,server.path=$S" -c 'read -P 0xab 0 4k' \
	>/dev/null || fail "driver=nbd,server.*"
"$VDISK" io --image-opts "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$S" \
	-c 'read -P 0xab 0 4k' >/dev/null || fail "file.driver=nbd"
"$VDISK" io -c 'read -P 0xab 0 4k' \
	"json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$S\"}}}" \
	>/dev/null || fail "json: with nbd"
"$VDISK" io -f raw -c 'read -P 0xab 0 4k' "nbd:unix:$S" >/dev/null || fail "nbd:unix:PATH"

# -drive in vdisk machine.
printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"query-block"}' '{"execute":"quit"}' |
	"$VDISK" machine -drive "file=$U,format=raw,if=none,id=d0" --qmp stdio >qmp.out 2>&1 ||
	fail "machine -drive: $(cat qmp.out)"
grep -q '"virtual-size": 8388608' qmp.out || fail "machine -drive: $(cat qmp.out)"

# A qcow2 overlay whose backing file is the NBD export, given by the user.
qemu-img create -q -f qcow2 ov.qcow2 8M
"$VDISK" io --image-opts "driver=qcow2,file.filename=ov.qcow2,backing=$U" \
	-c 'read -P 0xab 0 64k' -c 'write -P 0x31 0 4k' -c 'read -P 0x31 0 4k' \
	-c 'read -P 0xab 4k 60k' >ov.out || fail "nbd backing: $(cat ov.out)"
grep -q 'Pattern verification failed' ov.out && fail "nbd backing data: $(cat ov.out)"
stop "$QNBD"

# --- qemu-nbd over TCP, read-only, with an export name ----------------------
P=$(free_port)
qemu-nbd -t -r -b 127.0.0.1 -p "$P" -x exp -f qcow2 img.qcow2 &
QNBD=$!
pids+=("$QNBD")
for _ in $(seq 100); do
	qemu-io -r -f raw -c 'read 0 512' "nbd://127.0.0.1:$P/exp" >/dev/null 2>&1 && break
	sleep 0.05
done
for name in "nbd://127.0.0.1:$P/exp" "nbd://localhost:$P/exp" "nbd+tcp://127.0.0.1:$P/exp" "nbd:127.0.0.1:$P:exportname=exp"; do
	"$VDISK" io -r -f raw -c 'read -P 0xab 0 64k' -c 'read -P 0x21 6M 64k' "$name" >/dev/null ||
		fail "read-only TCP export as $name"
done
"$VDISK" info "nbd://127.0.0.1:$P/exp" | grep -q '^virtual size: 8 MiB' || fail "info over TCP"
if "$VDISK" io -f raw -c 'write 0 512' "nbd://127.0.0.1:$P/exp" >ro.out 2>&1; then
	fail "wrote to a read-only export"
fi
grep -q 'read-only' ro.out || fail "read-only message: $(cat ro.out)"
if "$VDISK" io -r -f raw -c 'read 0 512' "nbd://127.0.0.1:$P/nosuch" >nx.out 2>&1; then
	fail "opened a missing export"
fi
stop "$QNBD"

# --- nbdkit memory: patterns both ways ----------------------------------------
S=$T/k.sock
U="nbd+unix:///?socket=$S"
start_nbdkit "$S" memory 64M
"$VDISK" io -f raw -c 'write -P 0x41 0 1M' -c 'write -z 128k 64k' -c 'discard 512k 64k' \
	-c 'write -P 0x42 63M 1M' -c flush "$U" >/dev/null || fail "writes to nbdkit"
qemu-io -f raw -c 'read -P 0x41 0 128k' -c 'read -P 0 128k 64k' -c 'read -P 0 512k 64k' \
	-c 'read -P 0x41 576k 448k' -c 'read -P 0x42 63M 1M' "$U" >q.out
grep -q 'Pattern verification failed' q.out && fail "nbdkit readback: $(cat q.out)"
qemu-io -f raw -c map "$U" >q.map
"$VDISK" io -f raw -c map "$U" >v.map
diff -u q.map v.map || fail "nbdkit map differs"
stop "$NBDKIT"

# --- nbdkit error filter: the failing request fails, the others go on ----
start_nbdkit "$S" --filter=error memory 64M error-pread-rate=100% error=EIO
"$VDISK" io -f raw -c 'write -P 5 0 4k' -c 'read 0 4k' -c 'write -P 6 4k 4k' -c flush \
	"$U" >e.out 2>&1 && fail "a read the server failed succeeded"
grep -qx 'read failed: Input/output error' e.out || fail "error filter: $(cat e.out)"
[ "$(grep -c '^wrote 4096/4096' e.out)" = 2 ] || fail "requests after the error: $(cat e.out)"
stop "$NBDKIT"

# --- nbdkit delay filter: a slow read does not hold back the writes ------
start_nbdkit "$S" --filter=delay memory 64M rdelay=2
"$VDISK" io -f raw -c 'aio_read 0 4k' -c 'write 1M 4k' -c 'write 2M 4k' -c aio_flush \
	"$U" >d.out || fail "delay filter: $(cat d.out)"
[ "$(grep -m1 -o '^[a-z]*' d.out)" = wrote ] || fail "writes waited for the read: $(cat d.out)"
stop "$NBDKIT"

# --- reconnect: server killed and restarted --------------------------------
qemu-img create -q -f raw f.raw 4M
S=$T/r.sock
U="nbd+unix:///?socket=$S"
start_qemu_nbd "$S" -f raw f.raw
"$VDISK" io --image-opts "driver=raw,file.filename=$U,file.reconnect-delay=10" \
	-c 'write -P 7 0 4k' -c 'sleep 800' -c 'read -P 7 0 4k' -c 'write -P 8 4k 4k' \
	>rc.out 2>&1 &
V=$!
sleep 0.3
stop "$QNBD"
sleep 1.5
start_qemu_nbd "$S" -f raw f.raw
wait "$V" || fail "I/O did not resume after a reconnect: $(cat rc.out)"
grep -q 'Pattern verification failed' rc.out && fail "reconnect data: $(cat rc.out)"
qemu-io -f raw -c 'read -P 8 4k 4k' "$U" | grep -q 'Pattern' && fail "write after reconnect"
# Past the delay: EIO.
"$VDISK" io --image-opts "driver=raw,file.filename=$U,file.reconnect-delay=1" \
	-c 'sleep 500' -c 'read 0 4k' >rd.out 2>&1 &
V=$!
sleep 0.2
stop "$QNBD"
start=$(date +%s)
wait "$V" && fail "a read without a server succeeded"
grep -qx 'read failed: Input/output error' rd.out || fail "after the delay: $(cat rd.out)"
[ $(($(date +%s) - start)) -le 5 ] || fail "the read waited past reconnect-delay"
# open-timeout: the server comes up after the client started.
rm -f "$S"
"$VDISK" io --image-opts "driver=raw,file.filename=$U,file.open-timeout=10" \
	-c 'read -P 7 0 4k' >ot.out 2>&1 &
V=$!
sleep 1
start_qemu_nbd "$S" -f raw f.raw
wait "$V" || fail "open-timeout: $(cat ot.out)"
stop "$QNBD"

# --- creating onto an export (QEMU's fallback for protocols without create) ----
# The export must already be large enough; its first sector is cleared; a
# qcow2 made there passes qemu-img check, and convert fills one.  What NBD
# cannot do is refused with QEMU's words, and formats that write local
# files only say so instead of making a file named like the URL.
qemu-img create -q -f raw tgt.raw 64M
qemu-io -f raw -c 'write -P 0xee 0 4k' tgt.raw >/dev/null
start_qemu_nbd "$T/c.sock" -f raw tgt.raw
CU="nbd+unix:///?socket=$T/c.sock"
"$VDISK" create -f raw -o preallocation=off "$CU" 32M >/dev/null ||
	fail "create -f raw onto an export"
qemu-io -f raw -c 'read -P 0 0 512' -c 'read -P 0xee 512 3584' "$CU" >io.out 2>&1 ||
	{ cat io.out; fail "qemu-io after create -f raw"; }
! grep -q "verification failed" io.out || { cat io.out; fail "create -f raw did not clear just the first sector"; }
# Convert keeps no old byte: the source's holes are written as zeroes
# (the export is not a new, zeroed file).
qemu-img create -q -f raw sparse.raw 32M
qemu-io -f raw -c 'write -P 0x33 1M 64k' sparse.raw >/dev/null
qemu-io -f raw -c 'write -P 0xee 0 32M' tgt.raw >/dev/null
"$VDISK" convert -O raw sparse.raw "$CU" || fail "convert -O raw onto an export"
qemu-img compare -f raw -F raw sparse.raw "$CU" >cmp.out ||
	{ cat cmp.out; fail "convert -O raw onto an export left old bytes"; }
"$VDISK" create -f qcow2 "$CU" 16M >/dev/null || fail "create -f qcow2 onto an export"
qemu-img check -f qcow2 "$CU" >chk.out || { cat chk.out; fail "qcow2 created over NBD"; }
qemu-img info -f qcow2 "$CU" | grep -q "virtual size: 16 MiB" || fail "qcow2 over NBD: size"
qemu-img create -q -f qcow2 csrc.qcow2 16M
qemu-io -f qcow2 -c 'write -P 0x61 0 1M' -c 'write -P 0x62 8M 64k' csrc.qcow2 >/dev/null
"$VDISK" convert -O qcow2 csrc.qcow2 "$CU" || fail "convert -O qcow2 onto an export"
qemu-img check -f qcow2 "$CU" >chk.out || { cat chk.out; fail "converted qcow2 over NBD"; }
qemu-img compare -f qcow2 -F qcow2 csrc.qcow2 "$CU" || fail "converted qcow2 over NBD differs"
expect_msg() { # WHAT MESSAGE CMD...
	local what=$1 msg=$2 rc=0
	shift 2
	"$@" >m.out 2>&1 || rc=$?
	[ $rc = 1 ] && grep -q "$msg" m.out || { cat m.out; fail "$what: exit $rc"; }
}
expect_msg "create larger than the export" "Cannot grow NBD nodes" \
	"$VDISK" create -f raw "$CU" 1G
expect_msg "create vpc onto an export" "creates images on local files only" \
	"$VDISK" create -f vpc "$CU" 1M
expect_msg "resize an export" "Cannot resize NBD nodes" "$VDISK" resize -f raw "$CU" 128M
expect_msg "create onto no server" "does not support image creation, and opening the image failed" \
	"$VDISK" create -f raw "nbd+unix:///?socket=$T/none.sock" 1M
[ ! -e "nbd+unix:" ] || fail "a local file named like the URL was made"
stop "$QNBD"

# --- a hostile server: the request fails, the connection is dropped -------
for mode in magic cookie past long huge errzero; do
	S=$T/bad-$mode.sock
	rm -f "$S"
	python3 "$SRCDIR/tests/interop/nbd-bad-server.py" "$S" "$mode" &
	B=$!
	pids+=("$B")
	wait_socket "$S"
	rc=0
	timeout 20 "$VDISK" io -f raw -c 'read 0 4k' -c 'read 0 4k' \
		"nbd+unix:///?socket=$S" >b.out 2>b.err || rc=$?
	[ "$rc" = 1 ] || fail "$mode: exit status $rc: $(cat b.out b.err)"
	[ "$(grep -cx 'read failed: Input/output error' b.out)" = 2 ] ||
		fail "$mode: $(cat b.out b.err)"
	grep -q 'dropping the connection' b.err || fail "$mode: no message: $(cat b.err)"
	stop "$B"
done
echo "nbd client: ok"
