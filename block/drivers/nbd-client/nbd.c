/* SPDX-License-Identifier: MIT */
/*
 * The "nbd" protocol driver: a client of an NBD server (QEMU 7.2 block/nbd.c).
 *
 * Names: nbd://HOST[:PORT]/NAME, nbd+tcp://..., nbd+unix:///NAME?socket=PATH,
 * QEMU's legacy nbd:unix:PATH[:exportname=NAME] and nbd:HOST:PORT[:...],
 * or the options server.type=unix|inet, server.path, server.host,
 * server.port, export; also reconnect-delay and open-timeout (seconds).
 * TLS as QEMU's: tls-creds=ID names client credentials (<vdisk/tls.h>,
 * --object tls-creds-x509|tls-creds-psk,...,endpoint=client); STARTTLS is
 * then the first option, a server that refuses it fails the open (never a
 * fallback to plaintext), and an x509 server's certificate must chain to
 * the CA and name tls-hostname (default: server.host for inet; a unix
 * socket needs tls-hostname with x509, as in QEMU).
 *
 * One connection per node, up to NBD_MAX_IN_FLIGHT requests on it.  The
 * socket is non-blocking and every wait is a coroutine yield on the node's
 * loop: a request coroutine writes its request under send_lock, then waits;
 * a reader coroutine, alive while replies are due, reads them (through the
 * checked parser in nbd-client/wire.c), in whatever order they come, into
 * the waiting requests' slots, and wakes their owners.
 *
 * A lost connection (end of stream, an I/O error) is QEMU's: with
 * reconnect-delay=N requests wait up to N seconds while the next request
 * reconnects (retrying, backing off), and are then resent; past that, or
 * with N=0, they fail with EIO, and a later request tries once more (at
 * most once a second).  A server that breaks the protocol is dropped for
 * good (all requests fail with EIO).
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <vdisk/aio.h>
#include <vdisk/loop.h>
#include <vdisk/nbd-proto.h>
#include <vdisk/tls.h>

#include "block/drivers.h"
#include "block/drivers/nbd-client/nbd-client.h"

#define NS_PER_SEC INT64_C(1000000000)
/* How long one connection attempt (connect and handshake) may take. */
#define NBD_ATTEMPT_TIMEOUT_NS (10 * NS_PER_SEC)
#define NBD_MAX_PAYLOAD (32u * 1024 * 1024)

enum nbd_conn_state {
	NBD_CONNECTED,
	NBD_CONNECTING_WAIT, /* lost; requests wait for a reconnect until the deadline */
	NBD_CONNECTING_NOWAIT, /* lost; requests fail unless one attempt succeeds */
	NBD_QUIT, /* dropped for good (protocol error) or closing */
};

struct nbd_state {
	struct vd_node *node;
	char *path; /* server.path (unix) or NULL */
	char *host, *port; /* server.host, server.port (inet) */
	char *export_name;
	int64_t reconnect_delay_ns, open_timeout_ns;
	struct vd_tls_creds *tls_creds; /* tls-creds=, or NULL */
	char *tls_hostname; /* checked in the server's certificate, or NULL */

	int fd;
	struct vd_tls_session *tls; /* on fd, once STARTTLS is done */
	struct vd_loop *fd_loop; /* where the fd handler is registered, or NULL */
	bool reg_read, reg_write;
	struct vd_co *read_waiter, *write_waiter;
	bool timed_out; /* the current attempt's timer fired */

	struct nbd_wire wire;
	enum nbd_conn_state state;
	int64_t wait_deadline;
	int64_t last_attempt;
	uint64_t generation; /* cookies: generation << 8 | slot */

	struct vd_co_mutex send_lock;
	struct vd_co_queue free_slot_waiters;
	unsigned used_slots; /* SENDING, AWAITING and DONE not yet released */
	unsigned awaiting; /* SENDING and AWAITING: the reader stays for them */
	bool reader_alive;
	struct vd_co_queue reader_exit;
};

/* --- the socket: non-blocking I/O in coroutines -------------------------- */

static void on_read(void *opaque);
static void on_write(void *opaque);

static void update_handlers(struct nbd_state *s)
{
	bool want_r = s->fd >= 0 && (s->reader_alive || s->read_waiter);
	bool want_w = s->fd >= 0 && s->write_waiter;
	struct vd_loop *loop = s->node->loop;

	if (s->fd_loop && (s->fd_loop != loop || (!want_r && !want_w))) {
		vd_loop_set_fd_handler(s->fd_loop, s->fd, NULL, NULL, NULL);
		s->fd_loop = NULL;
		s->reg_read = s->reg_write = false;
	}
	if (!want_r && !want_w)
		return;
	if (s->fd_loop && s->reg_read == want_r && s->reg_write == want_w)
		return;
	if (vd_loop_set_fd_handler(loop, s->fd, want_r ? on_read : NULL, want_w ? on_write : NULL,
				   s) == 0) {
		s->fd_loop = loop;
		s->reg_read = want_r;
		s->reg_write = want_w;
	}
}

static void on_read(void *opaque)
{
	struct nbd_state *s = opaque;
	struct vd_co *co = s->read_waiter;

	s->read_waiter = NULL;
	if (co)
		vd_co_wake(co);
	else
		update_handlers(s);
}

