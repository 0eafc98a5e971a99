/* SPDX-License-Identifier: MIT */
/*
 * The NBD server: listeners (unix, TCP, inherited sockets), exports, and the
 * connections with their non-blocking input buffer and output queue.
 *
 * A connection never blocks the loop: input is read as it comes (into a
 * 64 KiB buffer, or straight into a large WRITE's payload) and handed to the
 * handshake or the request parser once a whole message is there; replies go
 * to a queue that a bottom half writes out with one sendmsg(), so the replies
 * completed in one loop iteration leave in one system call.  A client that
 * stops reading its replies stops being read from (NBD_MAX_OUTPUT), and one
 * that floods us with requests waits in its socket (NBD_MAX_IN_FLIGHT).
 *
 * A connection whose export lives on an I/O thread moves there when it
 * enters transmission (conn_move, conn_arrive) and ends there (conn_retire);
 * the server's loop frees it (reap_conns).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <vdisk/backend.h>

#include "export/nbd/nbd-internal.h"

static void conn_free(struct nbd_conn *c);
static void conn_tls_handshake(struct nbd_conn *c);

/* --- request buffers ---------------------------------------------------------- */

static int buf_class(size_t len)
{
	int bits = NBD_BUF_MIN_BITS;

	if (len < (1u << NBD_BUF_MIN_BITS) || len > (1u << NBD_BUF_MAX_BITS))
		return -1;
	while (((size_t)1 << bits) < len)
		bits++;
	return bits - NBD_BUF_MIN_BITS;
}

void *nbd_buf_get(struct vd_nbd_server *s, size_t len)
{
	int k = buf_class(len);
	void *b;

	if (k < 0)
		return vd_memalign(4096, len ? len : 1);
	pthread_mutex_lock(&s->buf_lock);
	b = s->buf_free[k];
	if (b) {
		memcpy(&s->buf_free[k], b, sizeof(void *));
		s->buf_cached -= (size_t)1 << (k + NBD_BUF_MIN_BITS);
	}
	pthread_mutex_unlock(&s->buf_lock);
	if (b)
		return b;
	return vd_memalign(4096, (size_t)1 << (k + NBD_BUF_MIN_BITS));
}

void nbd_buf_put(struct vd_nbd_server *s, void *buf, size_t len)
{
	int k = buf_class(len);
	size_t size;

	if (!buf)
		return;
	if (k < 0) {
		free(buf);
		return;
	}
	size = (size_t)1 << (k + NBD_BUF_MIN_BITS);
	pthread_mutex_lock(&s->buf_lock);
	if (s->buf_cached + size <= NBD_BUF_CACHE_MAX) {
		memcpy(buf, &s->buf_free[k], sizeof(void *));
		s->buf_free[k] = buf;
		s->buf_cached += size;
		buf = NULL;
	}
	pthread_mutex_unlock(&s->buf_lock);
	free(buf);
}

static void buf_cache_free(struct vd_nbd_server *s)
{
	for (size_t k = 0; k < sizeof(s->buf_free) / sizeof(s->buf_free[0]); k++)
		while (s->buf_free[k]) {
			void *b = s->buf_free[k];

			memcpy(&s->buf_free[k], b, sizeof(void *));
			free(b);
		}
	s->buf_cached = 0;
}

void nbd_out_free(struct nbd_conn *c, struct nbd_out *o)
{
	if (o->zc_len) {
		close(o->zc_fd);
		c->zc_queued--;
	}
	if (o->data_len)
		nbd_buf_put(c->srv, o->data, o->data_len);
	else
		free(o->data);
	free(o);
}

/* --- output ------------------------------------------------------------------ */

static size_t out_iov_len(const struct nbd_out *o)
{
	size_t len = 0;

	for (int i = 0; i < o->niov; i++)
		len += o->iov[i].iov_len;
	return len;
}

/* @r more bytes of the queue are out: drop the entries sent whole. */
static void out_advance(struct nbd_conn *c, size_t r)
{
	c->out_off += r;
	c->out_bytes -= r;
	while (c->out_head) {
		struct nbd_out *o = c->out_head;
		size_t len = out_iov_len(o) + o->zc_len;

		if (c->out_off < len)
			break;
		c->out_off -= len;
		c->out_head = o->next;
		if (!c->out_head)
			c->out_tail = NULL;
		nbd_out_free(c, o);
	}
}

