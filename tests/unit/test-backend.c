/* SPDX-License-Identifier: MIT */
/*
 * Block backends: error actions per policy and errno (QEMU's
 * blk_get_error_action), BLOCK_IO_ERROR and the stop request, io-status,
 * medium insertion and removal with the device callbacks, tray and lock
 * semantics (QEMU's do_open_tray, blockdev_remove_medium, insert, close),
 * the registry's lookups and automatic node names.
 */
#include <errno.h>

#include <vdisk/backend.h>

#include "tests/lib/test.h"

static struct vd_loop *loop;

static struct vd_node *null_node(const char *name)
{
	struct vd_opts *o = NULL;
	struct vd_node *n = NULL;
	struct vd_error err = {0};

	if (vd_opts_parse("driver=null-co,size=1M", NULL, &o, &err) < 0)
		return NULL;
	if (name)
		vd_opts_set(o, "node-name", name);
	if (vd_node_open_opts(o, VD_OPEN_RDWR, &n, &err) < 0)
		fprintf(stderr, "open: %s\n", err.msg);
	vd_opts_free(o);
	return n;
}

/* What the notifiers and the device saw. */
struct seen {
	int io_errors, tray_moves, stops;
	struct vd_blk_event last;
	int order; /* stop after event: 1 */
	int change_load, change_unload, eject_requests, eject_forced, resizes;
	bool tray_at_change; /* tray state the device saw in change_media */
	struct vd_blk *blk;
};

static void on_event(void *opaque, const struct vd_blk_event *ev)
{
	struct seen *s = opaque;

	s->last = *ev;
	if (ev->type == VD_BLK_EVENT_IO_ERROR)
		s->io_errors++;
	else
		s->tray_moves++;
	s->order = 0;
}

static void on_stop(void *opaque)
{
	struct seen *s = opaque;

	s->stops++;
	s->order = 1;
}

static void dev_change(void *opaque, bool load)
{
	struct seen *s = opaque;

	if (load)
		s->change_load++;
	else
		s->change_unload++;
	s->tray_at_change = vd_blk_is_tray_open(s->blk);
}

static void dev_eject_request(void *opaque, bool force)
{
	struct seen *s = opaque;

	s->eject_requests++;
	s->eject_forced += force;
}

static void dev_resize(void *opaque)
{
	struct seen *s = opaque;

	s->resizes++;
}

static const struct vd_blk_dev_ops cd_ops = {
	.has_tray = true,
	.change_media = dev_change,
	.eject_request = dev_eject_request,
	.resize = dev_resize,
};
static const struct vd_blk_dev_ops disk_ops = {
	.resize = dev_resize,
};

