/* SPDX-License-Identifier: MIT */
/*
 * Format probing: what the first bytes of a file say it is.
 *
 * vdisk must agree with QEMU 7.2 about every file QEMU would recognise, also
 * for the formats vdisk cannot open: a VHDX taken for raw would be shown
 * with the host file's size and overwritten by the first write.  (vmdk's
 * probe, a magic or a text descriptor, is its driver's.)  So the
 * formats QEMU probes for that have no driver here are known by their magic
 * alone (the table below), with QEMU's scores (block/<format>.c *_probe):
 * 100 for a magic, 2 for the weak guesses (cloop's shell header, dmg's file
 * name), 1 for raw, which matches anything.  The highest score wins; on a
 * tie the first one met (registered drivers first, then the table).
 *
 * As QEMU's find_image_format, an empty file is raw without probing, and
 * the probes always see VD_PROBE_BYTES bytes: a shorter file reads as
 * zeroes past its end, so a truncated header with a magic is still that
 * format (which then fails to open) and never raw.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "block/drivers.h"
#include "block/internal.h"

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* bochs.c: a growing redolog, header version 1 or 2.  The three names are
 * compared as C strings, so each must end with its NUL inside its field. */
static int bochs_probe(const uint8_t *buf, size_t len, const char *filename)
{
	static const char magic[] = "Bochs Virtual HD Image";
	uint32_t version;

	if (len < 512)
		return 0;
	version = le32(buf + 64);
	if (memcmp(buf, magic, sizeof(magic)) == 0 && memcmp(buf + 32, "Redolog", 8) == 0 &&
	    memcmp(buf + 48, "Growing", 8) == 0 && (version == 0x20000 || version == 0x10000))
		return 100;
	return 0;
}

/* cloop.c: the V2.0 shell header, compared over as many bytes as there are. */
static int cloop_probe(const uint8_t *buf, size_t len, const char *filename)
{
	static const char magic[] = "#!/bin/sh\n#V2.0 Format\n"
				    "modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
	size_t n = sizeof(magic) - 1;

	if (n > len)
		n = len;
	return memcmp(buf, magic, n) == 0 ? 2 : 0;
}

/* dmg.c: no magic at the start of the file; QEMU goes by the name. */
static int dmg_probe(const uint8_t *buf, size_t len, const char *filename)
{
	size_t n = filename ? strlen(filename) : 0;

	return n > 4 && strcmp(filename + n - 4, ".dmg") == 0 ? 2 : 0;
}

/* parallels.c: either signature, header version 2, a 64-byte header. */
static int parallels_probe(const uint8_t *buf, size_t len, const char *filename)
{
	if (len < 64)
		return 0;
	if ((memcmp(buf, "WithoutFreeSpace", 16) == 0 ||
	     memcmp(buf, "WithouFreSpacExt", 16) == 0) &&
	    le32(buf + 16) == 2)
		return 100;
	return 0;
}

/* qcow.c: QFI\xfb, version 1, a 48-byte header. */
static int qcow_probe(const uint8_t *buf, size_t len, const char *filename)
{
	return len >= 48 && be32(buf) == 0x514649fb && be32(buf + 4) == 1 ? 100 : 0;
}

/* qed.c: "QED\0" little-endian, a 64-byte header. */
static int qed_probe(const uint8_t *buf, size_t len, const char *filename)
{
	return len >= 64 && le32(buf) == 0x00444551 ? 100 : 0;
}

/* Formats QEMU 7.2 probes for that vdisk has no driver for. */
static const struct vd_probe_format {
	const char *name;
	int (*probe)(const uint8_t *buf, size_t len, const char *filename);
} foreign_formats[] = {
	{"bochs", bochs_probe},		{"cloop", cloop_probe}, {"dmg", dmg_probe},
	{"parallels", parallels_probe}, {"qcow", qcow_probe},	{"qed", qed_probe},
};

#define N_FOREIGN (sizeof(foreign_formats) / sizeof(foreign_formats[0]))

