/* SPDX-License-Identifier: MIT */
/* Coroutines: switching order, nesting, the pool, queues, mutexes, wakes. */
#include <pthread.h>
#include <stdbool.h>

#include <vdisk/coroutine.h>
#include <vdisk/loop.h>

#include "tests/lib/test.h"

/* A log of small integers, to check the order in which things ran. */
static int order[64];
static int norder;

static void log_step(int step)
{
	if (norder < (int)(sizeof(order) / sizeof(order[0])))
		order[norder++] = step;
}

static void check_order(const int *expect, int n)
{
	CHECK_EQ(norder, n);
	for (int i = 0; i < n && i < norder; i++)
		CHECK_EQ(order[i], expect[i]);
	norder = 0;
}

static void yield_twice(void *opaque)
{
	CHECK(vd_co_self() == *(struct vd_co **)opaque);
	CHECK(vd_in_coroutine());
	log_step(1);
	vd_co_yield();
	log_step(3);
	vd_co_yield();
	log_step(5);
}

static void test_enter_yield(void)
{
	struct vd_co *co = NULL;
	co = vd_co_create(yield_twice, &co);
	REQUIRE(co);
	CHECK(!vd_in_coroutine());
	vd_co_enter(co);
	log_step(2);
	vd_co_enter(co);
	log_step(4);
	vd_co_enter(co); /* terminates; recycled */
	log_step(6);
	CHECK(vd_co_self() == NULL);
	check_order((int[]){1, 2, 3, 4, 5, 6}, 6);
}

static struct vd_co *inner_co;

static void inner(void *opaque)
{
	log_step(2);
	vd_co_yield(); /* back to outer, not to main */
	log_step(4);
}

static void outer(void *opaque)
{
	struct vd_co *self = vd_co_self();
	log_step(1);
	vd_co_enter(inner_co);
	CHECK(vd_co_self() == self);
	log_step(3);
	vd_co_enter(inner_co); /* inner terminates, we continue */
	CHECK(vd_co_self() == self);
	log_step(5);
}

static void test_nested(void)
{
	inner_co = vd_co_create(inner, NULL);
	struct vd_co *o = vd_co_create(outer, NULL);
	REQUIRE(inner_co && o);
	vd_co_enter(o);
	log_step(6);
	check_order((int[]){1, 2, 3, 4, 5, 6}, 6);
}

static void count_fn(void *opaque)
{
	(*(int *)opaque)++;
}

static void test_pool_reuse(void)
{
	int count = 0;
	struct vd_co *first = NULL;
	int same = 0;
	/* Sequential coroutines reuse one pooled stack: 1000 of them would be
	 * 1 GiB of address space otherwise. */
	for (int i = 0; i < 1000; i++) {
		struct vd_co *co = vd_co_create(count_fn, &count);
		REQUIRE(co);
		if (!first)
			first = co;
		same += co == first;
		vd_co_enter(co);
	}
	CHECK_EQ(count, 1000);
	CHECK_EQ(same, 1000);
}

static void test_many_live(void)
{
	/* More live coroutines than the pool keeps: the extra ones are freed. */
	enum {
		N = 100
	};
	struct vd_co *cos[N];
	for (int i = 0; i < N; i++) {
		cos[i] = vd_co_create(yield_twice, &cos[i]);
		REQUIRE(cos[i]);
	}
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++)
			vd_co_enter(cos[i]);
	}
	CHECK_EQ(norder, 64); /* log is capped; just make sure everything ran */
	norder = 0;
}

struct queue_ctx {
	struct vd_co_queue q;
	int id;
};

static void queue_waiter(void *opaque)
{
	struct queue_ctx *c = opaque;
	int id = c->id;
	vd_co_queue_wait(&c->q);
	log_step(id);
}

static void test_queue_fifo(void)
{
	struct queue_ctx c;
	vd_co_queue_init(&c.q);
	CHECK(vd_co_queue_empty(&c.q));
	for (int i = 1; i <= 4; i++) {
		c.id = i;
		struct vd_co *co = vd_co_create(queue_waiter, &c);
		REQUIRE(co);
		vd_co_enter(co);
	}
	CHECK(!vd_co_queue_empty(&c.q));
	/* Outside coroutine context wakes enter directly. */
	CHECK(vd_co_queue_next(&c.q));
	check_order((int[]){1}, 1);
	vd_co_queue_restart_all(&c.q);
	check_order((int[]){2, 3, 4}, 3);
	CHECK(vd_co_queue_empty(&c.q));
	CHECK(!vd_co_queue_next(&c.q));
}

struct mutex_ctx {
	struct vd_co_mutex m;
	int inside;
	int max_inside;
	int done;
};