static void test_error_actions(void)
{
	struct vd_blk_registry *reg;
	struct vd_blk *blk;
	static const struct {
		enum vd_blk_on_error policy;
		int error;
		enum vd_blk_error_action action;
	} cases[] = {
		{VD_BLK_ON_ERROR_REPORT, EIO, VD_BLK_ACTION_REPORT},
		{VD_BLK_ON_ERROR_REPORT, ENOSPC, VD_BLK_ACTION_REPORT},
		{VD_BLK_ON_ERROR_IGNORE, EIO, VD_BLK_ACTION_IGNORE},
		{VD_BLK_ON_ERROR_IGNORE, ENOSPC, VD_BLK_ACTION_IGNORE},
		{VD_BLK_ON_ERROR_STOP, EIO, VD_BLK_ACTION_STOP},
		{VD_BLK_ON_ERROR_STOP, ENOSPC, VD_BLK_ACTION_STOP},
		{VD_BLK_ON_ERROR_ENOSPC, EIO, VD_BLK_ACTION_REPORT},
		{VD_BLK_ON_ERROR_ENOSPC, ENOSPC, VD_BLK_ACTION_STOP},
		{VD_BLK_ON_ERROR_ENOSPC, -ENOSPC, VD_BLK_ACTION_STOP},
		{VD_BLK_ON_ERROR_ENOSPC, EDQUOT, VD_BLK_ACTION_REPORT},
	};

	REQUIRE(vd_blk_registry_new(&reg) == 0);
	REQUIRE(vd_blk_new(reg, "d0", &blk) == 0);
	/* Defaults: rerror=report, werror=enospc. */
	CHECK_EQ(vd_blk_get_on_error(blk, true), VD_BLK_ON_ERROR_REPORT);
	CHECK_EQ(vd_blk_get_on_error(blk, false), VD_BLK_ON_ERROR_ENOSPC);
	CHECK_EQ(vd_blk_get_error_action(blk, false, ENOSPC), VD_BLK_ACTION_STOP);
	CHECK_EQ(vd_blk_get_error_action(blk, true, ENOSPC), VD_BLK_ACTION_REPORT);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* Each policy on the write side, and report on the read side. */
		vd_blk_set_on_error(blk, VD_BLK_ON_ERROR_REPORT, cases[i].policy);
		CHECK_EQ(vd_blk_get_error_action(blk, false, cases[i].error), cases[i].action);
		CHECK_EQ(vd_blk_get_error_action(blk, true, cases[i].error), VD_BLK_ACTION_REPORT);
		vd_blk_set_on_error(blk, cases[i].policy, VD_BLK_ON_ERROR_IGNORE);
		CHECK_EQ(vd_blk_get_error_action(blk, true, cases[i].error), cases[i].action);
	}
	vd_blk_unref(blk);
	vd_blk_registry_free(reg);
}

static void test_parse_on_error(void)
{
	struct vd_error err = {0};
	enum vd_blk_on_error e;

	CHECK_EQ(vd_blk_parse_on_error("stop", true, &e, &err), 0);
	CHECK_EQ(e, VD_BLK_ON_ERROR_STOP);
	CHECK_EQ(vd_blk_parse_on_error("auto", true, &e, &err), 0);
	CHECK_EQ(e, VD_BLK_ON_ERROR_REPORT);
	CHECK_EQ(vd_blk_parse_on_error("auto", false, &e, &err), 0);
	CHECK_EQ(e, VD_BLK_ON_ERROR_ENOSPC);
	CHECK_EQ(vd_blk_parse_on_error("enospc", false, &e, &err), 0);
	CHECK_EQ(e, VD_BLK_ON_ERROR_ENOSPC);
	CHECK_EQ(vd_blk_parse_on_error("enospc", true, &e, &err), -EINVAL);
	CHECK_STR(err.msg, "enospc is not supported for rerror");
	vd_error_clear(&err);
	CHECK_EQ(vd_blk_parse_on_error("bogus", false, &e, &err), -EINVAL);
	CHECK_STR(err.msg, "'bogus' invalid write error action");
}

