/* SPDX-License-Identifier: MIT */
/*
 * The block core's request path, against a RAM driver registered by the test
 * ("testmem") whose limits are options and which checks, on every call, the
 * preconditions the core promises drivers (block_driver.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/block_driver.h>

#include "tests/lib/test.h"

struct testmem {
	uint8_t *data;
	int64_t cap;
	bool yield; /* yield to the loop inside each request */
	bool has_zeroes; /* implement co_pwrite_zeroes */
	int64_t max_seen; /* largest request the driver saw */
	int max_niov_seen;
	int violations; /* precondition breaches seen by the driver */
	int writes, reads, flushes, zero_calls, discards;
	int fail_writes_errno; /* if set, writes fail with -this */
	int last_zero_flags; /* flags of the last co_pwrite_zeroes call */
};

static struct testmem *last_opened;

static void check_pre(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov)
{
	struct testmem *s = n->opaque;
	uint32_t a = n->limits.request_alignment;

	if (offset % a || bytes % a || bytes <= 0 || (qiov && qiov->size != (size_t)bytes))
		s->violations++;
	if (n->limits.max_transfer && (uint64_t)bytes > n->limits.max_transfer)
		s->violations++;
	if (qiov && n->limits.max_iov && qiov->niov > n->limits.max_iov)
		s->violations++;
	if (qiov && !vd_qiov_is_aligned(qiov, n->limits.min_mem_alignment))
		s->violations++;
	if (offset + bytes > (n->size + a - 1) / a * a)
		s->violations++;
	if (bytes > s->max_seen)
		s->max_seen = bytes;
	if (qiov && qiov->niov > s->max_niov_seen)
		s->max_niov_seen = qiov->niov;
}

static int tm_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct testmem *s = n->opaque;
	uint64_t size, align, mem, maxt, maxiov;
	int ret = 0;

	ret |= vd_opts_get_size(opts, "size", 1 << 20, &size, err);
	ret |= vd_opts_get_u64(opts, "align", 1, &align, err);
	ret |= vd_opts_get_u64(opts, "mem-align", 1, &mem, err);
	ret |= vd_opts_get_size(opts, "max-transfer", 0, &maxt, err);
	ret |= vd_opts_get_u64(opts, "max-iov", 0, &maxiov, err);
	ret |= vd_opts_get_bool(opts, "yield", false, &s->yield, err);
	ret |= vd_opts_get_bool(opts, "zeroes", false, &s->has_zeroes, err);
	if (ret)
		return -EINVAL;
	s->cap = (int64_t)size + 1024 * 1024;
	s->data = calloc(1, (size_t)s->cap);
	if (!s->data)
		return -ENOMEM;
	n->size = (int64_t)size;
	n->limits.request_alignment = (uint32_t)align;
	n->limits.min_mem_alignment = (uint32_t)mem;
	n->limits.max_transfer = maxt;
	n->limits.max_iov = (int)maxiov;
	last_opened = s;
	return 0;
}

static void tm_close(struct vd_node *n)
{
	struct testmem *s = n->opaque;
	free(s->data);
}

static int tm_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
		     int flags)
{
	struct testmem *s = n->opaque;

	check_pre(n, offset, bytes, qiov);
	s->reads++;
	if (s->yield)
		vd_co_yield_to_loop();
	vd_qiov_from_buf(qiov, 0, s->data + offset, (size_t)bytes);
	return 0;
}

static int tm_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
		      int flags)
{
	struct testmem *s = n->opaque;
	uint8_t tmp[1 << 16];

	check_pre(n, offset, bytes, qiov);
	s->writes++;
	if (s->fail_writes_errno)
		return -s->fail_writes_errno;
	/* Copy in two steps around a yield, so a concurrent overlapping write
	 * that is not serialised would interleave visibly. */
	if (s->yield && bytes <= (int64_t)sizeof(tmp)) {
		vd_qiov_to_buf(qiov, 0, tmp, (size_t)bytes);
		vd_co_yield_to_loop();
		memcpy(s->data + offset, tmp, (size_t)bytes);
		return 0;
	}
	vd_qiov_to_buf(qiov, 0, s->data + offset, (size_t)bytes);
	return 0;
}

