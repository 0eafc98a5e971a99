/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the NBD client's wire code (block/drivers/nbd-client/
 * wire.c): the input is what a server sends.
 *
 *   byte 0   bit 0: handshake mode: the rest is the server's side of a
 *            negotiation (nbd_wire_negotiate, export name "exp"); bit 3
 *            there: TLS is asked for (STARTTLS first; the TLS handshake
 *            is GnuTLS's and succeeds at once here, the stream goes on);
 *            else reply mode: the rest is a stream of replies to the
 *            requests below, read with nbd_wire_recv() until it fails or
 *            the input ends; bit 1: structured replies were negotiated;
 *            bit 2: so was base:allocation (context id 7)
 *
 * Requests in flight in reply mode, cookie = slot number: 0 READ 0+4096,
 * 1 READ 8192+65536, 2 BLOCK_STATUS 0+1M, 3 WRITE 0+512, 4 FLUSH.  A request
 * whose last reply came is put back in flight, so one input can answer it
 * again.
 *
 * Invariants: no crash, no out-of-bounds write (a read's data lands inside
 * its buffer, which ASan guards), no endless loop (every call consumes
 * input or fails), a completed slot is consistent (a successful block
 * status has 0 < length <= asked).
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/nbd-client/ (make
 * check); tests/fuzz/run-libfuzzer.sh nbd-client SECONDS runs a campaign.
 * tests/fuzz/make-nbd-client-corpus.py wrote the seed inputs.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/nbd-proto.h>

#include "block/drivers/nbd-client/nbd-client.h"

struct input {
	const uint8_t *data;
	size_t size, pos;
};

static int mem_readv(void *opaque, struct iovec *iov, int niov)
{
	struct input *in = opaque;

	for (int i = 0; i < niov; i++) {
		if (in->size - in->pos < iov[i].iov_len)
			return -EPIPE;
		memcpy(iov[i].iov_base, in->data + in->pos, iov[i].iov_len);
		in->pos += iov[i].iov_len;
	}
	return 0;
}

static int mem_writev(void *opaque, struct iovec *iov, int niov)
{
	return 0;
}

static int mem_starttls(void *opaque, struct vd_error *err)
{
	return 0;
}

static uint8_t buf0[4096], buf1[65536];
static struct vd_qiov qiov0, qiov1;

static void arm(struct nbd_wire *w, int i)
{
	static const struct {
		uint16_t type;
		uint64_t offset;
		uint32_t length;
	} reqs[] = {
		{NBD_CMD_READ, 0, 4096},
		{NBD_CMD_READ, 8192, 65536},
		{NBD_CMD_BLOCK_STATUS, 0, 1 << 20},
		{NBD_CMD_WRITE, 0, 512},
		{NBD_CMD_FLUSH, 0, 0},
	};
	struct nbd_slot *s = &w->slots[i];

	memset(s, 0, sizeof(*s));
	s->state = NBD_SLOT_AWAITING;
	s->cookie = (uint64_t)i;
	s->type = reqs[i].type;
	s->offset = reqs[i].offset;
	s->length = reqs[i].length;
	if (i == 0)
		s->qiov = &qiov0;
	else if (i == 1)
		s->qiov = &qiov1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {.data = data, .size = size, .pos = 1};
	struct nbd_transport t = {.readv = mem_readv, .writev = mem_writev, .opaque = &in};
	struct nbd_wire w;

	if (size < 1)
		return 0;
	if (data[0] & 1) {
		struct nbd_export_info info;
		struct vd_error err = {0};
		int ret;

		if (data[0] & 8)
			t.starttls = mem_starttls;
		ret = nbd_wire_negotiate(&t, "exp", &info, &err);
		if (ret == 0 && (info.size > INT64_MAX ||
				 (info.min_block && (info.min_block & (info.min_block - 1)))))
			abort();
		return 0;
	}
	vd_qiov_init_buf(&qiov0, buf0, sizeof(buf0));
	vd_qiov_init_buf(&qiov1, buf1, sizeof(buf1));
	nbd_wire_init(&w);
	w.t = t;
	w.info.size = 1 << 20;
	w.info.structured = data[0] & 2;
	w.info.base_allocation = data[0] & 4;
	w.info.context_id = 7;
	for (int i = 0; i < 5; i++)
		arm(&w, i);
	for (;;) {
		struct nbd_slot *done;
		size_t before = in.pos;
		int ret = nbd_wire_recv(&w, &done);
		if (ret < 0)
			break;
		if (in.pos == before)
			abort(); /* made no progress: could loop forever */
		if (done) {
			if (done->state != NBD_SLOT_DONE)
				abort();
			if (done->type == NBD_CMD_BLOCK_STATUS && !done->ret &&
			    (!done->status_length || done->status_length > done->length))
				abort();
			arm(&w, (int)(done - w.slots));
		}
	}
	nbd_wire_cleanup(&w);
	return 0;
}