static void on_write(void *opaque)
{
	struct nbd_state *s = opaque;
	struct vd_co *co = s->write_waiter;

	s->write_waiter = NULL;
	update_handlers(s);
	if (co)
		vd_co_wake(co);
}

static void wait_fd(struct nbd_state *s, bool write)
{
	if (write)
		s->write_waiter = vd_co_self();
	else
		s->read_waiter = vd_co_self();
	update_handlers(s);
	vd_co_yield();
}

static void iov_advance(struct iovec **iov, int *niov, size_t n)
{
	while (n && *niov) {
		if (n < (*iov)->iov_len) {
			(*iov)->iov_base = (char *)(*iov)->iov_base + n;
			(*iov)->iov_len -= n;
			return;
		}
		n -= (*iov)->iov_len;
		(*iov)++;
		(*niov)--;
	}
	while (*niov && !(*iov)->iov_len) {
		(*iov)++;
		(*niov)--;
	}
}

/* Over TLS: one record call per buffer; GnuTLS keeps what it decrypted
 * beyond it, so a read waits for the socket only after -EAGAIN. */
static int tls_readv(struct nbd_state *s, struct iovec *iov, int niov)
{
	while (niov) {
		ssize_t r = vd_tls_session_recv(s->tls, iov->iov_base, iov->iov_len);
		if (r > 0)
			iov_advance(&iov, &niov, (size_t)r);
		else if (r == 0)
			return -EPIPE;
		else if (r == -EAGAIN)
			wait_fd(s, false);
		else
			return (int)r;
	}
	return 0;
}

/* After -EAGAIN GnuTLS wants the same bytes again: the iov is kept.  A
 * request header and small data go out as one record. */
static int tls_writev(struct nbd_state *s, struct iovec *iov, int niov)
{
	while (niov) {
		ssize_t r = vd_tls_session_sendv(s->tls, iov, niov);
		if (r >= 0)
			iov_advance(&iov, &niov, (size_t)r);
		else if (r == -EAGAIN)
			wait_fd(s, true);
		else
			return (int)r;
	}
	return 0;
}

