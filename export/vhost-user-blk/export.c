/* SPDX-License-Identifier: MIT */
/*
 * vhost-user-blk exports: the listening socket, and the daemon's set of
 * exports with qemu-storage-daemon's options and QMP commands
 * (qapi/block-export.json in QEMU 7.2: block-export-add, block-export-del,
 * query-block-exports, event BLOCK_EXPORT_DELETED).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <vdisk/backend.h>
#include <vdisk/qmp.h>
#include <vdisk/tls.h>

#include "export/vhost-user-blk/vub-internal.h"

static void accept_conn(void *opaque)
{
	struct vd_export *e = opaque;
	int fd = accept4(e->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	if (vub_conn_new(e, fd) < 0)
		vd_message(VD_MSG_ERROR,
			   "vdisk: vhost-user-blk export '%s': cannot serve a connection", e->id);
}

static int listen_unix(const char *path, struct vd_error *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return vd_error_set(err, -ENAMETOOLONG, "UNIX socket path '%s' is too long", path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return vd_error_setg_errno(err, -errno, "Failed to create a socket");
	/* The socket appears under its name only once it listens: bound under
	 * a temporary name, then renamed over the path (a stale socket file is
	 * replaced, as QEMU does).  A front end that connects as soon as the
	 * file exists is never refused. */
	int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.%ld.tmp", path, (long)getpid());
	bool tmp = n > 0 && (size_t)n < sizeof(sa.sun_path);
	if (!tmp)
		strcpy(sa.sun_path, path);
	unlink(sa.sun_path);
	if (!tmp)
		unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0 ||
	    (tmp && rename(sa.sun_path, path) < 0)) {
		int ret = -errno;
		if (tmp)
			unlink(sa.sun_path);
		close(fd);
		return vd_error_setg_errno(err, ret, "Failed to bind socket to %s", path);
	}
	return fd;
}

int vd_vhost_user_blk_export_new(const struct vd_vhost_user_blk_opts *o, struct vd_export **out,
				 struct vd_error *err)
{
	struct vd_export *e;
	uint32_t lbs = o->logical_block_size ? o->logical_block_size : 512;
	int ret;

	if (!o->node || !o->id)
		return vd_error_set(err, -EINVAL, "An export needs an id and a node");
	if (o->num_queues > 64)
		return vd_error_set(err, -EINVAL, "num-queues must be between 1 and 64");
	if (lbs < 512 || lbs > 65536 || (lbs & (lbs - 1)))
		return vd_error_set(err, -EINVAL,
				    "logical-block-size must be a power of two between 512 and "
				    "65536");
	if (o->writable && vd_node_is_read_only(o->node))
		return vd_error_set(err, -EROFS, "Cannot export read-only node as writable");
	if (!vd_loop_current())
		return vd_error_set(err, -EINVAL, "No event loop");
	e = calloc(1, sizeof(*e));
	if (!e)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	e->id = strdup(o->id);
	e->serial = o->serial ? strdup(o->serial) : NULL;
	if (!e->id || (o->serial && !e->serial)) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	e->loop = vd_loop_current();
	e->writable = o->writable;
	e->num_queues = o->num_queues ? o->num_queues : 1;
	e->lbs = lbs;
	if (o->path) {
		e->listen_fd = listen_unix(o->path, err);
		if (e->listen_fd < 0) {
			ret = e->listen_fd;
			goto fail;
		}
		e->path = strdup(o->path);
		if (!e->path) {
			close(e->listen_fd);
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto fail;
		}
	} else if (o->listen_fd >= 0) {
		e->listen_fd = o->listen_fd;
	} else {
		ret = vd_error_set(err, -EINVAL, "An export needs a socket");
		goto fail;
	}
	ret = vd_loop_set_fd_handler(e->loop, e->listen_fd, accept_conn, NULL, e);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Cannot watch the socket");
		goto fail_sock;
	}
	/* Errors are reported to the front end (QEMU's exports have no
	 * rerror/werror): nothing is kept for a "cont" that never comes. */
	ret = vd_blk_new(o->reg, NULL, &e->blk);
	if (ret < 0) {
		vd_error_set(err, ret, "Out of memory");
		goto fail_handler;
	}
	vd_blk_set_on_error(e->blk, VD_BLK_ON_ERROR_REPORT, VD_BLK_ON_ERROR_REPORT);
	vd_blk_set_read_only(e->blk, !o->writable);
	ret = vd_blk_insert_node(e->blk, o->node);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Cannot attach the export to its node");
		goto fail_blk;
	}
	*out = e;
	return 0;

