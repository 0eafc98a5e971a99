/* SPDX-License-Identifier: MIT */
/*
 * Persistent dirty bitmaps, read only (qcow2.txt "Bitmaps extension" and
 * "Bitmap directory"): their names, flags and granularity for info, and
 * the space they would take for measure.  Loading, tracking and storing
 * them is bitmap-ops.c's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers.h"
#include "block/drivers/qcow2/qcow2.h"

#define BITMAP_DIR_MAX (64ull << 20) /* QEMU's QCOW2_MAX_BITMAP_DIRECTORY_SIZE */
#define BITMAP_MAX 65535 /* QEMU's QCOW2_MAX_BITMAPS */
#define BITMAP_NAME_MAX 1023
#define BITMAP_MIN_GRAN_BITS 9
#define BITMAP_MAX_GRAN_BITS 31

void qcow2_free_bitmaps(struct qcow2_bitmap *bm, int n)
{
	for (int i = 0; i < n && bm; i++)
		free(bm[i].name);
	free(bm);
}

int qcow2_read_bitmaps(struct qcow2_state *s, struct qcow2_bitmap **out)
{
	const struct qcow2_ext *e = s->unknown_exts;
	struct qcow2_bitmap *bm = NULL;
	uint8_t *dir = NULL;
	uint64_t dir_size, dir_off, pos = 0;
	int64_t file_len = vd_node_size(s->node->file);
	uint32_t nb;
	struct vd_qiov q;
	int ret = 0, i;

	*out = NULL;
	while (e && e->type != QCOW2_EXT_BITMAPS)
		e = e->next;
	/* As QEMU: without the autoclear bit the bitmaps are not loaded. */
	if (!e || s->version < 3 || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		return 0;
	if (e->len < 24)
		return -EINVAL;
	nb = qcow2_be32(e->data);
	dir_size = qcow2_be64(e->data + 8);
	dir_off = qcow2_be64(e->data + 16);
	if (nb == 0 || nb > BITMAP_MAX || dir_size == 0 || dir_size > BITMAP_DIR_MAX ||
	    qcow2_offset_into_cluster(s, dir_off) || file_len < 0 ||
	    dir_off >= (uint64_t)file_len || dir_size > (uint64_t)file_len - dir_off)
		return -EINVAL;
	dir = malloc(dir_size);
	bm = calloc(nb, sizeof(*bm));
	if (!dir || !bm) {
		ret = -ENOMEM;
		goto fail;
	}
	vd_qiov_init_buf(&q, dir, dir_size);
	ret = vd_co_preadv(s->node->file, (int64_t)dir_off, (int64_t)dir_size, &q, 0);
	if (ret < 0)
		goto fail;
	for (i = 0; i < (int)nb; i++) {
		const uint8_t *d = dir + pos;
		uint16_t name_size;
		uint32_t extra;
		uint64_t esize;

		if (dir_size - pos < 24) {
			ret = -EINVAL;
			goto fail;
		}
		name_size = (uint16_t)(d[18] << 8 | d[19]);
		extra = qcow2_be32(d + 20);
		esize = (24ull + extra + name_size + 7) & ~7ull;
		if (esize > dir_size - pos || name_size == 0 || name_size > BITMAP_NAME_MAX ||
		    d[17] < BITMAP_MIN_GRAN_BITS || d[17] > BITMAP_MAX_GRAN_BITS) {
			ret = -EINVAL;
			goto fail;
		}
		bm[i].flags = qcow2_be32(d + 12);
		bm[i].granularity_bits = d[17];
		bm[i].name = strndup((const char *)d + 24 + extra, name_size);
		if (!bm[i].name) {
			ret = -ENOMEM;
			goto fail;
		}
		pos += esize;
	}
	free(dir);
	*out = bm;
	return (int)nb;
fail:
	free(dir);
	qcow2_free_bitmaps(bm, (int)nb);
	return ret;
}

bool qcow2_supports_bitmaps(struct vd_node *in)
{
	const struct qcow2_state *s;

	if (!in || in->drv != &vd_driver_qcow2)
		return false;
	s = in->opaque;
	return s->version >= 3;
}

/* QEMU's qcow2_get_persistent_dirty_bitmap_size: every bitmap fully
 * allocated, its table, and the directory, each in whole clusters. */
uint64_t qcow2_bitmaps_size(struct vd_node *in, uint64_t cs)
{
	struct qcow2_bitmap *bm;
	uint64_t total = 0, dir = 0;
	uint64_t len = (uint64_t)vd_node_size(in);
	int n = qcow2_read_bitmaps(in->opaque, &bm);

	for (int i = 0; i < n; i++) {
		uint64_t gran = 1ull << bm[i].granularity_bits;
		uint64_t bytes = ((len + gran - 1) / gran + 7) / 8;
		uint64_t clusters = (bytes + cs - 1) / cs;

		total += clusters * cs;
		total += (clusters * 8 + cs - 1) / cs * cs;
		dir += (24 + strlen(bm[i].name) + 7) & ~7ull;
	}
	total += (dir + cs - 1) / cs * cs;
	if (n > 0)
		qcow2_free_bitmaps(bm, n);
	return total;
}