static int sock_readv(void *opaque, struct iovec *iov, int niov)
{
	struct nbd_state *s = opaque;

	iov_advance(&iov, &niov, 0);
	if (s->tls)
		return tls_readv(s, iov, niov);
	while (niov) {
		ssize_t r = readv(s->fd, iov, niov < IOV_MAX ? niov : IOV_MAX);
		if (r > 0) {
			iov_advance(&iov, &niov, (size_t)r);
		} else if (r == 0) {
			return -EPIPE;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			wait_fd(s, false);
		} else if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

static int sock_writev(void *opaque, struct iovec *iov, int niov)
{
	struct nbd_state *s = opaque;

	iov_advance(&iov, &niov, 0);
	if (s->tls)
		return tls_writev(s, iov, niov);
	while (niov) {
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = niov < IOV_MAX ? niov : IOV_MAX};
		ssize_t r = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
		if (r >= 0) {
			iov_advance(&iov, &niov, (size_t)r);
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			wait_fd(s, true);
		} else if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

static void close_socket(struct nbd_state *s)
{
	if (s->fd < 0)
		return;
	if (s->fd_loop)
		vd_loop_set_fd_handler(s->fd_loop, s->fd, NULL, NULL, NULL);
	s->fd_loop = NULL;
	s->reg_read = s->reg_write = false;
	vd_tls_session_free(s->tls);
	s->tls = NULL;
	close(s->fd);
	s->fd = -1;
}

static void attempt_timeout(void *opaque)
{
	struct nbd_state *s = opaque;

	s->timed_out = true;
	if (s->fd >= 0)
		shutdown(s->fd, SHUT_RDWR); /* wakes whoever waits on it */
}

static const char *server_name(struct nbd_state *s, char *buf, size_t size)
{
	if (s->path)
		snprintf(buf, size, "%s", s->path);
	else
		snprintf(buf, size, "%s:%s", s->host, s->port);
	return buf;
}

/* A non-blocking connect of s->fd to @addr. */
static int co_connect(struct nbd_state *s, const struct sockaddr *addr, socklen_t len)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (connect(s->fd, addr, len) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return -errno;
	wait_fd(s, true);
	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return -errno;
	return soerr ? -soerr : (s->timed_out ? -ETIMEDOUT : 0);
}

static int open_socket(struct nbd_state *s, int family)
{
	s->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	return s->fd < 0 ? -errno : 0;
}

struct resolve {
	const char *host, *port;
	struct addrinfo *res;
	int gai, sys_errno;
};

/* On a pool thread: getaddrinfo() for resolve_worker's caller. */
static int resolve_worker(void *opaque)
{
	struct resolve *r = opaque;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};

	r->gai = getaddrinfo(r->host, r->port, &hints, &r->res);
	r->sys_errno = errno;
	return 0;
}

static int connect_server(struct nbd_state *s, struct vd_error *err)
{
	char name[300];
	int ret;

	if (s->path) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		if (strlen(s->path) >= sizeof(sun.sun_path))
			return vd_error_set(err, -ENAMETOOLONG, "UNIX socket path '%s' is too long",
					    s->path);
		strcpy(sun.sun_path, s->path);
		ret = open_socket(s, AF_UNIX);
		if (ret == 0)
			ret = co_connect(s, (struct sockaddr *)&sun, sizeof(sun));
	} else {
		/* A name lookup can take seconds: it runs on the thread pool, so
		 * the loop (other exports, QMP) goes on meanwhile. */
		struct resolve r = {.host = s->host, .port = s->port};
		struct addrinfo *res, *ai;
		int gai = vd_thread_pool_co(s->node->loop, resolve_worker, &r);
		if (gai < 0)
			return vd_error_setg_errno(err, gai, "address resolution failed for %s",
						   server_name(s, name, sizeof(name)));
		if (r.gai)
			return vd_error_set(
				err, -EHOSTUNREACH, "address resolution failed for %s: %s",
				server_name(s, name, sizeof(name)),
				r.gai == EAI_SYSTEM ? strerror(r.sys_errno) : gai_strerror(r.gai));
		res = r.res;
		ret = -ECONNREFUSED;
		for (ai = res; ai && !s->timed_out; ai = ai->ai_next) {
			ret = open_socket(s, ai->ai_family);
			if (ret == 0)
				ret = co_connect(s, ai->ai_addr, ai->ai_addrlen);
			if (ret == 0)
				break;
			close_socket(s);
		}
		freeaddrinfo(res);
		if (ret == 0) {
			int one = 1;
			setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
	}
	if (ret < 0) {
		close_socket(s);
		return vd_error_setg_errno(err, ret, "Failed to connect to '%s'",
					   server_name(s, name, sizeof(name)));
	}
	return 0;
}

/* The server acknowledged NBD_OPT_STARTTLS: the TLS handshake, in this
 * coroutine; the attempt's timer bounds it (it shuts the socket down). */
static int sock_starttls(void *opaque, struct vd_error *err)
{
	struct nbd_state *s = opaque;
	int ret = vd_tls_session_new(s->tls_creds, s->fd, s->tls_hostname, &s->tls, err);

	while (ret == 0) {
		ret = vd_tls_session_handshake(s->tls, err);
		if (ret != -EAGAIN)
			break;
		wait_fd(s, vd_tls_session_want_write(s->tls));
		ret = 0;
	}
	if (ret < 0) {
		vd_tls_session_free(s->tls);
		s->tls = NULL;
	}
	return ret;
}

/* One attempt: connect and negotiate within NBD_ATTEMPT_TIMEOUT_NS (and
 * @deadline, if not 0).  A reconnect must find the export as it was. */
static int connect_attempt(struct nbd_state *s, int64_t deadline, struct vd_error *err)
{
	struct nbd_export_info info;
	struct nbd_transport t = {.readv = sock_readv,
				  .writev = sock_writev,
				  .starttls = s->tls_creds ? sock_starttls : NULL,
				  .opaque = s};
	int64_t now = vd_clock_ns(), end = now + NBD_ATTEMPT_TIMEOUT_NS;
	struct vd_timer *timer;
	bool reconnect = s->generation != 0;
	int ret;

	close_socket(s);
	s->last_attempt = now;
	if (deadline && deadline < end)
		end = deadline;
	timer = vd_timer_new(s->node->loop, attempt_timeout, s);
	if (!timer)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	s->timed_out = false;
	vd_timer_mod(timer, end);
	ret = connect_server(s, err);
	if (ret == 0) {
		ret = nbd_wire_negotiate(&t, s->export_name, &info, err);
		if (ret < 0 && s->timed_out) {
			vd_error_clear(err);
			ret = vd_error_set(err, -ETIMEDOUT,
					   "Timed out negotiating with the server");
		}
	}
	vd_timer_del(timer);
	vd_timer_free(timer);
	if (ret == 0 && reconnect &&
	    (info.size != s->wire.info.size || info.flags != s->wire.info.flags))
		ret = vd_error_set(err, -EINVAL, "The export changed across a reconnect");
	if (ret < 0) {
		close_socket(s);
		return ret;
	}
	s->wire.info = info;
	s->wire.t = t;
	s->state = NBD_CONNECTED;
	s->generation++;
	return 0;
}

/* --- the connection ------------------------------------------------------- */

static void connection_failed(struct nbd_state *s, int err)
{
	char name[300];

	if (s->state != NBD_CONNECTED)
		return;
	if (err == -EPROTO) {
		s->state = NBD_QUIT;
		vd_message(VD_MSG_ERROR, "nbd: dropping the connection to '%s': %s",
			   server_name(s, name, sizeof(name)), s->wire.error);
	} else {
		s->state = s->reconnect_delay_ns ? NBD_CONNECTING_WAIT : NBD_CONNECTING_NOWAIT;
		s->wait_deadline = vd_clock_ns() + s->reconnect_delay_ns;
	}
	if (s->fd >= 0)
		shutdown(s->fd, SHUT_RDWR); /* wakes the reader and any writer */
}

/* Fail every request on the wire: they may be resent after a reconnect. */
static void fail_awaiting(struct nbd_state *s)
{
	for (int i = 0; i < NBD_MAX_IN_FLIGHT; i++) {
		struct nbd_slot *slot = &s->wire.slots[i];
		if (slot->state != NBD_SLOT_AWAITING)
			continue;
		slot->state = NBD_SLOT_DONE;
		slot->ret = -EIO;
		slot->transport_error = true;
		s->awaiting--;
		if (slot->waiting)
			vd_co_wake(slot->co);
	}
}

static void reader_fn(void *opaque)
{
	struct nbd_state *s = opaque;

	while (s->awaiting && s->state == NBD_CONNECTED) {
		struct nbd_slot *done;
		int ret = nbd_wire_recv(&s->wire, &done);
		if (ret < 0) {
			connection_failed(s, ret);
			break;
		}
		if (done) {
			s->awaiting--;
			if (done->waiting)
				vd_co_wake(done->co);
		}
	}
	if (s->state != NBD_CONNECTED)
		fail_awaiting(s);
	s->reader_alive = false;
	update_handlers(s);
	vd_co_queue_restart_all(&s->reader_exit);
}

/* Connected, or -EIO.  Under send_lock, so one coroutine reconnects at a
 * time and the others wait for it. */
static int ensure_connected(struct nbd_state *s)
{
	int64_t backoff = 100 * 1000 * 1000;
	struct vd_error err = {0};

	while (s->reader_alive)
		vd_co_queue_wait(&s->reader_exit);
	for (;;) {
		int64_t now = vd_clock_ns();

		if (s->state == NBD_CONNECTED)
			return 0;
		if (s->state == NBD_QUIT)
			return -EIO;
		if (s->state == NBD_CONNECTING_WAIT && now >= s->wait_deadline)
			s->state = NBD_CONNECTING_NOWAIT;
		if (s->state == NBD_CONNECTING_NOWAIT) {
			/* One try, not more than once a second. */
			if (now - s->last_attempt < NS_PER_SEC)
				return -EIO;
			vd_error_clear(&err);
			return connect_attempt(s, 0, &err) < 0 ? -EIO : 0;
		}
		vd_error_clear(&err);
		if (connect_attempt(s, s->wait_deadline, &err) == 0)
			return 0;
		if (err.code == -EINVAL) {
			s->state = NBD_QUIT; /* the export changed */
			return -EIO;
		}
		now = vd_clock_ns();
		if (now + backoff > s->wait_deadline)
			backoff = s->wait_deadline - now;
		if (backoff > 0)
			vd_co_sleep_ns(backoff);
		if (backoff < NS_PER_SEC)
			backoff *= 2;
	}
}

static void release_slot(struct nbd_state *s, struct nbd_slot *slot)
{
	slot->state = NBD_SLOT_FREE;
	slot->qiov = NULL;
	s->used_slots--;
	vd_co_queue_next(&s->free_slot_waiters);
}

/* Claim a slot, make sure of the connection and send; the slot is then
 * AWAITING.  A transport failure returns -EIO with *transport set. */
static int send_request(struct nbd_state *s, struct nbd_slot **out, uint16_t type, uint16_t flags,
			uint64_t offset, uint32_t length, struct vd_qiov *qiov, bool *transport)
{
	struct nbd_slot *slot = NULL;
	int ret;

	while (s->used_slots == NBD_MAX_IN_FLIGHT)
		vd_co_queue_wait(&s->free_slot_waiters);
	s->used_slots++;
	vd_co_mutex_lock(&s->send_lock);
	if (s->state != NBD_CONNECTED) {
		ret = ensure_connected(s);
		if (ret < 0) {
			*transport = true;
			goto fail;
		}
	}
	for (int i = 0; i < NBD_MAX_IN_FLIGHT; i++)
		if (s->wire.slots[i].state == NBD_SLOT_FREE) {
			slot = &s->wire.slots[i];
			break;
		}
	/* used_slots counts every slot not free. */
	*slot = (struct nbd_slot){
		.state = NBD_SLOT_SENDING,
		.cookie = s->generation << 8 | (uint64_t)(slot - s->wire.slots),
		.type = type,
		.offset = offset,
		.length = length,
		.qiov = type == NBD_CMD_READ ? qiov : NULL,
	};
	s->awaiting++;
	if (!s->reader_alive) {
		struct vd_co *co = vd_co_create(reader_fn, s);
		if (!co) {
			s->awaiting--;
			slot->state = NBD_SLOT_FREE;
			ret = -ENOMEM;
			goto fail;
		}
		s->reader_alive = true;
		vd_co_enter(co);
	}
	ret = nbd_wire_send(&s->wire, slot, flags, type == NBD_CMD_WRITE ? qiov : NULL);
	if (ret < 0 || s->state != NBD_CONNECTED) {
		if (ret != -ENOMEM)
			connection_failed(s, ret < 0 ? ret : -EIO);
		s->awaiting--;
		slot->state = NBD_SLOT_FREE;
		*transport = ret != -ENOMEM;
		ret = ret == -ENOMEM ? ret : -EIO;
		goto fail;
	}
	slot->state = NBD_SLOT_AWAITING;
	vd_co_mutex_unlock(&s->send_lock);
	*out = slot;
	return 0;

fail:
	vd_co_mutex_unlock(&s->send_lock);
	s->used_slots--;
	vd_co_queue_next(&s->free_slot_waiters);
	return ret;
}

/*
 * One request, resent after a reconnect while the driver waits for one
 * (QEMU's nbd_co_request).  For NBD_CMD_BLOCK_STATUS, *@status gets the
 * extent's length and flags.
 */
static int nbd_co_request(struct nbd_state *s, uint16_t type, uint16_t flags, uint64_t offset,
			  uint32_t length, struct vd_qiov *qiov, uint32_t status[2])
{
	for (;;) {
		struct nbd_slot *slot;
		bool transport = false;
		int ret = send_request(s, &slot, type, flags, offset, length, qiov, &transport);

		if (ret == 0) {
			while (slot->state != NBD_SLOT_DONE) {
				slot->co = vd_co_self();
				slot->waiting = true;
				vd_co_yield();
				slot->waiting = false;
			}
			ret = slot->ret;
			transport = slot->transport_error;
			if (ret == 0 && status) {
				status[0] = slot->status_length;
				status[1] = slot->status_flags;
			}
			release_slot(s, slot);
		}
		if (ret < 0 && transport && s->state == NBD_CONNECTING_WAIT)
			continue;
		return ret;
	}
}

/* --- names and options ---------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode @len bytes of @s (URI components). */
static char *uri_decode(const char *s, size_t len)
{
	char *out = malloc(len + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			*o++ = (char)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
			i += 2;
		} else {
			*o++ = s[i];
		}
	}
	*o = '\0';
	return out;
}

static int set_decoded(struct vd_opts *o, const char *key, const char *s, size_t len)
{
	char *v = uri_decode(s, len);
	int ret;

	if (!v)
		return -ENOMEM;
	ret = vd_opts_set(o, key, v);
	free(v);
	return ret;
}

/* QEMU's nbd_parse_uri: nbd[+tcp|+unix]://[HOST[:PORT]]/[NAME][?socket=PATH]. */
static int parse_uri(const char *fn, struct vd_opts *o, struct vd_error *err)
{
	const char *p = strstr(fn, "://") + 3, *auth_end, *path, *query;
	bool is_unix;
	int ret = 0;

	if (strncmp(fn, "nbd+unix://", 11) == 0)
		is_unix = true;
	else if (strncmp(fn, "nbd://", 6) == 0 || strncmp(fn, "nbd+tcp://", 10) == 0)
		is_unix = false;
	else
		return vd_error_set(err, -EINVAL, "Invalid URI '%s': unknown transport", fn);
	auth_end = p + strcspn(p, "/?#");
	path = auth_end;
	query = strchr(path, '?');
	if (strchr(path, '#'))
		return vd_error_set(err, -EINVAL, "Invalid URI '%s'", fn);
	/* The export: the path without its leading '/'. */
	{
		const char *e = path, *end = query ? query : path + strlen(path);
		if (*e == '/')
			e++;
		if (e < end)
			ret = set_decoded(o, "export", e, (size_t)(end - e));
	}
	if (ret < 0)
		return ret;
	if (is_unix) {
		if (auth_end != p)
			return vd_error_set(err, -EINVAL,
					    "Invalid URI '%s': a UNIX socket URI has no host", fn);
		if (!query || strncmp(query + 1, "socket=", 7) != 0 || strchr(query + 1, '&') ||
		    !query[8])
			return vd_error_set(
				err, -EINVAL,
				"Invalid URI '%s': expected ?socket=PATH and nothing else", fn);
		ret = vd_opts_set(o, "server.type", "unix");
		if (ret == 0)
			ret = set_decoded(o, "server.path", query + 8, strlen(query + 8));
		return ret;
	}
	if (query)
		return vd_error_set(err, -EINVAL, "Invalid URI '%s': unexpected query", fn);
	{
		const char *host = p, *hend, *port = NULL;
		if (*p == '[') {
			hend = memchr(p, ']', (size_t)(auth_end - p));
			if (!hend)
				return vd_error_set(err, -EINVAL, "Invalid URI '%s'", fn);
			host = p + 1;
			if (hend + 1 < auth_end) {
				if (hend[1] != ':')
					return vd_error_set(err, -EINVAL, "Invalid URI '%s'", fn);
				port = hend + 2;
			}
		} else {
			hend = memchr(p, ':', (size_t)(auth_end - p));
			if (hend)
				port = hend + 1;
			else
				hend = auth_end;
		}
		if (hend == host)
			return vd_error_set(err, -EINVAL, "Invalid URI '%s': no host", fn);
		ret = vd_opts_set(o, "server.type", "inet");
		if (ret == 0)
			ret = set_decoded(o, "server.host", host, (size_t)(hend - host));
		if (ret == 0 && port && port < auth_end)
			ret = set_decoded(o, "server.port", port, (size_t)(auth_end - port));
	}
	return ret;
}

/* QEMU's nbd_parse_filename: nbd:unix:PATH[:exportname=NAME] or
 * nbd:HOST:PORT[:exportname=NAME]. */
static int parse_legacy(const char *fn, struct vd_opts *o, struct vd_error *err)
{
	const char *spec = fn + 4, *en = strstr(spec, ":exportname=");
	size_t len = en ? (size_t)(en - spec) : strlen(spec);
	char *hs;
	int ret;

	if (en && (ret = vd_opts_set(o, "export", en + 12)) < 0)
		return ret;
	hs = strndup(spec, len);
	if (!hs)
		return -ENOMEM;
	if (strncmp(hs, "unix:", 5) == 0) {
		ret = vd_opts_set(o, "server.type", "unix");
		if (ret == 0)
			ret = vd_opts_set(o, "server.path", hs + 5);
	} else {
		char *host = hs, *colon;
		if (*host == '[') {
			char *end = strchr(host, ']');
			if (!end || (end[1] && end[1] != ':')) {
				free(hs);
				return vd_error_set(err, -EINVAL, "Invalid NBD address '%s'", fn);
			}
			*end = '\0';
			host++;
			colon = end[1] ? end + 1 : NULL;
		} else {
			colon = strrchr(host, ':');
		}
		if (colon)
			*colon = '\0';
		if (!*host) {
			free(hs);
			return vd_error_set(err, -EINVAL, "Invalid NBD address '%s': no host", fn);
		}
		ret = vd_opts_set(o, "server.type", "inet");
		if (ret == 0)
			ret = vd_opts_set(o, "server.host", host);
		if (ret == 0 && colon && colon[1])
			ret = vd_opts_set(o, "server.port", colon + 1);
	}
	free(hs);
	return ret;
}

static int parse_filename(const char *fn, struct vd_opts *opts, struct vd_error *err)
{
	static const char *const keys[] = {"server", "export", "path", "host", "port"};
	int ret;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (vd_opts_has(opts, keys[i]))
			return vd_error_set(err, -EINVAL, "No '%s' option allowed with a file name",
					    keys[i]);
	if (strstr(fn, "://"))
		ret = parse_uri(fn, opts, err);
	else if (strncmp(fn, "nbd:", 4) == 0)
		ret = parse_legacy(fn, opts, err);
	else
		ret = vd_error_set(err, -EINVAL, "'%s' is not an NBD address", fn);
	if (ret < 0 && !vd_error_is_set(err))
		ret = vd_error_set(err, ret, "Out of memory");
	return ret;
}

static int dup_opt(struct vd_opts *o, const char *key, const char *def, char **out)
{
	const char *v = vd_opts_get(o, key);

	if (!v)
		v = def;
	*out = v ? strdup(v) : NULL;
	return v && !*out ? -ENOMEM : 0;
}

static int read_options(struct nbd_state *s, struct vd_opts *opts, struct vd_error *err)
{
	static const char *const types[] = {"inet", "unix", NULL};
	const char *fn = vd_opts_get(opts, "filename");
	uint64_t secs;
	int type, ret;

	if (fn && *fn) {
		ret = parse_filename(fn, opts, err);
		if (ret < 0)
			return ret;
	}
	if (vd_opts_has(opts, "tls-creds")) {
		ret = vd_tls_creds_lookup(vd_opts_get(opts, "tls-creds"), VD_TLS_ENDPOINT_CLIENT,
					  &s->tls_creds, err);
		if (ret < 0)
			return ret;
	}
	ret = dup_opt(opts, "tls-hostname", NULL, &s->tls_hostname);
	if (ret < 0)
		return vd_error_set(err, ret, "Out of memory");
	if (!vd_opts_has(opts, "server.type"))
		return vd_error_set(err, -EINVAL, "NBD server address missing");
	ret = vd_opts_get_enum(opts, "server.type", types, 0, &type, err);
	if (ret < 0)
		return ret;
	vd_opts_get_dict(opts, "server");
	if (type == 1) {
		ret = dup_opt(opts, "server.path", NULL, &s->path);
		if (ret == 0 && !s->path)
			return vd_error_set(err, -EINVAL, "Parameter 'server.path' is missing");
	} else {
		char port[16];
		snprintf(port, sizeof(port), "%d", NBD_DEFAULT_PORT);
		ret = dup_opt(opts, "server.host", NULL, &s->host);
		if (ret == 0 && !s->host)
			return vd_error_set(err, -EINVAL, "Parameter 'server.host' is missing");
		if (ret == 0)
			ret = dup_opt(opts, "server.port", port, &s->port);
		/* QEMU: the host name is what an inet server's certificate names. */
		if (ret == 0 && !s->tls_hostname)
			ret = dup_opt(opts, "server.host", NULL, &s->tls_hostname);
	}
	if (ret == 0)
		ret = dup_opt(opts, "export", "", &s->export_name);
	if (ret < 0)
		return vd_error_set(err, ret, "Out of memory");
	ret = vd_opts_get_u64(opts, "reconnect-delay", 0, &secs, err);
	if (ret < 0)
		return ret;
	if (secs > 3600)
		return vd_error_set(err, -EINVAL, "reconnect-delay must be at most 3600 seconds");
	s->reconnect_delay_ns = (int64_t)secs * NS_PER_SEC;
	ret = vd_opts_get_u64(opts, "open-timeout", 0, &secs, err);
	if (ret < 0)
		return ret;
	if (secs > 3600)
		return vd_error_set(err, -EINVAL, "open-timeout must be at most 3600 seconds");
	s->open_timeout_ns = (int64_t)secs * NS_PER_SEC;
	return 0;
}

/* QEMU's nbd_refresh_filename. */
static int make_filename(struct vd_node *n, struct nbd_state *s)
{
	const char *e = s->export_name;
	int ret;

	free(n->filename);
	n->filename = NULL;
	if (s->path)
		ret = *e ? asprintf(&n->filename, "nbd+unix:///%s?socket=%s", e, s->path)
			 : asprintf(&n->filename, "nbd+unix://?socket=%s", s->path);
	else if (strchr(s->host, ':'))
		ret = *e ? asprintf(&n->filename, "nbd://[%s]:%s/%s", s->host, s->port, e)
			 : asprintf(&n->filename, "nbd://[%s]:%s", s->host, s->port);
	else
		ret = *e ? asprintf(&n->filename, "nbd://%s:%s/%s", s->host, s->port, e)
			 : asprintf(&n->filename, "nbd://%s:%s", s->host, s->port);
	if (ret < 0)
		n->filename = NULL;
	return ret < 0 ? -ENOMEM : 0;
}

/* --- the driver ----------------------------------------------------------- */

static void nbd_free(struct nbd_state *s)
{
	close_socket(s);
	nbd_wire_cleanup(&s->wire);
	free(s->path);
	free(s->host);
	free(s->port);
	free(s->export_name);
	free(s->tls_hostname);
	vd_tls_creds_unref(s->tls_creds);
}

static uint32_t align_down(uint64_t v, uint32_t a)
{
	return (uint32_t)(v - v % a);
}

static int nbd_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct nbd_state *s = n->opaque;
	const struct nbd_export_info *info = &s->wire.info;
	int64_t deadline, backoff = 100 * 1000 * 1000;
	uint32_t min, max;
	int ret;

	s->node = n;
	s->fd = -1;
	nbd_wire_init(&s->wire);
	vd_co_mutex_init(&s->send_lock);
	vd_co_queue_init(&s->free_slot_waiters);
	vd_co_queue_init(&s->reader_exit);
	ret = read_options(s, opts, err);
	if (ret < 0)
		goto fail;
	/* open-timeout: keep trying that long (QEMU: 0 tries once). */
	deadline = vd_clock_ns() + s->open_timeout_ns;
	for (;;) {
		ret = connect_attempt(s, s->open_timeout_ns ? deadline : 0, err);
		if (ret == 0 || vd_clock_ns() + backoff >= deadline)
			break;
		vd_error_clear(err);
		vd_co_sleep_ns(backoff);
		if (backoff < NS_PER_SEC)
			backoff *= 2;
	}
	if (ret < 0)
		goto fail;
	if (!n->read_only && (info->flags & NBD_FLAG_READ_ONLY)) {
		ret = vd_error_set(err, -EACCES, "NBD export is read-only");
		goto fail;
	}
	ret = make_filename(n, s);
	if (ret < 0) {
		vd_error_set(err, ret, "Out of memory");
		goto fail;
	}
	n->size = (int64_t)info->size;
	if (info->flags & NBD_FLAG_SEND_FUA) {
		n->supported_write_flags = VD_REQ_FUA;
		n->supported_zero_flags = VD_REQ_FUA;
	}
	n->supported_zero_flags |= VD_REQ_MAY_UNMAP;
	/* QEMU's nbd_refresh_limits. */
	min = info->min_block ? info->min_block : (info->structured ? 1 : 512);
	max = info->max_block && info->max_block < NBD_MAX_PAYLOAD ? info->max_block
								   : NBD_MAX_PAYLOAD;
	n->limits.request_alignment = min;
	n->limits.max_transfer = align_down(max, min);
	n->limits.max_discard = align_down(INT32_MAX, min);
	n->limits.max_write_zeroes = align_down(INT32_MAX, min);
	return 0;

fail:
	nbd_free(s);
	return ret;
}

