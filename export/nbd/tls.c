/* SPDX-License-Identifier: MIT */
/*
 * TLS for the NBD server (proto.md "TLS support"): the connection's side of
 * the sessions of util/tls.c (<vdisk/tls.h>), which holds the credentials
 * (QEMU's tls-creds-x509 and tls-creds-psk) and the GnuTLS code shared with
 * the NBD client.  With credentials the server is in FORCEDTLS mode: only
 * STARTTLS and ABORT are served before TLS is up.
 */
#include <errno.h>
#include <string.h>

#include "export/nbd/nbd-internal.h"

int nbd_tls_session_new(struct nbd_conn *c)
{
	struct vd_error err = {0};
	int ret = vd_tls_session_new(c->srv->tls, c->fd, NULL, &c->tls, &err);

	vd_error_clear(&err);
	return ret;
}

void nbd_tls_session_free(struct nbd_conn *c)
{
	vd_tls_session_free(c->tls);
	c->tls = NULL;
}

/* 1: done; 0: in progress (the fd watch says which direction); -1: failed. */
int nbd_tls_handshake(struct nbd_conn *c)
{
	struct vd_error err = {0};
	int ret = vd_tls_session_handshake(c->tls, &err);

	vd_error_clear(&err);
	if (ret == 0) {
		char name[1024];

		/* tls-authz (QEMU's authz-simple): one identity is served. */
		if (c->srv->tls_authz &&
		    (vd_tls_session_peer_name(c->tls, name, sizeof(name)) < 0 ||
		     strcmp(name, c->srv->tls_authz)))
			return -1;
		return 1;
	}
	if (ret == -EAGAIN) {
		c->tls_want_write = vd_tls_session_want_write(c->tls);
		return 0;
	}
	return -1;
}

ssize_t nbd_tls_recv(struct nbd_conn *c, void *buf, size_t len)
{
	ssize_t r = vd_tls_session_recv(c->tls, buf, len);

	if (r >= 0)
		return r;
	errno = (int)-r;
	return -1;
}

size_t nbd_tls_pending(struct nbd_conn *c)
{
	return c->tls ? vd_tls_session_pending(c->tls) : 0;
}

/* Send the queue's iovecs, small neighbours together in one record
 * (vd_tls_session_sendv); after EAGAIN GnuTLS wants the same data again,
 * which the queue keeps until it is sent. */
ssize_t nbd_tls_sendv(struct nbd_conn *c, const struct iovec *iov, int n)
{
	ssize_t total = 0;
	int i = 0;
	size_t skip = 0;

	for (;;) {
		struct iovec first[64];
		int k = 0;
		ssize_t r;

		while (i < n && iov[i].iov_len == skip) {
			i++;
			skip = 0;
		}
		if (i == n)
			break;

		/* The rest of the queue from where the last send stopped. */
		for (int j = i; j < n && k < 64; j++, k++)
			first[k] = iov[j];
		first[0].iov_base = (uint8_t *)first[0].iov_base + skip;
		first[0].iov_len -= skip;
		r = vd_tls_session_sendv(c->tls, first, k);
		if (r < 0) {
			if (r != -EAGAIN) {
				errno = EIO;
				return -1;
			}
			break;
		}
		if (r == 0)
			break;
		total += r;
		/* Advance over what went out. */
		while (r > 0 && i < n) {
			size_t left = iov[i].iov_len - skip;

			if ((size_t)r < left) {
				skip += (size_t)r;
				r = 0;
			} else {
				r -= (ssize_t)left;
				skip = 0;
				i++;
			}
		}
	}
	if (total == 0) {
		errno = EAGAIN;
		return -1;
	}
	return total;
}