static void test_report_error(void)
{
	struct vd_blk_registry *reg;
	struct vd_blk *blk;
	struct seen s = {0};

	REQUIRE(vd_blk_registry_new(&reg) == 0);
	REQUIRE(vd_blk_new(reg, "d0", &blk) == 0);
	s.blk = blk;
	REQUIRE(vd_blk_registry_add_notifier(reg, on_event, &s) == 0);
	vd_blk_registry_set_stop_handler(reg, on_stop, &s);

	/* No device: io-status disabled, report does not stop. */
	CHECK(!vd_blk_iostatus_is_enabled(blk));
	vd_blk_report_error(blk, VD_BLK_ACTION_REPORT, true, EIO);
	CHECK_EQ(s.io_errors, 1);
	CHECK_EQ(s.stops, 0);
	CHECK_EQ(s.last.type, VD_BLK_EVENT_IO_ERROR);
	CHECK(s.last.blk == blk);
	CHECK(s.last.is_read);
	CHECK_EQ(s.last.error, EIO);
	CHECK_EQ(s.last.action, VD_BLK_ACTION_REPORT);

	/* A device enables the io-status (werror=enospc can stop). */
	REQUIRE(vd_blk_attach_dev(blk, "disk0", &disk_ops, &s) == 0);
	CHECK(vd_blk_iostatus_is_enabled(blk));
	CHECK_EQ(vd_blk_iostatus(blk), VD_BLK_IOSTATUS_OK);
	vd_blk_report_error(blk, VD_BLK_ACTION_STOP, false, -ENOSPC);
	CHECK_EQ(s.io_errors, 2);
	CHECK_EQ(s.stops, 1);
	CHECK_EQ(s.order, 1); /* the stop request follows the event */
	CHECK_EQ(s.last.error, ENOSPC);
	CHECK(!s.last.is_read);
	CHECK_EQ(vd_blk_iostatus(blk), VD_BLK_IOSTATUS_NOSPACE);
	/* The first error sticks until reset. */
	vd_blk_report_error(blk, VD_BLK_ACTION_STOP, false, EIO);
	CHECK_EQ(vd_blk_iostatus(blk), VD_BLK_IOSTATUS_NOSPACE);
	vd_blk_registry_iostatus_reset(reg);
	CHECK_EQ(vd_blk_iostatus(blk), VD_BLK_IOSTATUS_OK);
	vd_blk_report_error(blk, VD_BLK_ACTION_STOP, true, EIO);
	CHECK_EQ(vd_blk_iostatus(blk), VD_BLK_IOSTATUS_FAILED);
	/* Ignore: event, no io-status change, no stop. */
	vd_blk_iostatus_reset(blk);
	vd_blk_report_error(blk, VD_BLK_ACTION_IGNORE, true, EIO);
	CHECK_EQ(vd_blk_iostatus(blk), VD_BLK_IOSTATUS_OK);
	CHECK_EQ(s.stops, 3);
	CHECK_EQ(s.io_errors, 5);
	/* rerror=report,werror=report: io-status disabled like QEMU's. */
	vd_blk_set_on_error(blk, VD_BLK_ON_ERROR_REPORT, VD_BLK_ON_ERROR_REPORT);
	CHECK(!vd_blk_iostatus_is_enabled(blk));
	vd_blk_set_on_error(blk, VD_BLK_ON_ERROR_STOP, VD_BLK_ON_ERROR_REPORT);
	CHECK(vd_blk_iostatus_is_enabled(blk));

	vd_blk_registry_remove_notifier(reg, on_event, &s);
	vd_blk_report_error(blk, VD_BLK_ACTION_REPORT, true, EIO);
	CHECK_EQ(s.io_errors, 5);

	/* A backend outside any registry reports into the void. */
	struct vd_blk *lone;
	REQUIRE(vd_blk_new(NULL, "lone", &lone) == 0);
	vd_blk_report_error(lone, VD_BLK_ACTION_STOP, true, EIO);
	CHECK_EQ(s.stops, 3);
	vd_blk_unref(lone);

	vd_blk_unref(blk);
	vd_blk_registry_free(reg);
}

static void test_medium_no_device(void)
{
	struct vd_blk_registry *reg;
	struct vd_blk *blk;
	struct vd_node *n1 = null_node(NULL), *n2 = null_node("mine");

	REQUIRE(n1 && n2);
	REQUIRE(vd_blk_registry_new(&reg) == 0);
	REQUIRE(vd_blk_new(reg, "d0", &blk) == 0);
	CHECK(!vd_blk_is_inserted(blk));
	CHECK(vd_blk_is_removable(blk)); /* no device: exchange at will */
	CHECK(!vd_blk_has_tray(blk));
	CHECK_EQ(vd_blk_insert_node(blk, n1), 0);
	CHECK_EQ(vd_blk_insert_node(blk, n2), -EBUSY);
	CHECK(vd_blk_root(blk) == n1);
	/* -drive nodes get automatic names. */
	CHECK(vd_node_name(n1)[0] == '#');
	CHECK(vd_blk_registry_find_node(reg, vd_node_name(n1)) == n1);
	/* Open/close tray without a tray: -ENOSYS / no-op. */
	CHECK_EQ(vd_blk_open_tray(blk, false), -ENOSYS);
	CHECK_EQ(vd_blk_close_tray(blk), 0);
	CHECK_EQ(vd_blk_remove_medium(blk), 0);
	CHECK(!vd_blk_is_inserted(blk));
	CHECK_EQ(vd_blk_remove_medium(blk), 0); /* nothing to remove */
	CHECK_EQ(vd_blk_insert_medium(blk, n2), 0);
	CHECK_EQ(vd_blk_insert_medium(blk, n1), -EEXIST);
	CHECK_STR(vd_node_name(n2), "mine");
	vd_node_unref(n1);
	vd_node_unref(n2); /* the backend holds its own reference */
	CHECK(vd_blk_root(blk) == n2);
	CHECK_EQ(vd_node_size(vd_blk_root(blk)), 1024 * 1024);
	vd_blk_unref(blk); /* drops the medium */
	vd_blk_registry_free(reg);
}

