/* SPDX-License-Identifier: MIT */
/*
 * The drive on top of its block backend (struct vd_blk): attaching it
 * (size, and the CHS geometry a partition table implies), the block
 * requests of its commands (struct ide_aio: bounce buffer, submission,
 * completion, cancellation by a reset or a bus-master stop), and the
 * rerror=/werror= policy with the request kept for a retry under "stop"
 * (QEMU 7.2's ide_handle_rw_error and ide_restart_bh in hw/ide/core.c).
 *
 * Every request of a drive goes through a struct ide_aio that owns its
 * bounce buffer.  A reset or a cancel detaches the aio from the drive
 * (aio->s = NULL); its completion then only frees it.  Guest memory is
 * written only from a live completion, so nothing reaches guest RAM after
 * a reset.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/trace.h>

#include "hw/ide/ide.h"

/* --- asynchronous block I/O ------------------------------------------------- */

static void ide_aio_free(struct ide_aio *aio)
{
	if (!aio)
		return;
	free(aio->buf);
	free(aio);
}

static void ide_aio_cb(void *opaque, int ret)
{
	struct ide_aio *aio = opaque;
	struct ide_state *s = aio->s;

	if (!s) {
		/* Cancelled by a reset: drop the result. */
		vd_trace(ide_aio_dropped, "op=%d offset=%lld", aio->op, (long long)aio->offset);
		ide_aio_free(aio);
		return;
	}
	vd_trace(ide_aio_done, "bus=%d unit=%d op=%d ret=%d", s->bus->index, s->unit, aio->op, ret);
	s->aio = NULL;
	aio->done(s, aio, ret);
	if (s->retry != aio)
		ide_aio_free(aio);
}

/*
 * Send @aio to the drive's backend.  The handle's rules answer for the
 * drive: no medium (-ENOMEDIUM), a read-only backend (-EROFS), a range past
 * the medium (-EIO); ide_aio_cb runs once, never before this returns.
 */
void ide_aio_issue(struct ide_state *s, struct ide_aio *aio)
{
	s->aio = aio;
	aio->s = s;
	vd_trace(ide_aio_submit, "bus=%d unit=%d op=%d offset=%lld bytes=%lld", s->bus->index,
		 s->unit, aio->op, (long long)aio->offset, (long long)aio->bytes);
	vd_qiov_init_buf(&aio->qiov, aio->buf, (size_t)aio->bytes);
	switch (aio->op) {
	case IDE_AIO_READ:
		vd_blk_aio_preadv(s->blk, aio->offset, &aio->qiov, 0, ide_aio_cb, aio);
		break;
	case IDE_AIO_WRITE:
		vd_blk_aio_pwritev(s->blk, aio->offset, &aio->qiov, 0, ide_aio_cb, aio);
		break;
	case IDE_AIO_FLUSH:
		vd_blk_aio_flush(s->blk, ide_aio_cb, aio);
		break;
	case IDE_AIO_DISCARD:
		vd_blk_aio_pdiscard(s->blk, aio->offset, aio->bytes, ide_aio_cb, aio);
		break;
	}
}

/* A request with a bounce buffer of @bytes (READ, WRITE) that the caller
 * fills before ide_aio_issue(); NULL on ENOMEM. */
struct ide_aio *ide_aio_new(enum ide_aio_op op, int64_t offset, int64_t bytes,
			    void (*done)(struct ide_state *, struct ide_aio *, int))
{
	struct ide_aio *aio = calloc(1, sizeof(*aio));

	if (!aio)
		return NULL;
	aio->op = op;
	aio->offset = offset;
	aio->bytes = bytes;
	aio->done = done;
	if ((op == IDE_AIO_READ || op == IDE_AIO_WRITE) && bytes > 0) {
		/* Zeroed: with rerror=ignore a failed read still goes to the guest,
		 * which must not see stale host memory. */
		aio->buf = calloc(1, (size_t)bytes);
		if (!aio->buf) {
			free(aio);
			return NULL;
		}
	}
	return aio;
}

void ide_aio_submit(struct ide_state *s, enum ide_aio_op op, int64_t offset, int64_t bytes,
		    void (*done)(struct ide_state *, struct ide_aio *, int))
{
	struct ide_aio *aio = ide_aio_new(op, offset, bytes, done);

	if (!aio) {
		/* bytes -1: nothing to keep for a retry (ide_error_action). */
		struct ide_aio tmp = {.op = op, .offset = offset, .bytes = -1};

		done(s, &tmp, -ENOMEM);
		return;
	}
	if (op == IDE_AIO_WRITE && bytes > 0)
		memcpy(aio->buf, s->io_buffer, (size_t)bytes);
	ide_aio_issue(s, aio);
}

