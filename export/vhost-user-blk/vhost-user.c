/* SPDX-License-Identifier: MIT */
/*
 * The back-end side of the vhost-user protocol (QEMU docs/interop/
 * vhost-user.rst) for one connected front end, serving a virtio-blk device
 * whose request handling lives in hw/virtio.
 *
 * Every message is validated before it is used: the header's size against
 * the request's payload layout and a hard maximum, the number of file
 * descriptors that came with it, ring indices against the queue count, ring
 * sizes, memory regions (overflow, mmap), and ring addresses against the
 * memory table.  Anything wrong ends this connection only; other front ends
 * and exports keep running.
 *
 * Ring life cycle ("Ring states" in vhost-user.rst): a ring starts when
 * SET_VRING_KICK gives its kick fd and stops at GET_VRING_BASE, which waits
 * for the ring's in-flight requests before replying with the next avail
 * index.  When VHOST_USER_F_PROTOCOL_FEATURES is negotiated rings start
 * disabled until SET_VRING_ENABLE; otherwise they are enabled at once.
 *
 * Reconnection ("Inflight I/O tracking", INFLIGHT_SHMFD): GET_INFLIGHT_FD
 * hands the front end a memfd region, laid out for split or packed rings as
 * the features negotiated so far say (QEMU sends SET_FEATURES first),
 * SET_INFLIGHT_FD gives it (back) to this connection; rings record the
 * requests they take and complete there (hw/virtio/virtqueue.c), and when a
 * ring starts, requests a previous back end left in flight are processed
 * again.  A packed ring also takes its indices from the region then: QEMU
 * has no record of them after a back end died.  The region is the front
 * end's memory: one that does not hold together ends the connection.  A
 * front end that goes away with requests in flight does not lose them
 * either: the connection drains them before it unmaps the guest's memory.
 *
 * The back-end channel (BACKEND_REQ, SET_BACKEND_REQ_FD) carries
 * BACKEND_CONFIG_CHANGE_MSG when the exported node is resized.
 *
 * The export's loop serves every connection (and in vdisk serve, QMP and
 * the other exports too), so nothing here waits for a front end: a message
 * is assembled from whatever each readable event brings (conn_read,
 * msg_recv), and a reply is queued and written as the socket takes it
 * (conn_flush, conn_write).  The next message is read only once the reply
 * to the last is written, so a front end that does not read stops being
 * read, and a slow or silent one delays only itself.  The back-end channel
 * keeps its one pending message until the front end reads it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vdisk/trace.h>
#include <vdisk/virtio-blk.h>

#include "export/vhost-user-blk/vub-internal.h"

/* Front-end message types ("Front-end message types"). */
enum {
	VHOST_USER_GET_FEATURES = 1,
	VHOST_USER_SET_FEATURES = 2,
	VHOST_USER_SET_OWNER = 3,
	VHOST_USER_RESET_OWNER = 4,
	VHOST_USER_SET_MEM_TABLE = 5,
	VHOST_USER_SET_LOG_BASE = 6,
	VHOST_USER_SET_LOG_FD = 7,
	VHOST_USER_SET_VRING_NUM = 8,
	VHOST_USER_SET_VRING_ADDR = 9,
	VHOST_USER_SET_VRING_BASE = 10,
	VHOST_USER_GET_VRING_BASE = 11,
	VHOST_USER_SET_VRING_KICK = 12,
	VHOST_USER_SET_VRING_CALL = 13,
	VHOST_USER_SET_VRING_ERR = 14,
	VHOST_USER_GET_PROTOCOL_FEATURES = 15,
	VHOST_USER_SET_PROTOCOL_FEATURES = 16,
	VHOST_USER_GET_QUEUE_NUM = 17,
	VHOST_USER_SET_VRING_ENABLE = 18,
	VHOST_USER_SET_BACKEND_REQ_FD = 21,
	VHOST_USER_GET_CONFIG = 24,
	VHOST_USER_SET_CONFIG = 25,
	VHOST_USER_GET_INFLIGHT_FD = 31,
	VHOST_USER_SET_INFLIGHT_FD = 32,
};

/* Back-end message types ("Back-end message types"), on the channel that
 * SET_BACKEND_REQ_FD gives. */
#define VHOST_USER_BACKEND_CONFIG_CHANGE_MSG 2

#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define PROTO_F_MQ 0
#define PROTO_F_REPLY_ACK 3
#define PROTO_F_BACKEND_REQ 5
#define PROTO_F_CONFIG 9
#define PROTO_F_INFLIGHT_SHMFD 12
#define OUR_PROTOCOL_FEATURES                                                                 \
	((1ULL << PROTO_F_MQ) | (1ULL << PROTO_F_REPLY_ACK) | (1ULL << PROTO_F_BACKEND_REQ) | \
	 (1ULL << PROTO_F_CONFIG) | (1ULL << PROTO_F_INFLIGHT_SHMFD))

/* Header flags ("Message format"). */
#define VHOST_USER_VERSION 0x1
#define VHOST_USER_VERSION_MASK 0x3
#define VHOST_USER_REPLY 0x4
#define VHOST_USER_NEED_REPLY 0x8

#define HDR_SIZE 12
#define MAX_PAYLOAD 4096
#define MAX_FDS 8
#define MAX_REGIONS 8
#define VRING_NOFD_MASK 0x100
#define VRING_IDX_MASK 0xff
#define MAX_CONFIG 256
/* struct VhostUserInflight: le64 mmap_size, le64 mmap_offset, le16
 * num_queues, le16 queue_size, padded to 24 bytes. */
#define INFLIGHT_MSG_SIZE 24
/* The largest reply: GET_CONFIG's. */
#define MAX_REPLY (HDR_SIZE + 12 + MAX_CONFIG)
/* Messages handled per readable event, so that a front end that keeps its
 * socket full does not keep the loop from everything else. */
#define MSGS_PER_EVENT 32

struct vub_region {
	uint64_t gpa, size, uva;
	uint8_t *host; /* mapping + mmap_offset */
	void *map_base;
	size_t map_size;
};

struct vub_vring {
	int kick_fd, call_fd, err_fd;
	bool started, enabled;
	unsigned num;
	uint32_t base;
	bool addr_set;
	uint64_t desc_uva, avail_uva, used_uva;
	/* Inflight tracking's back-end memory, vd_vq_inflight_state_len(num)
	 * entries. */
	uint16_t *inflight_state;
};