static void test_tray(void)
{
	struct vd_blk_registry *reg;
	struct vd_blk *blk;
	struct seen s = {0};
	struct vd_node *n = null_node(NULL), *n2 = null_node(NULL);

	REQUIRE(n && n2);
	REQUIRE(vd_blk_registry_new(&reg) == 0);
	REQUIRE(vd_blk_new(reg, "cd", &blk) == 0);
	s.blk = blk;
	REQUIRE(vd_blk_registry_add_notifier(reg, on_event, &s) == 0);
	REQUIRE(vd_blk_insert_node(blk, n) == 0);
	REQUIRE(vd_blk_attach_dev(blk, "cd0", &cd_ops, &s) == 0);
	CHECK_EQ(vd_blk_attach_dev(blk, "cd1", &cd_ops, &s), -EBUSY);
	CHECK(vd_blk_find_by_qdev(reg, "cd0") == blk);
	CHECK(vd_blk_find_by_qdev(reg, "cd1") == NULL);
	CHECK(vd_blk_find(reg, "cd") == blk);
	CHECK(vd_blk_is_removable(blk));
	CHECK(vd_blk_has_tray(blk));
	CHECK(!vd_blk_is_tray_open(blk));

	/* Tray closed: the medium cannot be taken or put. */
	CHECK_EQ(vd_blk_remove_medium(blk), -EBUSY);
	CHECK_EQ(vd_blk_insert_medium(blk, n2), -EBUSY);

	/* Locked by the guest: an eject request, the tray stays shut. */
	vd_blk_lock_medium(blk, true);
	CHECK(vd_blk_is_locked(blk));
	CHECK_EQ(vd_blk_open_tray(blk, false), -EINPROGRESS);
	CHECK_EQ(s.eject_requests, 1);
	CHECK_EQ(s.eject_forced, 0);
	CHECK(!vd_blk_is_tray_open(blk));
	CHECK_EQ(s.tray_moves, 0);
	CHECK_EQ(s.change_unload, 0);

	/* Forced: request (forced) and the tray opens, one event. */
	CHECK_EQ(vd_blk_open_tray(blk, true), 0);
	CHECK_EQ(s.eject_requests, 2);
	CHECK_EQ(s.eject_forced, 1);
	CHECK(vd_blk_is_tray_open(blk));
	CHECK_EQ(s.change_unload, 1);
	CHECK(s.tray_at_change); /* the device sees the new state */
	CHECK_EQ(s.tray_moves, 1);
	CHECK_EQ(s.last.type, VD_BLK_EVENT_TRAY_MOVED);
	CHECK(s.last.tray_open);
	/* Already open: nothing happens. */
	CHECK_EQ(vd_blk_open_tray(blk, false), 0);
	CHECK_EQ(s.tray_moves, 1);
	CHECK(vd_blk_is_inserted(blk)); /* open tray, medium still in */

	/* Swap the medium while open. */
	CHECK_EQ(vd_blk_remove_medium(blk), 0);
	CHECK(!vd_blk_is_inserted(blk));
	CHECK_EQ(s.change_unload, 1); /* a tray device is not told twice */
	CHECK_EQ(vd_blk_insert_medium(blk, n2), 0);
	CHECK_EQ(s.change_load, 0);
	CHECK_EQ(vd_blk_close_tray(blk), 0);
	CHECK_EQ(s.change_load, 1);
	CHECK(!s.tray_at_change);
	CHECK(!vd_blk_is_tray_open(blk));
	CHECK_EQ(s.tray_moves, 2);
	CHECK(!s.last.tray_open);
	CHECK_EQ(vd_blk_close_tray(blk), 0); /* closed already */
	CHECK_EQ(s.tray_moves, 2);

	/* The guest opens and closes the tray itself (START STOP UNIT). */
	vd_blk_lock_medium(blk, false);
	vd_blk_set_tray_open(blk, true);
	vd_blk_set_tray_open(blk, true);
	CHECK_EQ(s.tray_moves, 3);
	vd_blk_set_tray_open(blk, false);
	CHECK_EQ(s.tray_moves, 4);
	CHECK_EQ(s.change_load + s.change_unload, 2); /* not called for guest moves */

	vd_blk_resized(blk);
	CHECK_EQ(s.resizes, 1);

	/* Detached: no tray, removable again. */
	vd_blk_detach_dev(blk);
	CHECK(!vd_blk_has_tray(blk));
	CHECK(vd_blk_is_removable(blk));
	CHECK(vd_blk_find_by_qdev(reg, "cd0") == NULL);

	vd_node_unref(n);
	vd_node_unref(n2);
	vd_blk_unref(blk);
	vd_blk_registry_free(reg);
}