/* --- the error policy and the retry list -------------------------------- */

static struct ide_aio *ide_aio_of_retry(const struct vd_blk_retry *r)
{
	return (struct ide_aio *)((char *)r - offsetof(struct ide_aio, retry));
}

/*
 * "cont" (vd_blk_retry_all): issue the kept request again, with the task
 * file as the guest left it.  A PIO command shows BSY again while it runs
 * (the PIO paths cleared it when they kept the request); a DMA command
 * kept BSY|DRQ and the bus master's ACTIVE all along.
 */
static void ide_aio_resubmit(struct vd_blk_retry *r)
{
	struct ide_aio *aio = ide_aio_of_retry(r);
	struct ide_state *s = aio->s;

	s->retry = NULL;
	vd_trace(ide_retry, "bus=%d unit=%d op=%d", s->bus->index, s->unit, aio->op);
	if (aio->op == IDE_AIO_READ || aio->op == IDE_AIO_WRITE || aio->op == IDE_AIO_FLUSH)
		s->status |= IDE_ST_BSY * (s->dma_cmd == IDE_DMA_NONE);
	ide_aio_issue(s, aio);
}

static bool ide_retry_of_drive(const struct vd_blk_retry *r, void *opaque)
{
	return ide_aio_of_retry(r)->s == opaque;
}

static void ide_retry_drop(struct vd_blk_retry *r)
{
	ide_aio_free(ide_aio_of_retry(r));
}

/* Detach the request in flight and take the one kept for a retry off the
 * backend's list: their results are dropped and never touch the drive or
 * guest memory. */
void ide_cancel_io(struct ide_state *s)
{
	if (s->aio) {
		vd_trace(ide_aio_cancel, "bus=%d unit=%d op=%d", s->bus->index, s->unit,
			 s->aio->op);
		s->aio->s = NULL;
		s->aio = NULL;
	}
	if (s->retry) {
		vd_blk_retry_drop(s->blk, ide_retry_of_drive, ide_retry_drop, s);
		s->retry = NULL;
	}
}

/*
 * Apply the drive's rerror/werror policy to a failed request (QEMU's
 * ide_handle_rw_error), through the backend, which also reports it
 * (BLOCK_IO_ERROR, and the VM stop for "stop"): 1 when the request is kept
 * on the backend's retry list (the machine stops), 0 to carry on as if it
 * had succeeded (ignore), -1 to report the error to the guest.
 */
int ide_error_action(struct ide_state *s, struct ide_aio *aio, int ret)
{
	bool is_read = aio->op == IDE_AIO_READ;
	enum vd_blk_error_action a;

	if (aio->bytes < 0) {
		/* ide_aio_submit ran out of memory: there is no request to
		 * keep, so whatever the policy, the guest gets the error. */
		a = VD_BLK_ACTION_REPORT;
		vd_blk_report_error(s->blk, a, is_read, ret);
	} else {
		a = vd_blk_handle_error(s->blk, is_read, ret);
	}
	vd_trace(ide_io_error, "bus=%d unit=%d op=%d ret=%d action=%s", s->bus->index, s->unit,
		 aio->op, ret, vd_blk_action_names[a]);
	if (a == VD_BLK_ACTION_STOP) {
		s->retry = aio;
		aio->retry.resubmit = ide_aio_resubmit;
		vd_blk_retry_keep(s->blk, &aio->retry);
		return 1;
	}
	return a == VD_BLK_ACTION_IGNORE ? 0 : -1;
}

/* --- the drive on its backend ---------------------------------------------- */

void ide_update_nb_sectors(struct ide_state *s)
{
	int64_t size = s->blk ? vd_blk_getlength(s->blk) : 0;

	s->nb_sectors = size > 0 ? (uint64_t)size / IDE_SECTOR : 0;
}

void ide_drive_detach(struct ide_state *s)
{
	ide_dma_cancel(s);
	ide_cancel_io(s);
	if (s->blk) {
		vd_blk_detach_dev(s->blk);
		vd_blk_unref(s->blk);
		s->blk = NULL;
	}
	s->kind = IDE_NONE;
}