static void mutex_worker(void *opaque)
{
	struct mutex_ctx *c = opaque;
	for (int i = 0; i < 5; i++) {
		vd_co_mutex_lock(&c->m);
		c->inside++;
		if (c->inside > c->max_inside)
			c->max_inside = c->inside;
		/* Hold the lock across a trip through the loop. */
		vd_co_yield_to_loop();
		vd_co_sleep_ns(1000);
		c->inside--;
		vd_co_mutex_unlock(&c->m);
		vd_co_yield_to_loop();
	}
	c->done++;
}

static void test_mutex(void)
{
	struct vd_loop *loop;
	REQUIRE(vd_loop_new(&loop) == 0);
	vd_loop_set_current(loop);
	struct mutex_ctx c = {0};
	vd_co_mutex_init(&c.m);
	for (int i = 0; i < 3; i++) {
		struct vd_co *co = vd_co_create(mutex_worker, &c);
		REQUIRE(co);
		vd_co_enter(co);
	}
	for (int i = 0; i < 10000 && c.done < 3; i++)
		vd_loop_run_once(loop, true);
	CHECK_EQ(c.done, 3);
	CHECK_EQ(c.max_inside, 1);
	CHECK(!c.m.locked);
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
}

struct wake_ctx {
	struct vd_co *sleeper;
	bool woken;
};

static void wake_sleeper(void *opaque)
{
	struct wake_ctx *c = opaque;
	log_step(1);
	vd_co_yield();
	c->woken = true;
	log_step(3);
}

static void wake_waker(void *opaque)
{
	struct wake_ctx *c = opaque;
	vd_co_wake(c->sleeper);
	/* Deferred: the sleeper must not have run inside our call. */
	CHECK(!c->woken);
	log_step(2);
}

static void test_wake_same_iteration(void)
{
	struct vd_loop *loop;
	REQUIRE(vd_loop_new(&loop) == 0);
	vd_loop_set_current(loop);
	struct wake_ctx c = {0};
	c.sleeper = vd_co_create(wake_sleeper, &c);
	REQUIRE(c.sleeper);
	vd_co_enter(c.sleeper);
	struct vd_co *waker = vd_co_create(wake_waker, &c);
	REQUIRE(waker);
	vd_co_enter(waker);
	/* Not nested into the waker, but run as soon as the waker was done, in
	 * the same loop iteration: no loop turn was needed. */
	CHECK(c.woken);
	CHECK(!vd_loop_run_once(loop, false));
	check_order((int[]){1, 2, 3}, 3);
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
}

/* Without a current loop, a wake from a coroutine still defers: it runs when
 * control is back on the thread's stack. */
static void test_wake_without_loop(void)
{
	struct wake_ctx c = {0};
	c.sleeper = vd_co_create(wake_sleeper, &c);
	REQUIRE(c.sleeper);
	vd_co_enter(c.sleeper);
	struct vd_co *waker = vd_co_create(wake_waker, &c);
	REQUIRE(waker);
	vd_co_enter(waker);
	CHECK(c.woken);
	check_order((int[]){1, 2, 3}, 3);
}

struct sleep_ctx {
	int64_t slept;
	int64_t ns;
	int id;
};

static void sleeper_fn(void *opaque)
{
	struct sleep_ctx *s = opaque;
	int64_t t0 = vd_clock_ns();
	vd_co_sleep_ns(s->ns);
	s->slept = vd_clock_ns() - t0;
	log_step(s->id);
}

static void test_sleep(void)
{
	/* vd_co_run_sync creates the thread's loop when there is none. */
	CHECK(vd_loop_current() == NULL);
	struct sleep_ctx s = {.ns = 20 * 1000 * 1000, .id = 7};
	CHECK_EQ(vd_co_run_sync(sleeper_fn, &s), 0);
	CHECK(s.slept >= s.ns);
	CHECK(s.slept < 1000 * 1000 * 1000);
	check_order((int[]){7}, 1);
	struct vd_loop *loop = vd_loop_current();
	CHECK(loop != NULL);

	/* Two sleepers wake in deadline order. */
	struct sleep_ctx a = {.ns = 30 * 1000 * 1000, .id = 1};
	struct sleep_ctx b = {.ns = 5 * 1000 * 1000, .id = 2};
	struct vd_co *ca = vd_co_create(sleeper_fn, &a);
	struct vd_co *cb = vd_co_create(sleeper_fn, &b);
	REQUIRE(ca && cb);
	vd_co_enter(ca);
	vd_co_enter(cb);
	while (norder < 2 && vd_loop_run_once(loop, true)) {
	}
	check_order((int[]){2, 1}, 2);
	/* The loop stays the thread's: run_sync again reuses it. */
	s.id = 8;
	s.ns = 0;
	CHECK_EQ(vd_co_run_sync(sleeper_fn, &s), 0);
	CHECK(vd_loop_current() == loop);
	check_order((int[]){8}, 1);
}

