/* SPDX-License-Identifier: MIT */
/*
 * RBD image names (see rbd-name.h).  Every input is untrusted: it may come
 * from a command line, a QMP client or (refused later) an image header.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/rbd-name.h"

void rbd_spec_free(struct rbd_spec *sp)
{
	free(sp->pool);
	free(sp->namespace);
	free(sp->image);
	free(sp->snapshot);
	free(sp->conf);
	free(sp->user);
	for (int i = 0; i < sp->nkeys; i++) {
		free(sp->keys[i]);
		free(sp->values[i]);
	}
	memset(sp, 0, sizeof(*sp));
}

/*
 * QEMU's qemu_rbd_next_tok(): cut @src at the first @delim not escaped by a
 * backslash; *next is what follows it (NULL when there is no @delim).
 */
static char *next_tok(char *src, char delim, char **next)
{
	char *end;

	*next = NULL;
	for (end = src; *end; end++) {
		if (*end == delim)
			break;
		if (*end == '\\' && end[1] != '\0')
			end++;
	}
	if (*end == delim) {
		*next = end + 1;
		*end = '\0';
	}
	return src;
}

/* QEMU's qemu_rbd_unescape(): drop each escaping backslash. */
static void unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (*s == '\\' && s[1] != '\0')
			s++;
		*w++ = *s;
	}
	*w = '\0';
}

int rbd_set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = strdup(v);
	return *dst ? 0 : -ENOMEM;
}

/* QEMU's qemu_rbd_parse_filename(). */
int rbd_parse_filename(const char *filename, struct rbd_spec *sp, struct vd_error *err)
{
	char *buf, *p, *tok, *image;
	int ret = 0;

	if (strncmp(filename, "rbd:", 4) != 0)
		return vd_error_set(err, -EINVAL, "File name must start with 'rbd:'");
	buf = strdup(filename + 4);
	if (!buf)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	p = buf;
	tok = next_tok(p, '/', &p);
	if (!p) {
		ret = vd_error_set(err, -EINVAL, "Pool name is required");
		goto out;
	}
	unescape(tok);
	if ((ret = rbd_set_str(&sp->pool, tok)) < 0)
		goto oom;
	if (strchr(p, '@')) {
		image = next_tok(p, '@', &p);
		/* The '@' strchr() found may be an escaped one: then there is
		 * no snapshot (QEMU would dereference NULL here). */
		if (p) {
			tok = next_tok(p, ':', &p);
			unescape(tok);
			if ((ret = rbd_set_str(&sp->snapshot, tok)) < 0)
				goto oom;
		} else {
			/* No snapshot; the options still end the image name. */
			image = next_tok(image, ':', &p);
		}
	} else {
		image = next_tok(p, ':', &p);
	}
	if (strchr(image, '/')) {
		char *rest;
		/* Again the '/' may be an escaped one: no namespace then. */
		tok = next_tok(image, '/', &rest);
		if (rest) {
			unescape(tok);
			if ((ret = rbd_set_str(&sp->namespace, tok)) < 0)
				goto oom;
			image = rest;
		}
	}
	unescape(image);
	if (!*image) {
		ret = vd_error_set(err, -EINVAL, "Image name is required");
		goto out;
	}
	if ((ret = rbd_set_str(&sp->image, image)) < 0)
		goto oom;
	while (p) {
		char *name = next_tok(p, '=', &p), *value;

		if (!p) {
			ret = vd_error_set(err, -EINVAL, "conf option %s has no value", name);
			goto out;
		}
		value = next_tok(p, ':', &p);
		unescape(name);
		unescape(value);
		if (strcmp(name, "conf") == 0) {
			ret = rbd_set_str(&sp->conf, value);
		} else if (strcmp(name, "id") == 0) {
			ret = rbd_set_str(&sp->user, value);
		} else {
			if (sp->nkeys == RBD_MAX_CONF) {
				ret = vd_error_set(err, -EINVAL, "Too many options in '%s'",
						   filename);
				goto out;
			}
			sp->keys[sp->nkeys] = strdup(name);
			sp->values[sp->nkeys] = strdup(value);
			sp->nkeys++;
			if (!sp->keys[sp->nkeys - 1] || !sp->values[sp->nkeys - 1])
				ret = -ENOMEM;
		}
		if (ret < 0)
			goto oom;
	}
	goto out;
oom:
	ret = vd_error_set(err, -ENOMEM, "Out of memory");
out:
	free(buf);
	return ret;
}

/* QEMU's qemu_rbd_refresh_filename, in the file-name spelling. */
char *rbd_spec_filename(const struct rbd_spec *sp)
{
	char *out = NULL;
	int r;

	r = asprintf(&out, "rbd:%s/%s%s%s%s%s%s%s", sp->pool, sp->namespace ? sp->namespace : "",
		     sp->namespace ? "/" : "", sp->image, sp->snapshot ? "@" : "",
		     sp->snapshot ? sp->snapshot : "", sp->conf ? ":conf=" : "",
		     sp->conf ? sp->conf : "");
	return r < 0 ? NULL : out;
}