static int tm_flush(struct vd_node *n)
{
	struct testmem *s = n->opaque;
	s->flushes++;
	return 0;
}

static int tm_discard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	struct testmem *s = n->opaque;
	check_pre(n, offset, bytes, NULL);
	s->discards++;
	memset(s->data + offset, 0, (size_t)bytes);
	return 0;
}

static int tm_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct testmem *s = n->opaque;
	check_pre(n, offset, bytes, NULL);
	if (!s->has_zeroes)
		return -ENOTSUP;
	s->zero_calls++;
	s->last_zero_flags = flags;
	memset(s->data + offset, 0, (size_t)bytes);
	return 0;
}

static const struct vd_block_driver testmem_driver = {
	.name = "testmem",
	.instance_size = sizeof(struct testmem),
	.open = tm_open,
	.close = tm_close,
	.co_preadv = tm_preadv,
	.co_pwritev = tm_pwritev,
	.co_flush = tm_flush,
	.co_pdiscard = tm_discard,
	.co_pwrite_zeroes = tm_zeroes,
};

static struct vd_node *open_mem(const char *extra, int flags)
{
	char spec[256];
	struct vd_opts *o;
	struct vd_node *n = NULL;
	struct vd_error err = {0};

	snprintf(spec, sizeof(spec), "driver=testmem%s%s", extra && *extra ? "," : "",
		 extra ? extra : "");
	if (vd_opts_parse(spec, NULL, &o, &err) < 0) {
		fprintf(stderr, "parse %s: %s\n", spec, err.msg);
		return NULL;
	}
	if (vd_node_open_opts(o, flags, &n, &err) < 0)
		fprintf(stderr, "open %s: %s\n", spec, err.msg);
	vd_opts_free(o);
	return n;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
}

struct short_read {
	struct vd_node *n;
	struct vd_qiov *q;
	int64_t bytes;
	int ret;
};

static void short_read_entry(void *opaque)
{
	struct short_read *s = opaque;
	s->ret = vd_co_preadv(s->n, 0, s->bytes, s->q, 0);
}

static void test_validation(void)
{
	struct vd_node *n = open_mem("size=64k", VD_OPEN_RDWR);
	uint8_t buf[1024];
	struct vd_qiov q;
	struct vd_acct_stats st;

	REQUIRE(n);
	CHECK_EQ(vd_node_pread(n, -1, buf, 1), -EINVAL);
	CHECK_EQ(vd_node_pread(n, 0, buf, -1), -EINVAL);
	/* offset + bytes overflows int64 */
	CHECK_EQ(vd_node_pread(n, INT64_MAX - 10, buf, 100), -EINVAL);
	/* past the end, and straddling it */
	CHECK_EQ(vd_node_pread(n, 65536, buf, 1), -EIO);
	CHECK_EQ(vd_node_pread(n, 65535, buf, 2), -EIO);
	CHECK_EQ(vd_node_pwrite(n, 65535, buf, 2, 0), -EIO);
	/* the last byte, and zero length at the end */
	CHECK_EQ(vd_node_pread(n, 65535, buf, 1), 0);
	CHECK_EQ(vd_node_pread(n, 65536, buf, 0), 0);
	/* a vector shorter than the length */
	vd_qiov_init_buf(&q, buf, 10);
	struct short_read sr = {n, &q, 20, 0};
	CHECK_EQ(vd_co_run_sync(short_read_entry, &sr), 0);
	CHECK_EQ(sr.ret, -EINVAL);
	CHECK_EQ(vd_node_pdiscard(n, 0, -5), -EINVAL);
	CHECK_EQ(vd_node_pwrite_zeroes(n, 65536, 1, 0), -EIO);
	vd_node_get_stats(n, &st);
	/* vd_node_pread refuses a negative length before the core sees it */
	CHECK_EQ(st.op[VD_ACCT_READ].invalid_ops, 5);
	CHECK_EQ(st.op[VD_ACCT_WRITE].invalid_ops, 1);
	CHECK_EQ(st.op[VD_ACCT_DISCARD].invalid_ops, 1);
	CHECK_EQ(st.op[VD_ACCT_WRITE_ZEROES].invalid_ops, 1);
	CHECK_EQ(st.op[VD_ACCT_READ].ops, 1); /* the one-byte read; zero-length is not counted */
	CHECK_EQ(last_opened->violations, 0);
	vd_node_unref(n);

	/* A request longer than the largest allowed. */
	n = open_mem("size=8G", VD_OPEN_RDWR);
	REQUIRE(n);
	struct vd_qiov big = {
		.iov = NULL, .niov = 0, .nalloc = -1, .size = (size_t)VD_REQUEST_MAX_BYTES + 512};
	CHECK_EQ(vd_node_preadv(n, 0, &big), -EINVAL);
	vd_node_unref(n);
}

