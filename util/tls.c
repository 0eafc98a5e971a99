/* SPDX-License-Identifier: MIT */
/*
 * TLS credentials and sessions (include/vdisk/tls.h), with GnuTLS.  The
 * files and their names are QEMU's (crypto/tlscredsx509.c,
 * crypto/tlscredspsk.c); the checks of a peer's certificate and their
 * messages follow crypto/tlssession.c.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <vdisk/secret.h>
#include <vdisk/tls.h>

/* QEMU's CONFIG_TLS_PRIORITY, and what its PSK credentials add to it. */
#define TLS_PRIORITY "NORMAL"
#define TLS_PSK_PRIORITY ":+ECDHE-PSK:+DHE-PSK:+PSK"
/* keys.psk is a few lines; more is not a key file. */
#define PSK_FILE_MAX (64 * 1024)

struct vd_tls_creds {
	atomic_int refcnt;
	struct vd_tls_creds *next; /* in the registry */
	char *id;
	enum vd_tls_endpoint endpoint;
	bool verify_peer; /* x509 */
	char *priority;
	gnutls_certificate_credentials_t x509;
	gnutls_psk_server_credentials_t psk_server;
	gnutls_psk_client_credentials_t psk_client;
};

struct vd_tls_session {
	gnutls_session_t s;
	struct vd_tls_creds *creds;
	char *hostname;
};

struct authz {
	struct authz *next;
	char *id, *identity;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct vd_tls_creds *registry;
static struct authz *authz_list;

static struct authz *authz_find(const char *id);

/* --- credentials --------------------------------------------------------- */

bool vd_tls_creds_type(const char *qom_type)
{
	return qom_type &&
	       (!strcmp(qom_type, "tls-creds-x509") || !strcmp(qom_type, "tls-creds-psk"));
}

static void creds_free(struct vd_tls_creds *c)
{
	if (c->x509)
		gnutls_certificate_free_credentials(c->x509);
	if (c->psk_server)
		gnutls_psk_free_server_credentials(c->psk_server);
	if (c->psk_client)
		gnutls_psk_free_client_credentials(c->psk_client);
	free(c->priority);
	free(c->id);
	free(c);
}

struct vd_tls_creds *vd_tls_creds_ref(struct vd_tls_creds *c)
{
	if (c)
		atomic_fetch_add(&c->refcnt, 1);
	return c;
}

void vd_tls_creds_unref(struct vd_tls_creds *c)
{
	if (c && atomic_fetch_sub(&c->refcnt, 1) == 1)
		creds_free(c);
}

const char *vd_tls_creds_id(const struct vd_tls_creds *c)
{
	return c->id;
}

/* DIR/FILE into @buf; with @required, the file must be readable. */
static int creds_path(char *buf, size_t size, const char *dir, const char *file, bool required,
		      struct vd_error *err)
{
	int n = snprintf(buf, size, "%s/%s", dir, file);

