/* SPDX-License-Identifier: MIT */
/*
 * -drive: QEMU's shorthand for a block node plus the device options that say
 * which controller gets it (blockdev.c drive_new, QEMU 7.2).  The device
 * options are taken off here; the rest is the block layer's option tree.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/ide.h>
#include <vdisk/opts.h>

#include "machine/machine-internal.h"

static void drive_free(struct vd_drive *d)
{
	if (!d)
		return;
	if (d->blk)
		vd_blk_unref(d->blk);
	if (d->node)
		vd_node_unref(d->node);
	free(d->id);
	free(d->serial);
	free(d->model);
	free(d->rerror);
	free(d->werror);
	free(d);
}

void machine_drives_free(struct vd_machine *m)
{
	for (int i = 0; i < m->nr_drives; i++)
		drive_free(m->drives[i]);
	free(m->drives);
	m->drives = NULL;
	m->nr_drives = 0;
}

int vd_machine_drive_count(struct vd_machine *m)
{
	return m->nr_drives;
}

struct vd_drive *vd_machine_drive(struct vd_machine *m, int i)
{
	return i >= 0 && i < m->nr_drives ? m->drives[i] : NULL;
}

/* Take a string option off @o (NULL if absent); the caller frees it. */
static int take_str(struct vd_opts *o, const char *key, char **out, struct vd_error *err)
{
	const char *v;

	*out = NULL;
	if (!vd_opts_has(o, key))
		return 0;
	v = vd_opts_get(o, key);
	if (!v)
		return vd_error_set(err, -EINVAL, "Parameter '%s' expects a string", key);
	*out = strdup(v);
	vd_opts_remove(o, key);
	return *out ? 0 : vd_error_set(err, -ENOMEM, "Out of memory");
}

/* Parse the device part; leaves the block-layer part in @o. */
static int drive_parse_device(struct vd_machine *m, struct vd_opts *o, struct vd_drive *d,
			      struct vd_error *err)
{
	static const char *const ifs[] = {"none", "ide", "virtio", NULL};
	static const char *const medias[] = {"disk", "cdrom", NULL};
	int ret, v;
	uint64_t u;

	ret = vd_opts_get_enum(o, "if", ifs, VD_IF_IDE, &v, err);
	if (ret < 0)
		return ret;
	d->iface = v;
	vd_opts_remove(o, "if");
	ret = vd_opts_get_enum(o, "media", medias, VD_MEDIA_DISK, &v, err);
	if (ret < 0)
		return ret;
	d->media = v;
	vd_opts_remove(o, "media");
	d->index = -1;
	if (vd_opts_has(o, "index")) {
		ret = vd_opts_get_u64(o, "index", 0, &u, err);
		if (ret < 0)
			return ret;
		if (u > 255)
			return vd_error_set(err, -EINVAL, "index %llu is too big",
					    (unsigned long long)u);
		d->index = (int)u;
		vd_opts_remove(o, "index");
	}
	if (d->index < 0) {
		/* The first free index of this interface, as QEMU's drive_new. */
		for (int idx = 0; idx < 256 && d->index < 0; idx++) {
			bool used = false;

			for (int i = 0; i < m->nr_drives; i++)
				used |= m->drives[i]->iface == d->iface &&
					m->drives[i]->index == idx;
			if (!used)
				d->index = idx;
		}
	} else {
		for (int i = 0; i < m->nr_drives; i++) {
			if (m->drives[i]->iface == d->iface && m->drives[i]->index == d->index)
				return vd_error_set(err, -EBUSY,
						    "drive with bus=%d, unit=%d "
						    "(index=%d) exists",
						    d->index / 2, d->index % 2, d->index);
		}
	}
	d->bus = d->iface == VD_IF_IDE ? d->index / 2 : 0;
	d->unit = d->iface == VD_IF_IDE ? d->index % 2 : 0;
	if (d->iface == VD_IF_IDE && d->bus > 1)
		return vd_error_set(err, -EINVAL,
				    "IDE index %d: the PIIX3 has two buses of two "
				    "units",
				    d->index);
	ret = take_str(o, "serial", &d->serial, err);
	if (ret == 0)
		ret = take_str(o, "model", &d->model, err);
	if (ret == 0)
		ret = take_str(o, "rerror", &d->rerror, err);
	if (ret == 0)
		ret = take_str(o, "werror", &d->werror, err);
	if (ret == 0 && d->rerror)
		ret = vd_blk_parse_on_error(d->rerror, true, &d->on_read_error, err);
	else if (ret == 0)
		d->on_read_error = VD_BLK_ON_ERROR_REPORT;
	if (ret == 0 && d->werror)
		ret = vd_blk_parse_on_error(d->werror, false, &d->on_write_error, err);
	else if (ret == 0)
		d->on_write_error = VD_BLK_ON_ERROR_ENOSPC;
	if (ret == 0)
		ret = take_str(o, "id", &d->id, err);
	if (ret < 0)
		return ret;
	if (!d->id) {
		char id[32];

		if (d->iface == VD_IF_IDE)
			snprintf(id, sizeof(id), "ide%d-%s%d", d->bus,
				 d->media == VD_MEDIA_CDROM ? "cd" : "hd", d->unit);
		else if (d->iface == VD_IF_VIRTIO)
			snprintf(id, sizeof(id), "virtio%d", d->index);
		else
			snprintf(id, sizeof(id), "none%d", d->index);
		d->id = strdup(id);
		if (!d->id)
			return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	for (int i = 0; i < m->nr_drives; i++) {
		if (strcmp(m->drives[i]->id, d->id) == 0)
			return vd_error_set(err, -EBUSY, "Duplicate ID '%s' for drive", d->id);
	}
	return 0;
}

static int drive_open_node(struct vd_opts *o, struct vd_drive *d, struct vd_error *err)
{
	char *format = NULL, *cache = NULL, *file = NULL, *aio = NULL;
	bool ro = false;
	int flags, ret;

	ret = vd_opts_get_bool(o, "readonly", false, &ro, err);
	if (ret < 0)
		return ret;
	vd_opts_remove(o, "readonly");
	if (d->media == VD_MEDIA_CDROM)
		ro = true; /* QEMU opens a cdrom medium read-only */
	d->read_only = ro;
	ret = take_str(o, "format", &format, err);
	if (ret == 0)
		ret = take_str(o, "cache", &cache, err);
	if (ret < 0)
		goto out;
	if (cache) {
		ret = vd_cache_mode_apply(cache, o, &d->writethrough, err);
		if (ret < 0)
			goto out;
	}
	/* QEMU's -drive aio=threads|native|io_uring: the protocol node's
	 * engine ("native" is Linux AIO there; io_uring serves it here). */
	ret = take_str(o, "aio", &aio, err);
	if (ret < 0)
		goto out;
	if (aio) {
		const char *engine = !strcmp(aio, "native") ? "io_uring" : aio;
		if (strcmp(engine, "threads") && strcmp(engine, "io_uring")) {
			ret = vd_error_set(err, -EINVAL,
					   "Parameter 'aio' does not accept value '%s' (expected "
					   "threads, native or io_uring)",
					   aio);
			goto out;
		}
		char *copy = strdup(engine);
		free(aio);
		aio = copy;
		if (!aio) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
	}
	flags = ro ? 0 : VD_OPEN_RDWR;
	if (vd_opts_get_dict(o, "file")) {
		if (aio && vd_opts_set(o, "file.aio", aio) < 0) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		/* file.driver=...: a full tree. */
		if (format && vd_opts_set(o, "driver", format) < 0) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		ret = vd_node_open_opts(o, flags, &d->node, err);
		goto out;
	}
	ret = take_str(o, "file", &file, err);
	if (ret < 0)
		goto out;
	if (!file) {
		if (d->media == VD_MEDIA_CDROM && vd_opts_count(o) == 0) {
			ret = 0; /* an empty drive */
			goto out;
		}
		ret = vd_error_set(err, -EINVAL, "A -drive needs file=");
		goto out;
	}
	if (aio && vd_opts_set(o, "file.aio", aio) < 0) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	ret = vd_node_open(file, format, o, flags | (format ? 0 : VD_OPEN_PROBE), &d->node, err);
out:
	free(format);
	free(cache);
	free(file);
	free(aio);
	return ret;
}

int vd_machine_add_drive(struct vd_machine *m, const char *optstr, struct vd_drive **out,
			 struct vd_error *err)
{
	struct machine_virtio_opts vo = {.devfn = -1};
	struct vd_opts *o = NULL;
	struct vd_drive *d, **nd;
	char *addr = NULL;
	int ret;