static void test_read_only(void)
{
	struct vd_node *n = open_mem("size=64k", 0);
	uint8_t buf[512] = {0};
	struct vd_error err = {0};

	REQUIRE(n);
	CHECK(vd_node_is_read_only(n));
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), -EROFS);
	CHECK_EQ(vd_node_pdiscard(n, 0, 512), -EROFS);
	CHECK_EQ(vd_node_pwrite_zeroes(n, 0, 512, 0), -EROFS);
	CHECK_EQ(vd_node_truncate(n, 4096, false, VD_PREALLOC_OFF, &err), -EROFS);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), 0);
	CHECK_EQ(last_opened->writes, 0);
	vd_node_unref(n);
}

static void test_unknown_option(void)
{
	struct vd_opts *o;
	struct vd_node *n = NULL;
	struct vd_error err = {0};

	REQUIRE(vd_opts_parse("driver=testmem,sise=1M", NULL, &o, &err) == 0);
	CHECK_EQ(vd_node_open_opts(o, 0, &n, &err), -EINVAL);
	CHECK(strstr(err.msg, "sise") != NULL);
	CHECK(n == NULL);
	vd_opts_free(o);

	vd_error_clear(&err);
	REQUIRE(vd_opts_parse("driver=nosuchdriver", NULL, &o, &err) == 0);
	CHECK(vd_node_open_opts(o, 0, &n, &err) < 0);
	CHECK(strstr(err.msg, "nosuchdriver") != NULL);
	vd_opts_free(o);

	vd_error_clear(&err);
	REQUIRE(vd_opts_parse("driver=testmem,read-only=off,force-share=on", NULL, &o, &err) == 0);
	CHECK(vd_node_open_opts(o, 0, &n, &err) < 0);
	CHECK(strstr(err.msg, "force-share") != NULL);
	vd_opts_free(o);
}

/* Unaligned requests on a node with 512-byte alignment: read-modify-write. */
static void test_alignment_rmw(void)
{
	struct vd_node *n = open_mem("size=1M,align=512", VD_OPEN_RDWR);
	static uint8_t ref[1 << 20], buf[70000];
	struct {
		int64_t off, len;
	} cases[] = {
		{700, 1},
		{0, 1},
		{511, 2},
		{1023, 1},
		{1000, 3000},
		{4096, 512},
		{3, 65536},
		{(1 << 20) - 1, 1},
		{(1 << 20) - 600, 600},
		{12345, 69999},
	};

	REQUIRE(n);
	fill(ref, sizeof(ref), 1);
	CHECK_EQ(vd_node_pwrite(n, 0, ref, sizeof(ref), 0), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fill(buf, (size_t)cases[i].len, (unsigned)i + 7);
		CHECK_EQ(vd_node_pwrite(n, cases[i].off, buf, cases[i].len, 0), 0);
		memcpy(ref + cases[i].off, buf, (size_t)cases[i].len);
	}
	/* Read back everything with unaligned reads of odd sizes. */
	for (int64_t off = 0; off < (1 << 20);) {
		int64_t len = 1 + (off * 31) % 9000;
		if (off + len > (1 << 20))
			len = (1 << 20) - off;
		CHECK_EQ(vd_node_pread(n, off, buf, len), 0);
		if (memcmp(buf, ref + off, (size_t)len) != 0) {
			CHECK(!"data mismatch after unaligned writes");
			break;
		}
		off += len;
	}
	CHECK_EQ(last_opened->violations, 0);
	vd_node_unref(n);
}