fail_blk:
	vd_blk_unref(e->blk);
fail_handler:
	vd_loop_set_fd_handler(e->loop, e->listen_fd, NULL, NULL, NULL);
fail_sock:
	close(e->listen_fd);
	if (e->path)
		unlink(e->path);
fail:
	free(e->path);
	free(e->id);
	free(e->serial);
	free(e);
	return ret;
}

/* block_resize on the exported node: every front end learns the new
 * capacity (QEMU's vu_blk_exp_resize). */
static void export_resized(void *opaque)
{
	struct vd_export *e = opaque;

	for (struct vub_conn *c = e->conns; c; c = vub_conn_next(c))
		vub_conn_config_changed(c);
}

static const struct vd_blk_dev_ops export_blk_ops = {.resize = export_resized};

void vd_export_free(struct vd_export *e)
{
	if (!e)
		return;
	vd_loop_set_fd_handler(e->loop, e->listen_fd, NULL, NULL, NULL);
	close(e->listen_fd);
	if (e->path)
		unlink(e->path);
	while (e->conns)
		vub_conn_free(e->conns);
	/* Data the guests wrote is on disk before the export goes. */
	vd_blk_flush(e->blk);
	if (vd_blk_has_dev(e->blk))
		vd_blk_detach_dev(e->blk);
	vd_blk_unref(e->blk);
	free(e->path);
	free(e->id);
	free(e->serial);
	free(e);
}

const char *vd_export_id(const struct vd_export *e)
{
	return e->id;
}

struct vd_blk *vd_export_blk(const struct vd_export *e)
{
	return e->blk;
}

int vd_export_connections(const struct vd_export *e)
{
	return e->nconns;
}

/* --- the set ----------------------------------------------------------------- */

/*
 * The set lives on the main loop (current at creation).  An export runs on its
 * node's loop: the main loop, or an I/O thread's when iothread= moved the node
 * there.  Everything that touches an export or its node runs on that loop
 * through vd_loop_call_wait(), while the main thread waits; so the registry,
 * which belongs to the main loop, may be changed there too.
 */
struct export_entry {
	struct vd_export *e; /* type=vhost-user-blk; or */
	struct vd_nbd_export *nbd; /* type=nbd, on the set's NBD server */
	char *id;
	char *node_name;
	struct vd_node *node;
	struct vd_loop *loop; /* the export's */
	/* Being deleted: a nested loop iteration during the deletion (a flush)
	 * may serve another QMP command, which must not find it. */
	bool deleting;
	struct export_entry *next;
};

struct vd_export_set {
	struct vd_blk_registry *reg;
	struct vd_qmp_server *qmp;
	struct vd_loop *loop; /* main */
	vd_export_iothread_fn *find_iothread;
	void *iothread_opaque;
	struct export_entry *list; /* in creation order */
	struct vd_nbd_server *nbd; /* --nbd-server, nbd-server-start */
	/* nbd-server-stop is removing the NBD exports: its nested waits may
	 * serve other QMP commands, which must leave the server alone. */
	bool nbd_stopping;
};

int vd_export_set_new(struct vd_blk_registry *reg, struct vd_export_set **out)
{
	struct vd_export_set *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->reg = reg;
	s->loop = vd_loop_current();
	*out = s;
	return 0;
}

void vd_export_set_iothreads(struct vd_export_set *s, vd_export_iothread_fn *fn, void *opaque)
{
	s->find_iothread = fn;
	s->iothread_opaque = opaque;
}

static void entry_free(struct vd_export_set *s, struct export_entry *x);

bool vd_export_set_uses_loop(const struct vd_export_set *s, const struct vd_loop *loop)
{
	for (const struct export_entry *x = s->list; x; x = x->next)
		if (x->loop == loop)
			return true;
	for (struct vd_node *n = vd_blk_registry_next_node(s->reg, NULL); n;
	     n = vd_blk_registry_next_node(s->reg, n))
		if (vd_node_loop(n) == loop)
			return true;
	return false;
}