	if (out)
		*out = NULL;
	ret = vd_opts_parse(optstr, NULL, &o, err);
	if (ret < 0)
		return ret;
	d = calloc(1, sizeof(*d));
	if (!d) {
		vd_opts_free(o);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = drive_parse_device(m, o, d, err);
	if (ret == 0)
		ret = take_str(o, "addr", &addr, err);
	if (ret == 0 && addr && d->iface != VD_IF_VIRTIO)
		ret = vd_error_set(err, -EINVAL, "addr is only supported by if=virtio");
	if (ret == 0 && addr && machine_parse_pci_addr(addr, &vo.devfn) < 0)
		ret = vd_error_set(err, -EINVAL, "Invalid PCI address '%s' (SLOT[.FN])", addr);
	if (ret == 0)
		ret = drive_open_node(o, d, err);
	vd_opts_free(o);
	free(addr);
	if (ret < 0)
		goto fail;
	/* The backend devices attach to, named as the drive. */
	ret = vd_blk_new(m->blk_reg, d->id, &d->blk);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not create the backend of drive '%s'", d->id);
		goto fail;
	}
	vd_blk_set_on_error(d->blk, d->on_read_error, d->on_write_error);
	vd_blk_set_read_only(d->blk, d->read_only);
	vd_blk_set_write_cache(d->blk, !d->writethrough);
	if (d->node) {
		ret = vd_blk_insert_node(d->blk, d->node);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not insert the medium of '%s'", d->id);
			goto fail;
		}
	}
	/* Room in the list first: once a device holds the drive, it is kept. */
	nd = realloc(m->drives, (m->nr_drives + 1) * sizeof(*nd));
	if (!nd) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	m->drives = nd;
	if (d->iface == VD_IF_IDE) {
		struct vd_ide_drive_conf conf = {
			.blk = d->blk,
			.cdrom = d->media == VD_MEDIA_CDROM,
			.serial = d->serial,
			.model = d->model,
		};

		ret = vd_ide_attach(m->ide, d->bus, d->unit, &conf);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not attach drive '%s' to IDE %d:%d",
					    d->id, d->bus, d->unit);
			goto fail;
		}
		d->device = m->ide;
	} else if (d->iface == VD_IF_VIRTIO) {
		/* QEMU's if=virtio: a virtio-blk-pci on this drive. */
		if (d->media == VD_MEDIA_CDROM) {
			ret = vd_error_set(err, -EINVAL, "if=virtio does not take media=cdrom");
			goto fail;
		}
		ret = machine_add_virtio_blk(m, d, &vo, err);
		if (ret < 0)
			goto fail;
	}
	m->drives[m->nr_drives++] = d;
	if (out)
		*out = d;
	return 0;
fail:
	drive_free(d);
	return ret;
}
