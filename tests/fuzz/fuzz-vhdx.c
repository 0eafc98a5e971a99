/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the vhdx driver: see fuzz-image.h.  Corpus:
 * tests/fuzz/corpus/vhdx/, made by make-vhdx-corpus.py.
 *
 * A VHDX image is megabytes of mostly zeroes (1 MiB header section, regions
 * 1 MiB aligned), so an input may be sparse: "VHDXFUZZ", then chunks of
 * (offset: 64-bit LE, length: 32-bit LE, bytes); the image is the chunks
 * laid over zeroes, as large as the last chunk's end (at most 16 MiB;
 * chunks beyond are dropped).  Any other input is the image itself.
 *
 * fuzz_image() opens read-write only what opened read-only; a VHDX with a
 * log to replay opens read-write only, so each input is also opened
 * read-write first (fuzz_rw_first), which replays the log.
 */
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz-image.h"

#define SPARSE_MAGIC "VHDXFUZZ"
#define SPARSE_MAX (16u << 20)

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void fuzz_rw_first(const uint8_t *data, size_t size)
{
	char path[] = "/tmp/fuzz-vhdx-XXXXXX";
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	int fd = mkstemp(path);

	if (fd < 0)
		return;
	if (write(fd, data, size) == (ssize_t)size &&
	    vd_node_open(path, "vhdx", NULL, VD_OPEN_NO_BACKING | VD_OPEN_RDWR, &n, &err) == 0) {
		fuzz_image_read(n);
		fuzz_image_write(n);
		vd_node_unref(n);
	} else if (err.code && !err.msg[0]) {
		fprintf(stderr, "open failed without a message\n");
		abort();
	}
	close(fd);
	unlink(path);
}

static int fuzz_vhdx(const uint8_t *data, size_t size)
{
	fuzz_image("vhdx", data, size); /* sets up the loop */
	fuzz_rw_first(data, size);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t pos = 8, end = 0;
	uint8_t *img;

	if (size < 8 || memcmp(data, SPARSE_MAGIC, 8))
		return fuzz_vhdx(data, size);
	/* First pass: the image size. */
	while (size - pos >= 12) {
		uint64_t off = le(data + pos, 8), len = le(data + pos + 8, 4);

		pos += 12;
		if (len > size - pos)
			len = size - pos;
		if (off <= SPARSE_MAX && SPARSE_MAX - off >= len && off + len > end)
			end = (size_t)(off + len);
		pos += (size_t)len;
	}
	img = calloc(1, end ? end : 1);
	if (!img)
		return 0;
	for (pos = 8; size - pos >= 12;) {
		uint64_t off = le(data + pos, 8), len = le(data + pos + 8, 4);

		pos += 12;
		if (len > size - pos)
			len = size - pos;
		if (off <= SPARSE_MAX && SPARSE_MAX - off >= len)
			memcpy(img + off, data + pos, (size_t)len);
		pos += (size_t)len;
	}
	fuzz_vhdx(img, end);
	free(img);
	return 0;
}
