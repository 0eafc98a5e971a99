/* SPDX-License-Identifier: MIT */
/*
 * vdisk bench: qemu-img bench's options, defaults and first two output lines,
 * plus IOPS, throughput and a per-request latency distribution.
 *
 * DEPTH requests stay in flight: each completion resubmits from a fixed pool
 * of request slots (no allocation in the loop).  Offsets advance by STEP from
 * OFFSET and wrap at the image size as in qemu-img (a request that then
 * crosses the end fails with EIO, as there); --random picks SIZE-aligned
 * offsets uniformly within the image instead.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/iov.h>

#include "tools/tools.h"

/*
 * Latency histogram, log-linear: values below 256 ns exactly, above that 128
 * buckets per power of two (relative error below 0.4%), in constant memory.
 */
#define HIST_SUB_BITS 7
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS) * HIST_SUB + HIST_SUB)

static unsigned int hist_index(uint64_t v)
{
	unsigned int e;

	if (v < 2 * HIST_SUB) {
		return (unsigned int)v;
	}
	e = 63 - __builtin_clzll(v) - HIST_SUB_BITS;
	return (e << HIST_SUB_BITS) + (unsigned int)(v >> e);
}

static uint64_t hist_value(unsigned int idx)
{
	unsigned int e;
	uint64_t m;

	if (idx < 2 * HIST_SUB) {
		return idx;
	}
	e = (idx >> HIST_SUB_BITS) - 1;
	m = idx - ((uint64_t)e << HIST_SUB_BITS);
	return (m << e) + (((uint64_t)1 << e) >> 1);
}

struct bench;

struct bench_req {
	struct bench *b;
	struct vd_qiov qiov;
	int64_t start_ns;
};

struct bench {
	struct vd_blk *blk;
	int64_t image_size;
	int64_t bufsize, step, offset;
	int nrreq; /* depth */
	int n; /* requests not yet completed */
	int in_flight;
	int flushes_in_flight;
	bool write, random, in_flush, drain_on_flush;
	int flush_interval;
	uint64_t rng;
	struct bench_req *reqs;
	struct bench_req **free_slots;
	int nfree;
	uint64_t *hist;
	uint64_t lat_min, lat_max, completed;
};

static uint64_t xorshift64s(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static void bench_cb(void *opaque, int ret);

static void submit_more(struct bench *b)
{
	while (b->n > b->in_flight && b->in_flight < b->nrreq) {
		struct bench_req *r = b->free_slots[--b->nfree];
		int64_t offset;

		if (b->random) {
			uint64_t slots = (uint64_t)(b->image_size / b->bufsize);

			offset = (int64_t)(xorshift64s(&b->rng) % slots) * b->bufsize;
		} else {
			offset = b->offset;
			b->offset += b->step;
			b->offset %= b->image_size;
		}
		b->in_flight++;
		r->start_ns = vd_clock_ns();
		if (b->write) {
			vd_blk_aio_pwritev(b->blk, offset, &r->qiov, 0, bench_cb, r);
		} else {
			vd_blk_aio_preadv(b->blk, offset, &r->qiov, 0, bench_cb, r);
		}
	}
}

static void flush_drained_cb(void *opaque, int ret)
{
	struct bench *b = opaque;

	b->flushes_in_flight--;
	if (ret < 0) {
		tool_error("Failed flush request: %s", strerror(-ret));
		exit(1);
	}
	b->in_flush = false;
	submit_more(b);
}

static void flush_undrained_cb(void *opaque, int ret)
{
	struct bench *b = opaque;

	b->flushes_in_flight--;
	if (ret < 0) {
		tool_error("Failed flush request: %s", strerror(-ret));
		exit(1);
	}
}

static void bench_cb(void *opaque, int ret)
{
	struct bench_req *r = opaque;
	struct bench *b = r->b;
	uint64_t lat = (uint64_t)(vd_clock_ns() - r->start_ns);
	int remaining;

	if (ret < 0) {
		tool_error("Failed request: %s", strerror(-ret));
		exit(1);
	}
	b->hist[hist_index(lat)]++;
	if (lat < b->lat_min) {
		b->lat_min = lat;
	}
	if (lat > b->lat_max) {
		b->lat_max = lat;
	}
	b->completed++;
	b->free_slots[b->nfree++] = r;

	/* qemu-img's flush logic: "remaining" is the number not yet submitted. */
	remaining = b->n - b->in_flight;
	b->n--;
	b->in_flight--;
	if (b->flush_interval && remaining % b->flush_interval == 0) {
		if (!b->in_flight || !b->drain_on_flush) {
			b->flushes_in_flight++;
			if (b->drain_on_flush) {
				b->in_flush = true;
				vd_blk_aio_flush(b->blk, flush_drained_cb, b);
			} else {
				vd_blk_aio_flush(b->blk, flush_undrained_cb, b);
			}
		}
		if (b->drain_on_flush) {
			return;
		}
	}
	if (!b->in_flush) {
		submit_more(b);
	}
}

static uint64_t percentile(const struct bench *b, double pct)
{
	uint64_t rank = (uint64_t)(pct / 100.0 * (double)b->completed + 0.999999);
	uint64_t seen = 0;
	unsigned int i;

	if (rank == 0) {
		rank = 1;
	}
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += b->hist[i];
		if (seen >= rank) {
			uint64_t v = hist_value(i);

			/* Clamp to the exact extremes. */
			if (v < b->lat_min) {
				v = b->lat_min;
			}
			if (v > b->lat_max) {
				v = b->lat_max;
			}
			return v;
		}
	}
	return b->lat_max;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	if (!*s || *s == '-') {
		return -EINVAL;
	}
	errno = 0;
	*out = strtoul(s, &end, 0);
	if (errno || *end || *out > max) {
		return -EINVAL;
	}
	return 0;
}