/* The head's file bytes from where the last call stopped: sendfile, or
 * zeroes if the file ended early.  Bytes sent, or -1 with errno. */
static ssize_t send_zc(struct nbd_conn *c, struct nbd_out *o, size_t done)
{
	static const uint8_t zeroes[65536];
	size_t left = o->zc_len - done;

	for (;;) {
		off_t off = (off_t)(o->zc_off + (int64_t)done);
		ssize_t r;

		if (o->zc_eof)
			return send(c->fd, zeroes, left < sizeof(zeroes) ? left : sizeof(zeroes),
				    MSG_NOSIGNAL | MSG_DONTWAIT);
		r = sendfile(c->fd, o->zc_fd, &off, left);
		if (r != 0)
			return r;
		o->zc_eof = true;
	}
}

static void conn_flush_output(struct nbd_conn *c)
{
	while (c->out_head && !c->dead) {
		struct nbd_out *head = c->out_head;
		size_t head_iov = out_iov_len(head);
		ssize_t r;

		if (head->zc_len && c->out_off >= head_iov) {
			r = send_zc(c, head, c->out_off - head_iov);
		} else {
			struct iovec iov[64];
			struct msghdr mh = {.msg_iov = iov};
			size_t skip = c->out_off;
			int n = 0, flags = MSG_NOSIGNAL | MSG_DONTWAIT;

			/* Iovecs up to the first entry with file bytes, whose
			 * header then goes out with MSG_MORE. */
			for (struct nbd_out *o = head; o && n < 64; o = o->next) {
				int i;

				for (i = 0; i < o->niov && n < 64; i++) {
					if (skip >= o->iov[i].iov_len) {
						skip -= o->iov[i].iov_len;
						continue;
					}
					iov[n].iov_base = (uint8_t *)o->iov[i].iov_base + skip;
					iov[n].iov_len = o->iov[i].iov_len - skip;
					skip = 0;
					n++;
				}
				if (o->zc_len) {
					if (i == o->niov)
						flags |= MSG_MORE;
					break;
				}
			}
			mh.msg_iovlen = (size_t)n;
			if (c->tls)
				r = nbd_tls_sendv(c, iov, n);
			else
				r = sendmsg(c->fd, &mh, flags);
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			nbd_conn_close(c);
			return;
		}
		out_advance(c, (size_t)r);
	}
	if (c->dead)
		return;
	if (!c->out_head && c->close_after_output && c->in_flight == 0) {
		nbd_conn_close(c);
		return;
	}
	if (!c->out_head && c->tls_pending_start) {
		/* The STARTTLS ACK is out: from here on everything is TLS. */
		c->tls_pending_start = false;
		if (nbd_tls_session_new(c) < 0) {
			nbd_conn_close(c);
			return;
		}
		c->tls_handshaking = true;
		conn_tls_handshake(c);
		return;
	}
	nbd_conn_update_watch(c);
}

static void conn_read(void *opaque);

static void out_bh(void *opaque)
{
	struct nbd_conn *c = opaque;

	conn_flush_output(c);
	/* Bytes GnuTLS has already decrypted wait in the session, not in
	 * the socket (nbd_conn_update_watch scheduled us for them). */
	if (!c->dead && c->reading && nbd_tls_pending(c))
		conn_read(c);
}

void nbd_conn_queue(struct nbd_conn *c, struct nbd_out *o)
{
	if (c->dead) {
		nbd_out_free(c, o);
		return;
	}
	o->next = NULL;
	c->out_bytes += out_iov_len(o) + o->zc_len;
	if (c->out_tail)
		c->out_tail->next = o;
	else
		c->out_head = o;
	c->out_tail = o;
	vd_bh_schedule(c->out_bh);
}

int nbd_conn_queue_copy(struct nbd_conn *c, const void *buf, size_t len)
{
	struct nbd_out *o = calloc(1, sizeof(*o));

	if (!o || !(o->data = malloc(len ? len : 1))) {
		free(o);
		nbd_conn_close(c);
		return -ENOMEM;
	}
	memcpy(o->data, buf, len);
	o->iov[0].iov_base = o->data;
	o->iov[0].iov_len = len;
	o->niov = 1;
	nbd_conn_queue(c, o);
	return 0;
}