/* Buffers that miss the memory alignment go through a bounce buffer. */
static void test_bounce_buffers(void)
{
	struct vd_node *n = open_mem("size=1M,align=512,mem-align=4096", VD_OPEN_RDWR);
	uint8_t *raw = malloc(3 * 65536), *back = malloc(65536);
	uint8_t *odd = raw + 3; /* misaligned on purpose */
	struct iovec iov[3];
	struct vd_qiov q;

	REQUIRE(n && raw && back);
	fill(odd, 65536, 3);
	CHECK_EQ(vd_node_pwrite(n, 8192, odd, 65536, 0), 0);
	CHECK_EQ(vd_node_pread(n, 8192, back, 65536), 0);
	CHECK(memcmp(back, odd, 65536) == 0);
	/* A vector whose pieces are aligned in length but not in address. */
	iov[0] = (struct iovec){odd, 512};
	iov[1] = (struct iovec){odd + 1000, 1024};
	iov[2] = (struct iovec){odd + 5000, 2560};
	vd_qiov_init_external(&q, iov, 3);
	memset(odd, 0, 10000);
	CHECK_EQ(vd_node_preadv(n, 8192, &q), 0);
	fill(back, 65536, 3);
	CHECK(memcmp(odd, back, 512) == 0);
	CHECK(memcmp(odd + 1000, back + 512, 1024) == 0);
	CHECK(memcmp(odd + 5000, back + 1536, 2560) == 0);
	CHECK_EQ(last_opened->violations, 0);
	free(raw);
	free(back);
	vd_node_unref(n);
}

static void test_splitting(void)
{
	struct vd_node *n = open_mem("size=4M,align=512,max-transfer=64k,max-iov=4", VD_OPEN_RDWR);
	static uint8_t data[1 << 20], back[1 << 20];
	struct iovec iov[10];
	struct vd_qiov q;

	REQUIRE(n);
	fill(data, sizeof(data), 9);
	CHECK_EQ(vd_node_pwrite(n, 4096, data, sizeof(data), 0), 0);
	CHECK(last_opened->max_seen <= 65536);
	CHECK(last_opened->writes >= 16);
	/* Ten 512-byte pieces, four at most per driver call. */
	for (int i = 0; i < 10; i++)
		iov[i] = (struct iovec){back + i * 4096, 512};
	vd_qiov_init_external(&q, iov, 10);
	CHECK_EQ(vd_node_preadv(n, 4096, &q), 0);
	for (int i = 0; i < 10; i++)
		CHECK(memcmp(back + i * 4096, data + i * 512, 512) == 0);
	CHECK(last_opened->max_niov_seen <= 4);
	CHECK_EQ(vd_node_pread(n, 4096, back, sizeof(back)), 0);
	CHECK(memcmp(back, data, sizeof(back)) == 0);
	CHECK_EQ(last_opened->violations, 0);
	vd_node_unref(n);
}

struct aio_state {
	int calls;
	int ret;
};

static void aio_cb(void *opaque, int ret)
{
	struct aio_state *s = opaque;
	s->calls++;
	s->ret = ret;
}