void vd_export_set_free(struct vd_export_set *s)
{
	if (!s)
		return;
	s->qmp = NULL; /* going away: no events */
	while (s->list)
		entry_free(s, s->list);
	vd_nbd_server_free(s->nbd);
	free(s);
}

int vd_export_set_count(const struct vd_export_set *s)
{
	int n = 0;

	for (struct export_entry *x = s->list; x; x = x->next)
		n++;
	return n;
}

static struct export_entry **find_entry(struct vd_export_set *s, const char *id)
{
	struct export_entry **pp;

	for (pp = &s->list; *pp; pp = &(*pp)->next)
		if (!(*pp)->deleting && !strcmp((*pp)->id, id))
			return pp;
	return NULL;
}

/* The first node of @n's subtree that @p's subtree also holds, or NULL: the
 * two graphs overlap. */
static struct vd_node *shared_child(struct vd_node *p, struct vd_node *n)
{
	struct vd_node *c;

	if (!n)
		return NULL;
	if (vd_node_contains(p, n))
		return n;
	c = shared_child(p, vd_node_file_child(n));
	return c ? c : shared_child(p, vd_node_backing(n));
}

/* Does another export, or a node of the graph outside @n's subtree, use a
 * node of @n's subtree?  Then @n cannot change loops on its own. */
static int node_shared(struct vd_export_set *s, struct vd_node *n, struct vd_error *err)
{
	struct vd_node *c;

	for (struct export_entry *x = s->list; x; x = x->next)
		if (shared_child(x->node, n))
			return vd_error_set(err, -EBUSY,
					    "Cannot change iothread of active block backend");
	for (struct vd_node *p = vd_blk_registry_next_node(s->reg, NULL); p;
	     p = vd_blk_registry_next_node(s->reg, p)) {
		if (vd_node_contains(n, p) || !(c = shared_child(p, n)))
			continue;
		return vd_error_set(err, -EBUSY,
				    "Cannot change iothread: node '%s' is used by node '%s'",
				    vd_node_name(c), vd_node_name(p));
	}
	return 0;
}

/* Graphs on an I/O thread that no export uses any more come back to the
 * main loop (which closes them at the end).  Whole graphs move: the nodes the
 * registry holds are their roots, and an export of a node inside one keeps
 * all of it where it is. */
static void nodes_home(struct vd_export_set *s)
{
	if (!s->loop)
		return;
	for (struct vd_node *p = vd_blk_registry_next_node(s->reg, NULL); p;
	     p = vd_blk_registry_next_node(s->reg, p)) {
		struct vd_error err = {0};
		bool used = false;

		if (vd_node_loop(p) == s->loop)
			continue;
		for (struct export_entry *x = s->list; x && !used; x = x->next)
			used = shared_child(x->node, p) || shared_child(p, x->node);
		if (!used && vd_node_set_loop(p, s->loop, &err) < 0)
			vd_message(VD_MSG_ERROR, "vdisk: %s", err.msg);
	}
}

/* iothread= and fixed-iothread=: move @node's graph to the I/O thread, as
 * QEMU's blk_exp_add does; when that is impossible, the export stays on
 * the node's loop unless @fixed.  *@loop: where the export will run. */
static int export_loop(struct vd_export_set *s, struct vd_node *node, const char *iothread,
		       bool fixed, struct vd_loop **loop, struct vd_error *err)
{
	struct vd_loop *want;
	struct vd_error merr = {0};
	int ret;

	*loop = vd_node_loop(node) ? vd_node_loop(node) : s->loop;
	if (!iothread)
		return 0;
	want = s->find_iothread ? s->find_iothread(s->iothread_opaque, iothread) : NULL;
	if (!want)
		return vd_error_set(err, -ENOENT, "iothread \"%s\" not found", iothread);
	if (want == *loop)
		return 0;
	ret = node_shared(s, node, &merr);
	if (ret == 0)
		ret = vd_node_set_loop(node, want, &merr);
	if (ret == 0)
		*loop = want;
	else if (fixed)
		return vd_error_set(err, ret, "%s", merr.msg);
	return 0;
}

struct export_call {
	struct vd_export_set *s;
	struct vd_vhost_user_blk_opts *o;
	struct export_entry *x;
	bool hard;
	struct vd_error *err;
	int ret;
};

static void entry_free_fn(void *opaque)
{
	struct export_call *k = opaque;
	int conns =
		k->x->nbd ? vd_nbd_export_connections(k->x->nbd) : vd_export_connections(k->x->e);

	if (!k->hard && conns > 0) {
		k->ret = vd_error_set(k->err, -EBUSY, "export '%s' still in use", k->x->id);
		return;
	}
	if (k->x->nbd)
		vd_nbd_export_free(k->x->nbd);
	else
		vd_export_free(k->x->e);
	k->ret = 0;
}

/* @x, whose export is gone, leaves the list (which may have changed while
 * it was freed: it is found again) and its node goes home if unused. */
static void entry_remove(struct vd_export_set *s, struct export_entry *x)
{
	struct export_entry **pp;

	for (pp = &s->list; *pp != x; pp = &(*pp)->next)
		;
	*pp = x->next;
	nodes_home(s);
	vd_node_unref(x->node);
	if (s->qmp)
		vd_qmp_emit_event(s->qmp, "BLOCK_EXPORT_DELETED", json_pack("{s:s}", "id", x->id));
	free(x->node_name);
	free(x->id);
	free(x);
}

/* Free @k->x's export, the entry staying listed (its node is in use until
 * then): on the export's loop; an NBD export here, on the server's loop
 * (its connections are closed on theirs). */
static void entry_export_free(struct export_call *k)
{
	if (k->x->nbd)
		entry_free_fn(k);
	else
		vd_loop_call_wait(k->x->loop, entry_free_fn, k);
}

/* Free @x's export whatever its clients, then @x (no other command finds
 * it meanwhile). */
static void entry_free(struct vd_export_set *s, struct export_entry *x)
{
	struct export_call k = {.s = s, .x = x, .hard = true};

	x->deleting = true;
	entry_export_free(&k);
	entry_remove(s, x);
}

/* On the export's loop: the export and an anonymous backend with the export
 * as its device, so that block_resize reaches export_resized().  (QEMU's
 * export backends have resize callbacks without a device; here the device
 * makes the backend show up in query-block, under this qdev id.) */
static void entry_create_fn(void *opaque)
{
	struct export_call *k = opaque;
	struct export_entry *x = k->x;
	char *qdev = NULL;

	k->o->reg = k->s->reg;
	k->ret = vd_vhost_user_blk_export_new(k->o, &x->e, k->err);
	if (k->ret < 0)
		return;
	if (asprintf(&qdev, "/objects/export/%s", k->o->id) < 0)
		qdev = NULL;
	if (!qdev)
		k->ret = vd_error_set(k->err, -ENOMEM, "Out of memory");
	else if (vd_blk_attach_dev(x->e->blk, qdev, &export_blk_ops, x->e) < 0)
		k->ret = vd_error_set(k->err, -EBUSY, "Cannot attach the export to its node");
	free(qdev);
	if (k->ret < 0) {
		vd_export_free(x->e);
		x->e = NULL;
	}
}

/* --- NBD: one server per set, exports of type=nbd on it ----------------------- */

int vd_export_set_nbd_server_start(struct vd_export_set *s, struct vd_opts *opts,
				   struct vd_error *err)
{
	static const char *const addr_types[] = {"unix", "inet", "fd", NULL};
	struct vd_nbd_server_opts so = {0};
	const char *str, *tls, *authz;
	char *identity = NULL;
	uint64_t maxc;
	int addr_type, fd = -1, ret;

	if (s->nbd)
		return vd_error_set(err, -EEXIST, "NBD server already running");
	ret = vd_opts_get_enum(opts, "addr.type", addr_types, -1, &addr_type, err);
	if (ret == 0)
		ret = vd_opts_get_u64(opts, "max-connections", 0, &maxc, err);
	if (ret < 0)
		return ret;
	if (maxc > INT32_MAX)
		return vd_error_set(err, -EINVAL, "max-connections is out of range");
	so.max_connections = (int)maxc;
	/* The command line flattens SocketAddress (addr.path); QMP's
	 * nbd-server-start has SocketAddressLegacy (addr.data.path). */
#define ADDR(key)                                                        \
	(vd_opts_get(opts, "addr." key) ? vd_opts_get(opts, "addr." key) \
					: vd_opts_get(opts, "addr.data." key))
	switch (addr_type) {
	case 0:
		so.path = ADDR("path");
		if (!so.path)
			return vd_error_set(err, -EINVAL, "Parameter 'addr.path' is missing");
		break;
	case 1:
		so.host = ADDR("host");
		so.port = ADDR("port");
		if (!so.host || !so.port)
			return vd_error_set(err, -EINVAL,
					    "Parameters 'addr.host' and "
					    "'addr.port' are needed");
		break;
	case 2: {
		char *end;

		str = ADDR("str");
		if (!str)
			return vd_error_set(err, -EINVAL, "Parameter 'addr.str' is missing");
		fd = (int)strtol(str, &end, 10);
		if (*end || fd < 0)
			return vd_error_set(err, -EINVAL, "'%s' is not a file descriptor", str);
		so.listen_fds = &fd;
		so.n_listen_fds = 1;
		break;
	}
	default:
		return vd_error_set(err, -EINVAL, "Parameter 'addr.type' is missing");
	}
#undef ADDR
	vd_opts_get_dict(opts, "addr");
	tls = vd_opts_get(opts, "tls-creds");
	authz = vd_opts_get(opts, "tls-authz");
	ret = vd_opts_check_unused(opts, NULL, err);
	if (ret == 0 && authz && !tls)
		ret = vd_error_set(err, -EINVAL, "tls-authz is not permitted without tls-creds");
	if (ret == 0 && tls)
		ret = vd_tls_creds_lookup(tls, VD_TLS_ENDPOINT_SERVER, &so.tls_creds, err);
	if (ret == 0 && authz)
		ret = vd_tls_authz_lookup(authz, &identity, err);
	if (ret == 0) {
		so.tls_authz_identity = identity;
		ret = vd_nbd_server_new(&so, &s->nbd, err);
	}
	vd_tls_creds_unref(so.tls_creds);
	free(identity);
	return ret;
}

int vd_export_set_nbd_server_stop(struct vd_export_set *s, struct vd_error *err)
{
	if (!s->nbd)
		return vd_error_set(err, -ENOENT, "NBD server not running");
	if (s->nbd_stopping)
		return vd_error_set(err, -EBUSY, "NBD server is being stopped");
	/* An export of it is being removed by another command, which waits
	 * (for requests in flight, a flush) inside the server. */
	for (struct export_entry *x = s->list; x; x = x->next)
		if (x->nbd && x->deleting)
			return vd_error_set(err, -EBUSY, "NBD export '%s' is being removed", x->id);
	/* Its exports go first (QEMU: nbd-server-stop removes them all).  All
	 * are marked first, so that no other command finds one.  Each stays
	 * on the list while it is freed (its node is in use until then: a
	 * nested nodes_home() must not move it), and the list is walked from
	 * its head each time, since it may change meanwhile. */
	s->nbd_stopping = true;
	for (struct export_entry *x = s->list; x; x = x->next)
		if (x->nbd)
			x->deleting = true;
	for (;;) {
		struct export_entry *x;

		for (x = s->list; x && !x->nbd; x = x->next)
			;
		if (!x)
			break;
		entry_free(s, x);
	}
	vd_nbd_server_free(s->nbd);
	s->nbd = NULL;
	s->nbd_stopping = false;
	return 0;
}

static int nbd_export_add(struct vd_export_set *s, struct vd_opts *opts, const char *id,
			  const char *node_name, struct vd_node *node, struct vd_error *err)
{
	struct vd_nbd_export_opts o = {.node = node, .reg = s->reg, .multi_conn = true};
	struct export_entry *x, **pp;
	const char *iothread;
	struct vd_loop *loop;
	bool writable, fixed;
	int ret;

	if (!s->nbd || s->nbd_stopping)
		return vd_error_set(err, -EINVAL, "NBD server not running");
	ret = vd_opts_get_bool(opts, "writable", false, &writable, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "fixed-iothread", false, &fixed, err);
	if (ret < 0)
		return ret;
	o.writable = writable;
	o.name = vd_opts_get(opts, "name");
	if (!o.name)
		o.name = node_name;
	o.description = vd_opts_get(opts, "description");
	iothread = vd_opts_get(opts, "iothread");
	vd_opts_get(opts, "writethrough");
	vd_opts_get(opts, "allocation-depth");
	ret = vd_opts_check_unused(opts, NULL, err);
	if (ret < 0)
		return ret;
	ret = export_loop(s, node, iothread, fixed, &loop, err);
	if (ret < 0)
		return ret;
	x = calloc(1, sizeof(*x));
	if (!x || !(x->node_name = strdup(node_name)) || !(x->id = strdup(id))) {
		if (x)
			free(x->node_name);
		free(x);
		nodes_home(s);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = vd_nbd_export_new(s->nbd, &o, &x->nbd, err);
	if (ret < 0) {
		free(x->node_name);
		free(x->id);
		free(x);
		nodes_home(s);
		return ret;
	}
	x->node = node;
	x->loop = loop;
	vd_node_ref(node);
	for (pp = &s->list; *pp; pp = &(*pp)->next)
		;
	*pp = x;
	return 0;
}

int vd_export_set_add(struct vd_export_set *s, struct vd_opts *opts, struct vd_error *err)
{
	static const char *const types[] = {"vhost-user-blk", "nbd", NULL};
	static const char *const addr_types[] = {"unix", "fd", NULL};
	struct vd_vhost_user_blk_opts o = {.listen_fd = -1};
	struct export_entry *x;
	const char *node_name, *str, *iothread;
	struct vd_loop *loop;
	uint64_t nq, lbs;
	int type, addr_type, ret;
	bool writable, fixed;

	ret = vd_opts_get_enum(opts, "type", types, -1, &type, err);
	if (ret < 0)
		return ret;
	if (type < 0)
		return vd_error_set(err, -EINVAL, "Parameter 'type' is missing");
	o.id = vd_opts_get(opts, "id");
	if (!o.id)
		return vd_error_set(err, -EINVAL, "Parameter 'id' is missing");
	node_name = vd_opts_get(opts, "node-name");
	if (!node_name)
		return vd_error_set(err, -EINVAL, "Parameter 'node-name' is missing");
	if (find_entry(s, o.id))
		return vd_error_set(err, -EEXIST, "Block export id '%s' is already in use", o.id);
	o.node = vd_blk_registry_find_node(s->reg, node_name);
	if (!o.node)
		return vd_error_set(err, -ENOENT, "Cannot find device=%s nor node_name=%s",
				    node_name, node_name);
	if (type == 1)
		return nbd_export_add(s, opts, o.id, node_name, o.node, err);
	ret = vd_opts_get_bool(opts, "writable", false, &writable, err);
	if (ret == 0)
		ret = vd_opts_get_u64(opts, "num-queues", 1, &nq, err);
	if (ret == 0)
		ret = vd_opts_get_size(opts, "logical-block-size", 512, &lbs, err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "addr.type", addr_types, -1, &addr_type, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "fixed-iothread", false, &fixed, err);
	if (ret < 0)
		return ret;
	iothread = vd_opts_get(opts, "iothread");
	o.serial = vd_opts_get(opts, "serial");
	if (nq < 1 || nq > 64)
		return vd_error_set(err, -EINVAL, "num-queues must be between 1 and 64");
	if (lbs > 65536)
		return vd_error_set(err, -EINVAL, "logical-block-size is too large");
	o.num_queues = (uint16_t)nq;
	o.logical_block_size = (uint32_t)lbs;
	o.writable = writable;
	if (addr_type == 0) {
		o.path = vd_opts_get(opts, "addr.path");
		if (!o.path)
			return vd_error_set(err, -EINVAL, "Parameter 'addr.path' is missing");
	} else if (addr_type == 1) {
		char *end;
		long fd;

		str = vd_opts_get(opts, "addr.str");
		if (!str)
			return vd_error_set(err, -EINVAL, "Parameter 'addr.str' is missing");
		fd = strtol(str, &end, 10);
		if (*end || fd < 0 || fd > INT32_MAX)
			return vd_error_set(err, -EINVAL, "'%s' is not a file descriptor", str);
		o.listen_fd = (int)fd;
	} else {
		return vd_error_set(err, -EINVAL, "Parameter 'addr.type' is missing");
	}
	vd_opts_get_dict(opts, "addr");
	ret = vd_opts_check_unused(opts, NULL, err);
	if (ret < 0)
		return ret;

	ret = export_loop(s, o.node, iothread, fixed, &loop, err);
	if (ret < 0)
		return ret;

	x = calloc(1, sizeof(*x));
	if (!x || !(x->node_name = strdup(node_name))) {
		free(x);
		nodes_home(s);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	x->node = o.node;
	x->loop = loop;
	x->id = strdup(o.id);
	if (!x->id) {
		free(x->node_name);
		free(x);
		nodes_home(s);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	{
		struct export_call k = {.s = s, .o = &o, .x = x, .err = err};

		vd_loop_call_wait(loop, entry_create_fn, &k);
		ret = k.ret;
	}
	if (ret < 0) {
		free(x->node_name);
		free(x->id);
		free(x);
		nodes_home(s);
		return ret;
	}
	vd_node_ref(x->node);
	{
		struct export_entry **pp = &s->list;
		while (*pp)
			pp = &(*pp)->next;
		*pp = x;
	}
	return 0;
}

int vd_export_set_del(struct vd_export_set *s, const char *id, bool hard, struct vd_error *err)
{
	struct export_entry **pp = find_entry(s, id), *x;
	struct export_call k = {.s = s, .hard = hard, .err = err};

	if (!pp)
		return vd_error_set(err, -ENOENT, "Export '%s' is not found", id);
	x = *pp;
	k.x = x;
	x->deleting = true;
	entry_export_free(&k);
	if (k.ret < 0) {
		x->deleting = false;
		return k.ret;
	}
	entry_remove(s, x);
	return 0;
}

/* --- QMP -------------------------------------------------------------------- */

static json_t *qmp_export_add(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	struct vd_export_set *s = opaque;
	struct vd_error err = {0};
	struct vd_opts *o;
	int ret = vd_qmp_args_to_opts(args, &o, &err);

	if (ret == 0)
		ret = vd_export_set_add(s, o, &err);
	vd_opts_free(o);
	if (ret < 0)
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "%s", err.msg);
	return NULL;
}

static json_t *qmp_export_del(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	static const char *const modes[] = {"safe", "hard", NULL};
	static const struct vd_qmp_arg spec[] = {
		{"id", VD_QMP_ARG_STR}, {"mode", VD_QMP_ARG_ENUM, true, modes}, {NULL}};
	struct vd_export_set *s = opaque;
	struct vd_error err = {0};
	const char *mode;
	char *id;

	if (vd_qmp_check_args(args, spec, qerr) < 0)
		return NULL;
	mode = json_string_value(json_object_get(args, "mode"));
	id = strdup(json_string_value(json_object_get(args, "id")));
	if (!id) {
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "Out of memory");
		return NULL;
	}
	if (vd_export_set_del(s, id, mode && !strcmp(mode, "hard"), &err) < 0)
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "%s", err.msg);
	free(id);
	return NULL;
}

static json_t *qmp_query_exports(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	static const struct vd_qmp_arg spec[] = {{NULL}};
	struct vd_export_set *s = opaque;
	json_t *list;

	if (vd_qmp_check_args(args, spec, qerr) < 0)
		return NULL;
	list = json_array();
	for (struct export_entry *x = s->list; x; x = x->next)
		json_array_append_new(list,
				      json_pack("{s:s,s:s,s:s,s:b}", "type",
						x->nbd ? "nbd" : "vhost-user-blk", "id", x->id,
						"node-name", x->node_name, "shutting-down", 0));
	return list;
}

/* nbd-server-start (QEMU 7.2: addr is a SocketAddressLegacy, {"type":
 * "unix", "data": {"path": ...}}), nbd-server-add, nbd-server-remove,
 * nbd-server-stop. */
static json_t *qmp_nbd_start(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	struct vd_error err = {0};
	struct vd_opts *o;
	int ret = vd_qmp_args_to_opts(args, &o, &err);

	if (ret == 0)
		ret = vd_export_set_nbd_server_start(opaque, o, &err);
	vd_opts_free(o);
	if (ret < 0)
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "%s", err.msg);
	return NULL;
}

static json_t *qmp_nbd_add(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	static const struct vd_qmp_arg spec[] = {{"device", VD_QMP_ARG_STR},
						 {"name", VD_QMP_ARG_STR, true},
						 {"description", VD_QMP_ARG_STR, true},
						 {"writable", VD_QMP_ARG_BOOL, true},
						 {"bitmap", VD_QMP_ARG_STR, true},
						 {NULL}};
	struct vd_error err = {0};
	const char *dev, *name, *desc;
	struct vd_opts *o;
	int ret;

	if (vd_qmp_check_args(args, spec, qerr) < 0)
		return NULL;
	if (json_object_get(args, "bitmap")) {
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "Dirty bitmaps are not exported yet");
		return NULL;
	}
	dev = json_string_value(json_object_get(args, "device"));
	name = json_string_value(json_object_get(args, "name"));
	desc = json_string_value(json_object_get(args, "description"));
	o = vd_opts_new();
	ret = o ? 0 : -ENOMEM;
	if (ret == 0)
		ret = vd_opts_set(o, "type", "nbd");
	if (ret == 0)
		ret = vd_opts_set(o, "id", name ? name : dev);
	if (ret == 0)
		ret = vd_opts_set(o, "node-name", dev);
	if (ret == 0)
		ret = vd_opts_set(o, "name", name ? name : dev);
	if (ret == 0 && desc)
		ret = vd_opts_set(o, "description", desc);
	if (ret == 0)
		ret = vd_opts_set(o, "writable",
				  json_is_true(json_object_get(args, "writable")) ? "on" : "off");
	if (ret < 0)
		vd_error_set(&err, ret, "Out of memory");
	else
		ret = vd_export_set_add(opaque, o, &err);
	vd_opts_free(o);
	if (ret < 0)
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "%s", err.msg);
	return NULL;
}