/* The TLS handshake, driven by readiness in either direction. */
static void conn_tls_handshake(struct nbd_conn *c)
{
	int ret = nbd_tls_handshake(c);

	if (ret < 0) {
		nbd_conn_close(c);
		return;
	}
	if (ret > 0) {
		/* CVE-2021-3716: nothing negotiated in plaintext survives. */
		c->tls_handshaking = false;
		nbd_negotiate_reset(c);
	}
	nbd_conn_update_watch(c);
}

/* --- input ------------------------------------------------------------------- */

static bool conn_wants_input(const struct nbd_conn *c)
{
	return !c->dead && !c->moving && c->in != NBD_IN_DONE && !c->close_after_output &&
	       !c->tls_pending_start && !c->tls_handshaking && c->in_flight < NBD_MAX_IN_FLIGHT &&
	       c->in_flight_bytes < NBD_MAX_IN_FLIGHT_BYTES && c->out_bytes < NBD_MAX_OUTPUT;
}

/* Parse what the buffer holds; false when the connection was closed. */
static bool conn_parse(struct nbd_conn *c)
{
	c->parsing = true;
	while (!c->dead && conn_wants_input(c)) {
		ssize_t used;

		if (c->in == NBD_IN_PAYLOAD) {
			uint8_t *dst;
			size_t need, n = c->rlen - c->rpos;

			nbd_requests_payload_dst(c, &dst, &need);
			if (n > need)
				n = need;
			if (n == 0)
				break;
			memcpy(dst, c->rbuf + c->rpos, n);
			c->rpos += n;
			nbd_requests_payload_got(c, n);
			continue;
		}
		if (c->rpos == c->rlen)
			break;
		if (c->handshaking)
			used = nbd_negotiate_input(c, c->rbuf + c->rpos, c->rlen - c->rpos);
		else
			used = nbd_requests_input(c, c->rbuf + c->rpos, c->rlen - c->rpos);
		if (used < 0) {
			c->parsing = false;
			nbd_conn_close(c);
			return false;
		}
		if (used == 0)
			break;
		c->rpos += (size_t)used;
		/* proto.md: plaintext after STARTTLS is discarded. */
		if (c->tls_pending_start) {
			c->rpos = c->rlen;
			break;
		}
	}
	c->parsing = false;
	if (c->dead)
		return false;
	if (c->rpos == c->rlen)
		c->rpos = c->rlen = 0;
	return true;
}

