/* SPDX-License-Identifier: MIT */
/* Host I/O engines: both run the same cases; io_uring also proves batching. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vdisk/aio.h>
#include <vdisk/coroutine.h>
#include <vdisk/loop.h>

#include "tests/lib/test.h"

static enum vd_aio_kind kind;
static struct vd_loop *loop;

static struct vd_aio *engine(void)
{
	struct vd_aio *aio = NULL;
	int ret = vd_aio_get(loop, kind, &aio);
	CHECK_EQ(ret, 0);
	return aio;
}

static int open_file(const char *name)
{
	int fd = open(test_path(name), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	return fd;
}

static unsigned char pattern_byte(size_t i)
{
	return (unsigned char)(i * 7 + 3);
}

/* Write 3 vectors of odd sizes at an odd offset, read back through a
 * differently split vector, sync, punch a hole, read past EOF. */
static void rw_co(void *opaque)
{
	struct vd_aio *aio = engine();
	int fd = open_file("rw");
	if (!aio || fd < 0)
		return;

	enum {
		A = 1001,
		B = 4093,
		C = 517,
		TOTAL = A + B + C,
		OFF = 12345
	};
	static unsigned char wbuf[TOTAL], rbuf[TOTAL + 100];
	for (size_t i = 0; i < TOTAL; i++)
		wbuf[i] = pattern_byte(i);

	struct vd_qiov w;
	vd_qiov_init(&w, 0);
	/* Not contiguous in memory, so they stay three vectors. */
	static unsigned char a[A], b[B], c[C];
	memcpy(a, wbuf, A);
	memcpy(b, wbuf + A, B);
	memcpy(c, wbuf + A + B, C);
	CHECK_EQ(vd_qiov_add(&w, a, A), 0);
	CHECK_EQ(vd_qiov_add(&w, b, B), 0);
	CHECK_EQ(vd_qiov_add(&w, c, C), 0);
	CHECK_EQ(w.niov, 3);
	CHECK_EQ(vd_aio_co_pwritev(aio, fd, &w, OFF), TOTAL);
	vd_qiov_destroy(&w);

	struct vd_qiov r;
	vd_qiov_init(&r, 0);
	CHECK_EQ(vd_qiov_add(&r, rbuf, 3), 0);
	CHECK_EQ(vd_qiov_add(&r, rbuf + 10, TOTAL - 3), 0);
	memset(rbuf, 0xee, sizeof(rbuf));
	CHECK_EQ(vd_aio_co_preadv(aio, fd, &r, OFF), TOTAL);
	CHECK(memcmp(rbuf, wbuf, 3) == 0);
	CHECK(memcmp(rbuf + 10, wbuf + 3, TOTAL - 3) == 0);
	vd_qiov_destroy(&r);

	CHECK_EQ(vd_aio_co_fsync(aio, fd, true), 0);
	CHECK_EQ(vd_aio_co_fsync(aio, fd, false), 0);

	/* Punch a hole over a whole 4 KiB block: it must read back as zeroes
	 * (where the file system supports punching at all). */
	int ret = vd_aio_co_fallocate(aio, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 12288,
				      4096);
	if (ret == -EOPNOTSUPP) {
		fprintf(stderr, "  (punch hole not supported here: %d)\n", ret);
	} else {
		CHECK_EQ(ret, 0);
		struct vd_qiov h;
		vd_qiov_init_buf(&h, rbuf, 4096);
		CHECK_EQ(vd_aio_co_preadv(aio, fd, &h, 12288), 4096);
		size_t nonzero = 0;
		for (size_t i = 0; i < 4096; i++)
			nonzero += rbuf[i] != 0;
		CHECK_EQ(nonzero, 0);
		/* Bytes around the hole are untouched. */
		vd_qiov_init_buf(&h, rbuf, 1);
		CHECK_EQ(vd_aio_co_preadv(aio, fd, &h, 16384), 1);
		CHECK_EQ(rbuf[0], pattern_byte(16384 - OFF));
	}

	/* Preallocation extends the file. */
	CHECK_EQ(vd_aio_co_fallocate(aio, fd, 0, 0, 65536), 0);
	struct stat st;
	CHECK(fstat(fd, &st) == 0 && st.st_size == 65536);

	/* Reading across end of file returns the bytes that exist. */
	struct vd_qiov e;
	vd_qiov_init_buf(&e, rbuf, 1000);
	CHECK_EQ(vd_aio_co_preadv(aio, fd, &e, 65536 - 300), 300);
	CHECK_EQ(vd_aio_co_preadv(aio, fd, &e, 1 << 20), 0);

	/* Errors come back as -errno. */
	CHECK_EQ(vd_aio_co_preadv(aio, -1, &e, 0), -EBADF);
	CHECK_EQ(vd_aio_co_pwritev(aio, 9999, &e, 0), -EBADF);
	CHECK_EQ(vd_aio_co_fsync(aio, -1, true), -EBADF);
	CHECK_EQ(vd_aio_co_preadv(aio, fd, &e, -1), -EINVAL);
	close(fd);
	int rdonly = open(test_path("rw"), O_RDONLY | O_CLOEXEC);
	CHECK_EQ(vd_aio_co_pwritev(aio, rdonly, &e, 0), -EBADF);
	close(rdonly);
}

static void test_rw(void)
{
	CHECK_EQ(vd_co_run_sync(rw_co, NULL), 0);
}