static void test_fixed_disk(void)
{
	struct vd_blk_registry *reg;
	struct vd_blk *blk;
	struct seen s = {0};
	struct vd_node *n = null_node(NULL);

	REQUIRE(n);
	REQUIRE(vd_blk_registry_new(&reg) == 0);
	REQUIRE(vd_blk_new(reg, "hd", &blk) == 0);
	REQUIRE(vd_blk_insert_node(blk, n) == 0);
	REQUIRE(vd_blk_attach_dev(blk, "", &disk_ops, &s) == 0);
	CHECK(!vd_blk_is_removable(blk));
	CHECK_EQ(vd_blk_open_tray(blk, true), -ENOTSUP);
	CHECK_EQ(vd_blk_close_tray(blk), -ENOTSUP);
	CHECK_EQ(vd_blk_remove_medium(blk), -ENOTSUP);
	CHECK(vd_blk_is_inserted(blk));
	vd_blk_set_tray_open(blk, true); /* no tray: ignored */
	CHECK(!vd_blk_is_tray_open(blk));
	CHECK(!vd_blk_is_read_only(blk));
	vd_blk_set_read_only(blk, true);
	CHECK(vd_blk_is_read_only(blk));
	vd_node_unref(n);
	vd_blk_unref(blk);
	vd_blk_registry_free(reg);
}

