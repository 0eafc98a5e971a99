/* SPDX-License-Identifier: MIT */
/*
 * A QMP server: QEMU's machine protocol, with QEMU 7.2's JSON shapes.
 *
 * The server runs on one struct vd_loop (the thread that creates it must
 * have it current, or pass it) and serves any number of clients: accepted
 * on a unix socket, connected out, or an fd pair (stdio, a socketpair in
 * tests).  Each client goes through the greeting and capabilities
 * negotiation on its own; a client that sends garbage gets an error reply
 * and stays connected, one that disconnects or exceeds the size limits ends
 * only its own connection.
 *
 * The greeting has QEMU's shape:
 *   {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
 *            "package": "vdisk 0.1.0"}, "capabilities": ["oob"]}}
 * "qemu" names the QEMU release whose protocol and shapes we follow (7.2.0),
 * so that clients that look at it (libvirt, qemu.qmp) take the 7.2 paths;
 * "package" says it is vdisk and which version.  query-version answers the
 * same.  "oob" is advertised and can be enabled; no command allows it yet,
 * so "exec-oob" then fails as QEMU fails it for such commands.
 *
 * Commands are registered by name with a handler that gets the "arguments"
 * object (an empty one when absent) and returns the result, or sets an error
 * class and description.  Handlers run in a coroutine on the server's loop:
 * they may yield, and the synchronous block-layer calls (vd_node_truncate,
 * vd_node_open) then yield instead of nesting the loop.  A client's next
 * command waits until its previous one has answered, as in QEMU.  Built in:
 * qmp_capabilities, query-commands, query-version.
 *
 * Usage (a machine's --qmp):
 *
 *	static json_t *qmp_stop(json_t *args, void *opaque, struct vd_qmp_error *err)
 *	{
 *		static const struct vd_qmp_arg spec[] = {{NULL}};
 *		struct machine *m = opaque;
 *		if (vd_qmp_check_args(args, spec, err) < 0)
 *			return NULL;
 *		machine_stop(m);                // emits STOP: vd_qmp_emit_event()
 *		return NULL;                    // {"return": {}}
 *	}
 *
 *	struct vd_qmp_server *qmp;
 *	vd_qmp_server_new(loop, &qmp);
 *	if (vd_qmp_server_open(qmp, "unix:/tmp/q.sock,server=on,wait=off", &err) < 0)
 *		... err.msg ...
 *	vd_qmp_register(qmp, "stop", qmp_stop, m);
 *	vd_qmp_block_init(qmp, registry, &blockcmds);   // query-block & co
 *	vd_loop_run(loop);
 *	...
 *	vd_qmp_emit_event(qmp, "STOP", NULL);      // before stop's return, as QEMU
 *	// quit: QEMU answers {"return": {}} first and sends SHUTDOWN from its
 *	// main loop, so emit it from a bottom half scheduled by the handler:
 *	vd_qmp_emit_event(qmp, "SHUTDOWN", json_pack("{s:b,s:s}", "guest", 0,
 *						  "reason", "host-qmp-quit"));
 *	vd_qmp_block_free(blockcmds);
 *	vd_qmp_server_free(qmp);
 *
 * Thread rules: every function is called on the server's loop thread.
 */
#ifndef VDISK_QMP_H
#define VDISK_QMP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include <vdisk/error.h>
#include <vdisk/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_qmp_server;
struct vd_blk_registry;

/* QEMU's error classes (QapiErrorClass). */
enum vd_qmp_error_class {
	VD_QMP_GENERIC_ERROR,
	VD_QMP_COMMAND_NOT_FOUND,
	VD_QMP_DEVICE_NOT_ACTIVE,
	VD_QMP_DEVICE_NOT_FOUND,
	VD_QMP_KVM_MISSING_CAP,
};

#define VD_QMP_DESC_MAX 1024
struct vd_qmp_error {
	bool set;
	enum vd_qmp_error_class cls;
	char desc[VD_QMP_DESC_MAX];
};
/* Set the error unless it is set already; returns -EINVAL for "return
 * vd_qmp_error_set(...)" in helpers. */
int vd_qmp_error_set(struct vd_qmp_error *err, enum vd_qmp_error_class cls, const char *fmt, ...)
	VD_PRINTF(3, 4);
/* "GenericError", "CommandNotFound", ... */
const char *vd_qmp_error_class_name(enum vd_qmp_error_class cls);

/*
 * A command handler.  @args is the "arguments" object (borrowed; an empty
 * object when the client sent none).  Return the result (a new reference;
 * NULL means {}), or set @err (any result is then dropped).  Runs in a
 * coroutine on the server's loop and may yield.  It must not free the
 * server.
 */
typedef json_t *vd_qmp_handler(json_t *args, void *opaque, struct vd_qmp_error *err);