/* What the socket's fd handler waits for. */
enum vub_watch {
	WATCH_NONE,
	WATCH_READ,
	WATCH_WRITE
};

struct vub_msg {
	uint32_t request, flags, size;
	uint8_t payload[MAX_PAYLOAD];
	int fds[MAX_FDS];
	int nfds;
};

struct vub_conn {
	struct vd_export *e;
	struct vub_conn *next;
	int fd;
	/*
	 * The message being assembled from what each readable event brings:
	 * its header (in_hdr), then its payload (in.payload), and the fds
	 * that came with any of its bytes.  No read ever waits for the rest.
	 */
	struct vub_msg in;
	uint8_t in_hdr[HDR_SIZE];
	size_t in_len; /* header and payload bytes so far */
	/*
	 * The reply being written.  There is at most one: the next message
	 * is read only once the reply to this one is written, so a front end
	 * that does not read its replies stops being read (it only delays
	 * itself) and what we hold for it is bounded.
	 */
	uint8_t out[MAX_REPLY];
	size_t out_len, out_pos;
	int out_fd; /* goes with the reply's first byte (GET_INFLIGHT_FD), or -1 */
	bool quiesced; /* socket and kicks out of the loop (quiesce()) */
	enum vub_watch watch; /* the socket's handler */
	uint64_t features, protocol_features;
	bool features_acked; /* SET_FEATURES seen */
	struct vub_region regions[MAX_REGIONS];
	unsigned nregions;
	struct vd_virtio_mem mem;
	struct vd_virtio_blk *blk;
	struct vub_vring *vrings;
	int backend_fd; /* SET_BACKEND_REQ_FD channel, or -1 */
	/* A back-end message waiting for the channel to be writable (one at
	 * most: a second config change says nothing the first does not). */
	uint8_t backend_out[HDR_SIZE];
	size_t backend_out_len, backend_out_pos;
	/* Inflight tracking region (GET/SET_INFLIGHT_FD). */
	void *inflight_map;
	size_t inflight_map_size;
	uint8_t *inflight; /* mapping + mmap_offset */
	uint16_t inflight_queues, inflight_queue_size;
	bool dead; /* close at the end of the current message */
};

/* What a connection does (VDISK_TRACE=vhost_user_conn): one trace point,
 * so that the arguments are only evaluated when it is on. */
