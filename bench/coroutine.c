/* SPDX-License-Identifier: MIT */
/*
 * Coroutine micro-benchmark: the cost of one enter+yield round trip, and of
 * create+run+exit with the per-thread pool warm.
 *
 *	build/bench/coroutine [switch-iterations]
 */
#include <stdio.h>
#include <stdlib.h>

#include <vdisk/coroutine.h>
#include <vdisk/loop.h>

static volatile bool stop_switching;

static void switcher(void *opaque)
{
	unsigned long *count = opaque;
	while (!stop_switching) {
		(*count)++;
		vd_co_yield();
	}
}

static void nothing(void *opaque)
{
	(void)opaque;
}

int main(int argc, char **argv)
{
	long iterations = argc > 1 ? atol(argv[1]) : 10 * 1000 * 1000;
	if (iterations <= 0) {
		fprintf(stderr, "usage: %s [iterations]\n", argv[0]);
		return 2;
	}

	unsigned long count = 0;
	struct vd_co *co = vd_co_create(switcher, &count);
	if (!co) {
		fprintf(stderr, "vd_co_create: out of memory\n");
		return 1;
	}
	vd_co_enter(co); /* warm up: first entry touches the fresh stack */
	int64_t t0 = vd_clock_ns();
	for (long i = 0; i < iterations; i++)
		vd_co_enter(co);
	int64_t t1 = vd_clock_ns();
	stop_switching = true;
	vd_co_enter(co); /* let it finish: it goes to the pool */
	printf("coroutine switch (enter+yield): %.1f ns\n", (double)(t1 - t0) / (double)iterations);

	long creates = iterations / 10;
	if (creates < 1)
		creates = 1;
	t0 = vd_clock_ns();
	for (long i = 0; i < creates; i++) {
		struct vd_co *c = vd_co_create(nothing, NULL);
		if (!c) {
			fprintf(stderr, "vd_co_create: out of memory\n");
			return 1;
		}
		vd_co_enter(c);
	}
	t1 = vd_clock_ns();
	printf("coroutine create+run+exit (pooled): %.1f ns\n",
	       (double)(t1 - t0) / (double)creates);
	if (count != (unsigned long)iterations + 1) {
		fprintf(stderr, "unexpected switch count %lu\n", count);
		return 1;
	}
	return 0;
}
