#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# TLS on `vdisk serve` (qemu-storage-daemon's spelling): --object
# tls-creds-x509,...,endpoint=server with --nbd-server ...,tls-creds=ID, and
# over QMP object-add of tls-creds-psk then nbd-server-start with
# tls-creds, and tls-authz with QEMU's authz-simple (a client certificate's
# DN, a PSK username).  Clients: qemu-img and qemu-io (QEMU's TLS client), nbdinfo
# (libnbd's) and vdisk's own; a wrong CA, a wrong PSK key and a plaintext
# client are refused cleanly.  The X.509 export runs on an I/O thread.
set -eu
. "$(dirname "$0")/../lib/common.sh"
vd_setup certtool nbdinfo qemu-img qemu-io python3
. "$SRCDIR/tests/lib/tls-pki.sh"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; wait $p 2>/dev/null || true; done; rm -rf "$T"' EXIT

expect_fail() { # WHAT CMD...: exit 1 within 20 s
	local what=$1 rc=0
	shift
	timeout 20 "$@" >err.out 2>&1 || rc=$?
	[ $rc = 1 ] || { cat err.out; fail "$what: exit $rc, want 1"; }
}

qemu-img create -q -f qcow2 img.qcow2 16M
qemu-io -f qcow2 -c 'write -P 0x3c 0 1M' img.qcow2 >/dev/null

# --- X.509 from the command line -----------------------------------------------
# The export is on an I/O thread: the TLS session, made on the main thread,
# moves there with the connection.
S=$T/nbd.sock
"$VDISK" serve --object tls-creds-x509,id=t0,dir="$T/pki",endpoint=server,verify-peer=off \
	--object iothread,id=io0 \
	--blockdev driver=file,node-name=f,filename=img.qcow2 \
	--blockdev driver=qcow2,node-name=d,file=f \
	--nbd-server addr.type=unix,addr.path="$S",tls-creds=t0 \
	--export type=nbd,id=e,node-name=d,name=disk,writable=on,iothread=io0 2>serve.log &
PIDS+=($!)
wait_socket "$S"
QCLI="--object tls-creds-x509,id=c0,dir=$T/cli,endpoint=client"
QOPTS="driver=nbd,server.type=unix,server.path=$S,export=disk,tls-creds=c0,tls-hostname=localhost"
# shellcheck disable=SC2086
qemu-io $QCLI --image-opts "$QOPTS" -c 'read -P 0x3c 0 1M' -c 'write -P 0x3d 1M 1M' \
	-c 'read -P 0x3d 1M 1M' >io.out 2>&1 || { cat io.out; fail "qemu-io over TLS to vdisk serve"; }
grep -q "read 1048576/1048576 bytes at offset 1048576" io.out || { cat io.out; fail "qemu-io read"; }
# shellcheck disable=SC2086
qemu-img info $QCLI --image-opts "$QOPTS" | grep -q "virtual size: 16 MiB" ||
	fail "qemu-img info over TLS"
nbdinfo --json "nbds+unix:///disk?socket=$S&tls-certificates=$T/cli" >info.json ||
	fail "nbdinfo over TLS"
grep -q '"TLS": true' info.json || { cat info.json; fail "nbdinfo: TLS not reported"; }
# shellcheck disable=SC2086
"$VDISK" io $QCLI --image-opts "$QOPTS" -c 'read -P 0x3d 1M 1M' >io.out 2>&1 ||
	{ cat io.out; fail "vdisk io over TLS to vdisk serve"; }
# shellcheck disable=SC2086
expect_fail "qemu-img with the wrong CA" qemu-img info --object \
	tls-creds-x509,id=c0,dir="$T/other",endpoint=client --image-opts "$QOPTS"
expect_fail "qemu-img in plaintext" qemu-img info "nbd+unix:///disk?socket=$S"
! nbdinfo "nbd+unix:///disk?socket=$S" >/dev/null 2>&1 || fail "nbdinfo in plaintext was served"
# The server is still well after all that.
nbdinfo --size "nbds+unix:///disk?socket=$S&tls-certificates=$T/cli" | grep -qx 16777216 ||
	{ cat serve.log; fail "server after refused clients"; }