#define conn_trace(c, fmt, ...) \
	vd_trace(vhost_user_conn, "vhost-user-blk[%s]: " fmt, (c)->e->id, ##__VA_ARGS__)

/* Connection errors are reported once (on stderr in vdisk serve), as QEMU's
 * daemon does. */
static int conn_error(struct vub_conn *c, const char *why)
{
	vd_message(VD_MSG_ERROR, "vdisk: vhost-user-blk export '%s': %s; closing the connection",
		   c->e->id, why);
	c->dead = true;
	return -EPROTO;
}

/* --- guest memory --------------------------------------------------------- */

/* Guest-physical addresses (descriptor buffers, indirect tables). */
static void *gpa_map(void *opaque, uint64_t addr, uint64_t *len)
{
	struct vub_conn *c = opaque;

	for (unsigned i = 0; i < c->nregions; i++) {
		struct vub_region *r = &c->regions[i];

		if (addr >= r->gpa && addr - r->gpa < r->size) {
			uint64_t off = addr - r->gpa;
			if (*len > r->size - off)
				*len = r->size - off;
			return r->host + off;
		}
	}
	return NULL;
}

/* Front-end virtual addresses (SET_VRING_ADDR), whole range in one region. */
static void *uva_map(struct vub_conn *c, uint64_t addr, uint64_t len)
{
	for (unsigned i = 0; i < c->nregions; i++) {
		struct vub_region *r = &c->regions[i];

		if (addr >= r->uva && addr - r->uva < r->size) {
			uint64_t off = addr - r->uva;
			if (len > r->size - off)
				return NULL;
			return r->host + off;
		}
	}
	return NULL;
}

static void unmap_regions(struct vub_conn *c)
{
	for (unsigned i = 0; i < c->nregions; i++)
		munmap(c->regions[i].map_base, c->regions[i].map_size);
	c->nregions = 0;
}

/* --- rings ---------------------------------------------------------------- */

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static bool ring_active(struct vub_conn *c, unsigned i)
{
	struct vub_vring *v = &c->vrings[i];
	return v->started && v->enabled && vd_vq_ready(vd_virtio_blk_queue(c->blk, i));
}

/* Map the ring's three areas; -EFAULT if they are not in the table. */
static int ring_map(struct vub_conn *c, unsigned i)
{
	struct vub_vring *v = &c->vrings[i];
	struct vd_vq *vq = vd_virtio_blk_queue(c->blk, i);
	void *d, *a, *u;

	if (!v->addr_set || !v->num || !vq->num)
		return 0;
	d = uva_map(c, v->desc_uva, vd_vring_desc_size(v->num));
	if (vq->packed) {
		/* 2.8.10: the driver and device event suppression areas. */
		a = uva_map(c, v->avail_uva, VD_VRING_PACKED_EVENT_SIZE);
		u = uva_map(c, v->used_uva, VD_VRING_PACKED_EVENT_SIZE);
	} else {
		a = uva_map(c, v->avail_uva, vd_vring_avail_size(v->num));
		u = uva_map(c, v->used_uva, vd_vring_used_size(v->num));
	}
	if (!d || !a || !u) {
		vd_vq_set_rings(vq, NULL, NULL, NULL);
		return -EFAULT;
	}
	/* 2.7 / 2.8.10: alignment of the ring areas. */
	if (((uintptr_t)d & 15) || ((uintptr_t)a & (vq->packed ? 3 : 1)) || ((uintptr_t)u & 3)) {
		vd_vq_set_rings(vq, NULL, NULL, NULL);
		return -EFAULT;
	}
	/* Indices are not touched: SET_VRING_BASE set them, and a new memory
	 * table in the middle of a run must not rewind the ring. */
	vd_vq_set_rings(vq, d, a, u);
	return 0;
}

static void ring_kick_handlers(struct vub_conn *c, unsigned i, bool on);

static void conn_read(void *opaque);
static void conn_write(void *opaque);
static void backend_close(struct vub_conn *c);
static void backend_write(void *opaque);

/* Watch the socket for what the connection can do next: write its reply,
 * or else read (more of) a message. */
static void conn_update_handlers(struct vub_conn *c)
{
	enum vub_watch w = c->dead || c->quiesced    ? WATCH_NONE
			   : c->out_pos < c->out_len ? WATCH_WRITE
						     : WATCH_READ;

	if (w == c->watch)
		return;
	if (vd_loop_set_fd_handler(c->e->loop, c->fd, w == WATCH_READ ? conn_read : NULL,
				   w == WATCH_WRITE ? conn_write : NULL,
				   w == WATCH_NONE ? NULL : c) < 0) {
		/* Out of memory in the loop: nothing watches the socket now. */
		conn_error(c, "cannot watch the socket");
		w = WATCH_NONE;
	}
	c->watch = w;
}

/*
 * Wait for every request in flight on this connection.  Draining runs the
 * loop, so first take our socket and every kick fd out of it: no message of
 * ours is handled in the middle of this one and no new request starts.
 * resume() puts them back (kicks only for started rings).
 */
static void quiesce(struct vub_conn *c)
{
	c->quiesced = true;
	conn_update_handlers(c);
	for (unsigned i = 0; i < c->e->num_queues; i++)
		ring_kick_handlers(c, i, false);
	for (unsigned i = 0; i < c->e->num_queues; i++)
		vd_virtio_blk_stop_queue(c->blk, i);
}

static void resume(struct vub_conn *c)
{
	if (c->dead)
		return;
	c->quiesced = false;
	conn_update_handlers(c);
	for (unsigned i = 0; i < c->e->num_queues; i++)
		if (c->vrings[i].started)
			ring_kick_handlers(c, i, true);
}

/* Stop a ring ("Ring states": GET_VRING_BASE): no more kicks, and its
 * requests have completed when this returns. */
static void ring_stop(struct vub_conn *c, unsigned i)
{
	c->vrings[i].started = false;
	quiesce(c);
	resume(c);
}

static void process_ring(struct vub_conn *c, unsigned i)
{
	if (ring_active(c, i))
		vd_virtio_blk_handle_queue(c->blk, i);
}

struct vub_kick {
	struct vub_conn *c;
	unsigned idx;
};

static void kick_read(void *opaque)
{
	struct vub_kick *k = opaque;
	struct vub_conn *c = k->c;
	uint64_t v;

	if (read(c->vrings[k->idx].kick_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	process_ring(c, k->idx);
}

static struct vub_kick *kicks_of(struct vub_conn *c);

/* Adaptive polling (an I/O thread with poll-max-ns): requests waiting in the
 * ring, seen without the kick. */
static bool kick_poll(void *opaque)
{
	struct vub_kick *k = opaque;
	struct vd_vq *vq = vd_virtio_blk_queue(k->c->blk, k->idx);

	return ring_active(k->c, k->idx) && !vq->broken && !vd_virtio_blk_needs_reset(k->c->blk) &&
	       vd_vq_has_work(vq);
}

static void ring_kick_handlers(struct vub_conn *c, unsigned i, bool on)
{
	struct vub_vring *v = &c->vrings[i];

	if (v->kick_fd < 0)
		return;
	vd_loop_set_fd_handler(c->e->loop, v->kick_fd, on ? kick_read : NULL, NULL,
			       on ? &kicks_of(c)[i] : NULL);
	if (on)
		vd_loop_set_fd_poll(c->e->loop, v->kick_fd, kick_poll);
}

/* --- the device's hooks ---------------------------------------------------- */

static void dev_notify(void *opaque, unsigned q)
{
	struct vub_conn *c = opaque;
	uint64_t one = 1;

	if (q < c->e->num_queues && c->vrings[q].call_fd >= 0 &&
	    write(c->vrings[q].call_fd, &one, sizeof(one)) < 0) {
		/* The front end went away: its socket tells us soon. */
	}
}

static void dev_broken(void *opaque, const char *why)
{
	struct vub_conn *c = opaque;
	uint64_t one = 1;

	vd_message(VD_MSG_ERROR, "vdisk: vhost-user-blk export '%s': device needs reset: %s",
		   c->e->id, why);
	for (unsigned i = 0; i < c->e->num_queues; i++)
		if (c->vrings[i].err_fd >= 0 && write(c->vrings[i].err_fd, &one, sizeof(one)) < 0) {
			/* nothing more we can do */
		}
}

static const struct vd_virtio_blk_ops dev_ops = {.notify = dev_notify, .broken = dev_broken};

/* --- messages ------------------------------------------------------------- */

/*
 * Receive what the message being assembled still lacks, and no more: fds
 * sent with the next message must not be taken with this one (a stream
 * socket hands them over with the bytes they were sent with).  Fds may come
 * with any byte of the message.  The header is checked as soon as it is
 * complete, before its size is used.
 *
 * Returns 1 when the message is complete, 0 when the socket has no more
 * for now, -ECONNRESET at EOF, -EPROTO for a bad header or lost fds,
 * -EMSGSIZE for a payload over the limit, or another -errno.
 */
static int msg_recv(struct vub_conn *c)
{
	struct vub_msg *m = &c->in;

	for (;;) {
		union {
			char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
			struct cmsghdr align;
		} u;
		struct iovec iov;
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = u.buf,
				    .msg_controllen = sizeof(u.buf)};
		ssize_t n;

		if (c->in_len < HDR_SIZE) {
			iov.iov_base = c->in_hdr + c->in_len;
			iov.iov_len = HDR_SIZE - c->in_len;
		} else if (c->in_len < HDR_SIZE + m->size) {
			iov.iov_base = m->payload + (c->in_len - HDR_SIZE);
			iov.iov_len = HDR_SIZE + m->size - c->in_len;
		} else {
			return 1;
		}
		n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
				int cnt = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
				int *fds = (int *)CMSG_DATA(cm);

				for (int i = 0; i < cnt; i++) {
					if (m->nfds < MAX_FDS)
						m->fds[m->nfds++] = fds[i];
					else
						close(fds[i]);
				}
			}
		}
		if (mh.msg_flags & MSG_CTRUNC)
			return -EPROTO;
		c->in_len += (size_t)n;
		if (c->in_len == HDR_SIZE) {
			memcpy(&m->request, c->in_hdr, 4);
			memcpy(&m->flags, c->in_hdr + 4, 4);
			memcpy(&m->size, c->in_hdr + 8, 4);
			if ((m->flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION)
				return -EPROTO;
			if (m->size > MAX_PAYLOAD)
				return -EMSGSIZE;
		}
	}
}

/* Forget the message just handled (closing fds nobody took). */
static void msg_reset(struct vub_conn *c)
{
	for (int i = 0; i < c->in.nfds; i++)
		close(c->in.fds[i]);
	c->in.nfds = 0;
	c->in.size = 0;
	c->in_len = 0;
}

/*
 * Write what the socket takes of the reply (its fd with the first byte).
 * 0 (all written, or the rest waits for conn_write), or -errno: the front
 * end is gone.
 */
static int conn_flush(struct vub_conn *c)
{
	while (c->out_pos < c->out_len) {
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} u;
		struct iovec iov = {.iov_base = c->out + c->out_pos,
				    .iov_len = c->out_len - c->out_pos};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (c->out_fd >= 0) {
			struct cmsghdr *cm;

			memset(&u, 0, sizeof(u));
			mh.msg_control = u.buf;
			mh.msg_controllen = sizeof(u.buf);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &c->out_fd, sizeof(int));
		}
		n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		/* The fd went with the first byte; the rest is plain data. */
		close_fd(&c->out_fd);
		c->out_pos += (size_t)n;
	}
	c->out_len = c->out_pos = 0;
	return 0;
}

