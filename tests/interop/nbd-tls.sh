#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# TLS on the NBD server: X.509 certificates made by certtool and a PSK file,
# with nbdinfo and qemu-io (QEMU's tls-creds-x509 client) as clients.  With
# credentials TLS is required (FORCEDTLS): a plaintext client is refused.
set -eu
. "$(dirname "$0")/../lib/common.sh"
vd_setup certtool nbdinfo qemu-io qemu-img
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; wait $p 2>/dev/null || true; done; rm -rf "$T"' EXIT

mkdir pki
cat >ca.info <<'X'
cn = vdisk test CA
ca
cert_signing_key
expiration_days = 2
X
cat >server.info <<'X'
organization = vdisk
cn = localhost
dns_name = localhost
ip_address = 127.0.0.1
tls_www_server
encryption_key
signing_key
expiration_days = 2
X
certtool --generate-privkey --outfile ca-key.pem 2>/dev/null
certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info \
	--outfile pki/ca-cert.pem 2>/dev/null
certtool --generate-privkey --outfile pki/server-key.pem 2>/dev/null
certtool --generate-certificate --load-ca-certificate pki/ca-cert.pem --load-ca-privkey ca-key.pem \
	--load-privkey pki/server-key.pem --template server.info --outfile pki/server-cert.pem 2>/dev/null
mkdir cli && cp pki/ca-cert.pem cli/

qemu-img create -q -f raw img.raw 16M
qemu-io -f raw -c 'write -P 0x3c 0 1M' img.raw >/dev/null
S=$T/tls.sock
"$VDISK" nbd -f raw -t -e 0 -k "$S" \
	--object tls-creds-x509,id=tls0,dir="$T/pki",endpoint=server,verify-peer=off \
	--tls-creds tls0 img.raw &
PIDS+=($!)
wait_socket "$S"
nbdinfo --json "nbds+unix:///?socket=$S&tls-certificates=$T/cli" >info.json ||
	fail "nbdinfo over TLS"
grep -q '"TLS": true' info.json || { cat info.json; fail "TLS not reported"; }
nbdinfo --map "nbds+unix:///?socket=$S&tls-certificates=$T/cli" | grep -q data ||
	fail "block status over TLS"
! nbdinfo "nbd+unix:///?socket=$S" >/dev/null 2>&1 || fail "plaintext client served"
qemu-io --object tls-creds-x509,id=c0,dir="$T/cli",endpoint=client \
	--image-opts "driver=nbd,server.type=unix,server.path=$S,tls-creds=c0,tls-hostname=localhost" \
	-c 'read -P 0x3c 0 1M' -c 'write -P 0x3d 1M 1M' -c 'read -P 0x3d 1M 1M' >io.out 2>&1 ||
	{ cat io.out; fail "qemu-io over TLS"; }
! grep -q "verification failed" io.out || fail "qemu-io pattern over TLS"

# CVE-2021-3716: structured replies and a metadata context negotiated in
# plaintext before STARTTLS must not survive it (nbdkit's bug).  Python's
# ssl module is the TLS client: after STARTTLS, GO without asking for
# structured replies, then READ must get a simple reply and BLOCK_STATUS
# EINVAL.
python3 - "$S" "$T/cli/ca-cert.pem" <<'PY' || fail "state survived STARTTLS"
import socket, ssl, struct, sys
OPTS = 0x49484156454F5054
def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b
def opt(s, o, d=b""):
    s.sendall(struct.pack(">QII", OPTS, o, len(d)) + d)
def final(s):
    while True:
        m, o, t, l = struct.unpack(">QIII", recvn(s, 20))
        recvn(s, l)
        if t == 1 or t & (1 << 31):
            return t
raw = socket.socket(socket.AF_UNIX)
raw.connect(sys.argv[1])
recvn(raw, 18)
raw.sendall(struct.pack(">I", 3))
opt(raw, 8)
assert final(raw) == (1 << 31) | 5, "STRUCTURED_REPLY before TLS must be TLS_REQD"
opt(raw, 5)
assert final(raw) == 1, "STARTTLS"
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.check_hostname = False
s = ctx.wrap_socket(raw, server_hostname="localhost")
opt(s, 7, struct.pack(">I", 0) + struct.pack(">H", 0))
assert final(s) == 1, "GO over TLS"
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 5, 0, 512))
magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
assert magic == 0x67446698 and err == 0, "READ must get a simple reply"
recvn(s, 512)
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 7, 6, 0, 512))
magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
assert magic == 0x67446698 and err == 22, "BLOCK_STATUS without contexts"
PY

# PSK, as QEMU's tls-creds-psk (keys.psk: identity:hexkey).
mkdir psk
echo "alice:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >psk/keys.psk
S2=$T/psk.sock
"$VDISK" nbd -r -f raw -t -e 0 -k "$S2" --object tls-creds-psk,id=p0,dir="$T/psk",endpoint=server \
	--tls-creds p0 img.raw &
PIDS+=($!)
wait_socket "$S2"
nbdinfo --size "nbds+unix://alice@/?socket=$S2&tls-psk-file=$T/psk/keys.psk" | grep -qx 16777216 ||
	fail "nbdinfo over TLS-PSK"
echo bob:00112233 >bad.psk
! nbdinfo --size "nbds+unix://bob@/?socket=$S2&tls-psk-file=$T/bad.psk" >/dev/null 2>&1 ||
	fail "wrong PSK accepted"
echo PASS