# Requests sent under TLS in the same flight as NBD_OPT_GO, more than the
# server's 128 KiB input buffer: they arrive on the main thread, and what
# was read but not parsed when the connection moved (the session with it)
# is parsed on the I/O thread.
timeout 60 python3 - "$S" "$T/pki/ca-cert.pem" "$SRCDIR" <<'PY' || { cat serve.log; fail "pipelined GO under TLS"; }
import socket, ssl, sys
S, CA = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3] + "/tests/lib")
from nbdwire import (CMD_READ, CMD_WRITE, OPT_STARTTLS, REP_ACK, go_option, go_replies, greet,
                     option, option_reply, recvn, request, simple_reply)
for attempt in range(10):
    s = socket.socket(socket.AF_UNIX)
    s.connect(S)
    greet(s)
    s.sendall(option(OPT_STARTTLS))
    assert option_reply(s) == (OPT_STARTTLS, REP_ACK, b"")
    t = ssl.create_default_context(cafile=CA).wrap_socket(s, server_hostname="localhost")
    t.settimeout(20)
    reqs = go_option(b"disk")
    n_w = 64
    for i in range(n_w):  # 256 KiB of writes at 4 MiB
        reqs += request(CMD_WRITE, i, (4 << 20) + i * 4096, 4096, bytes([i]) * 4096)
    for i in range(8):  # reads of what qemu-io wrote at 0
        reqs += request(CMD_READ, 1000 + i, i * 4096, 4096)
    t.sendall(reqs)
    go_replies(t)
    for _ in range(n_w + 8):
        err, cookie = simple_reply(t)
        assert err == 0, err
        if cookie >= 1000:
            assert recvn(t, 4096) == b"\x3c" * 4096, cookie
    t.close()
PY

# --- PSK through QMP: object-add, nbd-server-start, nbd-server-add ----------------
S2=$T/psk.sock
qemu-img create -q -f raw two.raw 8M
qemu-io -f raw -c 'write -P 0x77 0 64k' two.raw >/dev/null
"$VDISK" serve --blockdev driver=file,node-name=f2,filename=two.raw \
	--blockdev driver=raw,node-name=r2,file=f2 \
	--chardev socket,path="$T/qmp.sock",server=on,wait=off,id=c --monitor chardev=c \
	2>serve2.log &
PIDS+=($!)
wait_socket "$T/qmp.sock"
python3 - "$T" "$SRCDIR" <<'PY' || { cat serve2.log; fail "QMP TLS setup"; }
import json, sys
T, SRC = sys.argv[1], sys.argv[2]
sys.path.insert(0, SRC + "/tests/lib")
from qmp import QMP
q = QMP(T + "/qmp.sock")
q.cmd("qmp_capabilities")
r = q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": T + "/psk.sock"}},
          **{"tls-creds": "nope"})
assert "error" in r and "No TLS credentials with id 'nope'" in r["error"]["desc"], r
r = q.cmd("object-add", **{"qom-type": "tls-creds-psk", "id": "p0", "dir": T + "/nodir",
                           "endpoint": "server"})
assert "error" in r and "Unable to access credentials" in r["error"]["desc"], r
r = q.cmd("object-add", **{"qom-type": "tls-creds-psk", "id": "p0", "dir": T + "/psk",
                           "endpoint": "server"})
assert r == {"return": {}}, r
r = q.cmd("object-add", **{"qom-type": "tls-creds-psk", "id": "p0", "dir": T + "/psk",
                           "endpoint": "server"})
assert "error" in r and "duplicate" in r["error"]["desc"], r
r = q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": T + "/psk.sock"}},
          **{"tls-creds": "p0"})
assert r == {"return": {}}, r
# (an argument called "name": QMP.cmd's own parameter has that name)
q.wf.write(json.dumps({"execute": "nbd-server-add",
                       "arguments": {"device": "r2", "name": "two", "writable": True}}) + "\n")
q.wf.flush()
r = json.loads(q.rf.readline())
assert r == {"return": {}}, r
# The running server keeps its credentials when the object goes.
r = q.cmd("object-del", id="p0")
assert r == {"return": {}}, r
PY
wait_socket "$S2"
nbdinfo --size "nbds+unix://alice@/two?socket=$S2&tls-psk-file=$T/psk/keys.psk" | grep -qx 8388608 ||
	fail "nbdinfo over TLS-PSK to vdisk serve"
! nbdinfo --size "nbds+unix://alice@/two?socket=$S2&tls-psk-file=$T/badpsk/keys.psk" \
	>/dev/null 2>&1 || fail "nbdinfo with the wrong PSK key was served"
