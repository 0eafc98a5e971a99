/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the vhost-user back end (export/vhost-user-blk/
 * vhost-user.c): the input is a stream of records, each sent on one end of
 * a socketpair whose other end is served as a front end's connection.
 *
 *   record   byte c, le16 length, then that many bytes, sent with one
 *            sendmsg(); c bits 0-1: how many fds go with it (0-3); bit 2:
 *            they are memfds of 64 KiB holding a copy of the input (guest
 *            memory, an inflight region), else eventfds; bit 3: the
 *            record's length is taken modulo 64 (short messages); bit 4:
 *            before this record is sent, the back end runs until it has
 *            nothing more to do, so that it sees a message split here in
 *            two parts (the back end assembles messages incrementally)
 *
 * A thread reads and drops the replies.  After the last record our end
 * stops writing, so a message cut short ends the connection; the loop runs
 * until the back end has closed the connection, and the connection is
 * freed.
 *
 * Invariants: no crash, no hang (every record is consumed, the connection
 * ends at EOF), no leak (LeakSanitizer in a campaign), and the export
 * outlives every connection.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/vhost-user/ (make
 * check); tests/fuzz/run-libfuzzer.sh vhost-user SECONDS runs a campaign.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vdisk/block.h>
#include <vdisk/export.h>
#include <vdisk/loop.h>
#include <vdisk/opts.h>

#include "export/vhost-user-blk/vub-internal.h"

#include "tests/fuzz/fuzz.h"

#define MEMFD_SIZE 0x10000

static struct vd_loop *loop;
static struct vd_export *export;

static int setup(void)
{
	struct vd_error err = {0};
	struct vd_opts *o = NULL;
	struct vd_node *node = NULL;
	struct sockaddr_un_short {
		sa_family_t family;
	} sa = {AF_UNIX};
	struct vd_vhost_user_blk_opts eo = {.id = "fuzz", .writable = true, .num_queues = 2};
	int lfd;

	if (vd_loop_new(&loop) < 0)
		return -1;
	vd_loop_set_current(loop);
	if (vd_opts_parse("driver=null-co,size=1M,read-zeroes=on", NULL, &o, &err) < 0)
		return -1;
	if (vd_node_open_opts(o, VD_OPEN_RDWR, &node, &err) < 0) {
		fprintf(stderr, "node: %s\n", err.msg);
		vd_opts_free(o);
		return -1;
	}
	vd_opts_free(o);
	/* A listening socket nobody connects to (autobound, abstract). */
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0)
		return -1;
	eo.node = node;
	eo.listen_fd = lfd;
	if (vd_vhost_user_blk_export_new(&eo, &export, &err) < 0) {
		fprintf(stderr, "export: %s\n", err.msg);
		return -1;
	}
	vd_node_unref(node);
	return 0;
}

static void *drain_replies(void *opaque)
{
	int fd = *(int *)opaque;
	char buf[4096];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	return NULL;
}

static int make_fd(bool mem, const uint8_t *data, size_t size)
{
	int fd;

	if (!mem)
		return eventfd(0, EFD_CLOEXEC);
	fd = memfd_create("fuzz-guest", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	if (ftruncate(fd, MEMFD_SIZE) < 0) {
		close(fd);
		return -1;
	}
	/* Guest memory holds the input, repeated: rings and buffers the
	 * fuzzer controls. */
	if (size) {
		uint8_t *p = mmap(NULL, MEMFD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

		if (p != MAP_FAILED) {
			for (size_t off = 0; off < MEMFD_SIZE; off += size)
				memcpy(p + off, data,
				       MEMFD_SIZE - off < size ? MEMFD_SIZE - off : size);
			munmap(p, MEMFD_SIZE);
		}
	}
	return fd;
}

static void send_record(int fd, uint8_t c, const uint8_t *buf, size_t len, const uint8_t *all,
			size_t all_size)
{
	int fds[3], nfds = c & 3;
	union {
		char buf[CMSG_SPACE(sizeof(fds))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (len == 0)
		return; /* a stream socket cannot carry fds without data */
	for (int i = 0; i < nfds; i++) {
		fds[i] = make_fd(c & 4, all, all_size);
		if (fds[i] < 0) {
			nfds = i;
			break;
		}
	}
	if (nfds) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) < 0) {
		/* The back end closed already: fine. */
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	size_t left = size;
	int sv[2];
	pthread_t reader;
	bool served;

	if (!export && setup() < 0)
		abort();
	/* The records must fit in the socket buffer: the back end may read
	 * none of them before the last is sent. */
	if (size > 64 * 1024)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	{
		int big = 1 << 20;
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	}
	if (pthread_create(&reader, NULL, drain_replies, &sv[0]) != 0) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	/* The back end's end: non-blocking as accept4 gives it. */
	{
		int fl = fcntl(sv[1], F_GETFL);
		fcntl(sv[1], F_SETFL, fl | O_NONBLOCK);
	}
	FUZZ_ASSERT(vd_export_connections(export) == 0);
	served = vub_conn_new(export, sv[1]) == 0;
	/* The records fit in the socket buffer (the size check above): no
	 * send waits for the back end, which reads only between records
	 * marked so, and after the last. */
	while (left >= 3) {
		uint8_t c = p[0];
		size_t len = (size_t)p[1] | (size_t)p[2] << 8;

		p += 3;
		left -= 3;
		if (c & 8)
			len %= 64;
		if (len > left)
			len = left;
		if ((c & 16) && served)
			for (int i = 0; i < 1000 && vd_loop_run_once(loop, false); i++)
				;
		send_record(sv[0], c, p, len, data, size);
		p += len;
		left -= len;
	}
	shutdown(sv[0], SHUT_WR);
	if (served) {
		/* Every message is there and then EOF: the connection must end.
		 * Bound the loop so that a hang is an assertion, not a
		 * timeout. */
		for (int i = 0; i < 100000 && vd_export_connections(export) > 0; i++)
			vd_loop_run_once(loop, false);
		FUZZ_ASSERT(vd_export_connections(export) == 0);
	}
	pthread_join(reader, NULL);
	close(sv[0]);
	return 0;
}
