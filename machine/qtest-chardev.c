/* SPDX-License-Identifier: MIT */
/*
 * Where the test protocol is served: stdin/stdout, or a unix socket that we
 * connect to (QEMU's -qtest unix:PATH: libqtest listens, QEMU connects) or
 * listen on (unix:PATH,server).  End of input asks the machine to quit.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "machine/machine-internal.h"

struct vd_qtest_chardev {
	struct vd_machine *m;
	struct vd_qtest *q;
	int in_fd, out_fd;
	int listen_fd;
	bool is_socket;
	bool watching; /* in_fd is registered with the loop */
	char *path; /* listening socket to unlink */
	/* While a received chunk is executed, its replies are collected here
	 * and written at once after it: a pipelining client then costs one
	 * write per chunk instead of one per command. */
	bool batching;
	char *out;
	size_t out_len, out_cap;
};

static void chr_write(struct vd_qtest_chardev *c, const char *buf, size_t len)
{
	while (len > 0 && c->out_fd >= 0) {
		ssize_t n = c->is_socket ? send(c->out_fd, buf, len, MSG_NOSIGNAL)
					 : write(c->out_fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* the peer is gone; end of input will follow */
		buf += n;
		len -= (size_t)n;
	}
}

static void chr_flush(struct vd_qtest_chardev *c)
{
	chr_write(c, c->out, c->out_len);
	c->out_len = 0;
}

static void chr_send(void *opaque, const char *buf, size_t len)
{
	struct vd_qtest_chardev *c = opaque;

	/* Large replies (read, b64read of megabytes) go out directly. */
	if (c->batching && len >= 65536)
		chr_flush(c);
	if (c->batching && len < 65536) {
		if (c->out_len + len > c->out_cap) {
			size_t cap = c->out_cap ? c->out_cap : 65536;
			char *nb;

			while (cap < c->out_len + len)
				cap *= 2;
			nb = realloc(c->out, cap);
			if (!nb) {
				/* Keep the order: what is queued goes first. */
				chr_flush(c);
				chr_write(c, buf, len);
				return;
			}
			c->out = nb;
			c->out_cap = cap;
		}
		memcpy(c->out + c->out_len, buf, len);
		c->out_len += len;
		if (c->out_len >= (1u << 20))
			chr_flush(c);
		return;
	}
	chr_write(c, buf, len);
}

/* Execute a received chunk; its replies leave in one write. */
static void chr_feed(struct vd_qtest_chardev *c, const char *buf, size_t len)
{
	c->batching = true;
	vd_qtest_feed(c->q, buf, len);
	c->batching = false;
	chr_flush(c);
}

static void chr_eof(struct vd_qtest_chardev *c)
{
	if (c->watching) {
		vd_loop_set_fd_handler(c->m->loop, c->in_fd, NULL, NULL, NULL);
		c->watching = false;
	}
	vd_machine_request_quit(c->m);
}

static void chr_read(void *opaque)
{
	struct vd_qtest_chardev *c = opaque;
	char buf[65536];
	ssize_t n = read(c->in_fd, buf, sizeof(buf));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		chr_eof(c);
		return;
	}
	chr_feed(c, buf, (size_t)n);
}