/* Reissue the requests the "stop" policy kept (QEMU's ide_restart_bh):
 * unit 0, then unit 1, each from its backend's retry list. */
void ide_bus_restart(struct ide_bus *bus)
{
	for (int i = 0; i < 2; i++) {
		struct ide_state *s = &bus->ifs[i];

		if (s->blk)
			vd_blk_retry_all(s->blk);
	}
}

/*
 * The logical geometry an MBR partition table implies (QEMU's
 * guess_disk_lchs): the first partition with sectors and an end head gives
 * heads and sectors per track, assuming it ends on a cylinder boundary.
 * The sector is read synchronously: this runs when the drive is attached,
 * before the guest runs.  Image contents are untrusted: every value is
 * range-checked.
 */
static bool ide_guess_lchs(struct ide_state *s, unsigned *cyls, unsigned *heads, unsigned *secs)
{
	uint8_t mbr[512];

	if (vd_blk_pread(s->blk, 0, mbr, sizeof(mbr)) < 0)
		return false;
	if (mbr[510] != 0x55 || mbr[511] != 0xaa)
		return false;
	for (int i = 0; i < 4; i++) {
		const uint8_t *p = mbr + 0x1be + 16 * i;
		uint32_t nr_sects = (uint32_t)p[12] | (uint32_t)p[13] << 8 | (uint32_t)p[14] << 16 |
				    (uint32_t)p[15] << 24;
		unsigned h = p[5] + 1u, sec = p[6] & 63u;
		uint64_t c;

		if (!nr_sects || !p[5] || sec == 0)
			continue;
		c = s->nb_sectors / (h * sec);
		if (c < 1 || c > 16383)
			continue;
		*cyls = (unsigned)c;
		*heads = h;
		*secs = sec;
		return true;
	}
	return false;
}

/* QEMU's hd_geometry_guess: the MBR's geometry when it has at most 16
 * heads, else 16 heads, 63 sectors and cylinders to fit (2..16383). */
static void ide_guess_geometry(struct ide_state *s)
{
	unsigned c, h, sec;
	uint64_t cyl;

	if (s->kind == IDE_HD && ide_guess_lchs(s, &c, &h, &sec) && h <= 16) {
		s->cylinders = c;
		s->heads = s->native_heads = h;
		s->sectors = s->native_sectors = sec;
		return;
	}
	cyl = s->nb_sectors / (16 * 63);
	if (cyl > 16383)
		cyl = 16383;
	else if (cyl < 2)
		cyl = 2;
	s->cylinders = (unsigned)cyl;
	s->heads = s->native_heads = 16;
	s->sectors = s->native_sectors = 63;
}

static void ide_hd_resize(void *opaque)
{
	struct ide_state *s = opaque;

	ide_update_nb_sectors(s);
	if (s->identify_set)
		ide_identify_size(s);
}

const struct vd_blk_dev_ops ide_hd_dev_ops = {
	.has_tray = false,
	.resize = ide_hd_resize,
};

static void copy_str(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src);
}

int ide_drive_attach(struct ide_state *s, const struct vd_ide_drive_conf *conf)
{
	int ret;

	if (!conf || !conf->blk)
		return -EINVAL;
	if (s->kind != IDE_NONE)
		return -EBUSY;
	s->kind = conf->cdrom ? IDE_CD : IDE_HD;
	ret = vd_blk_attach_dev(conf->blk, conf->qdev_id,
				conf->cdrom ? &ide_cd_dev_ops : &ide_hd_dev_ops, s);
	if (ret < 0) {
		s->kind = IDE_NONE;
		return ret;
	}
	vd_blk_ref(conf->blk);
	s->blk = conf->blk;
	if (conf->serial)
		copy_str(s->serial, sizeof(s->serial), conf->serial);
	else
		snprintf(s->serial, sizeof(s->serial), "QM%05d", s->bus->index * 2 + s->unit + 1);
	copy_str(s->model, sizeof(s->model),
		 conf->model   ? conf->model
		 : conf->cdrom ? "QEMU DVD-ROM"
			       : "QEMU HARDDISK");
	/* QEMU's ide_drive_initfn: the firmware revision defaults to
	 * qemu_hw_version(), "2.5+" for machine types since 2.5. */
	copy_str(s->version, sizeof(s->version), conf->version ? conf->version : "2.5+");
	ide_update_nb_sectors(s);
	ide_guess_geometry(s);
	s->identify_set = false;
	ide_reset_drive(s);
	return 0;
}