/* As block-export-del, by export name (nbd-server-add made id = name). */
static json_t *qmp_nbd_remove(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	static const char *const modes[] = {"safe", "hard", NULL};
	static const struct vd_qmp_arg spec[] = {
		{"name", VD_QMP_ARG_STR}, {"mode", VD_QMP_ARG_ENUM, true, modes}, {NULL}};
	struct vd_error err = {0};
	const char *mode;
	char *name;

	if (vd_qmp_check_args(args, spec, qerr) < 0)
		return NULL;
	mode = json_string_value(json_object_get(args, "mode"));
	name = strdup(json_string_value(json_object_get(args, "name")));
	if (!name) {
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "Out of memory");
		return NULL;
	}
	if (vd_export_set_del(opaque, name, mode && !strcmp(mode, "hard"), &err) < 0)
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "%s", err.msg);
	free(name);
	return NULL;
}

static json_t *qmp_nbd_stop(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	static const struct vd_qmp_arg spec[] = {{NULL}};
	struct vd_error err = {0};

	if (vd_qmp_check_args(args, spec, qerr) < 0)
		return NULL;
	if (vd_export_set_nbd_server_stop(opaque, &err) < 0)
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "%s", err.msg);
	return NULL;
}

int vd_export_set_register_qmp(struct vd_export_set *s, struct vd_qmp_server *qmp)
{
	int ret;

	s->qmp = qmp;
	ret = vd_qmp_register(qmp, "block-export-add", qmp_export_add, s);
	if (ret == 0)
		ret = vd_qmp_register(qmp, "block-export-del", qmp_export_del, s);
	if (ret == 0)
		ret = vd_qmp_register(qmp, "query-block-exports", qmp_query_exports, s);
	if (ret == 0)
		ret = vd_qmp_register(qmp, "nbd-server-start", qmp_nbd_start, s);
	if (ret == 0)
		ret = vd_qmp_register(qmp, "nbd-server-add", qmp_nbd_add, s);
	if (ret == 0)
		ret = vd_qmp_register(qmp, "nbd-server-remove", qmp_nbd_remove, s);
	if (ret == 0)
		ret = vd_qmp_register(qmp, "nbd-server-stop", qmp_nbd_stop, s);
	return ret;
}