static void nbd_close(struct vd_node *n)
{
	struct nbd_state *s = n->opaque;

	if (s->fd >= 0 && s->state == NBD_CONNECTED) {
		/* NBD_CMD_DISC, if the socket takes it now; we do not wait. */
		uint8_t req[28] = {0};
		req[0] = 0x25, req[1] = 0x60, req[2] = 0x95, req[3] = 0x13;
		req[7] = NBD_CMD_DISC;
		if (s->tls) {
			if (vd_tls_session_send(s->tls, req, sizeof(req)) < 0) {
				/* as below */
			}
		} else if (send(s->fd, req, sizeof(req), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* the server sees the connection close instead */
		}
	}
	s->state = NBD_QUIT;
	nbd_free(s);
}

static int nbd_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			 int flags)
{
	struct nbd_state *s = n->opaque;
	uint64_t size = s->wire.info.size;
	struct vd_qiov part;
	int ret;

	/* Past the export's end (the node rounds up to 512 bytes): zeroes. */
	if ((uint64_t)offset >= size) {
		vd_qiov_memset(qiov, 0, 0, (size_t)bytes);
		return 0;
	}
	if ((uint64_t)(offset + bytes) <= size)
		return nbd_co_request(s, NBD_CMD_READ, 0, (uint64_t)offset, (uint32_t)bytes, qiov,
				      NULL);
	vd_qiov_init(&part, 0);
	ret = vd_qiov_concat_slice(&part, qiov, 0, (size_t)(size - (uint64_t)offset));
	if (ret == 0)
		ret = nbd_co_request(s, NBD_CMD_READ, 0, (uint64_t)offset, (uint32_t)part.size,
				     &part, NULL);
	if (ret == 0)
		vd_qiov_memset(qiov, part.size, 0, qiov->size - part.size);
	vd_qiov_destroy(&part);
	return ret;
}

