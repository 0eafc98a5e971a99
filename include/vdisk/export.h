/* SPDX-License-Identifier: MIT */
/*
 * Block exports: serving a block node to clients outside the process, as
 * qemu-storage-daemon's --export does: vhost-user-blk (QEMU's
 * docs/interop/vhost-user.rst, back-end side), on a unix socket, and NBD
 * (the set's NBD server, below).
 *
 * An export listens on its socket; each front end that connects gets its own
 * virtio-blk device (hw/virtio) over the export's backend, an anonymous
 * struct vd_blk on the node with the error policy "report".  A front end that
 * sends garbage or disconnects ends only its own connection.  Freeing an
 * export waits for the requests in flight, closes every connection, flushes
 * the node and removes the socket file.
 *
 * A struct vd_export_set is the daemon's list of exports, created from
 * option trees with qemu-storage-daemon's keys (--export and QMP
 * block-export-add), with the QMP commands block-export-add,
 * block-export-del and query-block-exports.
 *
 * An export runs on its node's loop: the main loop, or an I/O thread's when
 * the export names one (iothread=, vd_export_set_iothreads()) and the node
 * can move there.  The set itself lives on the main loop, the one current at
 * its creation, and reaches the exports with vd_loop_call_wait().
 */
#ifndef VDISK_EXPORT_H
#define VDISK_EXPORT_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/backend.h>
#include <vdisk/error.h>
#include <vdisk/loop.h>
#include <vdisk/opts.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_export;
struct vd_export_set;
struct vd_blk_registry;
struct vd_qmp_server;

struct vd_vhost_user_blk_opts {
	const char *id;
	struct vd_node *node; /* the export's backend takes a reference */
	/* Where the export's backend (an anonymous struct vd_blk) is listed;
	 * NULL: nowhere. */
	struct vd_blk_registry *reg;
	const char *path; /* unix socket to listen on; or */
	int listen_fd; /* a listening socket (addr.type=fd), -1 for none */
	bool writable;
	uint16_t num_queues; /* 0: 1 */
	uint32_t logical_block_size; /* 0: 512 */
	const char *serial; /* GET_ID; NULL: none */
};

int vd_vhost_user_blk_export_new(const struct vd_vhost_user_blk_opts *o, struct vd_export **out,
				 struct vd_error *err);
void vd_export_free(struct vd_export *e);
const char *vd_export_id(const struct vd_export *e);
/* The backend the export does its I/O through (its medium is the node). */
struct vd_blk *vd_export_blk(const struct vd_export *e);
/* Connected front ends. */
int vd_export_connections(const struct vd_export *e);

/* --- the daemon's exports -------------------------------------------------- */

int vd_export_set_new(struct vd_blk_registry *reg, struct vd_export_set **out);
/* How the set finds an I/O thread's loop by its id (--object iothread,id=);
 * NULL: no such thread. */
typedef struct vd_loop *vd_export_iothread_fn(void *opaque, const char *id);
void vd_export_set_iothreads(struct vd_export_set *s, vd_export_iothread_fn *fn, void *opaque);
/* Does an export of the set run on @loop? */
bool vd_export_set_uses_loop(const struct vd_export_set *s, const struct vd_loop *loop);
/* Free every export (see vd_export_free), then the set. */
void vd_export_set_free(struct vd_export_set *s);
/*
 * Create an export from qemu-storage-daemon's keys: type=vhost-user-blk,
 * id, node-name, addr.type=unix + addr.path (or addr.type=fd + addr.str),
 * writable, num-queues, logical-block-size, serial, iothread, fixed-iothread.  @opts is read
 * (getters mark keys used) and unknown keys are errors.  -EEXIST for a
 * duplicate id.
 */
int vd_export_set_add(struct vd_export_set *s, struct vd_opts *opts, struct vd_error *err);
/*
 * The set's NBD server (--nbd-server, QMP nbd-server-start): keys addr.type
 * (unix, inet, fd), addr.path | addr.host + addr.port | addr.str (also under
 * addr.data., QMP's SocketAddressLegacy), max-connections, tls-creds (the
 * id of server credentials, <vdisk/tls.h>: TLS is then required) and
 * tls-authz (the id of an authz-simple object: the one client let in).
 * Exports of type=nbd (keys name, default node-name; description; writable;
 * iothread and fixed-iothread as for vhost-user-blk) are served there.
 * -EEXIST if running.
 */