static void conn_read(void *opaque)
{
	struct nbd_conn *c = opaque;

	if (c->tls_handshaking) {
		conn_tls_handshake(c);
		return;
	}
	for (int rounds = 0; rounds < 16 && conn_wants_input(c); rounds++) {
		ssize_t r;

		if (c->in == NBD_IN_PAYLOAD && c->rpos == c->rlen) {
			uint8_t *dst;
			size_t need;

			/* A large payload goes straight where it belongs. */
			nbd_requests_payload_dst(c, &dst, &need);
			if (need >= NBD_RBUF_SIZE / 2) {
				r = c->tls ? nbd_tls_recv(c, dst, need)
					   : recv(c->fd, dst, need, MSG_DONTWAIT);
				if (r > 0) {
					nbd_requests_payload_got(c, (size_t)r);
					continue;
				}
				goto check;
			}
		}
		if (c->rpos > 0 && c->rpos == c->rlen)
			c->rpos = c->rlen = 0;
		if (c->rpos > 0 && c->rlen == NBD_RBUF_SIZE) {
			memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
			c->rlen -= c->rpos;
			c->rpos = 0;
		}
		size_t room = NBD_RBUF_SIZE - c->rlen;
		r = c->tls ? nbd_tls_recv(c, c->rbuf + c->rlen, room)
			   : recv(c->fd, c->rbuf + c->rlen, room, MSG_DONTWAIT);
		if (r > 0) {
			c->rlen += (size_t)r;
			if (!conn_parse(c))
				return;
			/* A short read drained the socket: the next readiness
			 * comes from the loop (level-triggered), not from a
			 * recv() that would only say EAGAIN. */
			if ((size_t)r < room && !nbd_tls_pending(c))
				break;
			continue;
		}
	check:
		if (r == 0) {
			/* EOF: what is in flight still completes, its replies
			 * are dropped; a client gone mid-message is just gone. */
			nbd_conn_close(c);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			nbd_conn_close(c);
		break;
	}
	if (!c->dead)
		nbd_conn_update_watch(c);
}

static void conn_write(void *opaque)
{
	struct nbd_conn *c = opaque;

	if (c->tls_handshaking)
		conn_tls_handshake(c);
	else
		conn_flush_output(c);
}

static bool conn_poll(void *opaque)
{
	struct nbd_conn *c = opaque;
	char b;

	if (c->tls && nbd_tls_pending(c))
		return true;
	return recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void nbd_conn_update_watch(struct nbd_conn *c)
{
	bool rd, wr;

	if (c->dead)
		return;
	/* Reading resumed: first parse what the buffer already holds. */
	if (!c->parsing && c->rpos < c->rlen && conn_wants_input(c) && !conn_parse(c))
		return;
	/* ABORT or DISC, and everything answered. */
	if (c->close_after_output && !c->out_head && c->in_flight == 0 && !c->parsing) {
		nbd_conn_close(c);
		return;
	}
	rd = conn_wants_input(c);
	wr = c->out_head != NULL;
	if (c->tls_handshaking) {
		rd = !c->tls_want_write;
		wr = c->tls_want_write;
	} else if (rd && c->out_bh && nbd_tls_pending(c)) {
		/* Records already decrypted (reading resumed after a move or
		 * below the in-flight limit, or a read ran out of rounds): no
		 * readiness comes for them, out_bh reads them. */
		vd_bh_schedule(c->out_bh);
	}
	if (rd == c->reading && wr == c->watching_write)
		return;
	c->reading = rd;
	c->watching_write = wr;
	vd_loop_set_fd_handler(c->loop, c->fd, rd ? conn_read : NULL, wr ? conn_write : NULL, c);
	if (rd)
		vd_loop_set_fd_poll(c->loop, c->fd, conn_poll);
}

/* --- lifecycle ---------------------------------------------------------------- */

static void idle_check(struct vd_nbd_server *s)
{
	if (s->nconns == 0 && s->idle_fn)
		vd_bh_schedule(s->idle_bh);
}

static void idle_bh_fn(void *opaque)
{
	struct vd_nbd_server *s = opaque;

	if (s->nconns == 0 && s->idle_fn)
		s->idle_fn(s->idle_opaque);
}

static void conn_move(struct nbd_conn *c);

/* The handshake timed out; or the connection is to move (conn_move). */
static void conn_timer(void *opaque)
{
	struct nbd_conn *c = opaque;

	if (c->moving)
		conn_move(c);
	else if (c->handshaking)
		nbd_conn_close(c);
}

/* On c->loop: the connection's requests are all done and it is closed. */
static void conn_release(struct nbd_conn *c)
{
	if (c->loop == c->srv->loop)
		vd_loop_oneshot(c->loop, (vd_loop_fn *)conn_free, c);
	else
		vd_bh_schedule(c->retire_bh);
}

void nbd_conn_close(struct nbd_conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	vd_loop_set_fd_handler(c->loop, c->fd, NULL, NULL, NULL);
	shutdown(c->fd, SHUT_RDWR);
	if (c->handshaking) {
		c->handshaking = false;
		c->srv->nhandshakes--;
		vd_timer_del(c->timer);
	}
	nbd_requests_abandon(c);
	while (c->out_head) {
		struct nbd_out *o = c->out_head;
		c->out_head = o->next;
		nbd_out_free(c, o);
	}
	c->out_tail = NULL;
	c->out_bytes = 0;
	/* A connection about to move is freed by conn_move. */
	if (c->in_flight == 0 && !c->moving)
		conn_release(c);
}

/* A request ended; a closed connection goes with its last one. */
void nbd_conn_request_done(struct nbd_conn *c)
{
	c->in_flight--;
	if (c->dead) {
		if (c->in_flight == 0)
			conn_release(c);
		return;
	}
	if (c->close_after_output && c->in_flight == 0 && !c->out_head) {
		nbd_conn_close(c);
		return;
	}
	/* Not at once: a request that completed without yielding is still
	 * inside the parser. */
	vd_bh_schedule(c->out_bh);
}

/* On the server's loop. */
static void conn_free(struct nbd_conn *c)
{
	struct vd_nbd_server *s = c->srv;
	struct nbd_conn **pp;

	for (pp = &s->conns; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = c->next;
	s->nconns--;
	if (c->exp)
		c->exp->nconns--;
	vd_bh_delete(c->out_bh);
	vd_timer_free(c->timer);
	nbd_tls_session_free(c);
	close(c->fd);
	free(c->meta_export);
	free(c->rbuf);
	free(c);
	idle_check(s);
}

/* On another loop: the connection ended there.  Its BHs go, then it says
 * so to the server's loop, which frees it (reap_conns); nothing here
 * touches it after that. */
static void conn_retire(void *opaque)
{
	struct nbd_conn *c = opaque;
	struct vd_nbd_server *s = c->srv;

	vd_bh_delete(c->out_bh);
	c->out_bh = NULL;
	vd_bh_delete(c->retire_bh);
	c->retire_bh = NULL;
	pthread_mutex_lock(&s->reap_lock);
	c->retired = true;
	vd_notifier_set(&s->reap);
	pthread_mutex_unlock(&s->reap_lock);
}

/* On the server's loop: free the connections that ended elsewhere. */
static void reap_conns(void *opaque)
{
	struct vd_nbd_server *s = opaque;
	struct nbd_conn **pp = &s->conns;

	vd_notifier_test_and_clear(&s->reap);
	while (*pp) {
		struct nbd_conn *c = *pp;
		bool retired;

		pthread_mutex_lock(&s->reap_lock);
		retired = c->retired;
		pthread_mutex_unlock(&s->reap_lock);
		if (retired)
			conn_free(c); /* unlinks it: *pp is the next one */
		else
			pp = &c->next;
	}
}

/* On the export's loop, while the server's loop waits in conn_move. */
static void conn_arrive(void *opaque)
{
	struct nbd_conn *c = opaque;

	c->out_bh = vd_bh_new(c->loop, out_bh, c);
	c->retire_bh = vd_bh_new(c->loop, conn_retire, c);
	if (!c->out_bh || !c->retire_bh) {
		vd_bh_delete(c->out_bh);
		vd_bh_delete(c->retire_bh);
		c->out_bh = c->retire_bh = NULL;
		c->arrive_failed = true;
		return;
	}
	c->moving = false;
	if (c->out_head)
		vd_bh_schedule(c->out_bh);
	/* Requests that came with the handshake's last option are parsed
	 * now, here. */
	nbd_conn_update_watch(c);
}

/* On the server's loop, from conn_timer: hand the connection to its
 * export's loop.  Nothing of it is in flight (the handshake is over and
 * nothing was read since), so only the fd and the output BH change loops. */
static void conn_move(struct nbd_conn *c)
{
	if (c->dead) {
		conn_free(c);
		return;
	}
	vd_loop_set_fd_handler(c->loop, c->fd, NULL, NULL, NULL);
	c->reading = c->watching_write = false;
	vd_bh_delete(c->out_bh);
	c->out_bh = NULL;
	c->loop = c->exp->loop;
	vd_loop_call_wait(c->loop, conn_arrive, c);
	if (c->arrive_failed) {
		/* Still "moving": closing it does not schedule a free. */
		c->loop = c->srv->loop;
		nbd_conn_close(c);
		conn_free(c);
	}
}

void nbd_conn_enter_transmission(struct nbd_conn *c, struct vd_nbd_export *exp)
{
	/* Closed while answering (out of memory): already counted out. */
	if (c->dead)
		return;
	c->handshaking = false;
	c->srv->nhandshakes--;
	vd_timer_del(c->timer);
	c->exp = exp;
	exp->nconns++;
	c->size = vd_blk_getlength(exp->blk);
	c->in = NBD_IN_REQUEST;
	if (exp->loop != c->loop) {
		/* Once this handler has returned: nothing more is read here. */
		c->moving = true;
		vd_timer_mod(c->timer, vd_clock_ns());
	}
}

int vd_nbd_server_add_client(struct vd_nbd_server *s, int fd)
{
	struct nbd_conn *c;
	int one = 1;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	if ((s->max_connections && s->nconns >= s->max_connections) ||
	    s->nhandshakes >= NBD_MAX_HANDSHAKES) {
		close(fd);
		return -EBUSY;
	}
	c = calloc(1, sizeof(*c));
	if (!c || !(c->rbuf = malloc(NBD_RBUF_SIZE))) {
		free(c);
		close(fd);
		return -ENOMEM;
	}
	c->srv = s;
	c->loop = s->loop;
	c->fd = fd;
	c->out_bh = vd_bh_new(s->loop, out_bh, c);
	c->timer = vd_timer_new(s->loop, conn_timer, c);
	if (!c->out_bh || !c->timer) {
		if (c->out_bh)
			vd_bh_delete(c->out_bh);
		if (c->timer)
			vd_timer_free(c->timer);
		free(c->rbuf);
		free(c);
		close(fd);
		return -ENOMEM;
	}
	/* Non-blocking, and replies leave at once (proto.md: TCP_NODELAY). */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->handshaking = true;
	c->in = NBD_IN_CLIENT_FLAGS;
	c->next = s->conns;
	s->conns = c;
	s->nconns++;
	s->nhandshakes++;
	if (s->handshake_timeout_ns > 0)
		vd_timer_mod(c->timer, vd_clock_ns() + s->handshake_timeout_ns);
	nbd_negotiate_start(c);
	nbd_conn_update_watch(c);
	return 0;
}

static void accept_conn(void *opaque);

static void watch_listeners(struct vd_nbd_server *s, bool on)
{
	for (int i = 0; i < s->nlisten; i++)
		vd_loop_set_fd_handler(s->loop, s->listen_fds[i], on ? accept_conn : NULL, NULL, s);
}

static void accept_resume(void *opaque)
{
	watch_listeners(opaque, true);
}

static void accept_conn(void *opaque)
{
	struct vd_nbd_server *s = opaque;

	for (int i = 0; i < s->nlisten; i++) {
		int fd = accept4(s->listen_fds[i], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd >= 0) {
			vd_nbd_server_add_client(s, fd);
		} else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			   errno == ENOMEM) {
			/* The connection stays queued and the socket readable:
			 * rest instead of spinning, and try again later. */
			watch_listeners(s, false);
			vd_timer_mod(s->accept_timer, vd_clock_ns() + NBD_ACCEPT_BACKOFF_NS);
			return;
		}
	}
}

int vd_nbd_server_connections(const struct vd_nbd_server *s)
{
	return s->nconns;
}

void vd_nbd_server_set_idle_handler(struct vd_nbd_server *s, vd_loop_fn *fn, void *opaque)
{
	s->idle_fn = fn;
	s->idle_opaque = opaque;
}

/* --- listeners ------------------------------------------------------------------ */

static int listen_unix(struct vd_nbd_server *s, const char *path, struct vd_error *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path))
		return vd_error_set(err, -ENAMETOOLONG, "UNIX socket path '%s' is too long", path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return vd_error_setg_errno(err, -errno, "Failed to create a socket");
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 128) < 0) {
		ret = -errno;
		close(fd);
		return vd_error_setg_errno(err, ret, "Failed to bind socket to %s", path);
	}
	s->path = strdup(path);
	s->listen_fds[s->nlisten++] = fd;
	return 0;
}