/* Completions run exactly once, never inside the submitting call. */
static void test_aio_completion(void)
{
	struct vd_node *n = open_mem("size=64k,yield=on", VD_OPEN_RDWR);
	uint8_t buf[4096];
	struct vd_qiov q;
	struct aio_state bad = {0}, good = {0}, fl = {0};

	REQUIRE(n);
	vd_qiov_init_buf(&q, buf, sizeof(buf));
	vd_node_aio_preadv(n, 1 << 20, &q, 0, aio_cb, &bad); /* past the end */
	CHECK_EQ(bad.calls, 0);
	vd_node_aio_pwritev(n, 0, &q, 0, aio_cb, &good);
	CHECK_EQ(good.calls, 0);
	vd_node_aio_flush(n, aio_cb, &fl);
	for (int i = 0; i < 100 && (!bad.calls || !good.calls || !fl.calls); i++)
		vd_loop_run_once(vd_loop_current(), true);
	CHECK_EQ(bad.calls, 1);
	CHECK_EQ(bad.ret, -EIO);
	CHECK_EQ(good.calls, 1);
	CHECK_EQ(good.ret, 0);
	CHECK_EQ(fl.calls, 1);
	/* Nothing completes twice. */
	for (int i = 0; i < 5; i++)
		vd_loop_run_once(vd_loop_current(), false);
	CHECK_EQ(bad.calls + good.calls + fl.calls, 3);
	vd_node_unref(n);
}

/*
 * Two unaligned writes into the same 512-byte block, in flight together on a
 * driver that yields mid-write: without serialisation the second RMW would
 * read the block before the first wrote it and undo it.
 */
static void test_serialisation(void)
{
	struct vd_node *n = open_mem("size=64k,align=512,yield=on", VD_OPEN_RDWR);
	uint8_t a[10], b[10], back[512];
	struct vd_qiov qa, qb;
	struct aio_state sa = {0}, sb = {0};

	REQUIRE(n);
	memset(a, 0xaa, sizeof(a));
	memset(b, 0xbb, sizeof(b));
	vd_qiov_init_buf(&qa, a, sizeof(a));
	vd_qiov_init_buf(&qb, b, sizeof(b));
	vd_node_aio_pwritev(n, 100, &qa, 0, aio_cb, &sa);
	vd_node_aio_pwritev(n, 300, &qb, 0, aio_cb, &sb);
	while (!sa.calls || !sb.calls)
		vd_loop_run_once(vd_loop_current(), true);
	CHECK_EQ(sa.ret, 0);
	CHECK_EQ(sb.ret, 0);
	CHECK_EQ(vd_node_pread(n, 0, back, 512), 0);
	CHECK(memcmp(back + 100, a, 10) == 0);
	CHECK(memcmp(back + 300, b, 10) == 0);
	vd_node_unref(n);
}

static void test_flush_and_fua(void)
{
	struct vd_node *n = open_mem("size=64k", VD_OPEN_RDWR);
	uint8_t buf[512] = {1};

	REQUIRE(n);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	CHECK_EQ(vd_node_flush(n), 0);
	CHECK_EQ(last_opened->flushes, 1);
	/* Nothing written since: coalesced. */
	CHECK_EQ(vd_node_flush(n), 0);
	CHECK_EQ(last_opened->flushes, 1);
	/* FUA without native support: a flush after the write. */
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, VD_REQ_FUA), 0);
	CHECK_EQ(last_opened->flushes, 2);
	/* Writethrough: every write flushes. */
	vd_node_set_write_cache(n, false);
	CHECK(!vd_node_write_cache(n));
	CHECK_EQ(vd_node_pwrite(n, 512, buf, 512, 0), 0);
	CHECK_EQ(vd_node_pwrite(n, 1024, buf, 512, 0), 0);
	CHECK_EQ(last_opened->flushes, 4);
	vd_node_unref(n);

	/* cache.no-flush (cache=unsafe): the driver never sees a flush. */
	n = open_mem("size=64k,cache.no-flush=on", VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	CHECK_EQ(vd_node_flush(n), 0);
	CHECK_EQ(last_opened->flushes, 0);
	vd_node_unref(n);
}