static void test_registry(void)
{
	struct vd_blk_registry *reg;
	struct vd_blk *a, *b, *c, *x;
	struct vd_node *n = null_node("export0"), *m = null_node(NULL);

	REQUIRE(n && m);
	REQUIRE(vd_blk_registry_new(&reg) == 0);
	REQUIRE(vd_blk_new(reg, "a", &a) == 0);
	REQUIRE(vd_blk_new(reg, "b", &b) == 0);
	REQUIRE(vd_blk_new(reg, NULL, &c) == 0); /* anonymous (an export's) */
	CHECK_EQ(vd_blk_new(reg, "a", &x), -EEXIST);
	CHECK(x == NULL);
	CHECK_EQ(vd_blk_new(reg, "bad name", &x), -EINVAL);
	CHECK(vd_blk_next(reg, NULL) == a);
	CHECK(vd_blk_next(reg, a) == b);
	CHECK(vd_blk_next(reg, b) == c);
	CHECK(vd_blk_next(reg, c) == NULL);
	CHECK(vd_blk_find(reg, "") == NULL);
	CHECK_STR(vd_blk_name(c), "");
	CHECK(vd_blk_registry(a) == reg);

	/* Standalone nodes (--blockdev). */
	CHECK_EQ(vd_blk_registry_add_node(reg, n), 0);
	CHECK_EQ(vd_blk_registry_add_node(reg, n), -EEXIST);
	CHECK(vd_blk_registry_find_node(reg, "export0") == n);
	CHECK(vd_blk_registry_next_node(reg, NULL) == n);
	CHECK(vd_blk_registry_next_node(reg, n) == NULL);
	CHECK_EQ(vd_blk_registry_add_node(reg, m), 0);
	CHECK(vd_node_name(m)[0] == '#');
	CHECK(vd_blk_registry_next_node(reg, n) == m);
	CHECK(vd_blk_registry_find_node(reg, "nosuch") == NULL);
	CHECK_EQ(vd_blk_insert_node(c, n), 0);
	CHECK_EQ(vd_blk_registry_remove_node(reg, n), 0);
	CHECK_EQ(vd_blk_registry_remove_node(reg, n), -ENOENT);
	/* Still found below the anonymous backend. */
	CHECK(vd_blk_registry_find_node(reg, "export0") == n);

	/* Unref out of order keeps the list consistent. */
	vd_blk_unref(b);
	CHECK(vd_blk_next(reg, a) == c);
	vd_blk_ref(a);
	vd_blk_unref(a);
	CHECK(vd_blk_find(reg, "a") == a);
	vd_blk_unref(a);
	CHECK(vd_blk_next(reg, NULL) == c);
	/* Freeing the registry first leaves backends usable. */
	vd_blk_registry_free(reg);
	CHECK(vd_blk_registry(c) == NULL);
	CHECK(vd_blk_root(c) == n);
	vd_node_unref(n);
	vd_node_unref(m);
	vd_blk_unref(c);
}

/* --- I/O through the handle ---------------------------------------------- */

struct aio_result {
	int calls, ret;
	struct vd_blk *unref_in_cb; /* drop this reference in the callback */
};

static void aio_cb(void *opaque, int ret)
{
	struct aio_result *r = opaque;

	r->calls++;
	r->ret = ret;
	if (r->unref_in_cb) {
		vd_blk_unref(r->unref_in_cb);
		r->unref_in_cb = NULL;
	}
}