int vd_export_set_nbd_server_start(struct vd_export_set *s, struct vd_opts *opts,
				   struct vd_error *err);
/* Remove the NBD exports, then stop the server.  -ENOENT if not running. */
int vd_export_set_nbd_server_stop(struct vd_export_set *s, struct vd_error *err);
/* Remove: with @hard false ("safe"), -EBUSY while front ends are connected. */
int vd_export_set_del(struct vd_export_set *s, const char *id, bool hard, struct vd_error *err);
int vd_export_set_count(const struct vd_export_set *s);
/* block-export-add, block-export-del, query-block-exports; the event
 * BLOCK_EXPORT_DELETED. */
int vd_export_set_register_qmp(struct vd_export_set *s, struct vd_qmp_server *qmp);

/* --- the NBD server ---------------------------------------------------------- */

/*
 * An NBD server (the NBD project's doc/proto.md, fixed newstyle only), as
 * QEMU's nbd-server-start and qemu-nbd: listeners, and named exports that
 * clients pick by name.  Each export does its I/O through its own anonymous
 * backend on the node (error policy report).  The server, its listeners
 * and the handshakes run on the loop current at vd_nbd_server_new() (the
 * main loop); the server's functions are called there.  An export runs on
 * its node's loop: a client that picks an export whose node lives on an I/O
 * thread is handed over to that thread for the transmission phase, so its
 * requests are read, run and answered there.  A client that stalls, sends garbage or goes away
 * ends only its own connection; clients that do not finish the handshake
 * within the timeout are dropped, and at most max_connections are served.
 */
struct vd_nbd_server;
struct vd_nbd_export;
struct vd_tls_creds;

struct vd_nbd_server_opts {
	const char *path; /* a unix socket to create; or */
	const char *host; /* TCP: host (NULL: every address) and port */
	const char *port; /* NULL: 10809 */
	const int *listen_fds; /* or listening sockets (socket activation) */
	int n_listen_fds;
	int max_connections; /* 0: no limit */
	int64_t handshake_timeout_ns; /* 0: 10 s; negative: none */
	/* TLS (then required: FORCEDTLS) with these server credentials
	 * (<vdisk/tls.h>; the server takes a reference).  NULL: no TLS. */
	struct vd_tls_creds *tls_creds;
	/* tls-authz: only the client with this identity (copied; see
	 * vd_tls_session_peer_name()) is served.  NULL: any TLS client. */
	const char *tls_authz_identity;
};

int vd_nbd_server_new(const struct vd_nbd_server_opts *o, struct vd_nbd_server **out,
		      struct vd_error *err);
/* Close every connection (their requests finish first), every export and
 * the listeners. */
void vd_nbd_server_free(struct vd_nbd_server *s);
/* Serve a connected socket (takes @fd).  0 or -errno. */
int vd_nbd_server_add_client(struct vd_nbd_server *s, int fd);
int vd_nbd_server_connections(const struct vd_nbd_server *s);
/* @fn runs (from a bottom half) whenever the last connection has gone. */
void vd_nbd_server_set_idle_handler(struct vd_nbd_server *s, vd_loop_fn *fn, void *opaque);

struct vd_nbd_export_opts {
	const char *name; /* "" is the default export */
	const char *description; /* NULL: none */
	struct vd_node *node; /* the export's backend takes a reference */
	struct vd_blk_registry *reg; /* where the backend is listed; NULL: nowhere */
	bool writable;
	/* Advertise NBD_FLAG_CAN_MULTI_CONN: every connection goes through the
	 * same backend, so a flush on one covers writes completed on all. */
	bool multi_conn;
};

/* -EEXIST if the server has an export of that name.  The export lives on
 * the node's loop at this time; the node must not change loops while the
 * export exists. */
int vd_nbd_export_new(struct vd_nbd_server *s, const struct vd_nbd_export_opts *o,
		      struct vd_nbd_export **out, struct vd_error *err);
/* Close the export's connections, flush, and free it. */
void vd_nbd_export_free(struct vd_nbd_export *e);
int vd_nbd_export_connections(const struct vd_nbd_export *e);
struct vd_blk *vd_nbd_export_blk(const struct vd_nbd_export *e);

#ifdef __cplusplus
}
#endif

#endif