/*
 * Queue the reply to @req (taking @fd, or -1, to send with it) and write
 * what the socket takes now.  0, or -errno when the connection is done for.
 */
static int queue_reply(struct vub_conn *c, const struct vub_msg *req, const void *payload,
		       uint32_t size, int fd)
{
	uint32_t flags = VHOST_USER_VERSION | VHOST_USER_REPLY;

	/* One message, one reply: nothing can be queued already. */
	if (size > sizeof(c->out) - HDR_SIZE || c->out_len) {
		if (fd >= 0)
			close(fd);
		return -EMSGSIZE;
	}
	memcpy(c->out, &req->request, 4);
	memcpy(c->out + 4, &flags, 4);
	memcpy(c->out + 8, &size, 4);
	if (size)
		memcpy(c->out + HDR_SIZE, payload, size);
	c->out_len = HDR_SIZE + size;
	c->out_pos = 0;
	c->out_fd = fd;
	return conn_flush(c);
}

static int send_reply(struct vub_conn *c, const struct vub_msg *req, const void *payload,
		      uint32_t size)
{
	return queue_reply(c, req, payload, size, -1);
}

static int reply_u64(struct vub_conn *c, const struct vub_msg *m, uint64_t v)
{
	return send_reply(c, m, &v, sizeof(v));
}

static uint64_t pl_u64(const struct vub_msg *m, size_t off)
{
	uint64_t v;
	memcpy(&v, m->payload + off, 8);
	return v;
}

static uint32_t pl_u32(const struct vub_msg *m, size_t off)
{
	uint32_t v;
	memcpy(&v, m->payload + off, 4);
	return v;
}

/* A ring index from a vring-state or u64 payload. */
static int ring_index(struct vub_conn *c, uint32_t idx)
{
	if (idx >= c->e->num_queues) {
		conn_error(c, "ring index out of range");
		return -1;
	}
	return (int)idx;
}

static int take_fd(struct vub_msg *m)
{
	int fd;

	if (m->nfds != 1)
		return -1;
	fd = m->fds[0];
	m->nfds = 0;
	return fd;
}

static int handle_set_mem_table(struct vub_conn *c, struct vub_msg *m)
{
	struct vub_region nr[MAX_REGIONS];
	uint32_t n;

	if (m->size < 8)
		return conn_error(c, "SET_MEM_TABLE too short");
	n = pl_u32(m, 0);
	if (n == 0 || n > MAX_REGIONS || m->size < 8 + 32 * n)
		return conn_error(c, "SET_MEM_TABLE: bad region count");
	if ((uint32_t)m->nfds != n)
		return conn_error(c, "SET_MEM_TABLE: fd count does not match the regions");
	for (uint32_t i = 0; i < n; i++) {
		uint64_t gpa = pl_u64(m, 8 + 32 * i), size = pl_u64(m, 16 + 32 * i);
		uint64_t uva = pl_u64(m, 24 + 32 * i), off = pl_u64(m, 32 + 32 * i);
		struct stat st;
		void *p;

		if (size == 0 || gpa + size < gpa || uva + size < uva || off + size < off ||
		    off + size > (uint64_t)SIZE_MAX) {
			while (i--)
				munmap(nr[i].map_base, nr[i].map_size);
			return conn_error(c, "SET_MEM_TABLE: bad region");
		}
		/* A region past the end of its file would fault (SIGBUS) on
		 * the first access to the missing part. */
		if (fstat(m->fds[i], &st) == 0 && S_ISREG(st.st_mode) &&
		    off + size > (uint64_t)st.st_size) {
			while (i--)
				munmap(nr[i].map_base, nr[i].map_size);
			return conn_error(c, "SET_MEM_TABLE: region past the end of its file");
		}
		p = mmap(NULL, (size_t)(off + size), PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_NORESERVE, m->fds[i], 0);
		if (p == MAP_FAILED) {
			while (i--)
				munmap(nr[i].map_base, nr[i].map_size);
			return conn_error(c, "SET_MEM_TABLE: cannot map a region");
		}
		nr[i] = (struct vub_region){.gpa = gpa,
					    .size = size,
					    .uva = uva,
					    .host = (uint8_t *)p + off,
					    .map_base = p,
					    .map_size = (size_t)(off + size)};
	}
	/* In-flight requests point into the old mappings: let them finish. */
	quiesce(c);
	resume(c);
	unmap_regions(c);
	memcpy(c->regions, nr, sizeof(nr[0]) * n);
	c->nregions = n;
	for (unsigned i = 0; i < c->e->num_queues; i++) {
		if (ring_map(c, i) < 0)
			return conn_error(c, "ring addresses not in the new memory table");
	}
	conn_trace(c, "memory table: %u regions", n);
	return 0;
}