static void sync_inner(void *opaque)
{
	(*(int *)opaque) += 10;
}

static void sync_outer(void *opaque)
{
	/* Already in a coroutine: called directly. */
	struct vd_co *self = vd_co_self();
	CHECK_EQ(vd_co_run_sync(sync_inner, opaque), 0);
	CHECK(vd_co_self() == self);
	(*(int *)opaque)++;
}

static void test_run_sync_nested(void)
{
	int v = 0;
	CHECK_EQ(vd_co_run_sync(sync_outer, &v), 0);
	CHECK_EQ(v, 11);
}

static void *thread_main(void *opaque)
{
	/* Its own pool and loop, released at thread exit (LSan checks that). */
	struct sleep_ctx s = {.ns = 1000, .id = 0};
	int *ok = opaque;
	*ok = vd_co_run_sync(sleeper_fn, &s) == 0 && vd_loop_current() != NULL;
	for (int i = 0; i < 10; i++) {
		struct vd_co *co = vd_co_create(count_fn, ok);
		if (co)
			vd_co_enter(co);
	}
	return NULL;
}

static void test_other_thread(void)
{
	int ok = 0;
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, thread_main, &ok) == 0);
	pthread_join(th, NULL);
	CHECK_EQ(ok, 11);
	norder = 0;
}

/*
 * Regression (the qcow2 read convoy): when a coroutine releases a co-mutex
 * that others wait for, the whole queue gets through it in the same loop
 * iteration.  Deferring each hand-over to the next iteration made 32 queued
 * readers submit one host request per iteration and lose io_uring batching.
 */
struct convoy {
	struct vd_co_mutex m;
	int done;
};

static void convoy_holder(void *opaque)
{
	struct convoy *c = opaque;
	vd_co_mutex_lock(&c->m);
	vd_co_yield_to_loop(); /* the others queue up meanwhile */
	vd_co_mutex_unlock(&c->m);
	c->done++;
}

static void convoy_waiter(void *opaque)
{
	struct convoy *c = opaque;
	vd_co_mutex_lock(&c->m);
	vd_co_mutex_unlock(&c->m);
	c->done++;
}

static void test_mutex_handover_same_iteration(void)
{
	struct vd_loop *loop;
	struct convoy c = {.done = 0};

	REQUIRE(vd_loop_new(&loop) == 0);
	vd_loop_set_current(loop);
	vd_co_mutex_init(&c.m);
	vd_co_enter(vd_co_create(convoy_holder, &c));
	for (int i = 0; i < 32; i++)
		vd_co_enter(vd_co_create(convoy_waiter, &c));
	CHECK_EQ(c.done, 0);
	/* One iteration resumes the holder; all 32 waiters follow in it. */
	CHECK(vd_loop_run_once(loop, false));
	CHECK_EQ(c.done, 33);
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
}

/*
 * Regression test (co-wake-after-exit): a coroutine that wakes itself (a
 * completion that fired before it yielded) and then returns must not be
 * entered again from the wake list once it is finished and pooled.
 */
static int self_wake_runs;

static void self_wake_entry(void *opaque)
{
	self_wake_runs++;
	vd_co_wake(vd_co_self());
}

static void self_wake_outer(void *opaque)
{
	struct vd_co *inner = vd_co_create(self_wake_entry, NULL);
	REQUIRE(inner);
	vd_co_enter(inner);
}

static void test_wake_then_exit(void)
{
	struct vd_loop *loop;
	REQUIRE(vd_loop_new(&loop) == 0);
	vd_loop_set_current(loop);
	self_wake_runs = 0;
	/* Directly from the thread, and nested inside another coroutine. */
	struct vd_co *co = vd_co_create(self_wake_entry, NULL);
	REQUIRE(co);
	vd_co_enter(co);
	co = vd_co_create(self_wake_outer, NULL);
	REQUIRE(co);
	vd_co_enter(co);
	while (vd_loop_run_once(loop, false)) {
	}
	CHECK_EQ(self_wake_runs, 2);
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
}

int main(void)
{
	RUN(test_enter_yield);
	RUN(test_nested);
	RUN(test_pool_reuse);
	RUN(test_many_live);
	RUN(test_queue_fifo);
	RUN(test_mutex);
	RUN(test_wake_same_iteration);
	RUN(test_wake_without_loop);
	RUN(test_mutex_handover_same_iteration);
	RUN(test_wake_then_exit);
	RUN(test_sleep);
	RUN(test_run_sync_nested);
	RUN(test_other_thread);
	return test_finish();
}