	if (n < 0 || (size_t)n >= size)
		return vd_error_set(err, -ENAMETOOLONG, "TLS directory name too long");
	if (access(buf, R_OK) < 0) {
		int e = errno;

		if (!required)
			return 1;
		return vd_error_set(err, -EINVAL, "Unable to access credentials %s: %s", buf,
				    strerror(e));
	}
	return 0;
}

static int load_x509(struct vd_tls_creds *c, const char *dir, struct vd_error *err)
{
	bool server = c->endpoint == VD_TLS_ENDPOINT_SERVER;
	char ca[4096], cert[4096], key[4096];
	int ret, have_cert, have_key;

	/* A server without verify-peer does not need a CA (QEMU wants one
	 * anyway; we are lenient there, as vdisk nbd always was). */
	ret = creds_path(ca, sizeof(ca), dir, "ca-cert.pem", !server || c->verify_peer, err);
	if (ret < 0)
		return ret;
	have_cert = creds_path(cert, sizeof(cert), dir,
			       server ? "server-cert.pem" : "client-cert.pem", server, err);
	if (have_cert < 0)
		return have_cert;
	have_key = creds_path(key, sizeof(key), dir, server ? "server-key.pem" : "client-key.pem",
			      server, err);
	if (have_key < 0)
		return have_key;
	if (gnutls_certificate_allocate_credentials(&c->x509) < 0)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	if (ret == 0) {
		int n = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM);

		if (n < 0 || (n == 0 && (!server || c->verify_peer)))
			return vd_error_set(err, -EINVAL, "Cannot load CA certificate '%s': %s", ca,
					    n < 0 ? gnutls_strerror(n) : "no certificate");
	}
	if (have_cert == 0 && have_key == 0) {
		int n = gnutls_certificate_set_x509_key_file(c->x509, cert, key,
							     GNUTLS_X509_FMT_PEM);
		if (n < 0)
			return vd_error_set(err, -EINVAL,
					    "Cannot load certificate '%s' and key '%s': %s", cert,
					    key, gnutls_strerror(n));
	}
	return 0;
}

static bool is_hex(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
		      (ch >= 'A' && ch <= 'F')))
			return false;
	}
	return true;
}

/* The key of @user in keys.psk ("user:hexkey" lines), as QEMU's client. */
static int load_psk_client(struct vd_tls_creds *c, const char *path, const char *user,
			   struct vd_error *err)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL, *line, *save = NULL;
	size_t n;
	int ret = -EINVAL;

	if (!f)
		return vd_error_set(err, -EINVAL, "Unable to access credentials %s: %s", path,
				    strerror(errno));
	buf = malloc(PSK_FILE_MAX + 1);
	if (!buf) {
		fclose(f);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	n = fread(buf, 1, PSK_FILE_MAX + 1, f);
	fclose(f);
	if (n > PSK_FILE_MAX) {
		ret = vd_error_set(err, -EINVAL, "PSK file '%s' is too large", path);
		goto out;
	}
	buf[n] = '\0';
	ret = vd_error_set(err, -EINVAL, "Username %s not found in pskfile %s", user, path);
	for (line = strtok_r(buf, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
		char *colon = strchr(line, ':');
		size_t klen;
		gnutls_datum_t key;

		if (!colon || (size_t)(colon - line) != strlen(user) ||
		    memcmp(line, user, strlen(user)))
			continue;
		klen = strlen(colon + 1);
		if (klen == 0 || klen % 2 || !is_hex(colon + 1, klen)) {
			vd_error_clear(err);
			ret = vd_error_set(err, -EINVAL, "Invalid key for user %s in pskfile %s",
					   user, path);
			break;
		}
		vd_error_clear(err);
		key.data = (unsigned char *)colon + 1;
		key.size = (unsigned)klen;
		if (gnutls_psk_allocate_client_credentials(&c->psk_client) < 0) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			break;
		}
		ret = gnutls_psk_set_client_credentials(c->psk_client, user, &key,
							GNUTLS_PSK_KEY_HEX);
		if (ret < 0)
			ret = vd_error_set(err, -EINVAL, "Cannot set PSK client credentials: %s",
					   gnutls_strerror(ret));
		break;
	}
out:
	vd_memzero_explicit(buf, PSK_FILE_MAX + 1);
	free(buf);
	return ret;
}

static int load_psk(struct vd_tls_creds *c, const char *dir, const char *user, struct vd_error *err)
{
	char path[4096];
	int ret = creds_path(path, sizeof(path), dir, "keys.psk", true, err);

	if (ret < 0)
		return ret;
	if (c->endpoint == VD_TLS_ENDPOINT_CLIENT)
		return load_psk_client(c, path, user ? user : "qemu", err);
	if (gnutls_psk_allocate_server_credentials(&c->psk_server) < 0)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = gnutls_psk_set_server_credentials_file(c->psk_server, path);
	if (ret < 0)
		return vd_error_set(err, -EINVAL, "Cannot load PSK file '%s': %s", path,
				    gnutls_strerror(ret));
	return 0;
}

