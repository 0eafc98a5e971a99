/* SPDX-License-Identifier: MIT */
/*
 * TLS credentials and sessions (GnuTLS underneath), shared by the NBD
 * server (export/nbd) and the NBD client driver (block/drivers/nbd-client).
 *
 * Credentials are QEMU's objects:
 *   tls-creds-x509,id=ID,dir=DIR,endpoint=server|client[,verify-peer=on|off]
 *     server: DIR/ca-cert.pem, DIR/server-cert.pem, DIR/server-key.pem;
 *     client: DIR/ca-cert.pem (the server's certificate must chain to it
 *     and name the host), DIR/client-cert.pem + client-key.pem if present.
 *   tls-creds-psk,id=ID,dir=DIR,endpoint=server|client[,username=NAME]
 *     DIR/keys.psk, lines "identity:hexkey"; a client uses the line of
 *     its username (default "qemu").
 * They are loaded (files read, keys parsed) when added, so a bad folder is
 * reported then, and kept in a registry of the process by ID (as secrets
 * are, <vdisk/secret.h>), guarded by a mutex.  A user takes a reference.
 *
 * A session runs on a non-blocking socket: the handshake, recv and send
 * return -EAGAIN when the socket would block; the caller waits for the
 * direction vd_tls_session_want_write() says and calls again (for send,
 * with the same data).
 */
#ifndef VDISK_TLS_H
#define VDISK_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <vdisk/error.h>
#include <vdisk/opts.h>

#ifdef __cplusplus
extern "C" {
#endif

enum vd_tls_endpoint {
	VD_TLS_ENDPOINT_CLIENT,
	VD_TLS_ENDPOINT_SERVER,
};

struct vd_tls_creds;

/*
 * Add credentials from an object definition whose keys are qom-type
 * (tls-creds-x509 or tls-creds-psk), id, dir, endpoint (default client,
 * as QEMU), verify-peer (x509, default on), username (psk client) and
 * priority (a GnuTLS priority string).  Unknown keys are errors.  -EEXIST
 * for a taken id; -EINVAL (and the reason) when a file is missing or bad.
 */
int vd_tls_creds_add_opts(struct vd_opts *o, struct vd_error *err);

/* True if @qom_type names a TLS credentials type. */
bool vd_tls_creds_type(const char *qom_type);

/*
 * A reference to the credentials @id, which must be for @endpoint; QEMU's
 * messages otherwise ("No TLS credentials with id 'ID'", "Expecting TLS
 * credentials with a server endpoint").  Drop it with vd_tls_creds_unref().
 */
int vd_tls_creds_lookup(const char *id, enum vd_tls_endpoint endpoint, struct vd_tls_creds **out,
			struct vd_error *err);
struct vd_tls_creds *vd_tls_creds_ref(struct vd_tls_creds *c);
void vd_tls_creds_unref(struct vd_tls_creds *c);
const char *vd_tls_creds_id(const struct vd_tls_creds *c);
/* Forget @id (users keep their references); -ENOENT if there is none. */
int vd_tls_creds_remove(const char *id);
/* Forget every credentials and authz object (a program calls it before it exits). */
void vd_tls_creds_remove_all(void);

/*
 * QEMU's authz-simple,id=ID,identity=NAME: a server with tls-authz=ID
 * serves only the client whose identity (vd_tls_session_peer_name()) is
 * NAME.  Kept in the same registry; -EEXIST for a taken id.
 */
int vd_tls_authz_add_opts(struct vd_opts *o, struct vd_error *err);
bool vd_tls_authz_type(const char *qom_type);
/* A malloc'd copy of the identity of @id, or -ENOENT ("No authorization
 * object with id 'ID'"). */
int vd_tls_authz_lookup(const char *id, char **identity, struct vd_error *err);
int vd_tls_authz_remove(const char *id);

struct vd_tls_session;

/*
 * A session on the connected socket @fd (not taken: the caller closes it
 * after vd_tls_session_free()).  A client with x509 credentials (unless
 * verify-peer=off) checks the server's certificate against the CA and that
 * it names @hostname (NULL
 * fails the handshake, as in QEMU: "No hostname for certificate
 * validation").
 */
int vd_tls_session_new(struct vd_tls_creds *c, int fd, const char *hostname,
		       struct vd_tls_session **out, struct vd_error *err);
void vd_tls_session_free(struct vd_tls_session *s);
/* 0 when the handshake (and the peer's verification) is done, -EAGAIN to
 * be called again when the socket is ready, another -errno with @err set. */
int vd_tls_session_handshake(struct vd_tls_session *s, struct vd_error *err);
/* After -EAGAIN: true if the session waits for the socket to take data. */
bool vd_tls_session_want_write(struct vd_tls_session *s);
/* Bytes read (0: the peer closed), -EAGAIN, or -EIO. */
ssize_t vd_tls_session_recv(struct vd_tls_session *s, void *buf, size_t len);
/* Bytes sent (at most @len), -EAGAIN (call again with the same data), or -EIO. */
ssize_t vd_tls_session_send(struct vd_tls_session *s, const void *buf, size_t len);
/* As vd_tls_session_send() for the first bytes of @iov: pieces that fit in
 * one TLS record together (a reply header and 4 KiB of data) go out as one
 * record, in one syscall, instead of one record each.  After -EAGAIN call
 * again with the same @iov.  Bytes sent, -EAGAIN or -EIO. */
ssize_t vd_tls_session_sendv(struct vd_tls_session *s, const struct iovec *iov, int niov);
/* Bytes decrypted and buffered, which the socket's readiness does not show. */
size_t vd_tls_session_pending(struct vd_tls_session *s);
/*
 * After the handshake: who the peer is, as QEMU's authz checks see it: the
 * distinguished name of its (verified) x509 certificate
 * (gnutls_x509_crt_get_dn: "CN=client,O=Example"), or its PSK username.
 * 0, -ENOENT if it showed none, -ENAMETOOLONG if @size is too small.
 */
int vd_tls_session_peer_name(struct vd_tls_session *s, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif
