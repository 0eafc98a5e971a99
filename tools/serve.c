/* SPDX-License-Identifier: MIT */
/*
 * vdisk serve: a storage daemon with qemu-storage-daemon's command line.
 *
 *   vdisk serve [--blockdev OPTS]... [--export OPTS]... [--object OPTS]...
 *               [--chardev OPTS]... [--monitor OPTS]... [--pidfile PATH]
 *
 *   --blockdev driver=file,node-name=f,filename=disk.qcow2
 *   --blockdev driver=qcow2,node-name=d,file=f
 *   --export type=vhost-user-blk,id=e,node-name=d,addr.type=unix,
 *            addr.path=vhost.sock,writable=on,num-queues=2
 *   --chardev socket,path=qmp.sock,server=on,wait=off,id=c --monitor chardev=c
 *   --object iothread,id=io0 (and iothread=io0 on an --export)
 *   --object tls-creds-x509,id=t0,dir=DIR,endpoint=server
 *   --nbd-server addr.type=unix,addr.path=nbd.sock,tls-creds=t0
 *
 * As in QEMU, a --blockdev may name an earlier one as its file (or backing)
 * child by node-name.  The daemon runs until QMP "quit", SIGTERM or SIGINT;
 * then it finishes the requests in flight, flushes and closes the images and
 * exits 0.  This file parses the command line and keeps the I/O threads
 * (--object iothread, QMP object-add/object-del/query-iothreads); exports live
 * in export/, threads in util/iothread.c.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include <vdisk/backend.h>
#include <vdisk/export.h>
#include <vdisk/iothread.h>
#include <vdisk/qmp.h>
#include <vdisk/tls.h>

#include "tools/tools.h"

static void serve_usage(FILE *f)
{
	fprintf(f, "usage: vdisk serve [options]\n"
		   "qemu-storage-daemon's command line:\n"
		   "  --blockdev OPTS   open a block node "
		   "(driver=file|raw|qcow2|...,node-name=N,...);\n"
		   "                    file=N / backing=N name an earlier --blockdev\n"
		   "  --export OPTS     type=vhost-user-blk,id=ID,node-name=N,addr.type=unix,\n"
		   "                    addr.path=SOCK[,writable=on][,num-queues=Q]\n"
		   "                    [,logical-block-size=512][,serial=S]\n"
		   "                    [,iothread=ID[,fixed-iothread=on]]\n"
		   "                    (or addr.type=fd,addr.str=FD for a listening socket)\n"
		   "  --export OPTS     type=nbd,id=ID,node-name=N[,name=NAME][,writable=on]\n"
		   "                    [,description=TEXT][,iothread=ID[,fixed-iothread=on]]\n"
		   "                    (served by --nbd-server)\n"
		   "  --nbd-server OPTS addr.type=unix,addr.path=SOCK | addr.type=inet,\n"
		   "                    addr.host=H,addr.port=P [,max-connections=N]\n"
		   "                    [,tls-creds=ID[,tls-authz=ID]]  (TLS required)\n"
		   "  --object tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=off]\n"
		   "  --object tls-creds-psk,id=ID,dir=DIR,endpoint=server\n"
		   "  --object authz-simple,id=ID,identity=NAME  the client tls-authz lets in\n"
		   "                    TLS objects (also QMP object-add)\n"
		   "  --object iothread,id=ID   an I/O thread; iothread=ID on an --export\n"
		   "                    serves it there (fixed-iothread=on: or fail)\n"
		   "  --chardev socket,id=ID,path=P,server=on,wait=off\n"
		   "  --monitor [chardev=]ID    QMP on that chardev\n"
		   "  --pidfile PATH    write the process id\n");
}

static struct vd_notifier term_notifier = {.fd = -1};

static void on_signal(int sig)
{
	(void)sig;
	vd_notifier_set(&term_notifier);
}

static void on_term(void *opaque)
{
	vd_notifier_test_and_clear(&term_notifier);
	vd_loop_stop(opaque);
}

struct iothread_obj {
	struct vd_iothread *t;
	/* As given (query-iothreads reports them); aio-max-batch is not used. */
	uint64_t poll_max_ns, poll_grow, poll_shrink, aio_max_batch;
};

struct serve {
	struct vd_loop *loop;
	struct vd_qmp_server *qmp;
	struct vd_export_set *exports;
	struct iothread_obj *iothreads;
	int n_iothreads;
};

static struct iothread_obj *find_iothread(struct serve *s, const char *id)
{
	for (int i = 0; i < s->n_iothreads; i++)
		if (!strcmp(vd_iothread_id(s->iothreads[i].t), id))
			return &s->iothreads[i];
	return NULL;
}

static struct vd_loop *iothread_loop(void *opaque, const char *id)
{
	struct iothread_obj *o = find_iothread(opaque, id);

	return o ? vd_iothread_loop(o->t) : NULL;
}

/* --object iothread,id=ID[,poll-max-ns=..,poll-grow=..,poll-shrink=..] and
 * QMP object-add: the loop polls adaptively as QEMU's does when poll-max-ns
 * is given (the default is VD_IOTHREAD_POLL_MAX_NS, not QEMU's); aio-max-batch is
 * accepted and reported (the io_uring engine submits one batch per loop
 * iteration whatever its size). */
static int add_iothread(struct serve *s, struct vd_opts *o, struct vd_error *err)
{
	static const char *const keys[] = {"poll-max-ns", "poll-grow", "poll-shrink",
					   "aio-max-batch"};
	struct iothread_obj obj = {0}, *grown;
	uint64_t *vals[] = {&obj.poll_max_ns, &obj.poll_grow, &obj.poll_shrink, &obj.aio_max_batch};
	const char *type = vd_opts_get(o, "qom-type"), *id = vd_opts_get(o, "id");
	int ret;

	if (!type || strcmp(type, "iothread"))
		return vd_error_set(err, -EINVAL, "Invalid object type '%s'", type ? type : "");
	if (!id)
		return vd_error_set(err, -EINVAL, "Parameter 'id' is missing");
	if (find_iothread(s, id))
		return vd_error_set(err, -EEXIST,
				    "attempt to add duplicate property '%s' to object (type "
				    "'container')",
				    id);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		ret = vd_opts_get_u64(o, keys[i], i == 0 ? VD_IOTHREAD_POLL_MAX_NS : 0, vals[i],
				      err);
		if (ret < 0)
			return ret;
		if (*vals[i] > INT64_MAX)
			return vd_error_set(err, -EINVAL, "Parameter '%s' is out of range",
					    keys[i]);
	}
	ret = vd_opts_check_unused(o, NULL, err);
	if (ret < 0)
		return ret;
	grown = realloc(s->iothreads, ((size_t)s->n_iothreads + 1) * sizeof(*grown));
	if (!grown)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	s->iothreads = grown;
	ret = vd_iothread_new(id, &obj.t);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Cannot start iothread '%s'", id);
	vd_iothread_set_poll(obj.t, (int64_t)obj.poll_max_ns, (int64_t)obj.poll_grow,
			     (int64_t)obj.poll_shrink);
	s->iothreads[s->n_iothreads++] = obj;
	return 0;
}

static json_t *qmp_object_add(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	struct vd_error err = {0};
	struct vd_opts *o;
	int ret = vd_qmp_args_to_opts(args, &o, &err);

	/* TLS credentials go to the registry of <vdisk/tls.h>, where
	 * nbd-server-start's tls-creds finds them. */
	if (ret == 0 && vd_tls_creds_type(vd_opts_peek(o, "qom-type")))
		ret = vd_tls_creds_add_opts(o, &err);
	else if (ret == 0 && vd_tls_authz_type(vd_opts_peek(o, "qom-type")))
		ret = vd_tls_authz_add_opts(o, &err);
	else if (ret == 0)
		ret = add_iothread(opaque, o, &err);
	vd_opts_free(o);
	if (ret < 0)
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "%s", err.msg);
	return NULL;
}

static json_t *qmp_object_del(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	static const struct vd_qmp_arg spec[] = {{"id", VD_QMP_ARG_STR}, {NULL}};
	struct serve *s = opaque;
	struct iothread_obj *o;
	const char *id;

	if (vd_qmp_check_args(args, spec, qerr) < 0)
		return NULL;
	id = json_string_value(json_object_get(args, "id"));
	/* A running NBD server keeps its reference to the credentials. */
	if (vd_tls_creds_remove(id) == 0 || vd_tls_authz_remove(id) == 0)
		return NULL;
	o = find_iothread(s, id);
	if (!o) {
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR, "object '%s' not found", id);
		return NULL;
	}
	if (vd_export_set_uses_loop(s->exports, vd_iothread_loop(o->t))) {
		vd_qmp_error_set(qerr, VD_QMP_GENERIC_ERROR,
				 "object '%s' is in use, can not be deleted", id);
		return NULL;
	}
	vd_iothread_free(o->t);
	s->n_iothreads--;
	memmove(o, o + 1, (size_t)(s->iothreads + s->n_iothreads - o) * sizeof(*o));
	return NULL;
}

static json_t *qmp_query_iothreads(json_t *args, void *opaque, struct vd_qmp_error *qerr)
{
	static const struct vd_qmp_arg spec[] = {{NULL}};
	struct serve *s = opaque;
	json_t *list;

	if (vd_qmp_check_args(args, spec, qerr) < 0)
		return NULL;
	list = json_array();
	for (int i = 0; i < s->n_iothreads; i++) {
		struct iothread_obj *o = &s->iothreads[i];

		json_array_append_new(list, json_pack("{s:s,s:i,s:I,s:I,s:I,s:I}", "id",
						      vd_iothread_id(o->t), "thread-id",
						      (int)vd_iothread_tid(o->t), "poll-max-ns",
						      (json_int_t)o->poll_max_ns, "poll-grow",
						      (json_int_t)o->poll_grow, "poll-shrink",
						      (json_int_t)o->poll_shrink, "aio-max-batch",
						      (json_int_t)o->aio_max_batch));
	}
	return list;
}

static void quit_bh(void *opaque)
{
	struct serve *s = opaque;

	vd_qmp_emit_event(s->qmp, "SHUTDOWN",
			  json_pack("{s:b,s:s}", "guest", 0, "reason", "host-qmp-quit"));
	vd_loop_stop(s->loop);
}

static json_t *qmp_quit(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {{NULL}};
	struct serve *s = opaque;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	vd_loop_oneshot(s->loop, quit_bh, s);
	return NULL;
}

/* The blockdevs as JSON trees; a later one may pull an earlier one in as a
 * child, which is then not opened on its own. */
struct bdev {
	json_t *tree;
	const char *name;
	bool consumed;
};

static int link_children(struct bdev *b, int n, int self)
{
	static const char *const keys[] = {"file", "backing"};

	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		json_t *v = json_object_get(b[self].tree, keys[k]);
		const char *ref = json_string_value(v);

		if (!ref)
			continue;
		for (int j = 0; j < n; j++) {
			if (j == self || !b[j].name || strcmp(b[j].name, ref))
				continue;
			if (b[j].consumed) {
				tool_error("serve: node '%s' is used as a child twice", ref);
				return -EINVAL;
			}
			b[j].consumed = true;
			json_object_set(b[self].tree, keys[k], b[j].tree);
			break;
		}
	}
	return 0;
}

static int open_blockdevs(char **specs, int n, struct vd_blk_registry *reg)
{
	struct bdev *b = calloc((size_t)n + 1, sizeof(*b));
	int ret = 0;

	if (!b)
		return -ENOMEM;
	for (int i = 0; i < n && ret == 0; i++) {
		struct vd_error err = {0};
		struct vd_opts *o = NULL;
		char *js;
		json_error_t jerr;

		ret = vd_opts_parse(specs[i], NULL, &o, &err);
		if (ret < 0) {
			tool_error("--blockdev %s: %s", specs[i], err.msg);
			break;
		}
		js = vd_opts_to_json(o);
		vd_opts_free(o);
		b[i].tree = js ? json_loads(js, 0, &jerr) : NULL;
		free(js);
		if (!b[i].tree) {
			ret = -ENOMEM;
			break;
		}
		b[i].name = json_string_value(json_object_get(b[i].tree, "node-name"));
		if (!b[i].name) {
			tool_error("--blockdev %s: Parameter 'node-name' is missing", specs[i]);
			ret = -EINVAL;
			break;
		}
		ret = link_children(b, i, i);
	}
	for (int i = 0; i < n && ret == 0; i++) {
		struct vd_error err = {0};
		struct vd_opts *o = NULL;
		struct vd_node *node;
		char *text, *js = NULL;

		if (b[i].consumed)
			continue;
		text = json_dumps(b[i].tree, JSON_COMPACT);
		if (!text || asprintf(&js, "json:%s", text) < 0) {
			free(text);
			ret = -ENOMEM;
			break;
		}
		free(text);
		ret = vd_opts_parse(js, NULL, &o, &err);
		free(js);
		if (ret == 0)
			ret = vd_node_open_opts(o, VD_OPEN_RDWR, &node, &err);
		vd_opts_free(o);
		if (ret < 0) {
			tool_error("--blockdev %s: %s", specs[i], err.msg);
			break;
		}
		ret = vd_blk_registry_add_node(reg, node);
		vd_node_unref(node);
		if (ret < 0) {
			tool_error("--blockdev %s: node name already in use", specs[i]);
			break;
		}
	}
	for (int i = 0; i < n; i++)
		json_decref(b[i].tree);
	free(b);
	return ret;
}

/* --chardev socket,id=c,path=P,server=on,wait=off -> the QMP spec. */
static int chardev_spec(char **chardevs, int n, const char *id, char **out)
{
	for (int i = 0; i < n; i++) {
		struct vd_error err = {0};
		struct vd_opts *o = NULL;
		const char *cid, *backend, *path;
		bool server = false, wait_ = true;
		int ret;

		if (vd_opts_parse(chardevs[i], "backend", &o, &err) < 0) {
			tool_error("--chardev %s: %s", chardevs[i], err.msg);
			return -EINVAL;
		}
		cid = vd_opts_get(o, "id");
		if (!cid || strcmp(cid, id)) {
			vd_opts_free(o);
			continue;
		}
		backend = vd_opts_get(o, "backend");
		path = vd_opts_get(o, "path");
		ret = vd_opts_get_bool(o, "server", false, &server, &err);
		if (ret == 0)
			ret = vd_opts_get_bool(o, "wait", true, &wait_, &err);
		if (ret == 0 && (!backend || strcmp(backend, "socket") || !path))
			ret = vd_error_set(&err, -EINVAL, "only socket chardevs with a path");
		if (ret == 0)
			ret = vd_opts_check_unused(o, NULL, &err);
		if (ret == 0 && asprintf(out, "unix:%s,server=%s,wait=%s", path,
					 server ? "on" : "off", wait_ ? "on" : "off") < 0)
			ret = -ENOMEM;
		if (ret < 0)
			tool_error("--chardev %s: %s", chardevs[i], err.msg);
		vd_opts_free(o);
		return ret;
	}
	tool_error("--monitor: chardev '%s' not found", id);
	return -ENOENT;
}

static const char *const opt_names[] = {"blockdev", "export",  "object",     "chardev",
					"monitor",  "pidfile", "nbd-server", NULL};
#define N_OPTS 7

int cmd_serve(int argc, char **argv)
{
	char **lists[N_OPTS];
	int counts[N_OPTS] = {0};
	struct vd_blk_registry *reg = NULL;
	struct vd_export_set *exports = NULL;
	struct vd_qmp_block *qblock = NULL;
	struct serve s = {0};
	int status = 1;

	for (int k = 0; k < N_OPTS; k++) {
		lists[k] = calloc((size_t)argc, sizeof(char *));
		if (!lists[k]) {
			tool_error("Out of memory");
			goto out_args;
		}
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *opt, *val = NULL, *eq;
		char name[16];
		int k;

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			serve_usage(stdout);
			status = 0;
			goto out_args;
		}
		if (a[0] != '-' || a[1] != '-') {
			tool_error("serve: unexpected argument '%s'", a);
			goto out_args;
		}
		opt = a + 2;
		eq = strchr(opt, '=');
		if (eq && (size_t)(eq - opt) < sizeof(name)) {
			memcpy(name, opt, (size_t)(eq - opt));
			name[eq - opt] = '\0';
			opt = name;
			val = eq + 1;
		}
		for (k = 0; opt_names[k] && strcmp(opt_names[k], opt); k++)
			;
		if (!opt_names[k]) {
			tool_error("serve: unknown option '%s'", a);
			serve_usage(stderr);
			goto out_args;
		}
		if (!val) {
			if (i + 1 >= argc) {
				tool_error("serve: option '%s' needs an argument", a);
				goto out_args;
			}
			val = argv[++i];
		}
		lists[k][counts[k]++] = (char *)val;
	}
	signal(SIGPIPE, SIG_IGN);
	tool_raise_nofile();
	s.loop = tool_loop_init();
	if (vd_blk_registry_new(&reg) < 0 || vd_export_set_new(reg, &exports) < 0) {
		tool_error("Out of memory");
		goto out;
	}
	s.exports = exports;
	vd_export_set_iothreads(exports, iothread_loop, &s);
	for (int i = 0; i < counts[2]; i++) {
		struct vd_error err = {0};
		struct vd_opts *o = NULL;
		int ret = vd_opts_parse(lists[2][i], "qom-type", &o, &err);

		if (ret == 0)
			ret = add_iothread(&s, o, &err);
		vd_opts_free(o);
		if (ret < 0) {
			tool_error("--object %s: %s", lists[2][i], err.msg);
			goto out;
		}
	}
	if (open_blockdevs(lists[0], counts[0], reg) < 0)
		goto out;
	for (int i = 0; i < counts[6]; i++) {
		struct vd_error err = {0};
		struct vd_opts *o = NULL;
		int ret = vd_opts_parse(lists[6][i], NULL, &o, &err);

		if (ret == 0)
			ret = vd_export_set_nbd_server_start(exports, o, &err);
		vd_opts_free(o);
		if (ret < 0) {
			tool_error("--nbd-server %s: %s", lists[6][i], err.msg);
			goto out;
		}
	}
	for (int i = 0; i < counts[1]; i++) {
		struct vd_error err = {0};
		struct vd_opts *o = NULL;
		int ret = vd_opts_parse(lists[1][i], "type", &o, &err);

		if (ret == 0)
			ret = vd_export_set_add(exports, o, &err);
		vd_opts_free(o);
		if (ret < 0) {
			tool_error("--export %s: %s", lists[1][i], err.msg);
			goto out;
		}
	}
	for (int i = 0; i < counts[4]; i++) {
		struct vd_error err = {0};
		struct vd_opts *o = NULL;
		const char *id;
		char *spec = NULL;
		int ret;

		if (vd_opts_parse(lists[4][i], "chardev", &o, &err) < 0) {
			tool_error("--monitor %s: %s", lists[4][i], err.msg);
			goto out;
		}
		id = vd_opts_get(o, "chardev");
		vd_opts_get(o, "mode"); /* control is the only mode */
		ret = id ? chardev_spec(lists[3], counts[3], id, &spec) : -EINVAL;
		vd_opts_free(o);
		if (ret < 0) {
			if (!id)
				tool_error("--monitor %s: Parameter 'chardev' is missing",
					   lists[4][i]);
			goto out;
		}
		if (!s.qmp) {
			ret = vd_qmp_server_new(s.loop, &s.qmp);
			if (ret == 0)
				ret = vd_qmp_register(s.qmp, "quit", qmp_quit, &s);
			if (ret == 0)
				ret = vd_qmp_register(s.qmp, "object-add", qmp_object_add, &s);
			if (ret == 0)
				ret = vd_qmp_register(s.qmp, "object-del", qmp_object_del, &s);
			if (ret == 0)
				ret = vd_qmp_register(s.qmp, "query-iothreads", qmp_query_iothreads,
						      &s);
			if (ret == 0)
				ret = vd_qmp_block_init(s.qmp, reg, &qblock);
			if (ret == 0)
				ret = vd_export_set_register_qmp(exports, s.qmp);
			if (ret < 0) {
				free(spec);
				tool_error("Could not set up QMP: %s", strerror(-ret));
				goto out;
			}
		}
		ret = vd_qmp_server_open(s.qmp, spec, &err);
		free(spec);
		if (ret < 0) {
			tool_error("--monitor %s: %s", lists[4][i], err.msg);
			goto out;
		}
	}
	if (counts[5]) {
		FILE *f = fopen(lists[5][counts[5] - 1], "w");

		if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
			tool_error("Cannot write pid file '%s'", lists[5][counts[5] - 1]);
			goto out;
		}
	}

	if (vd_notifier_init(&term_notifier) < 0 ||
	    vd_loop_set_fd_handler(s.loop, term_notifier.fd, on_term, NULL, s.loop) < 0) {
		tool_error("Cannot set up signal handling");
		goto out;
	}
	{
		struct sigaction sa = {.sa_handler = on_signal};
		sigemptyset(&sa.sa_mask);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGHUP, &sa, NULL);
	}
	vd_loop_run(s.loop);
	status = 0;
out:
	/* Finish what is in flight, flush, close: exports first (they hold
	 * the nodes, and bring those on I/O threads back to this loop), then
	 * QMP, then the images, then the threads. */
	vd_export_set_free(exports);
	if (qblock)
		vd_qmp_block_free(qblock);
	if (s.qmp)
		vd_qmp_server_free(s.qmp);
	if (reg) {
		for (struct vd_node *n = vd_blk_registry_next_node(reg, NULL); n;
		     n = vd_blk_registry_next_node(reg, n))
			if (vd_node_flush(n) < 0)
				status = 1;
		vd_blk_registry_free(reg);
	}
	for (int i = 0; i < s.n_iothreads; i++)
		vd_iothread_free(s.iothreads[i].t);
	free(s.iothreads);
	if (term_notifier.fd >= 0) {
		vd_loop_set_fd_handler(s.loop, term_notifier.fd, NULL, NULL, NULL);
		vd_notifier_cleanup(&term_notifier);
	}
	tool_loop_fini(s.loop);
out_args:
	for (int k = 0; k < N_OPTS; k++)
		free(lists[k]);
	return status;
}
