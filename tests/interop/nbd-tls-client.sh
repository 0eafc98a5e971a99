#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# TLS in vdisk's NBD client (driver=nbd,...,tls-creds=ID with --object
# tls-creds-x509|tls-creds-psk,...,endpoint=client): against qemu-nbd
# --tls-creds (X.509 and PSK) and against our own server; a wrong CA, a
# wrong host name, a wrong PSK key and a plaintext server each end in a
# clean error (exit 1, no hang), never in a plaintext fallback.
set -eu
. "$(dirname "$0")/../lib/common.sh"
vd_setup certtool qemu-nbd qemu-img qemu-io
. "$SRCDIR/tests/lib/tls-pki.sh"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; wait $p 2>/dev/null || true; done; rm -rf "$T"' EXIT

X509="--object tls-creds-x509,id=c0,dir=$T/cli,endpoint=client"
OTHER="--object tls-creds-x509,id=c0,dir=$T/other,endpoint=client"
PSK="--object tls-creds-psk,id=c0,dir=$T/psk,endpoint=client,username=alice"
BADPSK="--object tls-creds-psk,id=c0,dir=$T/badpsk,endpoint=client,username=alice"
opts() { # SOCKET [EXTRA]: the --image-opts of a TLS client
	echo "driver=nbd,server.type=unix,server.path=$1,tls-creds=c0${2:-,tls-hostname=localhost}"
}
# expect_fail WHAT PATTERN CMD...: exit 1 within 20 s, PATTERN in the message.
expect_fail() {
	local what=$1 pat=$2 rc=0
	shift 2
	timeout 20 "$@" >err.out 2>&1 || rc=$?
	[ $rc = 1 ] || { cat err.out; fail "$what: exit $rc, want 1"; }
	grep -q "$pat" err.out || { cat err.out; fail "$what: no '$pat' in the error"; }
}

qemu-img create -q -f raw img.raw 16M
qemu-io -f raw -c 'write -P 0x3c 0 1M' img.raw >/dev/null

# --- qemu-nbd with X.509 ----------------------------------------------------------
S=$T/q509.sock
qemu-nbd -f raw -t -e 0 -k "$S" \
	--object tls-creds-x509,id=s0,dir="$T/pki",endpoint=server,verify-peer=off \
	--tls-creds s0 img.raw 2>qemu-nbd.log &
PIDS+=($!)
wait_socket "$S"
# shellcheck disable=SC2086
"$VDISK" io $X509 --image-opts "$(opts "$S")" \
	-c 'read -P 0x3c 0 1M' -c 'write -P 0x3d 1M 2M' -c 'read -P 0x3d 1M 2M' >io.out 2>&1 ||
	{ cat io.out; fail "vdisk io over TLS to qemu-nbd"; }
grep -q "read 2097152/2097152" io.out || { cat io.out; fail "vdisk io over TLS: no read"; }
# Every subcommand that opens images takes the credentials: info, map, convert.
# shellcheck disable=SC2086
"$VDISK" info $X509 --image-opts "$(opts "$S")" | grep -q "virtual size: 16 MiB" ||
	fail "vdisk info over TLS"
# shellcheck disable=SC2086
"$VDISK" map $X509 --image-opts "$(opts "$S")" >/dev/null || fail "vdisk map over TLS"
# shellcheck disable=SC2086
"$VDISK" convert $X509 -O raw --image-opts "$(opts "$S")" copy.raw || fail "vdisk convert over TLS"
cmp copy.raw img.raw || fail "convert over TLS: the copy differs"
# shellcheck disable=SC2086
expect_fail "wrong CA" "known issuer" "$VDISK" info $OTHER --image-opts "$(opts "$S")"
# shellcheck disable=SC2086
expect_fail "no host name on a unix socket" "No hostname for certificate validation" \
	"$VDISK" info $X509 --image-opts "$(opts "$S" ,export=)"
# shellcheck disable=SC2086
expect_fail "wrong host name" "does not match the hostname wrong.example" \
	"$VDISK" info $X509 --image-opts "$(opts "$S" ,tls-hostname=wrong.example)"
expect_fail "no credentials" "TLS negotiation required" \
	"$VDISK" info --image-opts "driver=nbd,server.type=unix,server.path=$S"
# shellcheck disable=SC2086
expect_fail "server credentials on a client" "Expecting TLS credentials with a client endpoint" \
	"$VDISK" info --object tls-creds-x509,id=c0,dir="$T/pki",endpoint=server \
	--image-opts "$(opts "$S")"
expect_fail "unknown id" "No TLS credentials with id 'c0'" "$VDISK" info --image-opts "$(opts "$S")"
expect_fail "missing folder" "Unable to access credentials" \
	"$VDISK" info --object tls-creds-x509,id=c0,dir="$T/none",endpoint=client \
	--image-opts "$(opts "$S")"

