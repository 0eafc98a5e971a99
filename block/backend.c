/* SPDX-License-Identifier: MIT */
/*
 * Block backends and their registry (see include/vdisk/backend.h): QEMU's
 * BlockBackend with its device callbacks, error policy, io-status and tray
 * state.  The rules follow QEMU 7.2's block/block-backend.c and the medium
 * handling of blockdev.c (do_open_tray, blockdev_remove_medium,
 * qmp_blockdev_insert_anon_medium, qmp_blockdev_close_tray).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/backend.h>

#include "block/blk.h"
#include "block/internal.h"

const char *const vd_blk_on_error_names[] = {"report", "ignore", "enospc", "stop", NULL};
const char *const vd_blk_action_names[] = {"ignore", "report", "stop", NULL};
const char *const vd_blk_io_status_names[] = {"ok", "failed", "nospace", NULL};

struct blk_notifier {
	struct blk_notifier *next;
	vd_blk_event_fn *fn;
	void *opaque;
};

struct reg_node {
	struct reg_node *next;
	struct vd_node *node;
};

struct vd_blk_registry {
	struct vd_blk *head, *tail;
	struct reg_node *nodes, *nodes_tail;
	struct blk_notifier *notifiers;
	vd_blk_stop_fn *stop_fn;
	void *stop_opaque;
	unsigned auto_name; /* counter for "#blockN" */
};

/* --- the registry -------------------------------------------------------- */

