/* SPDX-License-Identifier: MIT */
/*
 * The NBD client on the wire: handshake, requests, replies.  Section names
 * in comments are those of the NBD project's doc/proto.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/nbd-proto.h>

#include "block/drivers/nbd-client/nbd-client.h"

/* QEMU's NBD_MAX_BUFFER_SIZE: the largest payload we send or accept. */
#define NBD_MAX_PAYLOAD (32u * 1024 * 1024)
/* Any chunk that carries no read data is small; more is not a server we
 * want to read megabytes of garbage from. */
#define NBD_MAX_CHUNK NBD_MAX_OPTION_LENGTH

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, (uint16_t)v);
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, v >> 32);
	put32(p + 4, (uint32_t)v);
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) << 16 | get16(p + 2);
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static int read_buf(struct nbd_transport *t, void *buf, size_t len)
{
	struct iovec iov = {.iov_base = buf, .iov_len = len};

	return len ? t->readv(t->opaque, &iov, 1) : 0;
}

static int write_buf(struct nbd_transport *t, const void *buf, size_t len)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};

	return t->writev(t->opaque, &iov, 1);
}

/* Read and drop @len bytes. */
static int skip(struct nbd_transport *t, uint64_t len)
{
	uint8_t buf[4096];

	while (len) {
		size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
		int ret = read_buf(t, buf, n);
		if (ret < 0)
			return ret;
		len -= n;
	}
	return 0;
}

int nbd_errno_from_wire(uint32_t error)
{
	switch (error) {
	case NBD_EPERM:
		return EPERM;
	case NBD_EIO:
		return EIO;
	case NBD_ENOMEM:
		return ENOMEM;
	case NBD_ENOSPC:
		return ENOSPC;
	case NBD_EOVERFLOW:
		return EOVERFLOW;
	case NBD_ENOTSUP:
		return ENOTSUP;
	case NBD_ESHUTDOWN:
		return ESHUTDOWN;
	case NBD_EINVAL:
	default:
		/* proto.md: unknown values SHOULD be treated as EINVAL. */
		return EINVAL;
	}
}

/* --- handshake ----------------------------------------------------------- */

/* The printable part of a server's message, for ours. */
static void sanitise(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			*s = '?';
}

static int send_option(struct nbd_transport *t, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t hdr[16];
	struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)data, len}};

	put64(hdr, NBD_OPTS_MAGIC);
	put32(hdr + 8, opt);
	put32(hdr + 12, len);
	return t->writev(t->opaque, iov, len ? 2 : 1);
}

/* An option reply (proto.md "Option reply"): its type, and its data in @buf
 * (up to @size bytes; longer data is a protocol error, except for error
 * replies, whose message is cut). */
static int recv_option_reply(struct nbd_transport *t, uint32_t opt, uint32_t *type, char *buf,
			     size_t size, uint32_t *len, struct vd_error *err)
{
	uint8_t hdr[20];
	uint32_t want;
	int ret;

	ret = read_buf(t, hdr, sizeof(hdr));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to read option reply");
	if (get64(hdr) != NBD_REP_MAGIC)
		return vd_error_set(err, -EPROTO, "Unexpected option reply magic");
	if (get32(hdr + 8) != opt)
		return vd_error_set(err, -EPROTO, "Unexpected option type %u, expected %u",
				    get32(hdr + 8), opt);
	*type = get32(hdr + 12);
	*len = get32(hdr + 16);
	if (*len > NBD_MAX_OPTION_LENGTH)
		return vd_error_set(err, -EPROTO, "Option reply of %u bytes is too long", *len);
	want = *len;
	if (want >= size) {
		if (!(*type & NBD_REP_FLAG_ERROR))
			return vd_error_set(err, -EPROTO, "Option reply of %u bytes is too long",
					    *len);
		want = (uint32_t)size - 1;
	}
	ret = read_buf(t, buf, want);
	if (ret == 0)
		ret = skip(t, *len - want);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to read option reply");
	buf[want] = '\0';
	if (*type & NBD_REP_FLAG_ERROR) {
		*len = want;
		sanitise(buf);
	}
	return 0;
}

