/* SPDX-License-Identifier: MIT */
/*
 * The NBD handshake, fixed newstyle (proto.md "Newstyle negotiation" and
 * "Option haggling"): the greeting, the client flags, then options until
 * NBD_OPT_GO or NBD_OPT_EXPORT_NAME picks an export.
 *
 * Every option is checked against its length before a byte of it is used:
 * a name, a count or a query that runs past the option's end is
 * NBD_REP_ERR_INVALID, and the session goes on.  Options longer than
 * NBD_MAX_OPTION_LENGTH are read and dropped, never buffered, and answered
 * NBD_REP_ERR_TOO_BIG (CVE-2017-15119); names over NBD_MAX_STRING are
 * refused (CVE-2017-15118).  Unknown options get NBD_REP_ERR_UNSUP.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <vdisk/backend.h>

#include "export/nbd/nbd-internal.h"

void nbd_negotiate_start(struct nbd_conn *c)
{
	uint8_t g[18];

	nbd_put64(g, NBD_MAGIC);
	nbd_put64(g + 8, NBD_OPTS_MAGIC);
	nbd_put16(g + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	nbd_conn_queue_copy(c, g, sizeof(g));
}

/* All that options negotiated is forgotten (STARTTLS: CVE-2021-3716). */
void nbd_negotiate_reset(struct nbd_conn *c)
{
	c->structured = false;
	c->meta_base = false;
	c->meta_depth = false;
	free(c->meta_export);
	c->meta_export = NULL;
}

static uint16_t export_flags(const struct vd_nbd_export *e)
{
	uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
		     NBD_FLAG_SEND_DF | NBD_FLAG_SEND_CACHE;

	if (e->multi_conn)
		f |= NBD_FLAG_CAN_MULTI_CONN;
	if (e->writable)
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
	else
		f |= NBD_FLAG_READ_ONLY;
	return f;
}

/* An option reply: header, then @a and @b. */
static int send_rep(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *a, size_t alen,
		    const void *b, size_t blen)
{
	size_t len = 20 + alen + blen;
	uint8_t *buf = malloc(len);
	int ret;

	if (!buf) {
		nbd_conn_close(c);
		return -ENOMEM;
	}
	nbd_put64(buf, NBD_REP_MAGIC);
	nbd_put32(buf + 8, opt);
	nbd_put32(buf + 12, type);
	nbd_put32(buf + 16, (uint32_t)(alen + blen));
	if (alen)
		memcpy(buf + 20, a, alen);
	if (blen)
		memcpy(buf + 20 + alen, b, blen);
	ret = nbd_conn_queue_copy(c, buf, len);
	free(buf);
	return ret;
}

static int send_ack(struct nbd_conn *c, uint32_t opt)
{
	return send_rep(c, opt, NBD_REP_ACK, NULL, 0, NULL, 0);
}

static int send_err(struct nbd_conn *c, uint32_t opt, uint32_t type, const char *msg)
{
	return send_rep(c, opt, type, msg, msg ? strlen(msg) : 0, NULL, 0);
}

/* A length-prefixed string at @p (@n bytes left) of at most @max bytes. */
static bool get_string(const uint8_t **p, size_t *n, uint32_t max, const char **s, uint32_t *len)
{
	uint32_t l;

	if (*n < 4)
		return false;
	l = nbd_get32(*p);
	if (l > *n - 4 || l > max)
		return false;
	*s = (const char *)*p + 4;
	*len = l;
	*p += 4 + l;
	*n -= 4 + l;
	return true;
}

static void send_info_export(struct nbd_conn *c, uint32_t opt, const struct vd_nbd_export *e)
{
	uint8_t b[12];
	int64_t size = vd_blk_getlength(e->blk);

	nbd_put16(b, NBD_INFO_EXPORT);
	nbd_put64(b + 2, size < 0 ? 0 : (uint64_t)size);
	nbd_put16(b + 10, export_flags(e));
	send_rep(c, opt, NBD_REP_INFO, b, sizeof(b), NULL, 0);
}

static void send_info_block_size(struct nbd_conn *c, uint32_t opt, const struct vd_nbd_export *e)
{
	const struct vd_limits *l = vd_blk_limits(e->blk);
	uint32_t min = l->request_alignment ? l->request_alignment : 1;
	uint32_t pref = min > 4096 ? min : 4096;
	uint8_t b[14];

	nbd_put16(b, NBD_INFO_BLOCK_SIZE);
	nbd_put32(b + 2, min);
	nbd_put32(b + 6, pref);
	nbd_put32(b + 10, NBD_MAX_PAYLOAD);
	send_rep(c, opt, NBD_REP_INFO, b, sizeof(b), NULL, 0);
}

/* NBD_OPT_INFO and NBD_OPT_GO (proto.md): u32 name length, name, u16
 * count, count x u16 information requests. */
