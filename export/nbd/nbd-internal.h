/* SPDX-License-Identifier: MIT */
/*
 * Private to export/nbd: the NBD server, its exports and its connections.
 *
 * server.c    the listeners, the connection objects, their non-blocking
 *             input buffer and output queue, the handshake timer;
 * negotiate.c the fixed-newstyle handshake (proto.md "Option haggling");
 * requests.c  the transmission phase (proto.md "Transmission").
 *
 * The listeners, the handshakes and the lists of exports and connections
 * belong to the server's loop (the main loop).  An export belongs to its
 * node's loop: when a client enters transmission on an export that lives on
 * another loop (an I/O thread), the connection moves there and is read,
 * run and answered on that thread until it ends; the main loop then frees
 * it (c->loop says where a connection is).  No loop ever blocks on a
 * client: input is read into a buffer as it comes and parsed when a whole
 * message is there; output is queued and written when the socket takes it.
 */
#ifndef VDISK_NBD_INTERNAL_H
#define VDISK_NBD_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <vdisk/export.h>
#include <vdisk/loop.h>
#include <vdisk/nbd-proto.h>
#include <vdisk/tls.h>

/* The largest payload we take or send (proto.md: 32 MiB is the size that
 * every client may assume). */
#define NBD_MAX_PAYLOAD (32u * 1024 * 1024)
/* Requests of one connection in flight at once; more wait in the socket. */
#define NBD_MAX_IN_FLIGHT 128
/* Bytes queued for a client before we stop reading from it. */
#define NBD_MAX_OUTPUT (64u * 1024 * 1024)
/* Buffers of requests in flight before we stop reading requests: with
 * NBD_MAX_IN_FLIGHT 32 MiB reads a client could make us allocate 4 GiB. */
#define NBD_MAX_IN_FLIGHT_BYTES (64u * 1024 * 1024)
/* The input buffer: holds an option of NBD_MAX_OPTION_LENGTH and its header. */
#define NBD_RBUF_SIZE (128u * 1024)
/* Request buffers from NBD_BUF_MIN up are reused (nbd_buf_get/put): a
 * fresh 1 MiB buffer per request cost a page fault and a cleared page per
 * 4 KiB, more than the copy itself.  At most NBD_BUF_CACHE_MAX bytes wait
 * in the cache. */
#define NBD_BUF_MIN_BITS 16
#define NBD_BUF_MAX_BITS 25 /* NBD_MAX_PAYLOAD */
#define NBD_BUF_CACHE_MAX (64u * 1024 * 1024)
#define NBD_ZC_MIN (64u * 1024)
/* Zero-copy replies queued on one connection at once, each holding a file
 * descriptor: past this, reads are copied (a client that reads nothing
 * must not take the process's descriptors).  nbdcopy keeps 64 requests in
 * flight per connection: at 32 it took 0.36-0.47 s for 1 GiB, at 64
 * 0.25-0.29 s (nbdkit 0.35-0.49 s).  vdisk nbd and serve raise their
 * soft limit on open files to the hard one. */
#define NBD_ZC_MAX_QUEUED 64
/* accept() out of descriptors: the listeners rest this long. */
#define NBD_ACCEPT_BACKOFF_NS (100LL * 1000 * 1000)
/* Connections still negotiating (CVE-2024-7409). */
#define NBD_MAX_HANDSHAKES 16
#define NBD_HANDSHAKE_TIMEOUT_NS (10LL * 1000 * 1000 * 1000)
/* Metadata context ids. */
#define NBD_CTX_BASE_ALLOCATION 1
#define NBD_CTX_ALLOCATION_DEPTH 2

struct nbd_conn;

struct vd_nbd_export {
	struct vd_nbd_server *srv;
	char *name;
	char *description; /* NULL: none */
	struct vd_blk *blk;
	struct vd_loop *loop; /* the node's: where its connections run */
	bool writable;
	bool multi_conn;
	int nconns; /* connections in transmission on it */
	struct vd_nbd_export *next;
};