/* An error reply to option @opt as a message (QEMU's wording where it has one). */
static int option_error(uint32_t type, uint32_t opt, const char *msg, struct vd_error *err)
{
	const char *what;
	int code = -EINVAL;

	switch (type) {
	case NBD_REP_ERR_UNSUP:
		what = "Unsupported option";
		code = -ENOTSUP;
		break;
	case NBD_REP_ERR_POLICY:
		what = "Denied by server for option";
		code = -EPERM;
		break;
	case NBD_REP_ERR_INVALID:
		what = "Invalid parameters for option";
		break;
	case NBD_REP_ERR_TLS_REQD:
		/* Not -ENOTSUP: that would fall back to NBD_OPT_EXPORT_NAME. */
		what = "TLS negotiation required (did you forget a valid tls-creds?) before option";
		code = -EACCES;
		break;
	case NBD_REP_ERR_UNKNOWN:
		what = "Requested export not available for option";
		code = -ENOENT;
		break;
	case NBD_REP_ERR_SHUTDOWN:
		what = "Server shutting down before option";
		code = -ESHUTDOWN;
		break;
	case NBD_REP_ERR_BLOCK_SIZE_REQD:
		what = "Server requires INFO_BLOCK_SIZE for option";
		break;
	default:
		what = "Unknown error reply to option";
		break;
	}
	return vd_error_set(err, code, "%s %u%s%s", what, opt, *msg ? ": " : "", msg);
}

static int negotiate_structured(struct nbd_transport *t, struct nbd_export_info *info,
				struct vd_error *err)
{
	char buf[NBD_MAX_STRING + 64];
	uint32_t type, len;
	int ret;

	ret = send_option(t, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to send option");
	ret = recv_option_reply(t, NBD_OPT_STRUCTURED_REPLY, &type, buf, sizeof(buf), &len, err);
	if (ret < 0)
		return ret;
	if (type == NBD_REP_ACK && len == 0)
		info->structured = true;
	else if (!(type & NBD_REP_FLAG_ERROR))
		return vd_error_set(err, -EPROTO, "Unexpected reply %u to structured reply", type);
	return 0;
}

/* proto.md "Metadata querying": ask for base:allocation on @name. */
static int negotiate_meta(struct nbd_transport *t, const char *name, struct nbd_export_info *info,
			  struct vd_error *err)
{
	static const char ctx[] = NBD_META_BASE_ALLOCATION;
	size_t nlen = strlen(name), clen = sizeof(ctx) - 1;
	char buf[NBD_MAX_STRING + 64];
	uint8_t *data;
	uint32_t type, len;
	int ret;

	data = malloc(12 + nlen + clen);
	if (!data)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	put32(data, (uint32_t)nlen);
	memcpy(data + 4, name, nlen);
	put32(data + 4 + nlen, 1);
	put32(data + 8 + nlen, (uint32_t)clen);
	memcpy(data + 12 + nlen, ctx, clen);
	ret = send_option(t, NBD_OPT_SET_META_CONTEXT, data, (uint32_t)(12 + nlen + clen));
	free(data);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to send option");
	for (;;) {
		ret = recv_option_reply(t, NBD_OPT_SET_META_CONTEXT, &type, buf, sizeof(buf), &len,
					err);
		if (ret < 0)
			return ret;
		if (type == NBD_REP_ACK) {
			if (len)
				return vd_error_set(err, -EPROTO, "Option ACK with data");
			return 0;
		}
		if (type & NBD_REP_FLAG_ERROR) {
			/* No metadata then: every range reads as data. */
			info->base_allocation = false;
			return 0;
		}
		if (type != NBD_REP_META_CONTEXT || len < 4)
			return vd_error_set(err, -EPROTO, "Unexpected reply %u to meta context",
					    type);
		if (len - 4 != clen || memcmp(buf + 4, ctx, clen) != 0 || info->base_allocation)
			return vd_error_set(err, -EPROTO,
					    "Server replied with a context we did not ask for");
		info->base_allocation = true;
		info->context_id = get32((uint8_t *)buf);
	}
}

static bool is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

/* NBD_INFO_BLOCK_SIZE (proto.md "Block size constraints"). */
static int check_block_size(struct nbd_export_info *info, struct vd_error *err)
{
	if (!is_pow2(info->min_block) || info->min_block > 64 * 1024)
		return vd_error_set(err, -EPROTO, "Server minimum block size %u is not valid",
				    info->min_block);
	if (!is_pow2(info->pref_block) || info->pref_block < info->min_block)
		return vd_error_set(err, -EPROTO, "Server preferred block size %u is not valid",
				    info->pref_block);
	if (info->max_block < info->min_block ||
	    (info->max_block != UINT32_MAX && info->max_block % info->min_block))
		return vd_error_set(err, -EPROTO, "Server maximum block size %u is not valid",
				    info->max_block);
	return 0;
}

static int check_export(struct nbd_export_info *info, struct vd_error *err)
{
	if (info->size > INT64_MAX)
		return vd_error_set(err, -EPROTO, "Export size %llu is too large",
				    (unsigned long long)info->size);
	if (!(info->flags & NBD_FLAG_HAS_FLAGS))
		info->flags = 0;
	return 0;
}

/* NBD_OPT_GO; -ENOTSUP (with nothing in @err) when the server lacks it. */
static int negotiate_go(struct nbd_transport *t, const char *name, struct nbd_export_info *info,
			struct vd_error *err)
{
	char buf[NBD_MAX_STRING + 64];
	size_t nlen = strlen(name);
	bool got_export = false;
	uint32_t type, len;
	uint8_t *data;
	int ret;

