/* SPDX-License-Identifier: MIT */
/* Scatter-gather lists: copies and fills at every boundary, slicing, merging. */
#include <errno.h>
#include <stdint.h>

#include <vdisk/iov.h>

#include "tests/lib/test.h"

/* Three vectors of 3, 0 and 5 bytes (a zero-length one in the middle) and a
 * last one of 4: 12 bytes in all, with boundaries at 3 and 8. */
static unsigned char s0[3], s2[5], s3[4];
static struct iovec vecs[4];

static void reset_vecs(void)
{
	memset(s0, '.', sizeof(s0));
	memset(s2, '.', sizeof(s2));
	memset(s3, '.', sizeof(s3));
	vecs[0] = (struct iovec){s0, 3};
	vecs[1] = (struct iovec){s2, 0};
	vecs[2] = (struct iovec){s2, 5};
	vecs[3] = (struct iovec){s3, 4};
}

/* The 12 bytes as one flat string. */
static void flatten(char *out)
{
	memcpy(out, s0, 3);
	memcpy(out + 3, s2, 5);
	memcpy(out + 8, s3, 4);
	out[12] = '\0';
}

static void test_size(void)
{
	reset_vecs();
	CHECK_EQ(vd_iov_size(vecs, 4), 12);
	CHECK_EQ(vd_iov_size(vecs, 0), 0);
}

/* Every (offset, length) pair, including offsets past the end. */
static void test_from_to_buf_all_ranges(void)
{
	const char *src = "ABCDEFGHIJKLMNOP";
	for (size_t off = 0; off <= 14; off++) {
		for (size_t len = 0; len <= 14; len++) {
			reset_vecs();
			size_t expect = off >= 12 ? 0 : (len < 12 - off ? len : 12 - off);
			CHECK_EQ(vd_iov_from_buf(vecs, 4, off, src, len), expect);
			char flat[13], want[13];
			flatten(flat);
			memset(want, '.', 12);
			want[12] = '\0';
			if (expect)
				memcpy(want + off, src, expect);
			CHECK_STR(flat, want);

			/* And back out again. */
			char out[16];
			memset(out, '#', sizeof(out));
			CHECK_EQ(vd_iov_to_buf(vecs, 4, off, out, len), expect);
			CHECK(memcmp(out, src, expect) == 0);
			CHECK_EQ(out[expect], '#');
		}
	}
}

static void test_memset(void)
{
	for (size_t off = 0; off <= 13; off++) {
		for (size_t len = 0; len <= 13; len++) {
			reset_vecs();
			size_t expect = off >= 12 ? 0 : (len < 12 - off ? len : 12 - off);
			CHECK_EQ(vd_iov_memset(vecs, 4, off, 'z', len), expect);
			char flat[13], want[13];
			flatten(flat);
			memset(want, '.', 12);
			memset(want + (off < 12 ? off : 12), 'z', expect);
			want[12] = '\0';
			CHECK_STR(flat, want);
		}
	}
}

static void test_qiov_helpers(void)
{
	char buf[8] = "abcdefg";
	struct vd_qiov q;
	vd_qiov_init_buf(&q, buf, 7);
	CHECK_EQ(q.niov, 1);
	CHECK_EQ(q.size, 7);
	char out[8] = {0};
	CHECK_EQ(vd_qiov_to_buf(&q, 2, out, 10), 5);
	CHECK_STR(out, "cdefg");
	CHECK_EQ(vd_qiov_from_buf(&q, 6, "XY", 2), 1);
	CHECK_EQ(buf[6], 'X');
	CHECK_EQ(vd_qiov_memset(&q, 0, '-', 1), 1);
	CHECK_EQ(buf[0], '-');
	vd_qiov_destroy(&q); /* borrowed: frees nothing */

	reset_vecs();
	vd_qiov_init_external(&q, vecs, 4);
	CHECK_EQ(q.size, 12);
	CHECK_EQ(q.nalloc, -1);
	vd_qiov_destroy(&q);
}