static int listen_inet(struct vd_nbd_server *s, const char *host, const char *port,
		       struct vd_error *err)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_ADDRCONFIG},
			*res, *ai;
	int ret = getaddrinfo(host && *host ? host : NULL, port ? port : "10809", &hints, &res);

	if (ret != 0)
		return vd_error_set(err, -EINVAL, "address resolution failed for %s:%s: %s",
				    host ? host : "", port ? port : "10809", gai_strerror(ret));
	ret = 0;
	for (ai = res; ai && s->nlisten < 8; ai = ai->ai_next) {
		int one = 1;
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
				ai->ai_protocol);

		if (fd < 0) {
			ret = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
			ret = -errno;
			close(fd);
			continue;
		}
		s->listen_fds[s->nlisten++] = fd;
	}
	freeaddrinfo(res);
	if (s->nlisten == 0)
		return vd_error_setg_errno(err, ret ? ret : -EADDRNOTAVAIL,
					   "Failed to listen on %s:%s", host ? host : "",
					   port ? port : "10809");
	return 0;
}

static void server_notifier_free(struct vd_nbd_server *s)
{
	if (s->reap.fd >= 0) {
		vd_loop_set_fd_handler(s->loop, s->reap.fd, NULL, NULL, NULL);
		vd_notifier_cleanup(&s->reap);
	}
	/* Every connection was reaped, which took reap_lock after its
	 * thread had left conn_retire: nobody holds it now. */
	pthread_mutex_destroy(&s->reap_lock);
	pthread_mutex_destroy(&s->buf_lock);
}