static int opt_info(struct nbd_conn *c, uint32_t opt, const uint8_t *p, size_t n)
{
	const char *name;
	uint32_t nlen;
	uint16_t nreq;
	struct vd_nbd_export *e;
	bool want_name = false, want_desc = false;
	uint8_t t[2];

	if (!get_string(&p, &n, UINT32_MAX, &name, &nlen) || n < 2)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "request data is malformed");
	nreq = nbd_get16(p);
	if (n != 2 + 2 * (size_t)nreq)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "request data is malformed");
	if (nlen > NBD_MAX_STRING)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "export name too long");
	for (uint16_t i = 0; i < nreq; i++) {
		uint16_t r = nbd_get16(p + 2 + 2 * i);
		want_name |= r == NBD_INFO_NAME;
		want_desc |= r == NBD_INFO_DESCRIPTION;
	}
	e = nbd_server_find_export(c->srv, name, nlen);
	if (!e)
		return send_err(c, opt, NBD_REP_ERR_UNKNOWN, "export not found");
	if (want_name) {
		nbd_put16(t, NBD_INFO_NAME);
		send_rep(c, opt, NBD_REP_INFO, t, 2, e->name, strlen(e->name));
	}
	if (want_desc && e->description) {
		nbd_put16(t, NBD_INFO_DESCRIPTION);
		send_rep(c, opt, NBD_REP_INFO, t, 2, e->description, strlen(e->description));
	}
	send_info_block_size(c, opt, e);
	send_info_export(c, opt, e);
	if (send_ack(c, opt) < 0 || opt == NBD_OPT_INFO)
		return 0;
	/* Contexts chosen for another export do not apply to this one. */
	if (c->meta_export && strcmp(c->meta_export, e->name)) {
		c->meta_base = c->meta_depth = false;
	}
	nbd_conn_enter_transmission(c, e);
	return 0;
}

/* NBD_OPT_EXPORT_NAME: no error path but closing (proto.md). */
static int opt_export_name(struct nbd_conn *c, const uint8_t *p, size_t n)
{
	struct vd_nbd_export *e;
	uint8_t b[10 + 124] = {0};

	if (n > NBD_MAX_STRING)
		return -1;
	e = nbd_server_find_export(c->srv, (const char *)p, n);
	if (!e)
		return -1;
	nbd_put64(b, (uint64_t)vd_blk_getlength(e->blk));
	nbd_put16(b + 8, export_flags(e));
	nbd_conn_queue_copy(c, b, c->no_zeroes ? 10 : sizeof(b));
	c->meta_base = c->meta_depth = false;
	nbd_conn_enter_transmission(c, e);
	return 0;
}

static int opt_list(struct nbd_conn *c, size_t n)
{
	if (n)
		return send_err(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "no data expected");
	for (struct vd_nbd_export *e = c->srv->exports; e; e = e->next) {
		size_t nl = strlen(e->name), dl = e->description ? strlen(e->description) : 0;
		uint8_t *b = malloc(4 + nl + dl);

		if (!b) {
			nbd_conn_close(c);
			return -1;
		}
		nbd_put32(b, (uint32_t)nl);
		memcpy(b + 4, e->name, nl);
		if (dl)
			memcpy(b + 4 + nl, e->description, dl);
		send_rep(c, NBD_OPT_LIST, NBD_REP_SERVER, b, 4 + nl + dl, NULL, 0);
		free(b);
	}
	return send_ack(c, NBD_OPT_LIST);
}