/* --- inflight tracking ("Inflight I/O tracking") ------------------------------ */

/* One queue's part of the region, in the layout of @packed rings. */
static size_t inflight_queue_bytes(const struct vub_conn *c, bool packed)
{
	return vd_vq_inflight_size(c->inflight_queue_size, packed);
}

/* The ring layout the front end negotiated (so far). */
static bool conn_packed(const struct vub_conn *c)
{
	return c->features & (1ULL << VIRTIO_F_RING_PACKED);
}

/* Forget the region: no queue may point into it afterwards. */
static void inflight_unmap(struct vub_conn *c)
{
	for (unsigned i = 0; i < c->e->num_queues; i++)
		vd_vq_set_inflight(vd_virtio_blk_queue(c->blk, i), NULL, 0, NULL);
	if (c->inflight_map)
		munmap(c->inflight_map, c->inflight_map_size);
	c->inflight_map = NULL;
	c->inflight = NULL;
	c->inflight_map_size = 0;
}

/* A ring starts: track it in the region and take up what a previous back
 * end left in flight (split and packed rings, each in its layout). */
static int ring_inflight(struct vub_conn *c, unsigned i)
{
	struct vub_vring *v = &c->vrings[i];
	struct vd_vq *vq = vd_virtio_blk_queue(c->blk, i);
	size_t stride;
	uint16_t *st;
	int n;

	if (!c->inflight || i >= c->inflight_queues || !vd_vq_ready(vq))
		return 0;
	if (vq->num > c->inflight_queue_size)
		return conn_error(c, "ring larger than the inflight region's queues");
	/* SET_INFLIGHT_FD checked the size for split rings.  A front end
	 * that asked for the region before it negotiated a packed ring (QEMU
	 * before 5.2) has one too small for packed rings: run untracked, as
	 * we would without a region, rather than not at all. */
	stride = inflight_queue_bytes(c, vq->packed);
	if ((uint64_t)c->inflight_queues * stride > c->inflight_map_size) {
		vd_message(VD_MSG_WARNING,
			   "vdisk: vhost-user-blk export '%s': inflight region too small "
			   "for packed rings; ring %u runs untracked",
			   c->e->id, i);
		return 0;
	}
	st = realloc(v->inflight_state, vd_vq_inflight_state_len(vq->num) * sizeof(*st));
	if (!st)
		return conn_error(c, "out of memory");
	v->inflight_state = st;
	n = vd_vq_set_inflight(vq, c->inflight + i * stride, stride, st);
	if (n < 0)
		return conn_error(c, "unusable inflight region");
	if (n > 0)
		conn_trace(c, "ring %u: resubmitting %d in-flight requests", i, n);
	return 0;
}

static int inflight_msg(struct vub_conn *c, const struct vub_msg *m, uint64_t *size,
			uint64_t *offset, uint16_t *nq, uint16_t *qs)
{
	if (m->size != INFLIGHT_MSG_SIZE)
		return conn_error(c, "inflight message: bad size");
	*size = pl_u64(m, 0);
	*offset = pl_u64(m, 8);
	memcpy(nq, m->payload + 16, 2);
	memcpy(qs, m->payload + 18, 2);
	if (*nq == 0 || *nq > c->e->num_queues || *qs == 0 || *qs > VD_VQ_MAX_SIZE)
		return conn_error(c, "inflight message: bad queue count or size");
	return 0;
}

/* The connection's region becomes @p (mapped, @size bytes, @nq queues of
 * @qs entries); the started rings track themselves in it. */
static void inflight_install(struct vub_conn *c, void *p, size_t size, uint16_t nq, uint16_t qs)
{
	quiesce(c);
	inflight_unmap(c);
	c->inflight_map = c->inflight = p;
	c->inflight_map_size = size;
	c->inflight_queues = nq;
	c->inflight_queue_size = qs;
	for (unsigned i = 0; i < c->e->num_queues; i++)
		if (c->vrings[i].started && ring_inflight(c, i) < 0)
			break;
	resume(c);
}

static int handle_get_inflight(struct vub_conn *c, struct vub_msg *m)
{
	uint64_t size, offset;
	uint16_t nq, qs;
	uint8_t out[INFLIGHT_MSG_SIZE] = {0};
	void *p;
	int fd, ret;

	if (inflight_msg(c, m, &size, &offset, &nq, &qs) < 0)
		return -EPROTO;
	size = nq * vd_vq_inflight_size(qs, conn_packed(c));
	fd = memfd_create("vdisk-inflight", MFD_CLOEXEC);
	if (fd < 0)
		return conn_error(c, "cannot create the inflight region");
	if (ftruncate(fd, (off_t)size) < 0 ||
	    (p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		close(fd);
		return conn_error(c, "cannot create the inflight region");
	}
	/* The region is zero: version 0, nothing in flight. */
	inflight_install(c, p, size, nq, qs);
	memcpy(out, &size, 8);
	memcpy(out + 16, &nq, 2);
	memcpy(out + 18, &qs, 2);
	/* The reply takes the fd (and closes it once sent). */
	ret = queue_reply(c, m, out, sizeof(out), fd);
	return ret < 0 ? -EIO : 1;
}

static int handle_set_inflight(struct vub_conn *c, struct vub_msg *m)
{
	uint64_t size, offset;
	uint16_t nq, qs;
	void *p;
	int fd;

	if (inflight_msg(c, m, &size, &offset, &nq, &qs) < 0)
		return -EPROTO;
	fd = take_fd(m);
	if (fd < 0)
		return conn_error(c, "SET_INFLIGHT_FD without exactly one fd");
	/* Large enough for split rings, the smaller layout: ring_inflight()
	 * checks the ring's. */
	if (size < nq * vd_vq_inflight_size(qs, false) || offset + size < offset ||
	    offset + size > (uint64_t)SIZE_MAX || offset % (uint64_t)sysconf(_SC_PAGESIZE)) {
		close(fd);
		return conn_error(c, "SET_INFLIGHT_FD: bad region");
	}
	{
		struct stat st;

		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    offset + size > (uint64_t)st.st_size) {
			close(fd);
			return conn_error(c, "SET_INFLIGHT_FD: region past the end of its file");
		}
	}
	p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)offset);
	close(fd);
	if (p == MAP_FAILED)
		return conn_error(c, "SET_INFLIGHT_FD: cannot map the region");
	inflight_install(c, p, (size_t)size, nq, qs);
	for (unsigned i = 0; i < c->e->num_queues; i++)
		process_ring(c, i);
	return c->dead ? -EPROTO : 0;
}