struct vd_nbd_server {
	struct vd_loop *loop;
	int listen_fds[8];
	int nlisten;
	char *path; /* unix socket file we created */
	int max_connections; /* 0: no limit */
	int64_t handshake_timeout_ns;
	struct vd_nbd_export *exports; /* in creation order */
	struct nbd_conn *conns;
	int nconns, nhandshakes;
	vd_loop_fn *idle_fn;
	void *idle_opaque;
	struct vd_bh *idle_bh;
	struct vd_tls_creds *tls; /* NULL: no TLS (NOTLS mode) */
	char *tls_authz; /* the one client identity served, or NULL */
	/* READs of NBD_ZC_MIN bytes and up go out with sendfile() from the
	 * file when the backend allows (vd_blk_host_range): not over TLS, and
	 * only if SIGPIPE is ignored (sendfile has no MSG_NOSIGNAL). */
	bool zero_copy;
	struct vd_timer *accept_timer; /* listeners resting after EMFILE */
	/* Free request buffers by size class (a power of two); each holds
	 * the next one's address in its first bytes.  Connections on every
	 * loop share them, under buf_lock. */
	pthread_mutex_t buf_lock;
	void *buf_free[NBD_BUF_MAX_BITS - NBD_BUF_MIN_BITS + 1];
	size_t buf_cached;
	/* Connections that ended on another loop say so here: retired, set
	 * under reap_lock, then the notifier wakes this loop to free them
	 * (also inside a nested wait, where cross-loop calls do not run). */
	pthread_mutex_t reap_lock;
	struct vd_notifier reap;
};

enum nbd_in_state {
	NBD_IN_CLIENT_FLAGS,
	NBD_IN_OPTION,
	NBD_IN_REQUEST,
	NBD_IN_PAYLOAD, /* a WRITE's data */
	NBD_IN_DONE, /* nothing more is read */
};

struct nbd_out {
	struct nbd_out *next;
	int niov;
	struct iovec iov[3];
	void *data; /* freed once sent */
	size_t data_len; /* 0: data came from malloc, else from nbd_buf_get */
	/* Zero copy: zc_len bytes of file zc_fd (ours, closed with the entry)
	 * from zc_off follow the iovecs, sent with sendfile().  zc_eof: the
	 * file ended early (it shrank); the rest goes out as zeroes. */
	size_t zc_len;
	int zc_fd;
	int64_t zc_off;
	bool zc_eof;
	uint8_t hdr[40];
};

struct nbd_req;

struct nbd_conn {
	struct vd_nbd_server *srv;
	struct nbd_conn *next; /* the server's list: its loop's */
	/* Where the connection runs: the server's loop, then its export's
	 * from the move on (it never moves back).  moving: between entering
	 * transmission and arriving there; nothing is read meanwhile. */
	struct vd_loop *loop;
	bool moving;
	/* On another loop: retire_bh ends it there (its BHs go, then
	 * retired is set under the server's reap_lock and the server's loop
	 * frees it); arrive_failed: it could not start there. */
	struct vd_bh *retire_bh;
	bool retired;
	bool arrive_failed;
	int fd;
	enum nbd_in_state in;
	bool dead; /* closed: nothing more is read or written */
	bool close_after_output; /* ABORT, DISC: close once the queue is sent */
	bool handshaking;
	bool watching_write;
	bool reading;
	bool parsing;
	/* STARTTLS answered: the handshake starts once the ACK is out. */
	bool tls_pending_start;
	bool tls_handshaking;
	bool tls_want_write;
	struct vd_tls_session *tls;

	uint8_t *rbuf;
	/* Option data too long to keep, being skipped (then ERR_TOO_BIG). */
	uint64_t opt_skip;
	uint32_t opt_skipped;
	size_t rpos, rlen;

	/* Negotiated state; reset as a whole (STARTTLS, CVE-2021-3716). */
	bool no_zeroes;
	bool structured;
	bool meta_base, meta_depth;
	char *meta_export; /* the export SET_META_CONTEXT named */