int vd_blk_registry_new(struct vd_blk_registry **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void vd_blk_registry_free(struct vd_blk_registry *reg)
{
	if (!reg)
		return;
	while (reg->head) {
		struct vd_blk *b = reg->head;

		reg->head = b->next;
		b->next = b->prev = NULL;
		b->reg = NULL;
	}
	while (reg->nodes) {
		struct reg_node *rn = reg->nodes;

		reg->nodes = rn->next;
		vd_node_unref(rn->node);
		free(rn);
	}
	while (reg->notifiers) {
		struct blk_notifier *n = reg->notifiers;

		reg->notifiers = n->next;
		free(n);
	}
	free(reg);
}

int vd_blk_registry_add_notifier(struct vd_blk_registry *reg, vd_blk_event_fn *fn, void *opaque)
{
	struct blk_notifier *n = calloc(1, sizeof(*n)), **p;

	if (!n)
		return -ENOMEM;
	n->fn = fn;
	n->opaque = opaque;
	/* In subscription order. */
	for (p = &reg->notifiers; *p; p = &(*p)->next)
		;
	*p = n;
	return 0;
}

void vd_blk_registry_remove_notifier(struct vd_blk_registry *reg, vd_blk_event_fn *fn, void *opaque)
{
	for (struct blk_notifier **p = &reg->notifiers; *p; p = &(*p)->next) {
		if ((*p)->fn == fn && (*p)->opaque == opaque) {
			struct blk_notifier *n = *p;

			*p = n->next;
			free(n);
			return;
		}
	}
}

void vd_blk_registry_set_stop_handler(struct vd_blk_registry *reg, vd_blk_stop_fn *fn, void *opaque)
{
	reg->stop_fn = fn;
	reg->stop_opaque = opaque;
}

static void emit(struct vd_blk *blk, const struct vd_blk_event *ev)
{
	if (!blk->reg)
		return;
	for (struct blk_notifier *n = blk->reg->notifiers; n;) {
		struct blk_notifier *next = n->next; /* a notifier may remove itself */

		n->fn(n->opaque, ev);
		n = next;
	}
}

struct vd_blk *vd_blk_next(const struct vd_blk_registry *reg, const struct vd_blk *prev)
{
	return prev ? prev->next : reg->head;
}

struct vd_blk *vd_blk_find(const struct vd_blk_registry *reg, const char *name)
{
	if (!reg || !name || !*name)
		return NULL;
	for (struct vd_blk *b = reg->head; b; b = b->next) {
		if (strcmp(b->name, name) == 0)
			return b;
	}
	return NULL;
}

struct vd_blk *vd_blk_find_by_qdev(const struct vd_blk_registry *reg, const char *qdev_id)
{
	if (!reg || !qdev_id || !*qdev_id)
		return NULL;
	for (struct vd_blk *b = reg->head; b; b = b->next) {
		if (b->dev_attached && strcmp(b->qdev_id, qdev_id) == 0)
			return b;
	}
	return NULL;
}

/* Depth-first search of a graph for a node-name. */
static struct vd_node *graph_find(struct vd_node *n, const char *name, int depth)
{
	struct vd_node *found;

	if (!n || depth > 64)
		return NULL;
	if (strcmp(vd_node_name(n), name) == 0)
		return n;
	found = graph_find(vd_node_file_child(n), name, depth + 1);
	return found ? found : graph_find(vd_node_backing(n), name, depth + 1);
}

struct vd_node *vd_blk_registry_find_node(const struct vd_blk_registry *reg, const char *name)
{
	struct vd_node *n;

	if (!reg || !name || !*name)
		return NULL;
	for (struct reg_node *rn = reg->nodes; rn; rn = rn->next) {
		if ((n = graph_find(rn->node, name, 0)))
			return n;
	}
	for (struct vd_blk *b = reg->head; b; b = b->next) {
		if ((n = graph_find(b->root, name, 0)))
			return n;
	}
	return NULL;
}

/* Give every unnamed node of a graph a "#blockN" name, as QEMU names the
 * nodes that -drive opens, so that QMP can always address them. */
static int name_graph(struct vd_blk_registry *reg, struct vd_node *n, int depth)
{
	int ret;

	if (!reg || !n || depth > 64)
		return 0;
	if (!*vd_node_name(n)) {
		char name[32];

		do {
			snprintf(name, sizeof(name), "#block%03u", ++reg->auto_name);
		} while (vd_blk_registry_find_node(reg, name));
		ret = vd_node_set_name(n, name);
		if (ret < 0)
			return ret;
	}
	ret = name_graph(reg, vd_node_file_child(n), depth + 1);
	return ret < 0 ? ret : name_graph(reg, vd_node_backing(n), depth + 1);
}

int vd_blk_registry_add_node(struct vd_blk_registry *reg, struct vd_node *node)
{
	struct reg_node *rn;
	int ret;

	if (*vd_node_name(node) && vd_blk_registry_find_node(reg, vd_node_name(node)))
		return -EEXIST;
	rn = calloc(1, sizeof(*rn));
	if (!rn)
		return -ENOMEM;
	ret = name_graph(reg, node, 0);
	if (ret < 0) {
		free(rn);
		return ret;
	}
	vd_node_ref(node);
	rn->node = node;
	if (reg->nodes_tail)
		reg->nodes_tail->next = rn;
	else
		reg->nodes = rn;
	reg->nodes_tail = rn;
	return 0;
}

int vd_blk_registry_remove_node(struct vd_blk_registry *reg, struct vd_node *node)
{
	struct reg_node *prev = NULL;

	for (struct reg_node *rn = reg->nodes; rn; prev = rn, rn = rn->next) {
		if (rn->node != node)
			continue;
		if (prev)
			prev->next = rn->next;
		else
			reg->nodes = rn->next;
		if (reg->nodes_tail == rn)
			reg->nodes_tail = prev;
		free(rn);
		vd_node_unref(node);
		return 0;
	}
	return -ENOENT;
}

struct vd_node *vd_blk_registry_next_node(const struct vd_blk_registry *reg,
					  const struct vd_node *prev)
{
	struct reg_node *rn = reg->nodes;

	if (prev) {
		while (rn && rn->node != prev)
			rn = rn->next;
		rn = rn ? rn->next : NULL;
	}
	return rn ? rn->node : NULL;
}

void vd_blk_registry_iostatus_reset(struct vd_blk_registry *reg)
{
	for (struct vd_blk *b = reg->head; b; b = b->next)
		vd_blk_iostatus_reset(b);
}

/* --- backends ------------------------------------------------------------ */

static bool valid_name(const char *s)
{
	for (; *s; s++) {
		if (*s <= ' ' || *s > '~')
			return false;
	}
	return true;
}

int vd_blk_new(struct vd_blk_registry *reg, const char *name, struct vd_blk **out)
{
	struct vd_blk *blk;

	*out = NULL;
	if (!name)
		name = "";
	if (!valid_name(name))
		return -EINVAL;
	if (reg && vd_blk_find(reg, name))
		return -EEXIST;
	blk = calloc(1, sizeof(*blk));
	if (!blk)
		return -ENOMEM;
	blk->name = strdup(name);
	blk->qdev_id = strdup("");
	if (!blk->name || !blk->qdev_id) {
		free(blk->name);
		free(blk->qdev_id);
		free(blk);
		return -ENOMEM;
	}
	blk->refcnt = 1;
	blk->write_cache = true;
	vd_co_queue_init(&blk->drain_waiters);
	blk->retry_tail = &blk->retry_head;
	blk->on_read_error = VD_BLK_ON_ERROR_REPORT;
	blk->on_write_error = VD_BLK_ON_ERROR_ENOSPC;
	if (reg) {
		blk->reg = reg;
		blk->prev = reg->tail;
		if (reg->tail)
			reg->tail->next = blk;
		else
			reg->head = blk;
		reg->tail = blk;
	}
	*out = blk;
	return 0;
}

void vd_blk_ref(struct vd_blk *blk)
{
	blk->refcnt++;
}

void vd_blk_unref(struct vd_blk *blk)
{
	if (!blk || --blk->refcnt > 0)
		return;
	vd_blk_remove_node(blk);
	if (blk->reg) {
		struct vd_blk_registry *reg = blk->reg;

		if (blk->prev)
			blk->prev->next = blk->next;
		else
			reg->head = blk->next;
		if (blk->next)
			blk->next->prev = blk->prev;
		else
			reg->tail = blk->prev;
	}
	free(blk->name);
	free(blk->qdev_id);
	free(blk);
}

const char *vd_blk_name(const struct vd_blk *blk)
{
	return blk->name;
}

struct vd_blk_registry *vd_blk_registry(const struct vd_blk *blk)
{
	return blk->reg;
}

int vd_blk_attach_dev(struct vd_blk *blk, const char *qdev_id, const struct vd_blk_dev_ops *ops,
		      void *opaque)
{
	char *id;

	if (blk->dev_attached)
		return -EBUSY;
	id = strdup(qdev_id ? qdev_id : "");
	if (!id)
		return -ENOMEM;
	free(blk->qdev_id);
	blk->qdev_id = id;
	blk->dev_attached = true;
	blk->dev_ops = ops;
	blk->dev_opaque = opaque;
	blk->tray_open = false;
	blk->locked = false;
	vd_blk_iostatus_enable(blk);
	return 0;
}

void vd_blk_detach_dev(struct vd_blk *blk)
{
	blk->dev_attached = false;
	blk->dev_ops = NULL;
	blk->dev_opaque = NULL;
	blk->qdev_id[0] = '\0';
	blk->tray_open = false;
	blk->locked = false;
	blk->iostatus_enabled = false;
	blk->iostatus = VD_BLK_IOSTATUS_OK;
}

bool vd_blk_has_dev(const struct vd_blk *blk)
{
	return blk->dev_attached;
}

const char *vd_blk_qdev_id(const struct vd_blk *blk)
{
	return blk->qdev_id;
}

struct vd_node *vd_blk_root(const struct vd_blk *blk)
{
	return blk->root;
}

int vd_blk_insert_node(struct vd_blk *blk, struct vd_node *node)
{
	int ret;

	if (blk->root)
		return -EBUSY;
	ret = name_graph(blk->reg, node, 0);
	if (ret < 0)
		return ret;
	vd_node_ref(node);
	vd_node_set_write_cache(node, blk->write_cache);
	blk->root = node;
	return 0;
}

void vd_blk_remove_node(struct vd_blk *blk)
{
	struct vd_node *n = blk->root;

	if (!n)
		return;
	vd_blk_drain(blk);
	blk->root = NULL;
	vd_node_drain(n);
	vd_node_unref(n);
}

bool vd_blk_is_inserted(const struct vd_blk *blk)
{
	return blk->root != NULL;
}

bool vd_blk_is_removable(const struct vd_blk *blk)
{
	return !blk->dev_attached || (blk->dev_ops && blk->dev_ops->change_media);
}

bool vd_blk_has_tray(const struct vd_blk *blk)
{
	return blk->dev_attached && blk->dev_ops && blk->dev_ops->has_tray;
}

bool vd_blk_is_tray_open(const struct vd_blk *blk)
{
	return vd_blk_has_tray(blk) && blk->tray_open;
}

bool vd_blk_is_locked(const struct vd_blk *blk)
{
	return blk->dev_attached && blk->locked;
}

static void tray_moved(struct vd_blk *blk, bool open)
{
	struct vd_blk_event ev = {.type = VD_BLK_EVENT_TRAY_MOVED, .blk = blk, .tray_open = open};

	emit(blk, &ev);
}

/* QEMU's blk_dev_change_media_cb: tell the device, and raise
 * DEVICE_TRAY_MOVED if that moved the tray. */
static void dev_change_media(struct vd_blk *blk, bool load)
{
	bool was_open;

	if (!blk->dev_ops || !blk->dev_ops->change_media)
		return;
	was_open = vd_blk_is_tray_open(blk);
	if (vd_blk_has_tray(blk))
		blk->tray_open = !load;
	blk->dev_ops->change_media(blk->dev_opaque, load);
	if (was_open != vd_blk_is_tray_open(blk))
		tray_moved(blk, !was_open);
}

int vd_blk_open_tray(struct vd_blk *blk, bool force)
{
	bool locked;

	if (!vd_blk_is_removable(blk))
		return -ENOTSUP;
	if (!vd_blk_has_tray(blk))
		return -ENOSYS;
	if (blk->tray_open)
		return 0;
	locked = blk->locked;
	if (locked && blk->dev_ops->eject_request)
		blk->dev_ops->eject_request(blk->dev_opaque, force);
	if (!locked || force)
		dev_change_media(blk, false);
	return locked && !force ? -EINPROGRESS : 0;
}

int vd_blk_close_tray(struct vd_blk *blk)
{
	if (!vd_blk_is_removable(blk))
		return -ENOTSUP;
	if (!vd_blk_has_tray(blk) || !blk->tray_open)
		return 0;
	dev_change_media(blk, true);
	return 0;
}

int vd_blk_remove_medium(struct vd_blk *blk)
{
	if (blk->dev_attached && !vd_blk_has_tray(blk))
		return -ENOTSUP;
	if (blk->dev_attached && !blk->tray_open)
		return -EBUSY;
	if (!blk->root)
		return 0;
	vd_blk_remove_node(blk);
	/* Tray-less devices: the medium leaves the slot now.  (Not reached
	 * with a device attached, which must have a tray; kept for symmetry
	 * with QEMU should that rule loosen.) */
	if (!vd_blk_has_tray(blk))
		dev_change_media(blk, false);
	return 0;
}

int vd_blk_insert_medium(struct vd_blk *blk, struct vd_node *node)
{
	int ret;

	if (blk->dev_attached && !vd_blk_has_tray(blk))
		return -ENOTSUP;
	if (blk->dev_attached && !blk->tray_open)
		return -EBUSY;
	if (blk->root)
		return -EEXIST;
	ret = vd_blk_insert_node(blk, node);
	if (ret < 0)
		return ret;
	if (!vd_blk_has_tray(blk))
		dev_change_media(blk, true);
	return 0;
}

void vd_blk_set_tray_open(struct vd_blk *blk, bool open)
{
	if (!vd_blk_has_tray(blk) || blk->tray_open == open)
		return;
	blk->tray_open = open;
	tray_moved(blk, open);
}

void vd_blk_lock_medium(struct vd_blk *blk, bool locked)
{
	blk->locked = locked;
}

void vd_blk_resized(struct vd_blk *blk)
{
	if (blk->dev_ops && blk->dev_ops->resize)
		blk->dev_ops->resize(blk->dev_opaque);
}

void vd_blk_set_read_only(struct vd_blk *blk, bool ro)
{
	blk->read_only = ro;
}

bool vd_blk_is_read_only(const struct vd_blk *blk)
{
	return blk->read_only || (blk->root && vd_node_is_read_only(blk->root));
}

/* --- errors -------------------------------------------------------------- */

void vd_blk_set_on_error(struct vd_blk *blk, enum vd_blk_on_error on_read,
			 enum vd_blk_on_error on_write)
{
	blk->on_read_error = on_read;
	blk->on_write_error = on_write;
}

enum vd_blk_on_error vd_blk_get_on_error(const struct vd_blk *blk, bool is_read)
{
	return is_read ? blk->on_read_error : blk->on_write_error;
}

int vd_blk_parse_on_error(const char *str, bool is_read, enum vd_blk_on_error *out,
			  struct vd_error *err)
{
	if (strcmp(str, "auto") == 0) {
		*out = is_read ? VD_BLK_ON_ERROR_REPORT : VD_BLK_ON_ERROR_ENOSPC;
		return 0;
	}
	for (int i = 0; vd_blk_on_error_names[i]; i++) {
		if (strcmp(str, vd_blk_on_error_names[i]) != 0)
			continue;
		if (is_read && i == VD_BLK_ON_ERROR_ENOSPC)
			return vd_error_set(err, -EINVAL, "enospc is not supported for rerror");
		*out = (enum vd_blk_on_error)i;
		return 0;
	}
	return vd_error_set(err, -EINVAL, "'%s' invalid %s error action", str,
			    is_read ? "read" : "write");
}

enum vd_blk_error_action vd_blk_get_error_action(const struct vd_blk *blk, bool is_read, int error)
{
	if (error < 0)
		error = -error;
	switch (vd_blk_get_on_error(blk, is_read)) {
	case VD_BLK_ON_ERROR_ENOSPC:
		return error == ENOSPC ? VD_BLK_ACTION_STOP : VD_BLK_ACTION_REPORT;
	case VD_BLK_ON_ERROR_STOP:
		return VD_BLK_ACTION_STOP;
	case VD_BLK_ON_ERROR_IGNORE:
		return VD_BLK_ACTION_IGNORE;
	case VD_BLK_ON_ERROR_REPORT:
	default:
		return VD_BLK_ACTION_REPORT;
	}
}

void vd_blk_report_error(struct vd_blk *blk, enum vd_blk_error_action action, bool is_read,
			 int error)
{
	struct vd_blk_event ev = {
		.type = VD_BLK_EVENT_IO_ERROR,
		.blk = blk,
		.is_read = is_read,
		.action = action,
		.error = error < 0 ? -error : error,
	};

	if (action == VD_BLK_ACTION_STOP) {
		/* The io-status first, so that a query-block after the event
		 * sees it (QEMU's blk_error_action). */
		if (vd_blk_iostatus_is_enabled(blk) && blk->iostatus == VD_BLK_IOSTATUS_OK)
			blk->iostatus = ev.error == ENOSPC ? VD_BLK_IOSTATUS_NOSPACE
							   : VD_BLK_IOSTATUS_FAILED;
		emit(blk, &ev);
		if (blk->reg && blk->reg->stop_fn)
			blk->reg->stop_fn(blk->reg->stop_opaque);
	} else {
		emit(blk, &ev);
	}
}

void vd_blk_iostatus_enable(struct vd_blk *blk)
{
	blk->iostatus_enabled = true;
	blk->iostatus = VD_BLK_IOSTATUS_OK;
}

bool vd_blk_iostatus_is_enabled(const struct vd_blk *blk)
{
	return blk->iostatus_enabled && (blk->on_write_error == VD_BLK_ON_ERROR_ENOSPC ||
					 blk->on_write_error == VD_BLK_ON_ERROR_STOP ||
					 blk->on_read_error == VD_BLK_ON_ERROR_STOP);
}

enum vd_blk_io_status vd_blk_iostatus(const struct vd_blk *blk)
{
	return blk->iostatus;
}

void vd_blk_iostatus_reset(struct vd_blk *blk)
{
	blk->iostatus = VD_BLK_IOSTATUS_OK;
}