static int handle_vring_fd(struct vub_conn *c, struct vub_msg *m)
{
	uint64_t v;
	int i, fd = -1;
	struct vub_vring *vr;

	if (m->size != 8)
		return conn_error(c, "vring fd message: bad size");
	v = pl_u64(m, 0);
	if (v & ~(uint64_t)(VRING_IDX_MASK | VRING_NOFD_MASK))
		return conn_error(c, "vring fd message: reserved bits set");
	i = ring_index(c, v & VRING_IDX_MASK);
	if (i < 0)
		return -EPROTO;
	if (!(v & VRING_NOFD_MASK)) {
		fd = take_fd(m);
		if (fd < 0)
			return conn_error(c, "vring fd message without exactly one fd");
	} else if (m->nfds) {
		return conn_error(c, "vring fd message: fd with the no-fd flag");
	}
	/* Never block on a descriptor the front end gave us (a pipe, say):
	 * one front end must not stall the loop every export shares. */
	if (fd >= 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		close(fd);
		return conn_error(c, "cannot use the vring fd");
	}
	vr = &c->vrings[i];
	switch (m->request) {
	case VHOST_USER_SET_VRING_KICK:
		if (vr->kick_fd >= 0) {
			ring_kick_handlers(c, (unsigned)i, false);
			close_fd(&vr->kick_fd);
		}
		vr->kick_fd = fd;
		/* The ring starts here (libvhost-user's reading of "Ring
		 * states"); polling mode (no fd) is not supported. */
		if (fd < 0)
			return conn_error(c, "polling rings are not supported");
		vr->started = true;
		if (ring_map(c, (unsigned)i) < 0)
			return conn_error(c, "ring addresses outside guest memory");
		if (ring_inflight(c, (unsigned)i) < 0)
			return -EPROTO;
		ring_kick_handlers(c, (unsigned)i, true);
		process_ring(c, (unsigned)i);
		break;
	case VHOST_USER_SET_VRING_CALL:
		close_fd(&vr->call_fd);
		vr->call_fd = fd;
		break;
	default:
		close_fd(&vr->err_fd);
		vr->err_fd = fd;
		break;
	}
	return 0;
}

static void apply_features(struct vub_conn *c)
{
	vd_virtio_blk_set_features(c->blk, c->features & ~(1ULL << VHOST_USER_F_PROTOCOL_FEATURES));
}