static void test_add_merges(void)
{
	static char buf[64];
	struct vd_qiov q;
	vd_qiov_init(&q, 0);
	CHECK_EQ(vd_qiov_add(&q, buf, 8), 0);
	CHECK_EQ(vd_qiov_add(&q, buf + 8, 8), 0); /* continues: merged */
	CHECK_EQ(q.niov, 1);
	CHECK_EQ(q.iov[0].iov_len, 16);
	CHECK_EQ(vd_qiov_add(&q, buf + 32, 4), 0); /* gap: new entry */
	CHECK_EQ(vd_qiov_add(&q, buf + 20, 4), 0); /* goes backwards: new entry */
	CHECK_EQ(vd_qiov_add(&q, buf + 24, 0), 0); /* empty: ignored */
	CHECK_EQ(q.niov, 3);
	CHECK_EQ(q.size, 24);

	/* Growth past the initial capacity. */
	for (int i = 0; i < 100; i++)
		CHECK_EQ(vd_qiov_add(&q, buf + (i % 2 ? 40 : 50), 1), 0);
	CHECK_EQ(q.niov, 103);
	CHECK_EQ(q.size, 124);
	CHECK_EQ(vd_iov_size(q.iov, q.niov), q.size);

	vd_qiov_reset(&q);
	CHECK_EQ(q.niov, 0);
	CHECK_EQ(q.size, 0);
	CHECK(q.nalloc >= 103); /* allocation kept */
	vd_qiov_destroy(&q);

	vd_qiov_init(&q, 2);
	CHECK_EQ(q.nalloc, 2);
	vd_qiov_destroy(&q);
}

static void test_concat_slice(void)
{
	reset_vecs();
	memcpy(s0, "abc", 3);
	memcpy(s2, "defgh", 5);
	memcpy(s3, "ijkl", 4);
	struct vd_qiov src;
	vd_qiov_init_external(&src, vecs, 4);

	for (size_t off = 0; off <= 12; off++) {
		for (size_t len = 0; off + len <= 12; len++) {
			struct vd_qiov d;
			vd_qiov_init(&d, 0);
			CHECK_EQ(vd_qiov_concat_slice(&d, &src, off, len), 0);
			CHECK_EQ(d.size, len);
			char out[13] = {0};
			CHECK_EQ(vd_qiov_to_buf(&d, 0, out, 12), len);
			CHECK(memcmp(out, "abcdefghijkl" + off, len) == 0);
			/* No empty entries; one per source vector touched. */
			for (int i = 0; i < d.niov; i++)
				CHECK(d.iov[i].iov_len > 0);
			vd_qiov_destroy(&d);
		}
	}

	/* Out of range: -EINVAL and @dst untouched. */
	struct vd_qiov d;
	vd_qiov_init(&d, 0);
	char x[4];
	CHECK_EQ(vd_qiov_add(&d, x, 4), 0);
	CHECK_EQ(vd_qiov_concat_slice(&d, &src, 13, 0), -EINVAL);
	CHECK_EQ(vd_qiov_concat_slice(&d, &src, 4, 9), -EINVAL);
	CHECK_EQ(vd_qiov_concat_slice(&d, &src, SIZE_MAX, 2), -EINVAL);
	CHECK_EQ(vd_qiov_concat_slice(&d, &src, 2, SIZE_MAX), -EINVAL);
	CHECK_EQ(d.niov, 1);
	CHECK_EQ(d.size, 4);
	/* Appending to a non-empty vector. */
	CHECK_EQ(vd_qiov_concat_slice(&d, &src, 1, 3), 0);
	CHECK_EQ(d.size, 7);
	char out[8] = {0};
	vd_qiov_to_buf(&d, 4, out, 3);
	CHECK_STR(out, "bcd");
	vd_qiov_destroy(&d);
}

static void test_aligned(void)
{
	unsigned char *p = vd_memalign(4096, 8192);
	REQUIRE(p);
	CHECK_EQ((uintptr_t)p % 4096, 0);
	struct vd_qiov q;
	vd_qiov_init(&q, 0);
	CHECK_EQ(vd_qiov_add(&q, p, 512), 0);
	CHECK(vd_qiov_is_aligned(&q, 512));
	CHECK_EQ(vd_qiov_add(&q, p + 1024, 512), 0);
	CHECK(vd_qiov_is_aligned(&q, 512));
	CHECK(!vd_qiov_is_aligned(&q, 1024));
	CHECK_EQ(vd_qiov_add(&q, p + 2049, 511), 0);
	CHECK(!vd_qiov_is_aligned(&q, 512));
	CHECK(vd_qiov_is_aligned(&q, 1));
	vd_qiov_destroy(&q);
	free(p);
	p = vd_memalign(1, 0); /* alignment raised, size 0 still freeable */
	CHECK(p != NULL);
	free(p);
}

int main(void)
{
	RUN(test_size);
	RUN(test_from_to_buf_all_ranges);
	RUN(test_memset);
	RUN(test_qiov_helpers);
	RUN(test_add_merges);
	RUN(test_concat_slice);
	RUN(test_aligned);
	return test_finish();
}
