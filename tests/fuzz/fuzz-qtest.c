/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the test protocol: the input is a byte stream fed to a
 * qtest server on a small in-process PC (1 MiB of RAM, virtual clock), in
 * pieces of varying size so that line reassembly is exercised too.  Every
 * reply must be a complete line starting with OK, FAIL, ERR or IRQ, and the
 * machine must still answer a final command afterwards.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/qtest/ through it (make
 * check); tests/fuzz/run-libfuzzer.sh qtest SECONDS runs a libFuzzer campaign.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/machine.h>

#include "tests/fuzz/fuzz.h"

struct sink {
	size_t lines;
	bool at_line_start;
	char last[8];
	size_t last_len;
};

static void sink_send(void *opaque, const char *buf, size_t len)
{
	struct sink *s = opaque;

	for (size_t i = 0; i < len; i++) {
		if (s->at_line_start) {
			s->last_len = 0;
			s->at_line_start = false;
		}
		if (s->last_len < sizeof(s->last))
			s->last[s->last_len++] = buf[i];
		if (buf[i] == '\n') {
			/* Each line starts as a reply or an IRQ line does. */
			FUZZ_ASSERT(!memcmp(s->last, "OK", 2) || !memcmp(s->last, "FAIL", 4) ||
				    !memcmp(s->last, "ERR", 3) || !memcmp(s->last, "IRQ", 3));
			s->lines++;
			s->at_line_start = true;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vd_machine_opts mo = {.ram_size = 1 << 20, .qtest_clock = true};
	struct vd_machine *m;
	struct vd_error err = {0};
	struct vd_qtest *q;
	struct sink s = {.at_line_start = true};
	size_t off = 0, step = 1;
	size_t before;

	if (vd_machine_new(&mo, &m, &err) < 0)
		return 0;
	q = vd_qtest_new(m, sink_send, &s);
	FUZZ_ASSERT(q);
	/* Feed in pieces of 1, 2, 4, ... bytes, restarting at 1 after 4 KiB. */
	while (off < size) {
		size_t n = size - off < step ? size - off : step;

		vd_qtest_feed(q, data + off, n);
		off += n;
		step = step >= 4096 ? 1 : step * 2;
	}
	/* End any partial line, then the machine must still answer. */
	vd_qtest_feed(q, "\n", 1);
	before = s.lines;
	vd_qtest_feed(q, "endianness\n", 11);
	FUZZ_ASSERT(s.lines == before + 1 && !memcmp(s.last, "OK little", 8));
	vd_qtest_free(q);
	vd_machine_free(m);
	return 0;
}