# --- qemu-nbd with PSK ------------------------------------------------------------
S2=$T/qpsk.sock
qemu-nbd -r -f raw -t -e 0 -k "$S2" --object tls-creds-psk,id=s0,dir="$T/psk",endpoint=server \
	--tls-creds s0 img.raw 2>>qemu-nbd.log &
PIDS+=($!)
wait_socket "$S2"
# shellcheck disable=SC2086
"$VDISK" io $PSK -r --image-opts "$(opts "$S2")" -c 'read -P 0x3d 1M 2M' >io.out 2>&1 ||
	{ cat io.out; fail "vdisk io over TLS-PSK to qemu-nbd"; }
# shellcheck disable=SC2086
expect_fail "wrong PSK key" "TLS handshake failed" "$VDISK" info $BADPSK --image-opts "$(opts "$S2")"
# shellcheck disable=SC2086
expect_fail "unknown PSK user" "Username bob not found" \
	"$VDISK" info --object tls-creds-psk,id=c0,dir="$T/psk",endpoint=client,username=bob \
	--image-opts "$(opts "$S2")"

# --- a plaintext server: STARTTLS refused, no fallback ----------------------------
S3=$T/plain.sock
qemu-nbd -r -f raw -t -e 0 -k "$S3" img.raw 2>>qemu-nbd.log &
PIDS+=($!)
wait_socket "$S3"
# shellcheck disable=SC2086
expect_fail "plaintext qemu-nbd" "Denied by server for option 5" \
	"$VDISK" info $X509 --image-opts "$(opts "$S3")"

# --- our own server, X.509 over TCP (host name from server.host) and PSK ----------
cp img.raw mine.raw
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VDISK" nbd -f raw -t -e 0 -b 127.0.0.1 -p "$PORT" \
	--object tls-creds-x509,id=s0,dir="$T/pki",endpoint=server,verify-peer=off \
	--tls-creds s0 mine.raw &
PIDS+=($!)
INET="driver=nbd,server.type=inet,server.host=localhost,server.port=$PORT,tls-creds=c0"
for _ in $(seq 100); do
	# shellcheck disable=SC2086
	"$VDISK" info $X509 --image-opts "$INET" >/dev/null 2>&1 && break
	sleep 0.05
done
# shellcheck disable=SC2086
"$VDISK" io $X509 --image-opts "$INET" -c 'write -P 0x5a 4M 4M' -c 'read -P 0x5a 4M 4M' \
	-c 'read -P 0x3c 0 1M' >io.out 2>&1 || { cat io.out; fail "vdisk io over TLS to vdisk nbd"; }
# shellcheck disable=SC2086
"$VDISK" io $X509 --image-opts "${INET/localhost/127.0.0.1}" -c 'read -P 0x5a 4M 4M' >io.out 2>&1 ||
	{ cat io.out; fail "TLS to 127.0.0.1 (an IP address in the certificate)"; }
expect_fail "plaintext client to a TLS server" "TLS negotiation required" \
	"$VDISK" info --image-opts "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$PORT"
S4=$T/vpsk.sock
cp mine.raw mine2.raw
"$VDISK" nbd -r -f raw -t -e 0 -k "$S4" --object tls-creds-psk,id=s0,dir="$T/psk",endpoint=server \
	--tls-creds s0 mine2.raw &
PIDS+=($!)
wait_socket "$S4"
# shellcheck disable=SC2086
"$VDISK" io $PSK -r --image-opts "$(opts "$S4")" -c 'read -P 0x5a 4M 4M' >io.out 2>&1 ||
	{ cat io.out; fail "vdisk io over TLS-PSK to vdisk nbd"; }
# shellcheck disable=SC2086
expect_fail "wrong PSK key (vdisk nbd)" "TLS handshake failed" \
	"$VDISK" info $BADPSK --image-opts "$(opts "$S4")"

# --- a reconnect redoes STARTTLS and the handshake ---------------------------------
S5=$T/rc.sock
cp img.raw rc.raw
SRV=("$VDISK" nbd -f raw -t -e 0 -k "$S5" --object
	tls-creds-x509,id=s0,dir="$T/pki",endpoint=server,verify-peer=off --tls-creds s0 rc.raw)
"${SRV[@]}" &
P5=$!
PIDS+=($P5)
wait_socket "$S5"
(
	sleep 1
	kill $P5
	while kill -0 $P5 2>/dev/null; do sleep 0.05; done
	exec "${SRV[@]}"
) &
PIDS+=($!)
# shellcheck disable=SC2086
timeout 20 "$VDISK" io $X509 --image-opts "$(opts "$S5" ,tls-hostname=localhost,reconnect-delay=10)" \
	-c 'read -P 0x3c 0 64k' \
	-c 'sleep 2000' -c 'write -P 0x21 0 64k' -c 'read -P 0x21 0 64k' >io.out 2>&1 ||
	{ cat io.out; fail "reconnect over TLS"; }
grep -q "read 65536/65536 bytes at offset 0" io.out && [ "$(grep -c "^read 65536" io.out)" = 2 ] ||
	{ cat io.out; fail "reconnect over TLS: reads"; }
echo PASS
