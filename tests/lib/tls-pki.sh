# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# Sourced by the NBD TLS tests after vd_setup (needs certtool): in $T,
#   pki/      a CA and a server certificate for localhost / 127.0.0.1
#             (ca-cert.pem, server-cert.pem, server-key.pem): endpoint=server
#   cli/      the CA alone: endpoint=client
#   clicert/  the CA and a client certificate (CN=client, O=vdisk)
#   other/    another CA, which did not sign the server: endpoint=client
#   psk/      keys.psk with alice's key: endpoint=server, and the client of
#             username=alice
#   badpsk/   keys.psk with another key for alice

tls_make_ca() { # DIR: a CA key in DIR-key.pem, its certificate in DIR/ca-cert.pem
	mkdir -p "$1"
	cat >"$1.info" <<'X'
cn = vdisk test CA
ca
cert_signing_key
expiration_days = 2
X
	certtool --generate-privkey --outfile "$1-key.pem" 2>/dev/null
	certtool --generate-self-signed --load-privkey "$1-key.pem" --template "$1.info" \
		--outfile "$1/ca-cert.pem" 2>/dev/null
}

tls_make_ca pki
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
certtool --generate-privkey --outfile pki/server-key.pem 2>/dev/null
certtool --generate-certificate --load-ca-certificate pki/ca-cert.pem --load-ca-privkey pki-key.pem \
	--load-privkey pki/server-key.pem --template server.info --outfile pki/server-cert.pem 2>/dev/null
mkdir cli && cp pki/ca-cert.pem cli/
# clicert/: the CA and a client certificate (CN=client,O=vdisk) for servers
# with verify-peer=on and tls-authz.
mkdir clicert && cp pki/ca-cert.pem clicert/
cat >client.info <<'X'
organization = vdisk
cn = client
tls_www_client
encryption_key
signing_key
expiration_days = 2
X
certtool --generate-privkey --outfile clicert/client-key.pem 2>/dev/null
certtool --generate-certificate --load-ca-certificate pki/ca-cert.pem --load-ca-privkey pki-key.pem \
	--load-privkey clicert/client-key.pem --template client.info \
	--outfile clicert/client-cert.pem 2>/dev/null
tls_make_ca other
mkdir psk badpsk
echo "alice:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >psk/keys.psk
echo "alice:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >badpsk/keys.psk
[ -s pki/server-cert.pem ] && [ -s other/ca-cert.pem ] || fail "certtool made no certificates"