static void test_write_zeroes(void)
{
	struct vd_node *n = open_mem("size=256k,align=512", VD_OPEN_RDWR);
	static uint8_t buf[256 * 1024];

	REQUIRE(n);
	memset(buf, 0x5a, sizeof(buf));
	CHECK_EQ(vd_node_pwrite(n, 0, buf, sizeof(buf), 0), 0);
	/* No native write-zeroes: a zero buffer is written instead. */
	CHECK_EQ(vd_node_pwrite_zeroes(n, 1000, 70000, 0), 0);
	CHECK_EQ(vd_node_pwrite_zeroes(n, 0, 512, VD_REQ_NO_FALLBACK), -ENOTSUP);
	CHECK_EQ(vd_node_pread(n, 0, buf, sizeof(buf)), 0);
	for (int i = 0; i < (int)sizeof(buf); i++) {
		uint8_t want = (i >= 1000 && i < 71000) ? 0 : 0x5a;
		if (buf[i] != want) {
			CHECK_EQ(i, -1); /* report the first wrong byte */
			break;
		}
	}
	CHECK_EQ(last_opened->zero_calls, 0);
	CHECK_EQ(last_opened->violations, 0);
	vd_node_unref(n);

	/* Native write-zeroes for the aligned middle only. */
	n = open_mem("size=256k,align=512,zeroes=on", VD_OPEN_RDWR);
	REQUIRE(n);
	memset(buf, 0x5a, sizeof(buf));
	CHECK_EQ(vd_node_pwrite(n, 0, buf, sizeof(buf), 0), 0);
	int writes = last_opened->writes;
	CHECK_EQ(vd_node_pwrite_zeroes(n, 100, 10000, VD_REQ_MAY_UNMAP), 0);
	CHECK_EQ(last_opened->zero_calls, 1);
	CHECK(last_opened->last_zero_flags & VD_REQ_MAY_UNMAP);
	CHECK_EQ(last_opened->writes - writes, 2); /* head and tail */
	CHECK_EQ(vd_node_pread(n, 0, buf, 20000), 0);
	CHECK_EQ(buf[99], 0x5a);
	CHECK_EQ(buf[100], 0);
	CHECK_EQ(buf[10099], 0);
	CHECK_EQ(buf[10100], 0x5a);
	CHECK_EQ(last_opened->violations, 0);
	vd_node_unref(n);
}

static void test_discard(void)
{
	struct vd_node *n = open_mem("size=64k,align=4096", VD_OPEN_RDWR);
	uint8_t buf[512];

	REQUIRE(n);
	memset(buf, 1, sizeof(buf));
	CHECK_EQ(vd_node_pwrite(n, 4096, buf, 512, 0), 0);
	/* Smaller than a granule: advisory, nothing reaches the driver. */
	CHECK_EQ(vd_node_pdiscard(n, 100, 1000), 0);
	CHECK_EQ(last_opened->discards, 0);
	CHECK_EQ(vd_node_pdiscard(n, 100, 9000), 0);
	CHECK_EQ(last_opened->discards, 1);
	CHECK_EQ(last_opened->violations, 0);
	vd_node_unref(n);

	/* discard=ignore: discards succeed and deallocate nothing, and
	 * write-zeroes loses its permission to unmap. */
	n = open_mem("size=64k,align=4096,discard=ignore,zeroes=on", VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_pwrite(n, 4096, buf, 512, 0), 0);
	CHECK_EQ(vd_node_pdiscard(n, 0, 65536), 0);
	CHECK_EQ(last_opened->discards, 0);
	CHECK_EQ(vd_node_pread(n, 4096, buf, 512), 0);
	CHECK_EQ(buf[0], 1);
	CHECK_EQ(vd_node_pwrite_zeroes(n, 8192, 4096, VD_REQ_MAY_UNMAP), 0);
	CHECK_EQ(last_opened->zero_calls, 1);
	CHECK_EQ(last_opened->last_zero_flags & VD_REQ_MAY_UNMAP, 0);
	vd_node_unref(n);
}