	data = malloc(8 + nlen);
	if (!data)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	put32(data, (uint32_t)nlen);
	memcpy(data + 4, name, nlen);
	put16(data + 4 + nlen, 1);
	put16(data + 6 + nlen, NBD_INFO_BLOCK_SIZE);
	ret = send_option(t, NBD_OPT_GO, data, (uint32_t)(8 + nlen));
	free(data);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to send option");
	for (;;) {
		uint8_t *p = (uint8_t *)buf;

		ret = recv_option_reply(t, NBD_OPT_GO, &type, buf, sizeof(buf), &len, err);
		if (ret < 0)
			return ret;
		if (type == NBD_REP_ERR_UNSUP)
			return -ENOTSUP;
		if (type & NBD_REP_FLAG_ERROR)
			return option_error(type, NBD_OPT_GO, buf, err);
		if (type == NBD_REP_ACK) {
			if (len || !got_export)
				return vd_error_set(err, -EPROTO,
						    "Server did not describe the export");
			return check_export(info, err);
		}
		if (type != NBD_REP_INFO || len < 2)
			return vd_error_set(err, -EPROTO, "Unexpected reply %u to NBD_OPT_GO",
					    type);
		switch (get16(p)) {
		case NBD_INFO_EXPORT:
			if (len != 12)
				return vd_error_set(err, -EPROTO, "Bad NBD_INFO_EXPORT length");
			info->size = get64(p + 2);
			info->flags = get16(p + 10);
			got_export = true;
			break;
		case NBD_INFO_BLOCK_SIZE:
			if (len != 14)
				return vd_error_set(err, -EPROTO, "Bad NBD_INFO_BLOCK_SIZE length");
			info->min_block = get32(p + 2);
			info->pref_block = get32(p + 6);
			info->max_block = get32(p + 10);
			ret = check_block_size(info, err);
			if (ret < 0)
				return ret;
			break;
		default:
			break; /* names and descriptions: not needed */
		}
	}
}

static int negotiate_export_name(struct nbd_transport *t, const char *name, bool no_zeroes,
				 struct nbd_export_info *info, struct vd_error *err)
{
	uint8_t buf[10];
	int ret;

	ret = send_option(t, NBD_OPT_EXPORT_NAME, name, (uint32_t)strlen(name));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to send option");
	/* A server without the export just closes the connection. */
	ret = read_buf(t, buf, sizeof(buf));
	if (ret == -EPIPE)
		return vd_error_set(err, -ENOENT, "Requested export '%s' not available", name);
	if (ret == 0 && !no_zeroes)
		ret = skip(t, 124);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to read export information");
	info->size = get64(buf);
	info->flags = get16(buf + 8);
	return check_export(info, err);
}

/* proto.md "TLS support": NBD_OPT_STARTTLS, an empty ACK, then the TLS
 * handshake; whatever else the server says ends the negotiation (QEMU's
 * nbd_receive_starttls and its messages).  Never a plaintext fallback. */
static int negotiate_starttls(struct nbd_transport *t, struct vd_error *err)
{
	char buf[NBD_MAX_STRING + 1];
	uint32_t type, len;
	int ret;

	ret = send_option(t, NBD_OPT_STARTTLS, NULL, 0);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to send option request");
	ret = recv_option_reply(t, NBD_OPT_STARTTLS, &type, buf, sizeof(buf), &len, err);
	if (ret < 0)
		return ret;
	if (type != NBD_REP_ACK || len != 0) {
		if (type & NBD_REP_FLAG_ERROR)
			option_error(type, NBD_OPT_STARTTLS, buf, err);
		else if (type != NBD_REP_ACK)
			vd_error_set(err, -EINVAL, "Server rejected request to start TLS %" PRIx32,
				     type);
		else
			vd_error_set(err, -EPROTO, "Start TLS response was not zero %" PRIu32, len);
		/* proto.md: a client that gives up says so. */
		if (send_option(t, NBD_OPT_ABORT, NULL, 0) < 0) {
			/* the server sees the connection close instead */
		}
		return err->code;
	}
	return t->starttls(t->opaque, err);
}

int nbd_wire_negotiate(struct nbd_transport *t, const char *export_name,
		       struct nbd_export_info *info, struct vd_error *err)
{
	uint8_t buf[16];
	uint16_t hflags;
	uint32_t cflags = 0;
	int ret;

