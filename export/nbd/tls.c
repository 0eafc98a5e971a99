/* SPDX-License-Identifier: MIT */
/*
 * TLS for the NBD server (proto.md "TLS support"), with GnuTLS: credentials
 * as QEMU's tls-creds-x509 (dir= with ca-cert.pem, server-cert.pem,
 * server-key.pem; verify-peer) and tls-creds-psk (dir= with keys.psk, lines
 * "identity:hexkey"), and the non-blocking handshake and record I/O of a
 * connection.  With credentials the server is in FORCEDTLS mode: only
 * STARTTLS and ABORT are served before TLS is up.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "export/nbd/nbd-internal.h"

struct nbd_tls_creds {
	gnutls_certificate_credentials_t x509;
	gnutls_psk_server_credentials_t psk;
	bool verify_peer;
};

static int path_join(char *buf, size_t size, const char *dir, const char *file)
{
	int n = snprintf(buf, size, "%s/%s", dir, file);

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int nbd_tls_creds_new(const struct vd_nbd_server_opts *o, struct nbd_tls_creds **out,
		      struct vd_error *err)
{
	struct nbd_tls_creds *t = calloc(1, sizeof(*t));
	char ca[4096], cert[4096], key[4096];
	int ret;

	if (!t)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	if (o->tls_x509_dir) {
		if (path_join(ca, sizeof(ca), o->tls_x509_dir, "ca-cert.pem") < 0 ||
		    path_join(cert, sizeof(cert), o->tls_x509_dir, "server-cert.pem") < 0 ||
		    path_join(key, sizeof(key), o->tls_x509_dir, "server-key.pem") < 0) {
			free(t);
			return vd_error_set(err, -ENAMETOOLONG, "TLS directory name too long");
		}
		if (gnutls_certificate_allocate_credentials(&t->x509) < 0) {
			free(t);
			return vd_error_set(err, -ENOMEM, "Out of memory");
		}
		ret = gnutls_certificate_set_x509_key_file(t->x509, cert, key, GNUTLS_X509_FMT_PEM);
		if (ret < 0) {
			vd_error_set(err, -EINVAL, "Cannot load certificate '%s' and key '%s': %s",
				     cert, key, gnutls_strerror(ret));
			nbd_tls_creds_free(t);
			return -EINVAL;
		}
		t->verify_peer = o->tls_verify_peer;
		ret = gnutls_certificate_set_x509_trust_file(t->x509, ca, GNUTLS_X509_FMT_PEM);
		if (ret < 0 && t->verify_peer) {
			vd_error_set(err, -EINVAL, "Cannot load CA certificate '%s': %s", ca,
				     gnutls_strerror(ret));
			nbd_tls_creds_free(t);
			return -EINVAL;
		}
	} else if (o->tls_psk_dir) {
		if (path_join(key, sizeof(key), o->tls_psk_dir, "keys.psk") < 0) {
			free(t);
			return vd_error_set(err, -ENAMETOOLONG, "TLS directory name too long");
		}
		if (gnutls_psk_allocate_server_credentials(&t->psk) < 0) {
			free(t);
			return vd_error_set(err, -ENOMEM, "Out of memory");
		}
		ret = gnutls_psk_set_server_credentials_file(t->psk, key);
		if (ret < 0) {
			vd_error_set(err, -EINVAL, "Cannot load PSK file '%s': %s", key,
				     gnutls_strerror(ret));
			nbd_tls_creds_free(t);
			return -EINVAL;
		}
	} else {
		free(t);
		return vd_error_set(err, -EINVAL, "No TLS credentials");
	}
	*out = t;
	return 0;
}

void nbd_tls_creds_free(struct nbd_tls_creds *t)
{
	if (!t)
		return;
	if (t->x509)
		gnutls_certificate_free_credentials(t->x509);
	if (t->psk)
		gnutls_psk_free_server_credentials(t->psk);
	free(t);
}

int nbd_tls_session_new(struct nbd_conn *c)
{
	struct nbd_tls_creds *t = c->srv->tls;
	gnutls_session_t s;

	if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK) < 0)
		return -ENOMEM;
	if (t->x509) {
		if (gnutls_priority_set_direct(s, "NORMAL", NULL) < 0 ||
		    gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, t->x509) < 0)
			goto fail;
		gnutls_certificate_server_set_request(s, t->verify_peer ? GNUTLS_CERT_REQUIRE
									: GNUTLS_CERT_IGNORE);
	} else {
		if (gnutls_priority_set_direct(s, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL) < 0 ||
		    gnutls_credentials_set(s, GNUTLS_CRD_PSK, t->psk) < 0)
			goto fail;
	}
	gnutls_transport_set_int(s, c->fd);
	c->tls = s;
	return 0;
fail:
	gnutls_deinit(s);
	return -EINVAL;
}

void nbd_tls_session_free(struct nbd_conn *c)
{
	if (c->tls) {
		gnutls_deinit(c->tls);
		c->tls = NULL;
	}
}

/* 1: done; 0: in progress (the fd watch says which direction); -1: failed. */
int nbd_tls_handshake(struct nbd_conn *c)
{
	int ret = gnutls_handshake(c->tls);

	if (ret == GNUTLS_E_SUCCESS) {
		if (c->srv->tls->verify_peer) {
			unsigned status = 0;
			if (gnutls_certificate_verify_peers2(c->tls, &status) < 0 || status)
				return -1;
		}
		return 1;
	}
	if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED) {
		c->tls_want_write = gnutls_record_get_direction(c->tls) == 1;
		return 0;
	}
	return -1;
}

ssize_t nbd_tls_recv(struct nbd_conn *c, void *buf, size_t len)
{
	ssize_t r = gnutls_record_recv(c->tls, buf, len);

	if (r >= 0)
		return r;
	errno = r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED ? EAGAIN : EIO;
	return -1;
}

size_t nbd_tls_pending(struct nbd_conn *c)
{
	return c->tls ? gnutls_record_check_pending(c->tls) : 0;
}

/* Send the iovecs one record call at a time; after EAGAIN GnuTLS wants the
 * same data again, which the queue keeps until it is sent. */
ssize_t nbd_tls_sendv(struct nbd_conn *c, const struct iovec *iov, int n)
{
	ssize_t total = 0;

	for (int i = 0; i < n; i++) {
		ssize_t r = gnutls_record_send(c->tls, iov[i].iov_base, iov[i].iov_len);

		if (r < 0) {
			if (r != GNUTLS_E_AGAIN && r != GNUTLS_E_INTERRUPTED) {
				errno = EIO;
				return -1;
			}
			break;
		}
		total += r;
		if ((size_t)r < iov[i].iov_len)
			break;
	}
	if (total == 0) {
		errno = EAGAIN;
		return -1;
	}
	return total;
}
