/* SPDX-License-Identifier: MIT */
/* Helpers of the format drivers: see backing.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/backing.h"
#include "block/internal.h"

static __thread int backing_depth;

static bool looks_like_protocol(const char *name)
{
	const char *colon = strchr(name, ':');
	const char *slash = strchr(name, '/');

	if (strncmp(name, "json:", 5) == 0)
		return true;
	return colon && (!slash || colon < slash);
}

char *vd_format_resolve_backing(const char *overlay, const char *name)
{
	const char *slash;
	char *out;

	if (name[0] == '/' || !overlay || strncmp(overlay, "json:", 5) == 0 ||
	    !(slash = strrchr(overlay, '/')))
		return strdup(name);
	if (asprintf(&out, "%.*s/%s", (int)(slash - overlay), overlay, name) < 0)
		return NULL;
	return out;
}

static int open_child(struct vd_node *n, struct vd_opts *opts, int flags, const char *def,
		      struct vd_error *err)
{
	int ret;

	if (backing_depth >= VD_MAX_BACKING_DEPTH)
		return vd_error_set(err, -EINVAL, "Backing chain too deep (more than %d)",
				    VD_MAX_BACKING_DEPTH);
	backing_depth++;
	ret = vd_node_open_child(n, opts, "backing", def, flags & ~VD_OPEN_RDWR, &n->backing, err);
	backing_depth--;
	return ret;
}

int vd_format_open_backing(struct vd_node *n, struct vd_opts *opts, int flags, const char *name,
			   const char *fmt, struct vd_error *err)
{
	const struct vd_block_driver *drv;
	char *path = NULL, key[64];
	int ret;

	if (vd_opts_has(opts, "backing")) {
		const char *v = vd_opts_peek(opts, "backing");

		if (v && (!*v || strcmp(v, "null") == 0)) {
			vd_opts_get(opts, "backing");
			return 0;
		}
		if (!v) {
			/* A dictionary from the user: trusted as given. */
			vd_opts_set_default(opts, "backing.read-only", "on");
			return open_child(n, opts, flags, fmt ? fmt : "raw", err);
		}
		path = strdup(v);
		vd_opts_remove(opts, "backing");
		if (!path)
			return vd_error_set(err, -ENOMEM, "Out of memory");
	} else {
		if (!name || (flags & VD_OPEN_NO_BACKING))
			return 0;
		if (looks_like_protocol(name))
			return vd_error_set(err, -EINVAL,
					    "Backing file name '%s' names a protocol or a json: "
					    "specification; such names are never opened from an "
					    "image header: give the backing explicitly "
					    "(backing.*=...)",
					    name);
		path = vd_format_resolve_backing(n->file ? n->file->filename : NULL, name);
		if (!path)
			return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	if (!fmt) {
		struct vd_error e1 = {0};

		ret = vd_probe_format(path, &fmt, &e1);
		if (ret < 0) {
			/* qed records no backing format but raw, qcow none: say
			 * how to name it rather than "-f", which is the top's. */
			const struct vd_block_driver *d;
			struct vd_error e2 = {0};
			const char *any;

			if (vd_probe_file(path, true, &any, &e2) != 0 ||
			    !(d = vd_driver_find(any)) || !d->references_files)
				ret = vd_error_set(err, ret, "%s", e1.msg);
			else
				ret = vd_error_set(err, -EINVAL,
						   "Backing file '%s' looks like a %s image, which "
						   "can name other files, and the image does not "
						   "record its format: probing never picks such a "
						   "format; give it with backing.driver=%s",
						   path, any, any);
			free(path);
			return ret;
		}
	}
	drv = vd_driver_find(fmt);
	if (!drv) {
		free(path);
		return vd_error_set(err, -EINVAL, "Unknown backing format '%s'", fmt);
	}
	ret = vd_opts_set(opts, "backing.driver", drv->name);
	if (ret == 0 && drv->child_name) {
		snprintf(key, sizeof(key), "backing.%s.driver", drv->child_name);
		ret = vd_opts_set(opts, key, vd_protocol_for_filename(path));
		snprintf(key, sizeof(key), "backing.%s.filename", drv->child_name);
		if (ret == 0)
			ret = vd_opts_set(opts, key, path);
	} else if (ret == 0) {
		ret = vd_opts_set(opts, "backing.filename", path);
	}
	if (ret == 0)
		ret = vd_opts_set(opts, "backing.read-only", "on");
	free(path);
	if (ret < 0)
		return vd_error_set(err, ret, "Out of memory");
	ret = open_child(n, opts, flags, NULL, err);
	if (ret < 0 && err && err->code == ret) {
		static const char prefix[] = "Could not open backing file: ";
		size_t len = strnlen(err->msg, sizeof(err->msg) - sizeof(prefix));

		memmove(err->msg + sizeof(prefix) - 1, err->msg, len);
		memcpy(err->msg, prefix, sizeof(prefix) - 1);
		err->msg[sizeof(prefix) - 1 + len] = '\0';
	}
	return ret;
}

int vd_format_pread(struct vd_node *n, uint64_t offset, void *buf, size_t len)
{
	struct vd_qiov q;

	if (len == 0)
		return 0;
	if (offset > (uint64_t)VD_MAX_LENGTH || len > (uint64_t)VD_MAX_LENGTH - offset)
		return -EINVAL;
	vd_qiov_init_buf(&q, buf, len);
	return vd_co_preadv(n->file, (int64_t)offset, (int64_t)len, &q, 0);
}

int vd_format_read_backing(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			   size_t qoff)
{
	int64_t have = 0;
	struct vd_qiov local;
	int ret = 0;

	if (n->backing) {
		int64_t bsize = vd_node_size(n->backing);

		if (bsize > offset)
			have = bsize - offset < bytes ? bsize - offset : bytes;
	}
	if (have > 0) {
		vd_qiov_init(&local, qiov->niov);
		ret = vd_qiov_concat_slice(&local, qiov, qoff, (size_t)have);
		if (ret == 0)
			ret = vd_co_preadv(n->backing, offset, have, &local, 0);
		vd_qiov_destroy(&local);
	}
	if (ret == 0 && have < bytes)
		vd_qiov_memset(qiov, qoff + (size_t)have, 0, (size_t)(bytes - have));
	return ret;
}

int vd_format_refuse_rdwr(struct vd_node *n, int flags, struct vd_error *err)
{
	if (!(flags & VD_OPEN_RDWR))
		return 0;
	return vd_error_set(err, -EACCES, "Image is read-only (vdisk opens '%s' images read-only)",
			    n->drv->name);
}