/* sendfile() has no MSG_NOSIGNAL: zero copy only where SIGPIPE cannot kill. */
static bool sigpipe_ignored(void)
{
	struct sigaction sa;

	return sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
}

int vd_nbd_server_new(const struct vd_nbd_server_opts *o, struct vd_nbd_server **out,
		      struct vd_error *err)
{
	struct vd_nbd_server *s;
	int ret = 0;

	if (!vd_loop_current())
		return vd_error_set(err, -EINVAL, "No event loop");
	if (o->max_connections < 0)
		return vd_error_set(err, -EINVAL, "max-connections must not be negative");
	s = calloc(1, sizeof(*s));
	if (!s)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	s->loop = vd_loop_current();
	pthread_mutex_init(&s->buf_lock, NULL);
	pthread_mutex_init(&s->reap_lock, NULL);
	s->reap.fd = -1;
	s->zero_copy = sigpipe_ignored();
	s->max_connections = o->max_connections;
	s->handshake_timeout_ns =
		o->handshake_timeout_ns ? o->handshake_timeout_ns : NBD_HANDSHAKE_TIMEOUT_NS;
	s->idle_bh = vd_bh_new(s->loop, idle_bh_fn, s);
	s->accept_timer = vd_timer_new(s->loop, accept_resume, s);
	if (!s->idle_bh || !s->accept_timer) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	ret = vd_notifier_init(&s->reap);
	if (ret == 0)
		ret = vd_loop_set_fd_handler(s->loop, s->reap.fd, reap_conns, NULL, s);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Cannot create an event notifier");
		goto fail;
	}
	s->tls = vd_tls_creds_ref(o->tls_creds);
	if (o->tls_authz_identity && !(s->tls_authz = strdup(o->tls_authz_identity))) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	if (o->n_listen_fds > 0) {
		if (o->n_listen_fds > 8) {
			ret = vd_error_set(err, -EINVAL, "Too many listening sockets");
			goto fail;
		}
		for (int i = 0; i < o->n_listen_fds; i++)
			s->listen_fds[s->nlisten++] = o->listen_fds[i];
	} else if (o->path) {
		ret = listen_unix(s, o->path, err);
	} else {
		ret = listen_inet(s, o->host, o->port, err);
	}
	if (ret < 0)
		goto fail;
	for (int i = 0; i < s->nlisten; i++) {
		ret = vd_loop_set_fd_handler(s->loop, s->listen_fds[i], accept_conn, NULL, s);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Cannot watch the socket");
			goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	for (int i = 0; i < s->nlisten; i++) {
		vd_loop_set_fd_handler(s->loop, s->listen_fds[i], NULL, NULL, NULL);
		close(s->listen_fds[i]);
	}
	if (s->path)
		unlink(s->path);
	free(s->path);
	vd_bh_delete(s->idle_bh);
	vd_timer_free(s->accept_timer);
	server_notifier_free(s);
	vd_tls_creds_unref(s->tls);
	free(s->tls_authz);
	free(s);
	return ret;
}