static int nbd_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct nbd_state *s = n->opaque;

	return nbd_co_request(s, NBD_CMD_WRITE, (flags & VD_REQ_FUA) ? NBD_CMD_FLAG_FUA : 0,
			      (uint64_t)offset, (uint32_t)bytes, qiov, NULL);
}

static int nbd_co_flush(struct vd_node *n)
{
	struct nbd_state *s = n->opaque;

	if (!(s->wire.info.flags & NBD_FLAG_SEND_FLUSH))
		return 0;
	return nbd_co_request(s, NBD_CMD_FLUSH, 0, 0, 0, NULL, NULL);
}

static int nbd_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	struct nbd_state *s = n->opaque;

	if (!(s->wire.info.flags & NBD_FLAG_SEND_TRIM))
		return -ENOTSUP;
	return nbd_co_request(s, NBD_CMD_TRIM, 0, (uint64_t)offset, (uint32_t)bytes, NULL, NULL);
}

static int nbd_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct nbd_state *s = n->opaque;
	uint16_t f = 0;

	if (!(s->wire.info.flags & NBD_FLAG_SEND_WRITE_ZEROES))
		return -ENOTSUP;
	if (flags & VD_REQ_NO_FALLBACK) {
		if (!(s->wire.info.flags & NBD_FLAG_SEND_FAST_ZERO))
			return -ENOTSUP;
		f |= NBD_CMD_FLAG_FAST_ZERO;
	}
	if (flags & VD_REQ_FUA)
		f |= NBD_CMD_FLAG_FUA;
	if (!(flags & VD_REQ_MAY_UNMAP))
		f |= NBD_CMD_FLAG_NO_HOLE;
	return nbd_co_request(s, NBD_CMD_WRITE_ZEROES, f, (uint64_t)offset, (uint32_t)bytes, NULL,
			      NULL);
}