	memset(info, 0, sizeof(*info));
	if (strlen(export_name) > NBD_MAX_STRING)
		return vd_error_set(err, -EINVAL, "Export name too long");
	ret = read_buf(t, buf, 16);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to read initial magic");
	if (get64(buf) != NBD_MAGIC)
		return vd_error_set(err, -EPROTO, "Bad initial magic received");
	if (get64(buf + 8) == UINT64_C(0x00420281861253)) {
		/* Oldstyle: size, 32 bits of flags, 124 zeroes; no export names. */
		ret = read_buf(t, buf, 12);
		if (ret == 0)
			ret = skip(t, 124);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Failed to read export information");
		if (t->starttls)
			return vd_error_set(err, -EINVAL, "Server does not support STARTTLS");
		if (*export_name)
			return vd_error_set(err, -EINVAL,
					    "Server does not support non-empty export names");
		info->size = get64(buf);
		if (get32(buf + 8) > UINT16_MAX)
			return vd_error_set(err, -EPROTO, "Unexpected export flags");
		info->flags = (uint16_t)get32(buf + 8);
		return check_export(info, err);
	}
	if (get64(buf + 8) != NBD_OPTS_MAGIC)
		return vd_error_set(err, -EPROTO, "Bad server magic received");
	ret = read_buf(t, buf, 2);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to read server flags");
	hflags = get16(buf);
	if (hflags & NBD_FLAG_FIXED_NEWSTYLE)
		cflags |= NBD_FLAG_C_FIXED_NEWSTYLE;
	if (hflags & NBD_FLAG_NO_ZEROES)
		cflags |= NBD_FLAG_C_NO_ZEROES;
	put32(buf, cflags);
	ret = write_buf(t, buf, 4);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to send client flags");
	if (t->starttls) {
		if (!(hflags & NBD_FLAG_FIXED_NEWSTYLE))
			return vd_error_set(err, -EINVAL, "Server does not support STARTTLS");
		ret = negotiate_starttls(t, err);
		if (ret < 0)
			return ret;
	}
	if (hflags & NBD_FLAG_FIXED_NEWSTYLE) {
		ret = negotiate_structured(t, info, err);
		if (ret == 0 && info->structured)
			ret = negotiate_meta(t, export_name, info, err);
		if (ret == 0)
			ret = negotiate_go(t, export_name, info, err);
		if (ret != -ENOTSUP)
			return ret;
		/* A server older than NBD_OPT_GO (proto.md: then use EXPORT_NAME). */
		vd_error_clear(err);
	}
	return negotiate_export_name(t, export_name, cflags & NBD_FLAG_C_NO_ZEROES, info, err);
}

/* --- transmission -------------------------------------------------------- */

void nbd_wire_init(struct nbd_wire *w)
{
	memset(w, 0, sizeof(*w));
	vd_qiov_init(&w->scratch, 0);
}

void nbd_wire_cleanup(struct nbd_wire *w)
{
	vd_qiov_destroy(&w->scratch);
}

int nbd_wire_send(struct nbd_wire *w, const struct nbd_slot *slot, uint16_t flags,
		  const struct vd_qiov *payload)
{
	uint8_t hdr[28];
	struct iovec local[17], *iov = local;
	int niov = 1, ret;

	put32(hdr, NBD_REQUEST_MAGIC);
	put16(hdr + 4, flags);
	put16(hdr + 6, slot->type);
	put64(hdr + 8, slot->cookie);
	put64(hdr + 16, slot->offset);
	put32(hdr + 24, slot->length);
	if (payload && payload->niov >= (int)(sizeof(local) / sizeof(local[0]))) {
		iov = malloc(sizeof(*iov) * ((size_t)payload->niov + 1));
		if (!iov)
			return -ENOMEM;
	}
	iov[0] = (struct iovec){hdr, sizeof(hdr)};
	if (payload) {
		memcpy(iov + 1, payload->iov, sizeof(*iov) * (size_t)payload->niov);
		niov += payload->niov;
	}
	ret = w->t.writev(w->t.opaque, iov, niov);
	if (iov != local)
		free(iov);
	return ret;
}

static int proto_error(struct nbd_wire *w, const char *fmt, ...) VD_PRINTF(2, 3);
static int proto_error(struct nbd_wire *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->error, sizeof(w->error), fmt, ap);
	va_end(ap);
	return -EPROTO;
}