static void send_context(struct nbd_conn *c, uint32_t opt, uint32_t id, const char *name)
{
	uint8_t b[4];

	nbd_put32(b, id);
	send_rep(c, opt, NBD_REP_META_CONTEXT, b, 4, name, strlen(name));
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: u32 export name
 * length, name, u32 query count, count x (u32 length, query). */
static int opt_meta(struct nbd_conn *c, uint32_t opt, const uint8_t *p, size_t n)
{
	const char *name;
	uint32_t nlen, nq;
	bool set = opt == NBD_OPT_SET_META_CONTEXT, base = false, depth = false;
	const uint8_t *q;
	size_t qn;

	if (set && !c->structured)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "use NBD_OPT_STRUCTURED_REPLY first");
	if (!get_string(&p, &n, NBD_MAX_STRING, &name, &nlen) || n < 4)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "request data is malformed");
	nq = nbd_get32(p);
	p += 4;
	n -= 4;
	/* Check every query's bounds before acting on any. */
	q = p;
	qn = n;
	for (uint32_t i = 0; i < nq; i++) {
		const char *s;
		uint32_t l;

		if (!get_string(&q, &qn, NBD_MAX_STRING, &s, &l))
			return send_err(c, opt, NBD_REP_ERR_INVALID, "request data is malformed");
	}
	if (qn)
		return send_err(c, opt, NBD_REP_ERR_INVALID, "request data is malformed");
	if (!nbd_server_find_export(c->srv, name, nlen))
		return send_err(c, opt, NBD_REP_ERR_UNKNOWN, "export not found");
	if (nq == 0 && !set) {
		base = depth = true;
	}
	for (uint32_t i = 0; i < nq; i++) {
		const char *s;
		uint32_t l;

		get_string(&p, &n, NBD_MAX_STRING, &s, &l);
#define IS(lit) (l == sizeof(lit) - 1 && !memcmp(s, lit, l))
		if (IS(NBD_META_BASE_ALLOCATION) || (!set && IS("base:")))
			base = true;
		else if (IS(NBD_META_QEMU_ALLOCATION_DEPTH) || (!set && IS("qemu:")))
			depth = true;
#undef IS
	}
	if (base)
		send_context(c, opt, NBD_CTX_BASE_ALLOCATION, NBD_META_BASE_ALLOCATION);
	if (depth)
		send_context(c, opt, NBD_CTX_ALLOCATION_DEPTH, NBD_META_QEMU_ALLOCATION_DEPTH);
	if (set) {
		free(c->meta_export);
		c->meta_export = strndup(name, nlen);
		if (!c->meta_export) {
			nbd_conn_close(c);
			return -1;
		}
		c->meta_base = base;
		c->meta_depth = depth;
	}
	return send_ack(c, opt);
}

static int handle_option(struct nbd_conn *c, uint32_t opt, const uint8_t *p, size_t n)
{
	/* FORCEDTLS (proto.md): before TLS only STARTTLS and ABORT; a bare
	 * EXPORT_NAME has no error reply and ends the session. */
	if (c->srv->tls && !c->tls && opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT) {
		if (opt == NBD_OPT_EXPORT_NAME)
			return -1;
		return send_err(c, opt, NBD_REP_ERR_TLS_REQD, "TLS is required");
	}
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		return opt_export_name(c, p, n);
	case NBD_OPT_ABORT:
		/* proto.md: the server SHOULD reply with an ACK, then close. */
		send_ack(c, opt);
		c->close_after_output = true;
		c->in = NBD_IN_DONE;
		return 0;
	case NBD_OPT_LIST:
		return opt_list(c, n);
	case NBD_OPT_STARTTLS:
		if (n)
			return send_err(c, opt, NBD_REP_ERR_INVALID, "no data expected");
		if (!c->srv->tls)
			return send_err(c, opt, NBD_REP_ERR_POLICY, "TLS not configured");
		if (c->tls)
			return send_err(c, opt, NBD_REP_ERR_INVALID, "TLS already negotiated");
		if (send_ack(c, opt) < 0)
			return -1;
		c->tls_pending_start = true;
		return 0;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info(c, opt, p, n);
	case NBD_OPT_STRUCTURED_REPLY:
		if (n)
			return send_err(c, opt, NBD_REP_ERR_INVALID, "no data expected");
		c->structured = true;
		return send_ack(c, opt);
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return opt_meta(c, opt, p, n);
	default:
		return send_err(c, opt, NBD_REP_ERR_UNSUP, "unsupported option");
	}
}

ssize_t nbd_negotiate_input(struct nbd_conn *c, const uint8_t *p, size_t n)
{
	uint32_t opt, len;

	if (c->in == NBD_IN_CLIENT_FLAGS) {
		uint32_t flags;

		if (n < 4)
			return 0;
		flags = nbd_get32(p);
		/* Unknown client flags: the server MUST close (proto.md). */
		if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
			return -1;
		c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
		c->in = NBD_IN_OPTION;
		return 4;
	}
	if (c->opt_skip) {
		size_t k = n < c->opt_skip ? n : (size_t)c->opt_skip;

		c->opt_skip -= k;
		if (c->opt_skip == 0)
			send_err(c, c->opt_skipped, NBD_REP_ERR_TOO_BIG, "option too long");
		return (ssize_t)k;
	}
	if (n < 16)
		return 0;
	if (nbd_get64(p) != NBD_OPTS_MAGIC)
		return -1;
	opt = nbd_get32(p + 8);
	len = nbd_get32(p + 12);
	if (len > NBD_MAX_OPTION_LENGTH) {
		/* EXPORT_NAME has no error reply: a name that long ends it. */
		if (opt == NBD_OPT_EXPORT_NAME)
			return -1;
		c->opt_skip = len;
		c->opt_skipped = opt;
		return 16;
	}
	if (n < 16 + (size_t)len)
		return 0;
	if (handle_option(c, opt, p + 16, len) < 0 && !c->dead)
		return -1;
	return 16 + (ssize_t)len;
}