static void test_accounting(void)
{
	struct vd_node *n = open_mem("size=64k", VD_OPEN_RDWR);
	uint8_t buf[4096] = {0};
	struct vd_acct_stats st;
	uint64_t sum = 0;

	REQUIRE(n);
	for (int i = 0; i < 10; i++)
		CHECK_EQ(vd_node_pwrite(n, i * 4096, buf, 4096, 0), 0);
	for (int i = 0; i < 5; i++)
		CHECK_EQ(vd_node_pread(n, i * 100, buf, 100), 0);
	last_opened->fail_writes_errno = ENOSPC;
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), -ENOSPC);
	CHECK_EQ(vd_node_flush(n), 0);
	vd_node_get_stats(n, &st);
	CHECK_EQ(st.op[VD_ACCT_WRITE].ops, 10);
	CHECK_EQ(st.op[VD_ACCT_WRITE].bytes, 40960);
	CHECK_EQ(st.op[VD_ACCT_WRITE].failed_ops, 1);
	CHECK_EQ(st.op[VD_ACCT_READ].ops, 5);
	CHECK_EQ(st.op[VD_ACCT_READ].bytes, 500);
	CHECK_EQ(st.op[VD_ACCT_FLUSH].ops, 1);
	for (int i = 0; i < VD_ACCT_HIST_BINS; i++)
		sum += st.op[VD_ACCT_WRITE].hist[i];
	CHECK_EQ(sum, 11); /* failed requests have a latency too */
	CHECK(st.last_access_ns > 0);
	CHECK(vd_acct_percentile_ns(&st.op[VD_ACCT_WRITE], 50) > 0);
	CHECK(vd_acct_percentile_ns(&st.op[VD_ACCT_WRITE], 50) <=
	      vd_acct_percentile_ns(&st.op[VD_ACCT_WRITE], 100));
	CHECK_EQ(vd_acct_percentile_ns(&st.op[VD_ACCT_DISCARD], 50), 0);
	vd_node_reset_stats(n);
	vd_node_get_stats(n, &st);
	CHECK_EQ(st.op[VD_ACCT_WRITE].ops, 0);
	vd_node_unref(n);
}

static void test_percentile_bins(void)
{
	struct vd_acct_op op = {0};

	op.hist[10] = 90; /* [1024, 2048) ns */
	op.hist[20] = 10;
	CHECK_EQ(vd_acct_percentile_ns(&op, 50), 2048);
	CHECK_EQ(vd_acct_percentile_ns(&op, 90), 2048);
	CHECK_EQ(vd_acct_percentile_ns(&op, 91), 1 << 21);
	CHECK_EQ(vd_acct_percentile_ns(&op, 100), 1 << 21);
}

static void test_drain(void)
{
	struct vd_node *n = open_mem("size=64k,yield=on", VD_OPEN_RDWR);
	uint8_t buf[512];
	struct vd_qiov q;
	struct aio_state s[8] = {0};

	REQUIRE(n);
	vd_qiov_init_buf(&q, buf, sizeof(buf));
	for (int i = 0; i < 8; i++)
		vd_node_aio_preadv(n, i * 512, &q, 0, aio_cb, &s[i]);
	vd_node_drain(n);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(s[i].calls, 1);
	vd_node_unref(n);
}

int main(void)
{
	struct vd_loop *loop;

	if (vd_loop_new(&loop) < 0)
		return 1;
	vd_loop_set_current(loop);
	if (vd_driver_register(&testmem_driver) < 0)
		return 1;
	RUN(test_validation);
	RUN(test_read_only);
	RUN(test_unknown_option);
	RUN(test_alignment_rmw);
	RUN(test_bounce_buffers);
	RUN(test_splitting);
	RUN(test_aio_completion);
	RUN(test_serialisation);
	RUN(test_flush_and_fua);
	RUN(test_write_zeroes);
	RUN(test_discard);
	RUN(test_accounting);
	RUN(test_percentile_bins);
	RUN(test_drain);
	return test_finish();
}