static struct nbd_slot *find_slot(struct nbd_wire *w, uint64_t cookie)
{
	uint64_t i = cookie % NBD_MAX_IN_FLIGHT;

	if (w->slots[i].state != NBD_SLOT_AWAITING || w->slots[i].cookie != cookie)
		return NULL;
	return &w->slots[i];
}

static void set_error(struct nbd_slot *s, int err)
{
	if (!s->ret)
		s->ret = err;
}

static void finish(struct nbd_slot *s, struct nbd_slot **done)
{
	/* A successful read covered every byte; a block status said something. */
	if (!s->ret && s->type == NBD_CMD_READ && s->received != s->length)
		s->ret = -EIO;
	if (!s->ret && s->type == NBD_CMD_BLOCK_STATUS && !s->got_status)
		s->ret = -EIO;
	s->state = NBD_SLOT_DONE;
	*done = s;
}

/* Is [off, off + len) inside the request of @s? */
static bool in_request(const struct nbd_slot *s, uint64_t off, uint64_t len)
{
	return off >= s->offset && len <= s->length && off - s->offset <= s->length - len;
}

static int recv_read_data(struct nbd_wire *w, struct nbd_slot *s, uint64_t off, uint32_t len)
{
	size_t at = (size_t)(off - s->offset);
	int ret;

	vd_qiov_reset(&w->scratch);
	ret = vd_qiov_concat_slice(&w->scratch, s->qiov, at, len);
	if (ret < 0)
		return ret;
	ret = w->t.readv(w->t.opaque, w->scratch.iov, w->scratch.niov);
	vd_qiov_reset(&w->scratch);
	return ret;
}

/* proto.md "Simple reply message". */
static int recv_simple(struct nbd_wire *w, struct nbd_slot **done)
{
	uint8_t hdr[12];
	struct nbd_slot *s;
	uint32_t error;
	int ret;

	ret = read_buf(&w->t, hdr, sizeof(hdr));
	if (ret < 0)
		return ret;
	error = get32(hdr);
	s = find_slot(w, get64(hdr + 4));
	if (!s)
		return proto_error(w, "Simple reply for unknown cookie %#llx",
				   (unsigned long long)get64(hdr + 4));
	if (error) {
		set_error(s, -nbd_errno_from_wire(error));
	} else if (s->type == NBD_CMD_READ) {
		/* The data follows, all of it (allowed without structured replies). */
		if (w->info.structured)
			return proto_error(w, "Simple reply with data to a read");
		ret = recv_read_data(w, s, s->offset, s->length);
		if (ret < 0)
			return ret;
		s->received = s->length;
	} else if (s->type == NBD_CMD_BLOCK_STATUS) {
		return proto_error(w, "Simple reply to a block status request");
	}
	finish(s, done);
	return 0;
}