static int nbd_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			       int64_t *map, struct vd_node **file)
{
	struct nbd_state *s = n->opaque;
	uint64_t size = s->wire.info.size;
	uint32_t status[2], len;
	int ret;

	*map = offset;
	*file = n;
	if ((uint64_t)offset >= size) {
		*pnum = bytes;
		return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID;
	}
	if (!s->wire.info.base_allocation) {
		*pnum = bytes;
		return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
	}
	len = align_down(INT32_MAX, n->limits.request_alignment);
	if ((uint64_t)bytes < len)
		len = (uint32_t)bytes;
	if (size - (uint64_t)offset < len)
		len = (uint32_t)(size - (uint64_t)offset);
	ret = nbd_co_request(s, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, (uint64_t)offset, len,
			     NULL, status);
	if (ret < 0)
		return ret;
	*pnum = status[0];
	return (status[1] & NBD_STATE_HOLE ? 0 : VD_BLOCK_DATA) |
	       (status[1] & NBD_STATE_ZERO ? VD_BLOCK_ZERO : 0) | VD_BLOCK_OFFSET_VALID;
}

/* Drained: no request and no reader; only the fd handler to move. */
static void nbd_detach_loop(struct vd_node *n)
{
	struct nbd_state *s = n->opaque;

	if (s->fd_loop)
		vd_loop_set_fd_handler(s->fd_loop, s->fd, NULL, NULL, NULL);
	s->fd_loop = NULL;
	s->reg_read = s->reg_write = false;
}