static void conn_close_fn(void *opaque)
{
	nbd_conn_close(opaque);
}

/* Close @exp's connections (all with NULL) and wait until they are gone:
 * on its loop, each; a connection that already ended there has dead set,
 * and its retirement wakes this loop. */
static void close_conns(struct vd_nbd_server *s, struct vd_nbd_export *exp)
{
	for (struct nbd_conn *c = s->conns; c; c = c->next)
		if (!exp || c->exp == exp)
			vd_loop_call_wait(c->loop, conn_close_fn, c);
	for (;;) {
		bool left = false;

		for (struct nbd_conn *c = s->conns; c; c = c->next)
			if (!exp || c->exp == exp)
				left = true;
		if (!left)
			break;
		vd_loop_run_once(s->loop, true);
	}
}

void vd_nbd_server_free(struct vd_nbd_server *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->nlisten; i++) {
		vd_loop_set_fd_handler(s->loop, s->listen_fds[i], NULL, NULL, NULL);
		close(s->listen_fds[i]);
	}
	s->nlisten = 0;
	vd_timer_free(s->accept_timer);
	s->accept_timer = NULL;
	if (s->path)
		unlink(s->path);
	s->idle_fn = NULL;
	close_conns(s, NULL);
	while (s->exports)
		vd_nbd_export_free(s->exports);
	vd_bh_delete(s->idle_bh);
	vd_tls_creds_unref(s->tls);
	buf_cache_free(s);
	server_notifier_free(s);
	free(s->tls_authz);
	free(s->path);
	free(s);
}