	struct vd_nbd_export *exp;
	int64_t size;

	/* A WRITE whose payload is being read. */
	struct nbd_req *payload_req;
	size_t payload_got;

	int in_flight;
	size_t in_flight_bytes;
	struct nbd_out *out_head, *out_tail;
	size_t out_off; /* bytes of out_head already sent */
	size_t out_bytes;
	int zc_queued; /* entries with zc_len in the queue */
	struct vd_bh *out_bh; /* on c->loop */
	struct vd_timer *timer; /* the handshake's, on the server's loop */
};

/* server.c */
/* A request buffer of @len bytes (4 KiB aligned), or NULL; give it back with
 * nbd_buf_put() and the same @len. */
void *nbd_buf_get(struct vd_nbd_server *s, size_t len);
void nbd_buf_put(struct vd_nbd_server *s, void *buf, size_t len);
/* Free what an output entry of @c holds, and the entry. */
void nbd_out_free(struct nbd_conn *c, struct nbd_out *o);
void nbd_conn_queue(struct nbd_conn *c, struct nbd_out *o);
/* Queue @len bytes copied from @buf (handshake messages). */
int nbd_conn_queue_copy(struct nbd_conn *c, const void *buf, size_t len);
void nbd_conn_close(struct nbd_conn *c);
/* Input or output state changed: watch the fd accordingly. */
void nbd_conn_update_watch(struct nbd_conn *c);
void nbd_conn_enter_transmission(struct nbd_conn *c, struct vd_nbd_export *exp);
struct vd_nbd_export *nbd_server_find_export(struct vd_nbd_server *s, const char *name, size_t len);
void nbd_conn_request_done(struct nbd_conn *c);

/* tls.c */
int nbd_tls_session_new(struct nbd_conn *c);
void nbd_tls_session_free(struct nbd_conn *c);
int nbd_tls_handshake(struct nbd_conn *c);
ssize_t nbd_tls_recv(struct nbd_conn *c, void *buf, size_t len);
ssize_t nbd_tls_sendv(struct nbd_conn *c, const struct iovec *iov, int n);
size_t nbd_tls_pending(struct nbd_conn *c);

/* negotiate.c: the greeting, and the handshake's messages from the input
 * buffer.  Returns bytes consumed (0: need more), or -1: close. */
void nbd_negotiate_start(struct nbd_conn *c);
ssize_t nbd_negotiate_input(struct nbd_conn *c, const uint8_t *p, size_t n);
void nbd_negotiate_reset(struct nbd_conn *c);

/* requests.c: the same for the transmission phase. */
ssize_t nbd_requests_input(struct nbd_conn *c, const uint8_t *p, size_t n);
/* Where a WRITE's payload goes and how much of it is missing. */
void nbd_requests_payload_dst(struct nbd_conn *c, uint8_t **dst, size_t *need);
/* @n bytes arrived at the destination. */
void nbd_requests_payload_got(struct nbd_conn *c, size_t n);
/* Free a WRITE whose payload will never come (the connection closed). */
void nbd_requests_abandon(struct nbd_conn *c);

static inline void nbd_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void nbd_put32(uint8_t *p, uint32_t v)
{
	nbd_put16(p, (uint16_t)(v >> 16));
	nbd_put16(p + 2, (uint16_t)v);
}
static inline void nbd_put64(uint8_t *p, uint64_t v)
{
	nbd_put32(p, (uint32_t)(v >> 32));
	nbd_put32(p + 4, (uint32_t)v);
}
static inline uint16_t nbd_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t nbd_get32(const uint8_t *p)
{
	return (uint32_t)nbd_get16(p) << 16 | nbd_get16(p + 2);
}
static inline uint64_t nbd_get64(const uint8_t *p)
{
	return (uint64_t)nbd_get32(p) << 32 | nbd_get32(p + 4);
}

#endif
