/* SPDX-License-Identifier: MIT */
/*
 * Format probing: what the first bytes of a file say it is.
 *
 * vdisk must agree with QEMU 7.2 about every file QEMU would recognise: a
 * VHDX taken for raw would be shown with the host file's size and
 * overwritten by the first write.  Every format QEMU 7.2 probes for (bochs,
 * cloop, dmg, luks, parallels, qcow, qcow2, qed, vdi, vhdx, vmdk, vpc) has
 * a driver here, whose probe uses QEMU's score (block/<format>.c *_probe):
 * 100 for a magic, 2 for cloop's shell header and dmg's file name, 1 for
 * raw, which matches anything.  The highest score wins; on a tie the
 * driver registered first.
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
	return best;
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