/* Create a server on @loop (NULL: the current loop).  0 or -errno. */
int vd_qmp_server_new(struct vd_loop *loop, struct vd_qmp_server **out);
/*
 * Close every connection and listener and free the server.  Commands still
 * running (yielded handlers) are finished first, driving the loop.  Output
 * not yet written is tried once more without blocking.  Not from a handler.
 */
void vd_qmp_server_free(struct vd_qmp_server *s);

/*
 * Open a channel from QEMU's -qmp syntax:
 *   unix:PATH,server=on|off,wait=on|off   (also the legacy "server", "nowait")
 *   stdio
 * server=on listens (removing a stale socket file first, and the file on
 * free); wait=on (QEMU's default for a server) also blocks until the first
 * client connects.  Without server, connects to PATH.  0 or -errno with
 * @err set.
 */
int vd_qmp_server_open(struct vd_qmp_server *s, const char *spec, struct vd_error *err);
/*
 * Serve one client on an fd pair (the same fd twice for a socket).  Both are
 * made non-blocking.  @close_fds: close them when the connection ends.  The
 * greeting is sent at once.  0 or -errno (on error the fds are not closed;
 * -EPERM: @in_fd cannot be polled, such as a regular file).
 */
int vd_qmp_server_add_client(struct vd_qmp_server *s, int in_fd, int out_fd, bool close_fds);
/* Connected clients. */
int vd_qmp_server_client_count(const struct vd_qmp_server *s);
/* Called when a client's connection ends (e.g. stdin closed: a machine may
 * quit, by vd_loop_stop(); it must not free the server from here). */
void vd_qmp_server_set_disconnect_handler(struct vd_qmp_server *s, vd_loop_fn *fn, void *opaque);
/* Largest message a client may send (default 1 MiB); a larger one is
 * answered with an error and the connection is closed. */
void vd_qmp_server_set_max_message(struct vd_qmp_server *s, size_t bytes);

/* Register a command; -EEXIST if the name is taken, -EINVAL for a bad name,
 * -ENOMEM. */
int vd_qmp_register(struct vd_qmp_server *s, const char *name, vd_qmp_handler *fn, void *opaque);
/* -ENOENT if there is no such command. */
int vd_qmp_unregister(struct vd_qmp_server *s, const char *name);

/*
 * Send an event to every client past negotiation: {"timestamp": {"seconds":
 * S, "microseconds": US}, "event": NAME, "data": DATA}.  @data is consumed
 * (a new reference, as json_object_set_new takes it); NULL sends no "data".
 */
void vd_qmp_emit_event(struct vd_qmp_server *s, const char *name, json_t *data);

/*
 * Argument checking with QAPI's messages.  @spec ends with {NULL}.  Checks,
 * in spec order, that required members are present ("Parameter 'size' is
 * missing") and of their type ("Invalid parameter type for 'size',
 * expected: integer"), that enum values are known ("Parameter 'x' does not
 * accept value 'y'"), then that nothing else is there ("Parameter 'x' is
 * unexpected").  Returns 0 or -EINVAL with @err set.
 */
enum vd_qmp_arg_type {
	VD_QMP_ARG_STR,
	VD_QMP_ARG_INT,
	VD_QMP_ARG_BOOL,
	VD_QMP_ARG_NUMBER,
	VD_QMP_ARG_ENUM, /* a string from .values */
	VD_QMP_ARG_OBJECT,
	VD_QMP_ARG_ARRAY,
	VD_QMP_ARG_ANY,
};
struct vd_qmp_arg {
	const char *name;
	enum vd_qmp_arg_type type;
	bool optional;
	const char *const *values; /* VD_QMP_ARG_ENUM: NULL-terminated */
};
int vd_qmp_check_args(const json_t *args, const struct vd_qmp_arg *spec, struct vd_qmp_error *err);
/*
 * The arguments as an option tree with dotted keys, for commands whose
 * arguments are a command-line option's (block-export-add, object-add):
 * *out is NULL on error, which is in @err.  0 or -errno.
 */
struct vd_opts;
int vd_qmp_args_to_opts(const json_t *args, struct vd_opts **out, struct vd_error *err);

/*
 * The block commands (monitor/block-cmds.c) over a backend registry:
 * query-block, query-blockstats, block_resize, eject,
 * blockdev-change-medium, blockdev-open-tray, blockdev-close-tray,
 * blockdev-remove-medium, blockdev-insert-medium (of a node added with
 * vd_blk_registry_add_node); and the events BLOCK_IO_ERROR and
 * DEVICE_TRAY_MOVED from the registry's notifiers.  Free before the
 * registry and the server.
 */
struct vd_qmp_block;
int vd_qmp_block_init(struct vd_qmp_server *s, struct vd_blk_registry *reg,
		      struct vd_qmp_block **out);
void vd_qmp_block_free(struct vd_qmp_block *b);

#ifdef __cplusplus
}
#endif

#endif