/* More vectors than IOV_MAX (1024): the engine splits the request. */
static void many_vectors_co(void *opaque)
{
	enum {
		NV = 1500
	};
	struct vd_aio *aio = engine();
	int fd = open_file("vectors");
	static unsigned char wbuf[2 * NV], rbuf[2 * NV];
	if (!aio || fd < 0)
		return;
	struct vd_qiov w, r;
	vd_qiov_init(&w, 0);
	vd_qiov_init(&r, 0);
	for (int i = 0; i < NV; i++) {
		wbuf[2 * i] = pattern_byte((size_t)i);
		/* Every other byte, so nothing merges. */
		CHECK_EQ(vd_qiov_add(&w, &wbuf[2 * i], 1), 0);
		CHECK_EQ(vd_qiov_add(&r, &rbuf[2 * i], 1), 0);
	}
	CHECK_EQ(w.niov, NV);
	CHECK_EQ(vd_aio_co_pwritev(aio, fd, &w, 3), NV);
	CHECK_EQ(vd_aio_co_preadv(aio, fd, &r, 3), NV);
	int bad = 0;
	for (int i = 0; i < NV; i++)
		bad += rbuf[2 * i] != pattern_byte((size_t)i);
	CHECK_EQ(bad, 0);
	vd_qiov_destroy(&w);
	vd_qiov_destroy(&r);
	close(fd);
}

static void test_many_vectors(void)
{
	CHECK_EQ(vd_co_run_sync(many_vectors_co, NULL), 0);
}

/* 64 coroutines with I/O in flight at the same time. */
enum {
	NCO = 64,
	BLOCK = 4096
};
static int concurrent_fd;
static int concurrent_done;
static int concurrent_errors;

static void concurrent_co(void *opaque)
{
	int id = (int)(intptr_t)opaque;
	struct vd_aio *aio = engine();
	unsigned char buf[BLOCK], back[BLOCK];
	memset(buf, id, sizeof(buf));

	struct vd_qiov q;
	vd_qiov_init_buf(&q, buf, BLOCK);
	if (vd_aio_co_pwritev(aio, concurrent_fd, &q, (int64_t)id * BLOCK) != BLOCK)
		concurrent_errors++;
	vd_qiov_init_buf(&q, back, BLOCK);
	if (vd_aio_co_preadv(aio, concurrent_fd, &q, (int64_t)id * BLOCK) != BLOCK ||
	    memcmp(buf, back, BLOCK) != 0)
		concurrent_errors++;
	concurrent_done++;
}

static void test_concurrent(void)
{
	struct vd_aio *aio = engine();
	REQUIRE(aio);
	concurrent_fd = open_file("concurrent");
	concurrent_done = concurrent_errors = 0;
	struct vd_aio_stats before, after;
	vd_aio_get_stats(aio, &before);

	/* Entered from outside the loop, each queues its write and yields. */
	for (int i = 0; i < NCO; i++) {
		struct vd_co *co = vd_co_create(concurrent_co, (void *)(intptr_t)i);
		REQUIRE(co);
		vd_co_enter(co);
	}
	while (concurrent_done < NCO && vd_loop_run_once(loop, true)) {
	}
	CHECK_EQ(concurrent_done, NCO);
	CHECK_EQ(concurrent_errors, 0);
	vd_aio_get_stats(aio, &after);
	uint64_t ops = after.ops - before.ops;
	uint64_t submits = after.submit_calls - before.submit_calls;
	CHECK_EQ(ops, 2 * NCO);
	fprintf(stderr, "  %s: %llu ops, %llu io_uring_submit calls\n", vd_aio_kind_name(kind),
		(unsigned long long)ops, (unsigned long long)submits);
	if (kind == VD_AIO_IO_URING)
		CHECK(submits < ops); /* batching */
	close(concurrent_fd);
}

static int worker_fn(void *opaque)
{
	return *(int *)opaque * 2;
}

static void pool_fn_co(void *opaque)
{
	int v = 21;
	*(int *)opaque = vd_thread_pool_co(loop, worker_fn, &v);
}

static void test_thread_pool_fn(void)
{
	int result = 0;
	CHECK_EQ(vd_co_run_sync(pool_fn_co, &result), 0);
	CHECK_EQ(result, 42);
}

static void run_engine(enum vd_aio_kind k)
{
	kind = k;
	fprintf(stderr, "engine %s\n", vd_aio_kind_name(k));
	REQUIRE(vd_loop_new(&loop) == 0);
	vd_loop_set_current(loop);
	RUN(test_rw);
	RUN(test_many_vectors);
	RUN(test_concurrent);
	RUN(test_thread_pool_fn);
	/* Frees the engines through the loop's slots. */
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
	loop = NULL;
}

static void test_names(void)
{
	enum vd_aio_kind k;
	CHECK_EQ(vd_aio_kind_parse("threads", &k), 0);
	CHECK_EQ(k, VD_AIO_THREADS);
	CHECK_EQ(vd_aio_kind_parse("io_uring", &k), 0);
	CHECK_EQ(k, VD_AIO_IO_URING);
	CHECK_EQ(vd_aio_kind_parse("posix", &k), -EINVAL);
	CHECK_EQ(vd_aio_kind_parse(NULL, &k), -EINVAL);
	CHECK_STR(vd_aio_kind_name(VD_AIO_IO_URING), "io_uring");
	CHECK(vd_aio_kind_available(VD_AIO_THREADS));
}

static void test_uring_unavailable(void)
{
	struct vd_loop *l;
	struct vd_aio *aio;
	REQUIRE(vd_loop_new(&l) == 0);
	CHECK_EQ(vd_aio_get(l, VD_AIO_IO_URING, &aio), -ENOTSUP);
	vd_loop_free(l);
}

int main(void)
{
	RUN(test_names);
	run_engine(VD_AIO_THREADS);
	if (vd_aio_kind_available(VD_AIO_IO_URING)) {
		run_engine(VD_AIO_IO_URING);
	} else {
		printf("io_uring part skipped: not available in this build or kernel\n");
		RUN(test_uring_unavailable);
	}
	return test_finish();
}