/* Returns 1 if a reply was sent, 0 if not, -errno (connection dead). */
static int handle_msg(struct vub_conn *c, struct vub_msg *m)
{
	uint64_t feats;
	int i;

	conn_trace(c, "request %u flags 0x%x size %u fds %d", m->request, m->flags, m->size,
		   m->nfds);
	/* Only these carry fds. */
	if (m->nfds && m->request != VHOST_USER_SET_MEM_TABLE &&
	    m->request != VHOST_USER_SET_VRING_KICK && m->request != VHOST_USER_SET_VRING_CALL &&
	    m->request != VHOST_USER_SET_VRING_ERR && m->request != VHOST_USER_SET_BACKEND_REQ_FD &&
	    m->request != VHOST_USER_SET_INFLIGHT_FD)
		return conn_error(c, "unexpected file descriptors");

	switch (m->request) {
	case VHOST_USER_GET_FEATURES:
		feats = vd_virtio_blk_features(c->blk) | (1ULL << VHOST_USER_F_PROTOCOL_FEATURES);
		return reply_u64(c, m, feats) < 0 ? -EIO : 1;
	case VHOST_USER_SET_FEATURES:
		if (m->size != 8)
			return conn_error(c, "SET_FEATURES: bad size");
		c->features = pl_u64(m, 0);
		c->features_acked = true;
		/* Without PROTOCOL_FEATURES rings are enabled at once. */
		if (!(c->features & (1ULL << VHOST_USER_F_PROTOCOL_FEATURES)))
			for (unsigned q = 0; q < c->e->num_queues; q++)
				c->vrings[q].enabled = true;
		/* The ring layout may change (RING_PACKED): map the rings
		 * again with the sizes of the new layout, with nothing in
		 * flight. */
		quiesce(c);
		apply_features(c);
		for (unsigned q = 0; q < c->e->num_queues; q++) {
			if (ring_map(c, q) < 0)
				return conn_error(c, "rings outside guest memory");
			/* A new ring layout stopped inflight tracking (the
			 * region's layout is the ring's): take it up again. */
			if (c->vrings[q].started && !vd_virtio_blk_queue(c->blk, q)->inflight &&
			    ring_inflight(c, q) < 0)
				return -EPROTO;
		}
		resume(c);
		return 0;
	case VHOST_USER_GET_PROTOCOL_FEATURES:
		return reply_u64(c, m, OUR_PROTOCOL_FEATURES) < 0 ? -EIO : 1;
	case VHOST_USER_SET_PROTOCOL_FEATURES:
		if (m->size != 8)
			return conn_error(c, "SET_PROTOCOL_FEATURES: bad size");
		c->protocol_features = pl_u64(m, 0) & OUR_PROTOCOL_FEATURES;
		return 0;
	case VHOST_USER_SET_OWNER:
		return 0;
	case VHOST_USER_RESET_OWNER:
		/* Deprecated; treat as a device reset. */
		for (unsigned q = 0; q < c->e->num_queues; q++)
			c->vrings[q].started = false;
		quiesce(c);
		resume(c);
		vd_virtio_blk_reset(c->blk);
		return 0;
	case VHOST_USER_GET_QUEUE_NUM:
		return reply_u64(c, m, c->e->num_queues) < 0 ? -EIO : 1;
	case VHOST_USER_SET_MEM_TABLE:
		return handle_set_mem_table(c, m);
	case VHOST_USER_SET_VRING_NUM:
	case VHOST_USER_SET_VRING_BASE:
	case VHOST_USER_SET_VRING_ENABLE: {
		uint32_t num;

		if (m->size != 8)
			return conn_error(c, "vring state: bad size");
		i = ring_index(c, pl_u32(m, 0));
		if (i < 0)
			return -EPROTO;
		num = pl_u32(m, 4);
		if (m->request == VHOST_USER_SET_VRING_NUM) {
			struct vd_vq *vq = vd_virtio_blk_queue(c->blk, (unsigned)i);

			if (num == 0 || num > VD_VQ_MAX_SIZE || (num & (num - 1)))
				return conn_error(c, "SET_VRING_NUM: bad size");
			/* A new queue: forget the old one (also a NEEDS_RESET
			 * it caused: the front end is setting the device up
			 * again). */
			ring_stop(c, (unsigned)i);
			vd_virtio_blk_reset_queue(c->blk, (unsigned)i);
			vd_vq_init(vq, num, &c->mem);
			apply_features(c);
			c->vrings[i].num = num;
			if (ring_map(c, (unsigned)i) < 0)
				return conn_error(c, "ring addresses outside guest memory");
		} else if (m->request == VHOST_USER_SET_VRING_BASE) {
			struct vd_vq *vq = vd_virtio_blk_queue(c->blk, (unsigned)i);

			if (num > 0xffff && !vq->packed)
				return conn_error(c, "SET_VRING_BASE: index out of range");
			c->vrings[i].base = num;
			vd_vq_set_base(vq, num);
		} else {
			c->vrings[i].enabled = num != 0;
			process_ring(c, (unsigned)i);
		}
		return 0;
	}
	case VHOST_USER_SET_VRING_ADDR: {
		struct vub_vring *v;

		if (m->size != 40)
			return conn_error(c, "SET_VRING_ADDR: bad size");
		i = ring_index(c, pl_u32(m, 0));
		if (i < 0)
			return -EPROTO;
		v = &c->vrings[i];
		v->desc_uva = pl_u64(m, 8);
		v->used_uva = pl_u64(m, 16);
		v->avail_uva = pl_u64(m, 24);
		v->addr_set = true;
		if (ring_map(c, (unsigned)i) < 0)
			return conn_error(c, "SET_VRING_ADDR: rings outside guest memory");
		return 0;
	}
	case VHOST_USER_GET_VRING_BASE: {
		struct vd_vq *vq;
		uint32_t st[2];

		if (m->size != 8)
			return conn_error(c, "GET_VRING_BASE: bad size");
		i = ring_index(c, pl_u32(m, 0));
		if (i < 0)
			return -EPROTO;
		/* Stop the ring and wait for its requests, then tell where
		 * to resume. */
		ring_stop(c, (unsigned)i);
		close_fd(&c->vrings[i].kick_fd);
		vq = vd_virtio_blk_queue(c->blk, (unsigned)i);
		st[0] = (uint32_t)i;
		/* Packed rings: wrap counters and the used side too. */
		st[1] = vq->num ? vd_vq_get_base(vq) : c->vrings[i].base;
		c->vrings[i].base = st[1];
		return send_reply(c, m, st, sizeof(st)) < 0 ? -EIO : 1;
	}
	case VHOST_USER_SET_VRING_KICK:
	case VHOST_USER_SET_VRING_CALL:
	case VHOST_USER_SET_VRING_ERR:
		return handle_vring_fd(c, m);
	case VHOST_USER_SET_BACKEND_REQ_FD: {
		int fd;

		if (m->size != 0 && m->size != 8)
			return conn_error(c, "SET_BACKEND_REQ_FD: bad size");
		fd = take_fd(m);
		if (fd < 0)
			return conn_error(c, "SET_BACKEND_REQ_FD without exactly one fd");
		backend_close(c);
		c->backend_fd = fd;
		return 0;
	}
	case VHOST_USER_GET_INFLIGHT_FD:
		return handle_get_inflight(c, m);
	case VHOST_USER_SET_INFLIGHT_FD:
		return handle_set_inflight(c, m);
	case VHOST_USER_GET_CONFIG:
	case VHOST_USER_SET_CONFIG: {
		uint32_t off, size;
		uint8_t out[12 + MAX_CONFIG];

		if (m->size < 12)
			return conn_error(c, "config message too short");
		off = pl_u32(m, 0);
		size = pl_u32(m, 4);
		if (size > MAX_CONFIG || m->size != 12 + size)
			return conn_error(c, "config message: bad size");
		if (m->request == VHOST_USER_SET_CONFIG) {
			if (vd_virtio_blk_set_config(c->blk, off, m->payload + 12, size) < 0)
				return conn_error(c, "SET_CONFIG outside the config space");
			return 0;
		}
		memcpy(out, m->payload, 12);
		if (vd_virtio_blk_get_config(c->blk, off, out + 12, size) < 0)
			return send_reply(c, m, NULL, 0) < 0 ? -EIO : 1; /* failure */
		return send_reply(c, m, out, 12 + size) < 0 ? -EIO : 1;
	}
	default: {
		char why[64];

		snprintf(why, sizeof(why), "unsupported request %u", m->request);
		return conn_error(c, why);
	}
	}
}

static void conn_close(struct vub_conn *c);

static void conn_read(void *opaque)
{
	struct vub_conn *c = opaque;

	for (int i = 0; i < MSGS_PER_EVENT && !c->dead && !c->out_len && !c->quiesced; i++) {
		struct vub_msg *m = &c->in;
		int ret = msg_recv(c);

		if (ret == 0)
			break; /* the rest comes with a later event */
		if (ret < 0) {
			if (ret != -ECONNRESET)
				conn_error(c, ret == -EMSGSIZE ? "message too large"
					      : ret == -EPROTO ? "bad message header"
							       : "cannot read a message");
			else
				conn_trace(c, "front end disconnected");
			c->dead = true;
			break;
		}
		ret = handle_msg(c, m);
		/* REPLY_ACK: acknowledge a message that got no other reply. */
		if (ret == 0 && !c->dead && (m->flags & VHOST_USER_NEED_REPLY) &&
		    (c->protocol_features & (1ULL << PROTO_F_REPLY_ACK)))
			if (reply_u64(c, m, 0) < 0)
				c->dead = true;
		if (ret < 0)
			c->dead = true;
		msg_reset(c);
	}
	conn_update_handlers(c);
	if (c->dead)
		conn_close(c);
}