/* A handle's rules: no medium, read-only, range, in all three families. */
static void test_io_rules(void)
{
	struct vd_blk *blk;
	struct vd_node *n = null_node(NULL);
	struct aio_result r = {0};
	struct vd_qiov q;
	char buf[512] = {0};

	REQUIRE(n);
	REQUIRE(vd_blk_new(NULL, NULL, &blk) == 0);
	/* No medium. */
	CHECK_EQ(vd_blk_pread(blk, 0, buf, 512), -ENOMEDIUM);
	CHECK_EQ(vd_blk_flush(blk), -ENOMEDIUM);
	CHECK_EQ(vd_blk_getlength(blk), -ENOMEDIUM);
	CHECK_EQ(vd_blk_limits(blk)->request_alignment, 1);
	vd_qiov_init_buf(&q, buf, sizeof(buf));
	vd_blk_aio_preadv(blk, 0, &q, 0, aio_cb, &r);
	CHECK_EQ(r.calls, 0); /* never before the call returns */
	CHECK_EQ(vd_blk_in_flight(blk), 1);
	vd_blk_drain(blk);
	CHECK_EQ(r.calls, 1);
	CHECK_EQ(r.ret, -ENOMEDIUM);
	CHECK_EQ(vd_blk_in_flight(blk), 0);

	REQUIRE(vd_blk_insert_node(blk, n) == 0);
	CHECK_EQ(vd_blk_getlength(blk), 1 << 20);
	CHECK_EQ(vd_blk_pread(blk, 0, buf, 512), 0);
	CHECK_EQ(vd_blk_pwrite(blk, 4096, buf, 512, 0), 0);
	/* Range against the current size, malformed requests. */
	CHECK_EQ(vd_blk_pread(blk, (1 << 20) - 256, buf, 512), -EIO);
	CHECK_EQ(vd_blk_pwrite_zeroes(blk, 1 << 20, 512, 0), -EIO);
	CHECK_EQ(vd_blk_pdiscard(blk, -512, 512), -EINVAL);
	CHECK_EQ(vd_blk_pread(blk, 0, buf, -1), -EINVAL);
	CHECK_EQ(vd_blk_pread(blk, INT64_MAX - 100, buf, 512), -EIO);
	/* Read-only backend: writes of every kind refused, reads served. */
	vd_blk_set_read_only(blk, true);
	CHECK(!vd_blk_is_writable(blk));
	CHECK_EQ(vd_blk_pwrite(blk, 0, buf, 512, 0), -EROFS);
	CHECK_EQ(vd_blk_pdiscard(blk, 0, 512), -EROFS);
	CHECK_EQ(vd_blk_pwrite_zeroes(blk, 0, 512, 0), -EROFS);
	CHECK_EQ(vd_blk_pread(blk, 0, buf, 512), 0);
	CHECK_EQ(vd_blk_flush(blk), 0);
	r = (struct aio_result){0};
	vd_blk_aio_pwritev(blk, 0, &q, 0, aio_cb, &r);
	vd_blk_drain(blk);
	CHECK_EQ(r.calls, 1);
	CHECK_EQ(r.ret, -EROFS);
	vd_blk_set_read_only(blk, false);
	/* The write cache is the handle's, kept across media. */
	vd_blk_set_write_cache(blk, false);
	CHECK(!vd_node_write_cache(n));
	vd_blk_remove_node(blk);
	REQUIRE(vd_blk_insert_node(blk, n) == 0);
	CHECK(!vd_blk_write_cache(blk));
	CHECK(!vd_node_write_cache(n));
	vd_blk_unref(blk);
	vd_node_unref(n);
}

/* The last reference dropped in a completion callback: the handle lives
 * until the callback returns, then goes (no use after free under ASan). */
static void test_io_unref_in_callback(void)
{
	struct vd_blk *blk;
	struct vd_node *n = null_node(NULL);
	struct aio_result r = {0};

	REQUIRE(n);
	REQUIRE(vd_blk_new(NULL, NULL, &blk) == 0);
	REQUIRE(vd_blk_insert_node(blk, n) == 0);
	vd_node_unref(n);
	r.unref_in_cb = blk;
	vd_blk_aio_flush(blk, aio_cb, &r);
	for (int i = 0; i < 100 && r.calls == 0; i++)
		vd_loop_run_once(loop, true);
	CHECK_EQ(r.calls, 1);
	CHECK_EQ(r.ret, 0);
}

/* Removing the medium waits for the requests in flight. */
static void test_io_drain_on_remove(void)
{
	struct vd_blk *blk;
	struct vd_node *n = null_node(NULL);
	struct aio_result r[4] = {{0}};

	REQUIRE(n);
	REQUIRE(vd_blk_new(NULL, NULL, &blk) == 0);
	REQUIRE(vd_blk_insert_node(blk, n) == 0);
	for (int i = 0; i < 4; i++)
		vd_blk_aio_pwrite_zeroes(blk, i * 4096, 4096, 0, aio_cb, &r[i]);
	CHECK_EQ(vd_blk_in_flight(blk), 4);
	vd_blk_remove_node(blk);
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(r[i].calls, 1);
		CHECK_EQ(r[i].ret, 0);
	}
	CHECK_EQ(vd_blk_in_flight(blk), 0);
	vd_blk_unref(blk);
	vd_node_unref(n);
}