static struct vd_tls_creds *find(const char *id)
{
	for (struct vd_tls_creds *c = registry; c; c = c->next)
		if (!strcmp(c->id, id))
			return c;
	return NULL;
}

int vd_tls_creds_add_opts(struct vd_opts *o, struct vd_error *err)
{
	static const char *const endpoints[] = {"client", "server", NULL};
	const char *type = vd_opts_get(o, "qom-type"), *id = vd_opts_get(o, "id");
	const char *dir = vd_opts_get(o, "dir"), *user = vd_opts_get(o, "username");
	const char *prio = vd_opts_get(o, "priority");
	bool psk, verify = true;
	struct vd_tls_creds *c;
	int endpoint, ret;

	if (!vd_tls_creds_type(type))
		return vd_error_set(err, -EINVAL, "Invalid object type '%s'", type ? type : "");
	psk = !strcmp(type, "tls-creds-psk");
	if (!id || !*id)
		return vd_error_set(err, -EINVAL, "Parameter 'id' is missing");
	/* verify-peer is a property of every QEMU tls-creds type; only x509
	 * has a peer certificate to verify. */
	ret = vd_opts_get_enum(o, "endpoint", endpoints, 0, &endpoint, err);
	if (ret == 0)
		ret = vd_opts_get_bool(o, "verify-peer", true, &verify, err);
	if (ret < 0)
		return ret;
	if (!psk && user)
		return vd_error_set(err, -EINVAL, "Parameter 'username' is unexpected");
	vd_opts_get(o, "sanity-check"); /* accepted: QEMU's x509 option, our checks run anyway */
	ret = vd_opts_check_unused(o, NULL, err);
	if (ret < 0)
		return ret;
	if (!dir)
		return vd_error_set(err, -EINVAL, "Parameter 'dir' is missing");
	c = calloc(1, sizeof(*c));
	if (!c || !(c->id = strdup(id)) ||
	    !(c->priority =
		      malloc(strlen(prio ? prio : TLS_PRIORITY) + sizeof(TLS_PSK_PRIORITY)))) {
		if (c)
			creds_free(c);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	strcpy(c->priority, prio ? prio : TLS_PRIORITY);
	if (psk)
		strcat(c->priority, TLS_PSK_PRIORITY);
	atomic_init(&c->refcnt, 1);
	c->endpoint = endpoint ? VD_TLS_ENDPOINT_SERVER : VD_TLS_ENDPOINT_CLIENT;
	c->verify_peer = verify;
	ret = psk ? load_psk(c, dir, user, err) : load_x509(c, dir, err);
	if (ret < 0) {
		creds_free(c);
		return ret;
	}
	pthread_mutex_lock(&lock);
	if (find(id) || authz_find(id)) {
		pthread_mutex_unlock(&lock);
		creds_free(c);
		return vd_error_set(err, -EEXIST,
				    "attempt to add duplicate property '%s' to object (type "
				    "'container')",
				    id);
	}
	c->next = registry;
	registry = c;
	pthread_mutex_unlock(&lock);
	return 0;
}

int vd_tls_creds_lookup(const char *id, enum vd_tls_endpoint endpoint, struct vd_tls_creds **out,
			struct vd_error *err)
{
	struct vd_tls_creds *c;

	pthread_mutex_lock(&lock);
	c = vd_tls_creds_ref(find(id));
	pthread_mutex_unlock(&lock);
	if (!c)
		return vd_error_set(err, -ENOENT, "No TLS credentials with id '%s'", id);
	if (c->endpoint != endpoint) {
		vd_tls_creds_unref(c);
		return vd_error_set(err, -EINVAL, "Expecting TLS credentials with a %s endpoint",
				    endpoint == VD_TLS_ENDPOINT_SERVER ? "server" : "client");
	}
	*out = c;
	return 0;
}

int vd_tls_creds_remove(const char *id)
{
	struct vd_tls_creds **pp, *c = NULL;

	pthread_mutex_lock(&lock);
	for (pp = &registry; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->id, id)) {
			c = *pp;
			*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	if (!c)
		return -ENOENT;
	vd_tls_creds_unref(c);
	return 0;
}

static void authz_free(struct authz *a)
{
	free(a->id);
	free(a->identity);
	free(a);
}

void vd_tls_creds_remove_all(void)
{
	struct vd_tls_creds *c;
	struct authz *a;

	pthread_mutex_lock(&lock);
	c = registry;
	registry = NULL;
	a = authz_list;
	authz_list = NULL;
	pthread_mutex_unlock(&lock);
	while (c) {
		struct vd_tls_creds *next = c->next;

		vd_tls_creds_unref(c);
		c = next;
	}
	while (a) {
		struct authz *next = a->next;

		authz_free(a);
		a = next;
	}
}

/* --- authz-simple --------------------------------------------------------- */

bool vd_tls_authz_type(const char *qom_type)
{
	return qom_type && !strcmp(qom_type, "authz-simple");
}

static struct authz *authz_find(const char *id)
{
	for (struct authz *a = authz_list; a; a = a->next)
		if (!strcmp(a->id, id))
			return a;
	return NULL;
}

int vd_tls_authz_add_opts(struct vd_opts *o, struct vd_error *err)
{
	const char *type = vd_opts_get(o, "qom-type"), *id = vd_opts_get(o, "id");
	const char *identity = vd_opts_get(o, "identity");
	struct authz *a;
	int ret;

	if (!vd_tls_authz_type(type))
		return vd_error_set(err, -EINVAL, "Invalid object type '%s'", type ? type : "");
	if (!id || !*id)
		return vd_error_set(err, -EINVAL, "Parameter 'id' is missing");
	ret = vd_opts_check_unused(o, NULL, err);
	if (ret < 0)
		return ret;
	if (!identity)
		return vd_error_set(err, -EINVAL, "Parameter 'identity' is missing");
	a = calloc(1, sizeof(*a));
	if (!a || !(a->id = strdup(id)) || !(a->identity = strdup(identity))) {
		if (a)
			authz_free(a);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	pthread_mutex_lock(&lock);
	if (authz_find(id) || find(id)) {
		pthread_mutex_unlock(&lock);
		authz_free(a);
		return vd_error_set(err, -EEXIST,
				    "attempt to add duplicate property '%s' to object (type "
				    "'container')",
				    id);
	}
	a->next = authz_list;
	authz_list = a;
	pthread_mutex_unlock(&lock);
	return 0;
}

int vd_tls_authz_lookup(const char *id, char **identity, struct vd_error *err)
{
	struct authz *a;
	char *copy = NULL;

	pthread_mutex_lock(&lock);
	a = authz_find(id);
	if (a)
		copy = strdup(a->identity);
	pthread_mutex_unlock(&lock);
	if (!a)
		return vd_error_set(err, -ENOENT, "No authorization object with id '%s'", id);
	if (!copy)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	*identity = copy;
	return 0;
}

int vd_tls_authz_remove(const char *id)
{
	struct authz **pp, *a = NULL;

	pthread_mutex_lock(&lock);
	for (pp = &authz_list; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->id, id)) {
			a = *pp;
			*pp = a->next;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
	if (!a)
		return -ENOENT;
	authz_free(a);
	return 0;
}

/* --- sessions ------------------------------------------------------------ */

int vd_tls_session_new(struct vd_tls_creds *c, int fd, const char *hostname,
		       struct vd_tls_session **out, struct vd_error *err)
{
	bool server = c->endpoint == VD_TLS_ENDPOINT_SERVER;
	struct vd_tls_session *t = calloc(1, sizeof(*t));
	int ret;

	if (!t || (hostname && !(t->hostname = strdup(hostname)))) {
		free(t);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = gnutls_init(&t->s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK |
					 GNUTLS_NO_SIGNAL);
	if (ret < 0) {
		free(t->hostname);
		free(t);
		return vd_error_set(err, -ENOMEM, "Cannot create TLS session: %s",
				    gnutls_strerror(ret));
	}
	t->creds = vd_tls_creds_ref(c);
	ret = gnutls_priority_set_direct(t->s, c->priority, NULL);
	if (ret < 0)
		goto fail;
	if (c->x509) {
		ret = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->x509);
		if (ret < 0)
			goto fail;
		if (server)
			gnutls_certificate_server_set_request(
				t->s, c->verify_peer ? GNUTLS_CERT_REQUIRE : GNUTLS_CERT_IGNORE);
		else if (hostname)
			/* SNI, as GnuTLS clients send it. */
			gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, hostname, strlen(hostname));
	} else {
		ret = gnutls_credentials_set(t->s, GNUTLS_CRD_PSK,
					     server ? (void *)c->psk_server
						    : (void *)c->psk_client);
		if (ret < 0)
			goto fail;
	}
	gnutls_transport_set_int(t->s, fd);
	*out = t;
	return 0;
fail:
	vd_error_set(err, -EINVAL, "Cannot set up TLS session: %s", gnutls_strerror(ret));
	vd_tls_session_free(t);
	return -EINVAL;
}

void vd_tls_session_free(struct vd_tls_session *t)
{
	if (!t)
		return;
	gnutls_deinit(t->s);
	vd_tls_creds_unref(t->creds);
	free(t->hostname);
	free(t);
}

/* The peer's certificate: chained to our CA, in date, and (a client's view
 * of a server) naming the host.  QEMU's qcrypto_tls_session_check_certificate. */
static int check_peer(struct vd_tls_session *t, struct vd_error *err)
{
	const gnutls_datum_t *certs;
	unsigned status = 0, ncerts = 0;
	gnutls_x509_crt_t crt;
	int ret = gnutls_certificate_verify_peers2(t->s, &status);

	if (ret < 0)
		return vd_error_set(err, -EACCES, "Cannot check peer certificate: %s",
				    gnutls_strerror(ret));
	if (status) {
		const char *reason = "The certificate is not trusted";

		if (status & GNUTLS_CERT_SIGNER_NOT_FOUND)
			reason = "The certificate hasn't got a known issuer";
		else if (status & GNUTLS_CERT_REVOKED)
			reason = "The certificate has been revoked";
		else if (status & GNUTLS_CERT_INSECURE_ALGORITHM)
			reason = "The certificate uses an insecure algorithm";
		else if (status & GNUTLS_CERT_EXPIRED)
			reason = "The certificate has expired";
		else if (status & GNUTLS_CERT_NOT_ACTIVATED)
			reason = "The certificate is not yet activated";
		return vd_error_set(err, -EACCES, "%s", reason);
	}
	certs = gnutls_certificate_get_peers(t->s, &ncerts);
	if (!certs || ncerts == 0)
		return vd_error_set(err, -EACCES, "No certificate peers");
	if (!t->hostname) {
		/* QEMU's client will not trust a certificate it cannot match
		 * to a name; a server checks only the chain. */
		if (t->creds->endpoint == VD_TLS_ENDPOINT_CLIENT)
			return vd_error_set(err, -EACCES, "No hostname for certificate validation");
		return 0;
	}
	if (gnutls_x509_crt_init(&crt) < 0)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
	if (ret < 0) {
		gnutls_x509_crt_deinit(crt);
		return vd_error_set(err, -EACCES, "The certificate cannot be parsed: %s",
				    gnutls_strerror(ret));
	}
	ret = gnutls_x509_crt_check_hostname(crt, t->hostname);
	gnutls_x509_crt_deinit(crt);
	if (!ret)
		return vd_error_set(err, -EACCES, "Certificate does not match the hostname %s",
				    t->hostname);
	return 0;
}

int vd_tls_session_handshake(struct vd_tls_session *t, struct vd_error *err)
{
	int ret = gnutls_handshake(t->s);

	if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_INTERRUPTED)
		return -EAGAIN;
	if (ret < 0)
		return vd_error_set(err, -EIO, "TLS handshake failed: %s", gnutls_strerror(ret));
	/* verify-peer=off skips the checks on either side, as in QEMU. */
	if (t->creds->x509 && t->creds->verify_peer)
		return check_peer(t, err);
	return 0;
}