/* The socket takes more of the reply; once it is all written, reading
 * resumes. */
static void conn_write(void *opaque)
{
	struct vub_conn *c = opaque;

	if (conn_flush(c) < 0) {
		conn_trace(c, "front end gone before its reply was written");
		c->dead = true;
		conn_close(c);
		return;
	}
	conn_update_handlers(c);
	if (c->dead)
		conn_close(c);
}

/* --- connection lifetime ---------------------------------------------------- */

struct vub_conn_mem {
	struct vub_conn conn;
	struct vub_kick kicks[];
};

static struct vub_kick *kicks_of(struct vub_conn *c)
{
	return ((struct vub_conn_mem *)c)->kicks;
}

int vub_conn_new(struct vd_export *e, int fd)
{
	struct vub_conn_mem *cm;
	struct vub_conn *c;
	struct vd_virtio_blk_conf conf = {.blk = e->blk,
					  .num_queues = e->num_queues,
					  .queue_size = VD_VQ_MAX_SIZE,
					  .read_only = !e->writable,
					  .logical_block_size = e->lbs,
					  .serial = e->serial};
	int ret;

	cm = calloc(1, sizeof(*cm) + e->num_queues * sizeof(struct vub_kick));
	if (!cm) {
		close(fd);
		return -ENOMEM;
	}
	c = &cm->conn;
	c->e = e;
	c->fd = fd;
	c->out_fd = -1;
	c->backend_fd = -1;
	c->mem.map = gpa_map;
	c->mem.opaque = c;
	c->vrings = calloc(e->num_queues, sizeof(*c->vrings));
	if (!c->vrings) {
		ret = -ENOMEM;
		goto fail;
	}
	for (unsigned i = 0; i < e->num_queues; i++) {
		c->vrings[i].kick_fd = c->vrings[i].call_fd = c->vrings[i].err_fd = -1;
		cm->kicks[i].c = c;
		cm->kicks[i].idx = i;
	}
	ret = vd_virtio_blk_new(&conf, &dev_ops, c, &c->blk);
	if (ret < 0)
		goto fail;
	ret = vd_loop_set_fd_handler(e->loop, fd, conn_read, NULL, c);
	if (ret < 0)
		goto fail_blk;
	c->watch = WATCH_READ;
	c->next = e->conns;
	e->conns = c;
	e->nconns++;
	return 0;

fail_blk:
	vd_virtio_blk_free(c->blk);
fail:
	free(c->vrings);
	free(cm);
	close(fd);
	return ret;
}

struct vub_conn *vub_conn_next(struct vub_conn *c)
{
	return c->next;
}

void vub_conn_free(struct vub_conn *c)
{
	struct vd_export *e = c->e;

	c->dead = true;
	quiesce(c);
	/* Nothing is in flight now: the device and the mappings can go. */
	for (unsigned i = 0; i < e->num_queues; i++) {
		close_fd(&c->vrings[i].kick_fd);
		close_fd(&c->vrings[i].call_fd);
		close_fd(&c->vrings[i].err_fd);
	}
	/* The region stays with the front end (and the next back end). */
	inflight_unmap(c);
	backend_close(c);
	msg_reset(c);
	close_fd(&c->out_fd);
	vd_virtio_blk_free(c->blk);
	for (unsigned i = 0; i < e->num_queues; i++)
		free(c->vrings[i].inflight_state);
	unmap_regions(c);
	for (struct vub_conn **pp = &e->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			e->nconns--;
			break;
		}
	}
	close(c->fd);
	free(c->vrings);
	free(c);
}

/* --- the back-end channel ----------------------------------------------------- */

/* Write what the channel takes of the pending back-end message; a channel
 * the front end does not read keeps it pending (and the loop free), one
 * that fails is closed: config changes are then not announced, the
 * connection itself carries on. */
static void backend_flush(struct vub_conn *c)
{
	while (c->backend_out_pos < c->backend_out_len) {
		ssize_t n =
			send(c->backend_fd, c->backend_out + c->backend_out_pos,
			     c->backend_out_len - c->backend_out_pos, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			conn_trace(c, "back-end channel failed; closing it");
			backend_close(c);
			return;
		}
		c->backend_out_pos += (size_t)n;
	}
	if (c->backend_out_pos == c->backend_out_len) {
		c->backend_out_len = c->backend_out_pos = 0;
		conn_trace(c, "config change sent");
	}
	vd_loop_set_fd_handler(c->e->loop, c->backend_fd, NULL,
			       c->backend_out_len ? backend_write : NULL, c);
}

static void backend_write(void *opaque)
{
	backend_flush(opaque);
}

static void backend_close(struct vub_conn *c)
{
	if (c->backend_fd >= 0)
		vd_loop_set_fd_handler(c->e->loop, c->backend_fd, NULL, NULL, NULL);
	close_fd(&c->backend_fd);
	c->backend_out_len = c->backend_out_pos = 0;
}

/*
 * The device's configuration changed (block_resize): tell the front end on
 * the back-end channel; it reads the new config with GET_CONFIG.  Without
 * NEED_REPLY: waiting here for the front end, which may be waiting for our
 * GET_CONFIG reply, would deadlock.  A channel that is full keeps the
 * message until it takes it; one already waiting says all a second would.
 */
void vub_conn_config_changed(struct vub_conn *c)
{
	uint32_t hdr[3] = {VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, VHOST_USER_VERSION, 0};

	if (c->backend_fd < 0 || !(c->protocol_features & (1ULL << PROTO_F_BACKEND_REQ)) ||
	    !(c->protocol_features & (1ULL << PROTO_F_CONFIG)))
		return;
	if (c->backend_out_len) {
		conn_trace(c, "config change already waiting for the back-end channel");
		return;
	}
	memcpy(c->backend_out, hdr, sizeof(hdr));
	c->backend_out_len = sizeof(hdr);
	c->backend_out_pos = 0;
	backend_flush(c);
}

static void conn_close(struct vub_conn *c)
{
	vub_conn_free(c);
}