/* The policy decision with its report, and the retry list. */
struct kept {
	struct vd_blk_retry link;
	int id, resubmitted, dropped;
};

static int resubmit_order[8], nr_resubmit;

static void kept_resubmit(struct vd_blk_retry *r)
{
	struct kept *k = (struct kept *)r;

	k->resubmitted++;
	resubmit_order[nr_resubmit++] = k->id;
}

static bool kept_is_odd(const struct vd_blk_retry *r, void *opaque)
{
	return ((const struct kept *)r)->id & 1;
}

static void kept_drop(struct vd_blk_retry *r)
{
	((struct kept *)r)->dropped++;
}

static void test_handle_error_and_retry(void)
{
	struct vd_blk_registry *reg;
	struct vd_blk *blk;
	struct seen s = {0};
	struct kept k[4];

	REQUIRE(vd_blk_registry_new(&reg) == 0);
	REQUIRE(vd_blk_registry_add_notifier(reg, on_event, &s) == 0);
	vd_blk_registry_set_stop_handler(reg, on_stop, &s);
	REQUIRE(vd_blk_new(reg, "d0", &blk) == 0);
	vd_blk_iostatus_enable(blk);
	vd_blk_set_on_error(blk, VD_BLK_ON_ERROR_IGNORE, VD_BLK_ON_ERROR_STOP);
	CHECK_EQ(vd_blk_handle_error(blk, true, -EIO), VD_BLK_ACTION_IGNORE);
	CHECK_EQ(s.io_errors, 1);
	CHECK_EQ(s.stops, 0);
	CHECK_EQ(vd_blk_handle_error(blk, false, EIO), VD_BLK_ACTION_STOP);
	CHECK_EQ(s.io_errors, 2);
	CHECK_EQ(s.stops, 1);
	CHECK_EQ(s.order, 1); /* the stop after the event */
	CHECK_EQ(vd_blk_iostatus(blk), VD_BLK_IOSTATUS_FAILED);

	for (int i = 0; i < 4; i++) {
		k[i] = (struct kept){.link.resubmit = kept_resubmit, .id = i};
		vd_blk_retry_keep(blk, &k[i].link);
	}
	CHECK_EQ(vd_blk_retry_count(blk), 4);
	/* A reset takes out some; the rest come back oldest first. */
	vd_blk_retry_drop(blk, kept_is_odd, kept_drop, NULL);
	CHECK_EQ(vd_blk_retry_count(blk), 2);
	CHECK_EQ(k[1].dropped + k[3].dropped, 2);
	CHECK_EQ(k[0].dropped + k[2].dropped, 0);
	/* Keeping after a drop at the tail still appends. */
	vd_blk_retry_keep(blk, &k[1].link);
	nr_resubmit = 0;
	vd_blk_retry_all(blk);
	CHECK_EQ(nr_resubmit, 3);
	CHECK_EQ(resubmit_order[0], 0);
	CHECK_EQ(resubmit_order[1], 2);
	CHECK_EQ(resubmit_order[2], 1);
	CHECK_EQ(vd_blk_retry_count(blk), 0);
	vd_blk_retry_keep(blk, &k[3].link);
	vd_blk_retry_drop(blk, NULL, kept_drop, NULL);
	CHECK_EQ(k[3].dropped, 2);
	CHECK_EQ(vd_blk_retry_count(blk), 0);
	vd_blk_unref(blk);
	vd_blk_registry_free(reg);
}

int main(void)
{
	if (vd_loop_new(&loop) < 0)
		return 1;
	vd_loop_set_current(loop);
	RUN(test_error_actions);
	RUN(test_parse_on_error);
	RUN(test_report_error);
	RUN(test_medium_no_device);
	RUN(test_tray);
	RUN(test_fixed_disk);
	RUN(test_registry);
	RUN(test_io_rules);
	RUN(test_io_unref_in_callback);
	RUN(test_io_drain_on_remove);
	RUN(test_handle_error_and_retry);
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
	return test_finish();
}