PCLI="--object tls-creds-psk,id=c0,dir=$T/psk,endpoint=client,username=alice"
POPTS="driver=nbd,server.type=unix,server.path=$S2,export=two,tls-creds=c0"
# shellcheck disable=SC2086
qemu-io $PCLI --image-opts "$POPTS" -c 'read -P 0x77 0 64k' -c 'write -P 0x78 64k 64k' \
	-c 'read -P 0x78 64k 64k' >io.out 2>&1 || { cat io.out; fail "qemu-io over TLS-PSK"; }
grep -q "read 65536/65536 bytes at offset 65536" io.out || { cat io.out; fail "qemu-io PSK read"; }
# shellcheck disable=SC2086
"$VDISK" io $PCLI --image-opts "$POPTS" -c 'read -P 0x78 64k 64k' >io.out 2>&1 ||
	{ cat io.out; fail "vdisk io over TLS-PSK to vdisk serve"; }
# shellcheck disable=SC2086
expect_fail "qemu-io with the wrong PSK key" qemu-io --object \
	tls-creds-psk,id=c0,dir="$T/badpsk",endpoint=client,username=alice --image-opts "$POPTS" \
	-c 'read 0 512'

# --- tls-authz: client certificates (verify-peer=on) and PSK usernames ----------
# The identity of an x509 client is its certificate's DN as GnuTLS and QEMU
# print it (RFC 4514 order): O=vdisk,CN=client.
S3=$T/authz.sock
qemu-img create -q -f raw three.raw 4M
"$VDISK" serve --object tls-creds-x509,id=t0,dir="$T/pki",endpoint=server \
	--object authz-simple,id=a0,identity=O=vdisk,,CN=client \
	--blockdev driver=file,node-name=f3,filename=three.raw \
	--nbd-server addr.type=unix,addr.path="$S3",tls-creds=t0,tls-authz=a0 \
	--export type=nbd,id=e3,node-name=f3,writable=on 2>serve3.log &
PIDS+=($!)
wait_socket "$S3"
AOPTS="driver=nbd,server.type=unix,server.path=$S3,export=f3,tls-creds=c0,tls-hostname=localhost"
qemu-io --object tls-creds-x509,id=c0,dir="$T/clicert",endpoint=client --image-opts "$AOPTS" \
	-c 'write -P 0x44 0 64k' -c 'read -P 0x44 0 64k' >io.out 2>&1 ||
	{ cat io.out; fail "qemu-io with the authorized client certificate"; }
"$VDISK" io --object tls-creds-x509,id=c0,dir="$T/clicert",endpoint=client --image-opts "$AOPTS" \
	-c 'read -P 0x44 0 64k' >io.out 2>&1 || { cat io.out; fail "vdisk io with the client certificate"; }
expect_fail "qemu-io without a client certificate" qemu-io --object \
	tls-creds-x509,id=c0,dir="$T/cli",endpoint=client --image-opts "$AOPTS" -c 'read 0 512'
mkdir psk2
{
	cat psk/keys.psk
	echo "bob:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
} >psk2/keys.psk
S4=$T/authz-psk.sock
"$VDISK" nbd -r -f raw -t -e 0 -k "$S4" --object tls-creds-psk,id=p0,dir="$T/psk2",endpoint=server \
	--object authz-simple,id=a1,identity=alice --tls-creds p0 --tls-authz a1 three.raw &
PIDS+=($!)
wait_socket "$S4"
P4="driver=nbd,server.type=unix,server.path=$S4,tls-creds=c0"
qemu-io -r --object tls-creds-psk,id=c0,dir="$T/psk2",endpoint=client,username=alice \
	--image-opts "$P4" -c 'read -P 0x44 0 64k' >io.out 2>&1 ||
	{ cat io.out; fail "qemu-io as the authorized PSK user"; }
expect_fail "qemu-io as another PSK user" qemu-io -r --object \
	tls-creds-psk,id=c0,dir="$T/psk2",endpoint=client,username=bob --image-opts "$P4" -c 'read 0 512'
expect_fail "tls-authz without tls-creds" "$VDISK" nbd -r -f raw -k "$T/x.sock" \
	--object authz-simple,id=a1,identity=alice --tls-authz a1 three.raw
echo PASS