/* proto.md "Structured reply chunk message". */
static int recv_chunk(struct nbd_wire *w, struct nbd_slot **done)
{
	uint8_t hdr[16], buf[20];
	struct nbd_slot *s;
	uint16_t flags, type;
	uint32_t len;
	uint64_t off;
	int ret;

	ret = read_buf(&w->t, hdr, sizeof(hdr));
	if (ret < 0)
		return ret;
	flags = get16(hdr);
	type = get16(hdr + 2);
	len = get32(hdr + 12);
	s = find_slot(w, get64(hdr + 4));
	if (!w->info.structured)
		return proto_error(w, "Structured reply without negotiating it");
	if (!s)
		return proto_error(w, "Chunk for unknown cookie %#llx",
				   (unsigned long long)get64(hdr + 4));
	if (type != NBD_REPLY_TYPE_OFFSET_DATA && len > NBD_MAX_CHUNK)
		return proto_error(w, "Chunk of type %u is %u bytes long", type, len);

	switch (type) {
	case NBD_REPLY_TYPE_NONE:
		if (len || !(flags & NBD_REPLY_FLAG_DONE))
			return proto_error(w, "Bad NBD_REPLY_TYPE_NONE chunk");
		break;
	case NBD_REPLY_TYPE_OFFSET_DATA:
		if (s->type != NBD_CMD_READ || len <= 8)
			return proto_error(w, "Unexpected data chunk");
		ret = read_buf(&w->t, buf, 8);
		if (ret < 0)
			return ret;
		off = get64(buf);
		if (!in_request(s, off, len - 8))
			return proto_error(w, "Data chunk outside the request");
		ret = recv_read_data(w, s, off, len - 8);
		if (ret < 0)
			return ret;
		s->received += len - 8;
		break;
	case NBD_REPLY_TYPE_OFFSET_HOLE: {
		uint32_t hole;
		if (s->type != NBD_CMD_READ || len != 12)
			return proto_error(w, "Unexpected hole chunk");
		ret = read_buf(&w->t, buf, 12);
		if (ret < 0)
			return ret;
		off = get64(buf);
		hole = get32(buf + 8);
		if (!hole || !in_request(s, off, hole))
			return proto_error(w, "Hole chunk outside the request");
		vd_qiov_memset(s->qiov, (size_t)(off - s->offset), 0, hole);
		s->received += hole;
		break;
	}
	case NBD_REPLY_TYPE_BLOCK_STATUS: {
		uint32_t elen;
		if (s->type != NBD_CMD_BLOCK_STATUS || len < 12 || (len - 4) % 8 ||
		    !w->info.base_allocation || s->got_status)
			return proto_error(w, "Unexpected block status chunk");
		ret = read_buf(&w->t, buf, 12);
		if (ret < 0)
			return ret;
		if (get32(buf) != w->info.context_id)
			return proto_error(w, "Block status for an unknown context");
		elen = get32(buf + 4);
		if (!elen)
			return proto_error(w, "Empty block status extent");
		/* NBD_CMD_FLAG_REQ_ONE: the first extent is all we use; one
		 * longer than asked is cut (QEMU does the same). */
		s->status_length = elen < s->length ? elen : s->length;
		s->status_flags = get32(buf + 8);
		s->got_status = true;
		ret = skip(&w->t, len - 12);
		if (ret < 0)
			return ret;
		break;
	}
	default: {
		uint32_t error;
		uint16_t mlen;
		if (!(type & (1u << 15)))
			return proto_error(w, "Unknown chunk type %u", type);
		/* Error chunks, known or not (proto.md: unknown error types
		 * are errors all the same). */
		if (len < 6)
			return proto_error(w, "Error chunk too short");
		ret = read_buf(&w->t, buf, 6);
		if (ret < 0)
			return ret;
		error = get32(buf);
		mlen = get16(buf + 4);
		if (!error || mlen > len - 6)
			return proto_error(w, "Bad error chunk");
		if (type == NBD_REPLY_TYPE_ERROR_OFFSET) {
			if (len - 6 - mlen != 8)
				return proto_error(w, "Bad error chunk");
			ret = skip(&w->t, mlen);
			if (ret == 0)
				ret = read_buf(&w->t, buf, 8);
			if (ret < 0)
				return ret;
			if (s->type != NBD_CMD_READ || !in_request(s, get64(buf), 1))
				return proto_error(w, "Error offset outside the request");
		} else {
			ret = skip(&w->t, len - 6);
			if (ret < 0)
				return ret;
		}
		set_error(s, -nbd_errno_from_wire(error));
		break;
	}
	}
	if (flags & NBD_REPLY_FLAG_DONE)
		finish(s, done);
	return 0;
}

int nbd_wire_recv(struct nbd_wire *w, struct nbd_slot **done)
{
	uint8_t magic[4];
	int ret;

	*done = NULL;
	ret = read_buf(&w->t, magic, sizeof(magic));
	if (ret < 0)
		return ret;
	switch (get32(magic)) {
	case NBD_SIMPLE_REPLY_MAGIC:
		return recv_simple(w, done);
	case NBD_STRUCTURED_REPLY_MAGIC:
		return recv_chunk(w, done);
	default:
		return proto_error(w, "Bad reply magic %#x", get32(magic));
	}
}