static void bench_usage(FILE *f)
{
	fprintf(f, "usage: vdisk bench [-c count] [-d depth] [-f fmt] "
		   "[--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] "
		   "[--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] "
		   "[-U] [--random] [--seed=N] [--image-opts] filename\n");
}

int cmd_bench(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"pattern", required_argument, NULL, OPT_PATTERN},
		{"no-drain", no_argument, NULL, OPT_NO_DRAIN},
		{"random", no_argument, NULL, OPT_RANDOM},
		{"seed", required_argument, NULL, OPT_SEED},
		{"force-share", no_argument, NULL, 'U'},
		{NULL, 0, NULL, 0},
	};
	struct tool_open_args a = {
		.default_cache = "writeback",
		.probe = true,
		.probe_references = true,
	};
	struct bench b = {.drain_on_flush = true, .rng = 0x5eedULL};
	int count = 75000, depth = 64, pattern = 0, c, i, ret = 1;
	int64_t offset = 0, bufsize = 4096, step = 0, t1, t2;
	struct vd_error err = {0};
	struct vd_loop *loop;
	uint8_t *buf = NULL;
	unsigned long ul;
	double secs;

	while ((c = getopt_long(argc, argv, "hc:d:f:i:no:qs:S:t:wU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			bench_usage(stdout);
			return 0;
		case 'c':
			if (parse_uint(optarg, INT_MAX, &ul) < 0) {
				tool_error("Invalid request count specified");
				return 1;
			}
			count = (int)ul;
			break;
		case 'd':
			if (parse_uint(optarg, INT_MAX, &ul) < 0 || ul == 0) {
				tool_error("Invalid queue depth specified");
				return 1;
			}
			depth = (int)ul;
			break;
		case 'f':
			a.format = optarg;
			break;
		case 'i':
			if (strcmp(optarg, "threads") && strcmp(optarg, "io_uring") &&
			    strcmp(optarg, "native")) {
				tool_error("Invalid aio option: %s", optarg);
				return 1;
			}
			a.aio = optarg;
			break;
		case 'n':
			a.aio = "io_uring"; /* qemu-img's native AIO */
			break;
		case 'o':
			if (tool_parse_size(optarg, &offset) < 0) {
				tool_error("Invalid offset specified");
				return 1;
			}
			break;
		case 'q':
			break; /* qemu-img bench prints its lines with -q as well */
		case 's':
			if (tool_parse_size(optarg, &bufsize) < 0 || bufsize > INT_MAX ||
			    bufsize == 0) {
				tool_error("Invalid buffer size specified");
				return 1;
			}
			break;
		case 'S':
			if (tool_parse_size(optarg, &step) < 0 || step > INT_MAX) {
				tool_error("Invalid step size specified");
				return 1;
			}
			break;
		case 't':
			if (tool_check_cache_mode(optarg) < 0) {
				tool_error("Invalid cache mode");
				return 1;
			}
			a.cache = optarg;
			break;
		case 'w':
			a.writable = true;
			b.write = true;
			break;
		case 'U':
			a.force_share = true;
			break;
		case OPT_PATTERN:
			if (parse_uint(optarg, 0xff, &ul) < 0) {
				tool_error("Invalid pattern byte specified");
				return 1;
			}
			pattern = (int)ul;
			break;
		case OPT_FLUSH_INTERVAL:
			if (parse_uint(optarg, INT_MAX, &ul) < 0) {
				tool_error("Invalid flush interval specified");
				return 1;
			}
			b.flush_interval = (int)ul;
			break;
		case OPT_NO_DRAIN:
			b.drain_on_flush = false;
			break;
		case OPT_RANDOM:
			b.random = true;
			break;
		case OPT_SEED:
			if (parse_uint(optarg, ULONG_MAX, &ul) < 0) {
				tool_error("Invalid seed specified");
				return 1;
			}
			b.rng = ul ? ul : 0x5eedULL; /* xorshift needs a non-zero state */
			break;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		default:
			return tool_usage_hint();
		}
	}
	a.filename = tool_one_filename(argc, argv);
	if (!a.filename)
		return 1;
	if (!b.write && b.flush_interval) {
		tool_error("--flush-interval is only available in write tests");
		return 1;
	}
	if (b.flush_interval && b.flush_interval < depth) {
		tool_error("Flush interval can't be smaller than depth");
		return 1;
	}
	if (a.image_opts && a.format) {
		tool_error("--image-opts and --format are mutually exclusive");
		return 1;
	}

	loop = tool_loop_init();
	if (tool_open_blk(&a, &b.blk, &err) < 0) {
		tool_error("Could not open '%s': %s", a.filename, err.msg);
		goto out;
	}
	b.image_size = vd_blk_getlength(b.blk);
	if (b.image_size <= 0) {
		tool_error("Could not get the image size: %s",
			   strerror(b.image_size < 0 ? (int)-b.image_size : EINVAL));
		goto out;
	}
	if (b.random && b.image_size < bufsize) {
		tool_error("The image (%" PRId64 " bytes) is smaller than one request",
			   b.image_size);
		goto out;
	}

	b.bufsize = bufsize;
	b.step = step ? step : bufsize;
	b.offset = offset;
	b.nrreq = depth;
	b.n = count;
	b.lat_min = UINT64_MAX;
	printf("Sending %d %s requests, %d bytes each, %d in parallel "
	       "(starting at offset %" PRId64 ", step size %d)\n",
	       count, b.write ? "write" : "read", (int)bufsize, depth, offset, (int)b.step);
	if (b.flush_interval) {
		printf("Sending flush every %d requests\n", b.flush_interval);
	}
	fflush(stdout);

	/* Fewer slots than the depth when fewer requests are asked for. */
	if (depth > count) {
		depth = count ? count : 1;
	}
	buf = vd_memalign(4096, (size_t)depth * bufsize);
	b.reqs = calloc(depth, sizeof(*b.reqs));
	b.free_slots = calloc(depth, sizeof(*b.free_slots));
	b.hist = calloc(HIST_BUCKETS, sizeof(*b.hist));
	if (!buf || !b.reqs || !b.free_slots || !b.hist) {
		tool_error("Out of memory");
		goto out;
	}
	memset(buf, pattern, (size_t)depth * bufsize);
	for (i = 0; i < depth; i++) {
		b.reqs[i].b = &b;
		vd_qiov_init_buf(&b.reqs[i].qiov, buf + (size_t)i * bufsize, bufsize);
		b.free_slots[b.nfree++] = &b.reqs[i];
	}

	t1 = vd_clock_ns();
	submit_more(&b);
	while (b.n > 0 || b.flushes_in_flight > 0) {
		vd_loop_run_once(loop, true);
	}
	t2 = vd_clock_ns();

	secs = (double)(t2 - t1) / 1e9;
	printf("Run completed in %3.3f seconds.\n", secs);
	if (b.completed) {
		double iops = secs > 0 ? (double)b.completed / secs : 0;

		printf("IOPS: %.0f, MiB/s: %.1f\n", iops, iops * (double)bufsize / (1024 * 1024));
		printf("latency (us): min %.1f, p50 %.1f, p90 %.1f, p99 %.1f, p99.9 %.1f, max "
		       "%.1f\n",
		       b.lat_min / 1e3, percentile(&b, 50) / 1e3, percentile(&b, 90) / 1e3,
		       percentile(&b, 99) / 1e3, percentile(&b, 99.9) / 1e3, b.lat_max / 1e3);
	}
	ret = 0;
out:
	if (b.blk) {
		vd_blk_unref(b.blk);
	}
	free(buf);
	free(b.reqs);
	free(b.free_slots);
	free(b.hist);
	tool_loop_fini(loop);
	return ret;
}