/* stdin is a regular file (epoll refuses those): read it all in one go. */
static void chr_read_file(void *opaque)
{
	struct vd_qtest_chardev *c = opaque;
	char buf[65536];
	ssize_t n;

	while ((n = read(c->in_fd, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		chr_feed(c, buf, (size_t)n);
	}
	vd_machine_request_quit(c->m);
}

static int chr_watch(struct vd_qtest_chardev *c)
{
	int ret = vd_loop_set_fd_handler(c->m->loop, c->in_fd, chr_read, NULL, c);

	if (ret == -EPERM)
		return vd_loop_oneshot(c->m->loop, chr_read_file, c);
	if (ret == 0)
		c->watching = true;
	return ret;
}

static void chr_accept(void *opaque)
{
	struct vd_qtest_chardev *c = opaque;
	int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	/* One client, as QEMU's socket chardev. */
	vd_loop_set_fd_handler(c->m->loop, c->listen_fd, NULL, NULL, NULL);
	c->in_fd = c->out_fd = fd;
	if (chr_watch(c) < 0)
		chr_eof(c);
}

void machine_qtest_chardev_close(struct vd_machine *m)
{
	struct vd_qtest_chardev *c = m->qtest_chr;

	if (!c)
		return;
	if (c->watching)
		vd_loop_set_fd_handler(m->loop, c->in_fd, NULL, NULL, NULL);
	if (c->listen_fd >= 0) {
		vd_loop_set_fd_handler(m->loop, c->listen_fd, NULL, NULL, NULL);
		close(c->listen_fd);
	}
	if (c->path) {
		unlink(c->path);
		free(c->path);
	}
	if (c->is_socket && c->in_fd >= 0)
		close(c->in_fd);
	vd_qtest_free(c->q);
	free(c->out);
	free(c);
	m->qtest_chr = NULL;
}

int vd_qtest_chardev_open(struct vd_machine *m, const char *spec, struct vd_error *err)
{
	struct vd_qtest_chardev *c;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int ret;

	if (m->qtest_chr)
		return vd_error_set(err, -EBUSY, "The test protocol is already being served");
	if (!m->loop)
		return vd_error_set(err, -EINVAL, "The machine has no event loop");
	c = calloc(1, sizeof(*c));
	if (!c)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	c->m = m;
	c->in_fd = c->out_fd = c->listen_fd = -1;
	c->q = vd_qtest_new(m, chr_send, c);
	if (!c->q) {
		free(c);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	m->qtest_chr = c;

	if (strcmp(spec, "stdio") == 0) {
		c->in_fd = 0;
		c->out_fd = 1;
		ret = chr_watch(c);
		if (ret < 0)
			goto fail_errno;
		return 0;
	}
	if (strncmp(spec, "unix:", 5) != 0) {
		ret = vd_error_set(err, -EINVAL,
				   "qtest chardev '%s': expected stdio or unix:PATH[,server]",
				   spec);
		goto fail;
	}
	const char *path = spec + 5;
	size_t plen = strcspn(path, ",");
	const char *rest = path + plen;
	bool server = false;

	while (*rest == ',') {
		rest++;
		size_t l = strcspn(rest, ",");

		if ((l == 6 && !strncmp(rest, "server", 6)) ||
		    (l == 9 && !strncmp(rest, "server=on", 9)))
			server = true;
		else if (!(l == 8 && !strncmp(rest, "wait=off", 8)) &&
			 !(l == 6 && !strncmp(rest, "nowait", 6))) {
			ret = vd_error_set(err, -EINVAL, "qtest chardev: unknown option '%.*s'",
					   (int)l, rest);
			goto fail;
		}
		rest += l;
	}
	if (plen == 0 || plen >= sizeof(sa.sun_path)) {
		ret = vd_error_set(err, -EINVAL, "qtest chardev: bad socket path");
		goto fail;
	}
	memcpy(sa.sun_path, path, plen);
	c->is_socket = true;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		ret = -errno;
		goto fail_errno;
	}
	if (server) {
		unlink(sa.sun_path);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
			ret = -errno;
			close(fd);
			goto fail_errno;
		}
		c->listen_fd = fd;
		c->path = strdup(sa.sun_path);
		ret = vd_loop_set_fd_handler(m->loop, fd, chr_accept, NULL, c);
		if (ret < 0)
			goto fail_errno;
		return 0;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		close(fd);
		goto fail_errno;
	}
	c->in_fd = c->out_fd = fd;
	ret = chr_watch(c);
	if (ret < 0)
		goto fail_errno;
	return 0;

fail_errno:
	vd_error_setg_errno(err, ret, "qtest chardev '%s'", spec);
fail:
	machine_qtest_chardev_close(m);
	return ret;
}
