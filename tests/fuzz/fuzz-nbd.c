/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the NBD server (export/nbd): the input is what a client
 * sends, byte for byte, from the handshake through the requests.  It goes
 * into one end of a socketpair whose other end the server serves; then our
 * end stops writing, and a thread reads and drops the replies.  The loop
 * runs until the server has closed the connection.
 *
 * The export is a 1 MiB null-co node, writable, named "" (and "x" for a
 * second one), so a corpus that negotiates reaches every command.
 *
 * Invariants: no crash, no hang (the connection ends at EOF), no leak
 * (LeakSanitizer in a campaign), and the server outlives every client.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/nbd/ (make check;
 * tests/fuzz/make-nbd-corpus.py writes it); tests/fuzz/run-libfuzzer.sh nbd
 * SECONDS runs a campaign.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vdisk/block.h>
#include <vdisk/export.h>
#include <vdisk/loop.h>
#include <vdisk/opts.h>

#include "tests/fuzz/fuzz.h"

static struct vd_loop *loop;
static struct vd_nbd_server *server;

static int add_export(const char *name, bool writable)
{
	struct vd_error err = {0};
	struct vd_opts *o = NULL;
	struct vd_node *node = NULL;
	struct vd_nbd_export *e;
	struct vd_nbd_export_opts eo = {.name = name, .writable = writable, .multi_conn = true};
	int ret;

	if (vd_opts_parse("driver=null-co,size=1M,read-zeroes=on", NULL, &o, &err) < 0)
		return -1;
	ret = vd_node_open_opts(o, VD_OPEN_RDWR, &node, &err);
	vd_opts_free(o);
	if (ret < 0) {
		fprintf(stderr, "node: %s\n", err.msg);
		return -1;
	}
	eo.node = node;
	ret = vd_nbd_export_new(server, &eo, &e, &err);
	vd_node_unref(node);
	if (ret < 0)
		fprintf(stderr, "export: %s\n", err.msg);
	return ret;
}

static int setup(void)
{
	struct vd_error err = {0};
	struct sockaddr_un_short {
		sa_family_t family;
	} sa = {AF_UNIX};
	struct vd_nbd_server_opts so = {.n_listen_fds = 1};
	int lfd;

	if (vd_loop_new(&loop) < 0)
		return -1;
	vd_loop_set_current(loop);
	/* A listening socket nobody connects to (autobound, abstract). */
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0)
		return -1;
	so.listen_fds = &lfd;
	if (vd_nbd_server_new(&so, &server, &err) < 0) {
		fprintf(stderr, "server: %s\n", err.msg);
		return -1;
	}
	if (add_export("", true) < 0 || add_export("x", false) < 0)
		return -1;
	return 0;
}

static void *drain_replies(void *opaque)
{
	int fd = *(int *)opaque;
	char buf[65536];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];
	pthread_t reader;
	size_t off = 0;

	if (!server && setup() < 0)
		abort();
	/* The input must fit in the socket buffer: all of it is sent before
	 * the server reads. */
	if (size > 512 * 1024)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	{
		int big = 1 << 20;
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
		setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	}
	while (off < size) {
		ssize_t n = write(sv[0], data + off, size - off);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	shutdown(sv[0], SHUT_WR);
	if (pthread_create(&reader, NULL, drain_replies, &sv[0]) != 0) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	FUZZ_ASSERT(vd_nbd_server_connections(server) == 0);
	if (vd_nbd_server_add_client(server, sv[1]) == 0) {
		/* Everything is there, then EOF: the connection must end.
		 * Bounded, so that a hang is an assertion, not a timeout. */
		for (int i = 0; i < 1000000 && vd_nbd_server_connections(server) > 0; i++)
			vd_loop_run_once(loop, false);
		FUZZ_ASSERT(vd_nbd_server_connections(server) == 0);
	}
	pthread_join(reader, NULL);
	close(sv[0]);
	return 0;
}