static int nbd_attach_loop(struct vd_node *n, struct vd_error *err)
{
	return 0; /* handlers are registered on n->loop when next needed */
}

/* NBD (as QEMU 7.2 speaks it) cannot resize an export: a size it already
 * has is fine (not exact: at least that size), anything else is refused
 * as QEMU's nbd_co_truncate refuses it. */
static int nbd_co_truncate(struct vd_node *n, int64_t size, bool exact, enum vd_prealloc prealloc,
			   struct vd_error *err)
{
	if (size != n->size && exact)
		return vd_error_set(err, -ENOTSUP, "Cannot resize NBD nodes");
	if (size > n->size)
		return vd_error_set(err, -EINVAL, "Cannot grow NBD nodes");
	return 0;
}

const struct vd_block_driver vd_driver_nbd = {
	.name = "nbd",
	.instance_size = sizeof(struct nbd_state),
	.open = nbd_open,
	.close = nbd_close,
	.co_preadv = nbd_co_preadv,
	.co_pwritev = nbd_co_pwritev,
	.co_flush = nbd_co_flush,
	.co_pdiscard = nbd_co_pdiscard,
	.co_pwrite_zeroes = nbd_co_pwrite_zeroes,
	.co_block_status = nbd_co_block_status,
	.co_truncate = nbd_co_truncate,
	.detach_loop = nbd_detach_loop,
	.attach_loop = nbd_attach_loop,
};
