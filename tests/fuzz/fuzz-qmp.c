/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the QMP server: the input is the byte stream one client
 * sends (most corpus entries start with qmp_capabilities), fed through a
 * socketpair into a fresh server with the block commands over two drives (a
 * null-co disk, and a CD-ROM with a tray).  The client half-closes after the
 * input; the server must answer, close the connection, and never crash or
 * hang.  Every line the server wrote must be a JSON object.
 *
 * blockdev-change-medium is not registered here: it opens files named by the
 * input, and a fuzzer must not reach the host's files.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/qmp/ through it (make
 * check); tests/fuzz/run-libfuzzer.sh qmp SECONDS runs a libFuzzer campaign.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include <vdisk/backend.h>
#include <vdisk/qmp.h>

#include "tests/fuzz/fuzz.h"

static struct vd_loop *loop;

static void dev_change(void *opaque, bool load)
{
}

static const struct vd_blk_dev_ops cd_ops = {
	.has_tray = true,
	.change_media = dev_change,
};

static struct vd_node *null_node(void)
{
	struct vd_opts *o = NULL;
	struct vd_node *n = NULL;

	if (vd_opts_parse("driver=null-co,size=1M", NULL, &o, NULL) == 0)
		vd_node_open_opts(o, VD_OPEN_RDWR, &n, NULL);
	vd_opts_free(o);
	return n;
}

/* Check each complete line of output; keep a partial one.  *skip: the
 * current line outgrew the buffer (an echoed huge id) and is dropped. */
static void check_output(char *buf, size_t *len, size_t cap, bool *skip)
{
	char *p = buf, *nl;

	while ((nl = memmem(p, *len - (size_t)(p - buf), "\r\n", 2))) {
		if (!*skip) {
			json_t *j = json_loadb(p, (size_t)(nl - p), 0, NULL);

			FUZZ_ASSERT(json_is_object(j));
			FUZZ_ASSERT(json_object_get(j, "QMP") || json_object_get(j, "return") ||
				    json_object_get(j, "error") || json_object_get(j, "event"));
			json_decref(j);
		}
		*skip = false;
		p = nl + 2;
	}
	memmove(buf, p, *len - (size_t)(p - buf));
	*len -= (size_t)(p - buf);
	if (*len >= cap - 1) {
		/* Keep the last byte: it may be the '\r' of "\r\n". */
		buf[0] = buf[*len - 1];
		*len = 1;
		*skip = true;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[1 << 16];
	struct vd_blk_registry *reg = NULL;
	struct vd_qmp_server *s = NULL;
	struct vd_qmp_block *b = NULL;
	struct vd_blk *d0 = NULL, *cd = NULL;
	struct vd_node *n;
	size_t off = 0, outlen = 0;
	bool shut = false, peer_closed = false, skip = false;
	int sv[2];

	if (!loop) {
		signal(SIGPIPE, SIG_IGN);
		FUZZ_ASSERT(vd_loop_new(&loop) == 0);
		vd_loop_set_current(loop);
	}
	FUZZ_ASSERT(vd_blk_registry_new(&reg) == 0);
	FUZZ_ASSERT(vd_qmp_server_new(loop, &s) == 0);
	FUZZ_ASSERT(vd_qmp_block_init(s, reg, &b) == 0);
	FUZZ_ASSERT(vd_qmp_unregister(s, "blockdev-change-medium") == 0);
	/* Small, so that the corpus can hold an oversize message. */
	vd_qmp_server_set_max_message(s, 65536);
	FUZZ_ASSERT(vd_blk_new(reg, "d0", &d0) == 0);
	FUZZ_ASSERT(vd_blk_new(reg, "cd", &cd) == 0);
	n = null_node();
	FUZZ_ASSERT(n && vd_blk_insert_node(d0, n) == 0);
	vd_node_unref(n);
	n = null_node();
	FUZZ_ASSERT(n && vd_blk_insert_node(cd, n) == 0);
	vd_node_unref(n);
	FUZZ_ASSERT(vd_blk_attach_dev(cd, "cd0", &cd_ops, NULL) == 0);

	FUZZ_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
	FUZZ_ASSERT(vd_qmp_server_add_client(s, sv[0], sv[0], true) == 0);

	/* Feed, pump, read; bounded so that a hang is a finding, not a stall. */
	for (int iter = 0; iter < 1000000 && !peer_closed; iter++) {
		if (off < size) {
			ssize_t w = send(sv[1], data + off, size - off, MSG_NOSIGNAL);

			if (w > 0)
				off += (size_t)w;
			else if (w < 0 && errno != EAGAIN)
				off = size; /* the server closed on us */
		} else if (!shut) {
			shutdown(sv[1], SHUT_WR);
			shut = true;
		}
		vd_loop_run_once(loop, false);
		for (;;) {
			ssize_t r = read(sv[1], out + outlen, sizeof(out) - outlen);

			if (r > 0) {
				outlen += (size_t)r;
				check_output(out, &outlen, sizeof(out), &skip);
				continue;
			}
			if (r == 0)
				peer_closed = true;
			break;
		}
	}
	FUZZ_ASSERT(peer_closed);
	FUZZ_ASSERT(vd_qmp_server_client_count(s) == 0);
	close(sv[1]);

	vd_qmp_block_free(b);
	vd_qmp_server_free(s);
	vd_blk_unref(d0);
	vd_blk_unref(cd);
	vd_blk_registry_free(reg);
	return 0;
}