/* --- exports ----------------------------------------------------------------------- */

struct vd_nbd_export *nbd_server_find_export(struct vd_nbd_server *s, const char *name, size_t len)
{
	for (struct vd_nbd_export *e = s->exports; e; e = e->next)
		if (strlen(e->name) == len && !memcmp(e->name, name, len))
			return e;
	return NULL;
}

struct export_call {
	struct vd_nbd_export *e;
	const struct vd_nbd_export_opts *o;
	struct vd_error *err;
	int ret;
};

/* On the node's loop: the export's backend. */
static void export_blk_new(void *opaque)
{
	struct export_call *k = opaque;
	struct vd_nbd_export *e = k->e;

	k->ret = vd_blk_new(k->o->reg, NULL, &e->blk);
	if (k->ret < 0) {
		vd_error_set(k->err, k->ret, "Out of memory");
		return;
	}
	/* Errors go to the client as NBD errors (QEMU's exports have no
	 * rerror/werror). */
	vd_blk_set_on_error(e->blk, VD_BLK_ON_ERROR_REPORT, VD_BLK_ON_ERROR_REPORT);
	vd_blk_set_read_only(e->blk, !k->o->writable);
	k->ret = vd_blk_insert_node(e->blk, k->o->node);
	if (k->ret < 0) {
		vd_error_setg_errno(k->err, k->ret, "Cannot attach the export to its node");
		vd_blk_unref(e->blk);
		e->blk = NULL;
	}
}

/* On the node's loop: what clients wrote is on disk before the export goes. */
static void export_blk_free(void *opaque)
{
	struct vd_nbd_export *e = opaque;

	vd_blk_flush(e->blk);
	vd_blk_unref(e->blk);
}

int vd_nbd_export_new(struct vd_nbd_server *s, const struct vd_nbd_export_opts *o,
		      struct vd_nbd_export **out, struct vd_error *err)
{
	struct export_call k = {.o = o, .err = err};
	const char *name = o->name ? o->name : "";
	struct vd_nbd_export *e, **pp;
	int ret;

	if (!o->node)
		return vd_error_set(err, -EINVAL, "An export needs a node");
	if (strlen(name) > NBD_MAX_STRING)
		return vd_error_set(err, -EINVAL, "export name '%s' too long", name);
	if (o->description && strlen(o->description) > NBD_MAX_STRING)
		return vd_error_set(err, -EINVAL, "description '%s' too long", o->description);
	if (nbd_server_find_export(s, name, strlen(name)))
		return vd_error_set(err, -EEXIST, "NBD server already has export named '%s'", name);
	if (o->writable && vd_node_is_read_only(o->node))
		return vd_error_set(err, -EROFS, "Cannot export read-only node as writable");
	e = calloc(1, sizeof(*e));
	if (!e)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	e->srv = s;
	e->name = strdup(name);
	e->description = o->description ? strdup(o->description) : NULL;
	if (!e->name || (o->description && !e->description)) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	e->writable = o->writable;
	e->multi_conn = o->multi_conn;
	e->loop = vd_node_loop(o->node) ? vd_node_loop(o->node) : s->loop;
	k.e = e;
	vd_loop_call_wait(e->loop, export_blk_new, &k);
	ret = k.ret;
	if (ret < 0)
		goto fail;
	for (pp = &s->exports; *pp; pp = &(*pp)->next)
		;
	*pp = e;
	*out = e;
	return 0;
fail:
	free(e->name);
	free(e->description);
	free(e);
	return ret;
}

void vd_nbd_export_free(struct vd_nbd_export *e)
{
	struct vd_nbd_server *s;
	struct vd_nbd_export **pp;

	if (!e)
		return;
	s = e->srv;
	for (pp = &s->exports; *pp && *pp != e; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = e->next;
	close_conns(s, e);
	vd_loop_call_wait(e->loop, export_blk_free, e);
	free(e->name);
	free(e->description);
	free(e);
}

int vd_nbd_export_connections(const struct vd_nbd_export *e)
{
	return e->nconns;
}

struct vd_blk *vd_nbd_export_blk(const struct vd_nbd_export *e)
{
	return e->blk;
}