const char *vd_probe_buffer(const uint8_t *buf, size_t len, const char *filename,
			    const struct vd_block_driver **drv)
{
	const char *best = NULL;
	int best_score = 0;

	*drv = NULL;
	for (size_t i = 0; i < vd_driver_count(); i++) {
		const struct vd_block_driver *d = vd_driver_at(i);
		int score;

		if (!d->probe || !d->is_format)
			continue;
		score = d->probe(buf, len, filename);
		if (score > best_score) {
			best_score = score;
			best = d->name;
			*drv = d;
		}
	}
	for (size_t i = 0; i < N_FOREIGN; i++) {
		int score = foreign_formats[i].probe(buf, len, filename);

		if (score > best_score) {
			best_score = score;
			best = foreign_formats[i].name;
			*drv = NULL;
		}
	}
	return best;
}

bool vd_format_is_foreign(const char *name)
{
	for (size_t i = 0; i < N_FOREIGN; i++)
		if (strcmp(name, foreign_formats[i].name) == 0)
			return true;
	return false;
}

static int probe_bytes(const uint8_t *buf, ssize_t len, const char *filename, bool allow_references,
		       const char **format, struct vd_error *err);

int vd_probe_node(struct vd_node *n, const char *filename, bool allow_references,
		  const char **format, struct vd_error *err)
{
	uint8_t buf[VD_PROBE_BYTES] = {0};
	int64_t len =
		vd_node_size(n) < (int64_t)sizeof(buf) ? vd_node_size(n) : (int64_t)sizeof(buf);
	int ret = len > 0 ? vd_node_pread(n, 0, buf, len) : 0;

	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read '%s'", filename);
	return probe_bytes(buf, (ssize_t)len, filename, allow_references, format, err);
}

int vd_probe_file(const char *filename, bool allow_references, const char **format,
		  struct vd_error *err)
{
	uint8_t buf[VD_PROBE_BYTES] = {0};
	ssize_t len;
	int fd, saved;

	if (strcmp(vd_protocol_for_filename(filename), "file") != 0) {
		/* A protocol (nbd://): read the first bytes through a node of it. */
		struct vd_node *n;
		int ret = vd_node_open(filename, vd_protocol_for_filename(filename), NULL, 0, &n,
				       err);
		if (ret < 0)
			return ret;
		ret = vd_probe_node(n, filename, allow_references, format, err);
		vd_node_unref(n);
		return ret;
	}
	fd = open(filename, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vd_error_setg_errno(err, -errno, "Could not open '%s'", filename);
	len = pread(fd, buf, sizeof(buf), 0);
	saved = errno;
	close(fd);
	if (len < 0)
		return vd_error_setg_errno(err, -saved, "Could not read '%s'", filename);
	return probe_bytes(buf, len, filename, allow_references, format, err);
}

static int probe_bytes(const uint8_t *buf, ssize_t len, const char *filename, bool allow_references,
		       const char **format, struct vd_error *err)
{
	const struct vd_block_driver *drv;
	const char *name;

	if (len == 0) {
		*format = "raw";
		return 0;
	}

	name = vd_probe_buffer(buf, VD_PROBE_BYTES, filename, &drv);
	if (!name)
		return vd_error_set(err, -EINVAL, "Could not determine the format of '%s'",
				    filename);
	if (!drv)
		return vd_error_set(err, -ENOTSUP, "Image format '%s' is not supported", name);
	/* With @allow_references the caller opens without following the
	 * names an image holds (no backing), so such a format may be the
	 * answer; otherwise never. */
	if (drv->references_files && !allow_references)
		return vd_error_set(err, -EINVAL,
				    "'%s' looks like a %s image, which can name other files; "
				    "probing never picks such a format: give it with -f %s",
				    filename, drv->name, drv->name);
	*format = drv->name;
	return 0;
}

int vd_probe_format(const char *filename, const char **format, struct vd_error *err)
{
	return vd_probe_file(filename, false, format, err);
}