bool vd_tls_session_want_write(struct vd_tls_session *t)
{
	return gnutls_record_get_direction(t->s) == 1;
}

ssize_t vd_tls_session_recv(struct vd_tls_session *t, void *buf, size_t len)
{
	ssize_t r = gnutls_record_recv(t->s, buf, len);

	if (r >= 0)
		return r;
	if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
		return -EAGAIN;
	/* A peer that closes without close_notify: as an end of stream (NBD
	 * clients and servers do that after NBD_CMD_DISC). */
	if (r == GNUTLS_E_PREMATURE_TERMINATION)
		return 0;
	return -EIO;
}

ssize_t vd_tls_session_send(struct vd_tls_session *t, const void *buf, size_t len)
{
	ssize_t r = gnutls_record_send(t->s, buf, len);

	if (r >= 0)
		return r;
	if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
		return -EAGAIN;
	return -EIO;
}

#define TLS_RECORD_MAX 16384 /* TLS's largest record payload */

ssize_t vd_tls_session_sendv(struct vd_tls_session *t, const struct iovec *iov, int niov)
{
	uint8_t buf[TLS_RECORD_MAX];
	size_t len = 0;
	int i = 0;

	while (i < niov && iov[i].iov_len <= sizeof(buf) - len) {
		memcpy(buf + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
		i++;
	}
	/* The same bytes come back after -EAGAIN: the caller's iov did not
	 * move, so the record GnuTLS keeps is for exactly these. */
	if (i >= 2)
		return vd_tls_session_send(t, buf, len);
	return niov ? vd_tls_session_send(t, iov[0].iov_base, iov[0].iov_len) : 0;
}

size_t vd_tls_session_pending(struct vd_tls_session *t)
{
	return gnutls_record_check_pending(t->s);
}

int vd_tls_session_peer_name(struct vd_tls_session *t, char *buf, size_t size)
{
	const gnutls_datum_t *certs;
	gnutls_x509_crt_t crt;
	unsigned ncerts = 0;
	size_t len = size;
	int ret;

	if (!t->creds->x509) {
		const char *user = t->creds->endpoint == VD_TLS_ENDPOINT_SERVER
					   ? gnutls_psk_server_get_username(t->s)
					   : NULL;
		if (!user)
			return -ENOENT;
		if (strlen(user) >= size)
			return -ENAMETOOLONG;
		strcpy(buf, user);
		return 0;
	}
	/* Only a verified certificate names anyone (check_peer ran). */
	if (t->creds->endpoint == VD_TLS_ENDPOINT_SERVER && !t->creds->verify_peer)
		return -ENOENT;
	certs = gnutls_certificate_get_peers(t->s, &ncerts);
	if (!certs || ncerts == 0)
		return -ENOENT;
	if (gnutls_x509_crt_init(&crt) < 0)
		return -ENOMEM;
	ret = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
	if (ret == 0)
		ret = gnutls_x509_crt_get_dn(crt, buf, &len);
	gnutls_x509_crt_deinit(crt);
	if (ret == GNUTLS_E_SHORT_MEMORY_BUFFER)
		return -ENAMETOOLONG;
	return ret < 0 ? -ENOENT : 0;
}
