/* SPDX-License-Identifier: MIT */
/* The event loop: fds, bottom halves, timers, cross-thread calls, idleness. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <unistd.h>

#include <vdisk/iothread.h>
#include <vdisk/loop.h>

#include "tests/lib/test.h"

static int counter;

static void bump(void *opaque)
{
	(*(int *)opaque)++;
}

static void test_idle(void)
{
	struct vd_loop *loop;
	REQUIRE(vd_loop_new(&loop) == 0);
	CHECK(!vd_loop_run_once(loop, false));
	/* Nothing could ever wake it: must return at once, not hang. */
	int64_t t0 = vd_clock_ns();
	CHECK(!vd_loop_run_once(loop, true));
	CHECK(vd_clock_ns() - t0 < 500 * 1000 * 1000);
	vd_loop_free(loop);
}

struct pipe_ctx {
	int fds[2];
	int reads;
	int writes;
	struct vd_loop *loop;
};

static void pipe_readable(void *opaque)
{
	struct pipe_ctx *p = opaque;
	char c;
	if (read(p->fds[0], &c, 1) == 1)
		p->reads++;
}

static void pipe_writable(void *opaque)
{
	struct pipe_ctx *p = opaque;
	p->writes++;
	/* Level-triggered: stop watching or it fires every iteration. */
	vd_loop_set_fd_handler(p->loop, p->fds[1], NULL, NULL, NULL);
}

static void test_fd_handlers(void)
{
	struct pipe_ctx p = {0};
	REQUIRE(vd_loop_new(&p.loop) == 0);
	REQUIRE(pipe(p.fds) == 0);
	CHECK_EQ(vd_loop_set_fd_handler(p.loop, p.fds[0], pipe_readable, NULL, &p), 0);
	CHECK(!vd_loop_run_once(p.loop, false));
	CHECK_EQ(write(p.fds[1], "ab", 2), 2);
	CHECK(vd_loop_run_once(p.loop, true));
	CHECK_EQ(p.reads, 1);
	CHECK(vd_loop_run_once(p.loop, true)); /* still readable: level-triggered */
	CHECK_EQ(p.reads, 2);
	CHECK(!vd_loop_run_once(p.loop, false));

	CHECK_EQ(vd_loop_set_fd_handler(p.loop, p.fds[1], NULL, pipe_writable, &p), 0);
	CHECK(vd_loop_run_once(p.loop, true));
	CHECK_EQ(p.writes, 1);
	CHECK(!vd_loop_run_once(p.loop, false));
	CHECK_EQ(p.writes, 1);

	/* Removing the last fd: a blocking iteration returns instead of hanging. */
	CHECK_EQ(vd_loop_set_fd_handler(p.loop, p.fds[0], NULL, NULL, NULL), 0);
	CHECK_EQ(write(p.fds[1], "c", 1), 1);
	CHECK(!vd_loop_run_once(p.loop, true));
	CHECK_EQ(p.reads, 2);
	CHECK_EQ(vd_loop_set_fd_handler(p.loop, -1, pipe_readable, NULL, &p), -EBADF);
	close(p.fds[0]);
	close(p.fds[1]);
	vd_loop_free(p.loop);
}

struct bh_ctx {
	struct vd_bh *bh;
	int runs;
	int reschedule;
};

static void bh_cb(void *opaque)
{
	struct bh_ctx *b = opaque;
	b->runs++;
	if (b->reschedule-- > 0)
		vd_bh_schedule(b->bh);
}

static void test_bh(void)
{
	struct vd_loop *loop;
	REQUIRE(vd_loop_new(&loop) == 0);
	struct bh_ctx b = {0};
	b.bh = vd_bh_new(loop, bh_cb, &b);
	REQUIRE(b.bh);

	/* Runs once however often it was scheduled. */
	vd_bh_schedule(b.bh);
	vd_bh_schedule(b.bh);
	CHECK(vd_loop_run_once(loop, true));
	CHECK_EQ(b.runs, 1);
	CHECK(!vd_loop_run_once(loop, false));
	CHECK_EQ(b.runs, 1);

	/* Rescheduling itself: once per iteration, not a busy loop. */
	b.reschedule = 2;
	vd_bh_schedule(b.bh);
	CHECK(vd_loop_run_once(loop, true));
	CHECK_EQ(b.runs, 2);
	CHECK(vd_loop_run_once(loop, true));
	CHECK_EQ(b.runs, 3);
	CHECK(vd_loop_run_once(loop, true));
	CHECK_EQ(b.runs, 4);
	CHECK(!vd_loop_run_once(loop, true));
	CHECK_EQ(b.runs, 4);

	/* Cancel, then delete while scheduled. */
	vd_bh_schedule(b.bh);
	vd_bh_cancel(b.bh);
	CHECK(!vd_loop_run_once(loop, false));
	vd_bh_schedule(b.bh);
	vd_bh_delete(b.bh);
	CHECK(!vd_loop_run_once(loop, false));
	CHECK_EQ(b.runs, 4);

	/* One-shots. */
	counter = 0;
	CHECK_EQ(vd_loop_oneshot(loop, bump, &counter), 0);
	CHECK_EQ(vd_loop_oneshot(loop, bump, &counter), 0);
	CHECK(vd_loop_run_once(loop, false));
	CHECK_EQ(counter, 2);
	CHECK(!vd_loop_run_once(loop, false));

	/* Left-over scheduled BHs and one-shots are dropped by vd_loop_free. */
	CHECK_EQ(vd_loop_oneshot(loop, bump, &counter), 0);
	vd_bh_schedule(vd_bh_new(loop, bump, &counter));
	vd_loop_free(loop);
	CHECK_EQ(counter, 2);
}

/* A BH scheduled from a BH runs in the same iteration. */
static struct vd_bh *second_bh;

static void schedule_second(void *opaque)
{
	vd_bh_schedule(second_bh);
}

static void test_bh_from_bh(void)
{
	struct vd_loop *loop;
	REQUIRE(vd_loop_new(&loop) == 0);
	counter = 0;
	struct vd_bh *first = vd_bh_new(loop, schedule_second, NULL);
	second_bh = vd_bh_new(loop, bump, &counter);
	REQUIRE(first && second_bh);
	vd_bh_schedule(first);
	CHECK(vd_loop_run_once(loop, false));
	CHECK_EQ(counter, 1);
	vd_bh_delete(first);
	vd_bh_delete(second_bh);
	vd_loop_free(loop);
}

static int fired[8];
static int nfired;

static void timer_cb(void *opaque)
{
	if (nfired < 8)
		fired[nfired++] = (int)(intptr_t)opaque;
}

static void test_timers(void)
{
	struct vd_loop *loop;
	REQUIRE(vd_loop_new(&loop) == 0);
	struct vd_timer *t[4];
	for (int i = 0; i < 4; i++) {
		t[i] = vd_timer_new(loop, timer_cb, (void *)(intptr_t)i);
		REQUIRE(t[i]);
	}
	int64_t now = vd_clock_ns();
	/* Set out of order; t[2] is cancelled. */
	vd_timer_mod(t[0], now + 30 * 1000000);
	vd_timer_mod(t[1], now + 10 * 1000000);
	vd_timer_mod(t[2], now + 5 * 1000000);
	vd_timer_mod(t[3], now + 20 * 1000000);
	vd_timer_mod(t[1], now + 15 * 1000000); /* re-arm moves it */
	CHECK(vd_timer_pending(t[2]));
	vd_timer_del(t[2]);
	CHECK(!vd_timer_pending(t[2]));
	nfired = 0;
	while (nfired < 3 && vd_loop_run_once(loop, true)) {
	}
	CHECK_EQ(nfired, 3);
	CHECK_EQ(fired[0], 1);
	CHECK_EQ(fired[1], 3);
	CHECK_EQ(fired[2], 0);
	/* Timers never fire early. */
	CHECK(vd_clock_ns() >= now + 30 * 1000000);
	CHECK(!vd_timer_pending(t[0]));
	/* All done: nothing can wake the loop any more. */
	CHECK(!vd_loop_run_once(loop, true));
	CHECK_EQ(nfired, 3);
	for (int i = 0; i < 4; i++)
		vd_timer_free(t[i]);
	vd_loop_free(loop);
}

enum {
	CALLS_PER_THREAD = 5000
};

struct call_ctx {
	struct vd_loop *loop;
	int thread;
	int next[2]; /* next expected sequence number per thread */
	int received;
	int out_of_order;
};

struct call_arg {
	struct call_ctx *ctx;
	int thread;
	int seq;
};

static void call_cb(void *opaque)
{
	struct call_arg *a = opaque;
	struct call_ctx *c = a->ctx;
	if (a->seq != c->next[a->thread])
		c->out_of_order++;
	c->next[a->thread] = a->seq + 1;
	c->received++;
	free(a);
	if (c->received == 2 * CALLS_PER_THREAD)
		vd_loop_stop(c->loop);
}

struct sender {
	struct call_ctx *ctx;
	int thread;
	int failures;
};

static void *sender_thread(void *opaque)
{
	struct sender *s = opaque;
	for (int i = 0; i < CALLS_PER_THREAD; i++) {
		struct call_arg *a = malloc(sizeof(*a));
		if (!a) {
			s->failures++;
			continue;
		}
		a->ctx = s->ctx;
		a->thread = s->thread;
		a->seq = i;
		if (vd_loop_call(s->ctx->loop, call_cb, a) < 0) {
			free(a);
			s->failures++;
		}
	}
	return NULL;
}

static void test_cross_thread_calls(void)
{
	struct call_ctx c = {0};
	REQUIRE(vd_loop_new(&c.loop) == 0);
	struct sender s[2] = {{&c, 0, 0}, {&c, 1, 0}};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&th[i], NULL, sender_thread, &s[i]) == 0);
	/* vd_loop_run waits for calls even with nothing registered. */
	vd_loop_run(c.loop);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	CHECK_EQ(s[0].failures + s[1].failures, 0);
	CHECK_EQ(c.received, 2 * CALLS_PER_THREAD);
	CHECK_EQ(c.out_of_order, 0);
	CHECK_EQ(c.next[0], CALLS_PER_THREAD);
	CHECK_EQ(c.next[1], CALLS_PER_THREAD);
	vd_loop_free(c.loop);
}

struct wait_ctx {
	struct vd_loop *ran_on;
	pthread_t thread;
	int calls;
};

static void wait_cb(void *opaque)
{
	struct wait_ctx *w = opaque;

	usleep(10000); /* the caller must really wait for this */
	w->ran_on = vd_loop_current();
	w->thread = pthread_self();
	w->calls++;
}

/* vd_loop_call_wait(): on the target loop's thread, returning only after the
 * callback did; a plain call on the caller's own loop.  An I/O thread names
 * itself and stops cleanly. */
static void test_call_wait_iothread(void)
{
	struct vd_iothread *t;
	struct wait_ctx w = {0};
	struct vd_loop *mine;
	char name[16] = "";

	REQUIRE(vd_iothread_new("t0", &t) == 0);
	CHECK(vd_iothread_loop(t) != NULL);
	CHECK(vd_iothread_tid(t) > 0 && vd_iothread_tid(t) != getpid());
	CHECK_STR(vd_iothread_id(t), "t0");
	CHECK_EQ(vd_loop_call_wait(vd_iothread_loop(t), wait_cb, &w), 0);
	CHECK_EQ(w.calls, 1);
	CHECK(w.ran_on == vd_iothread_loop(t));
	CHECK(!pthread_equal(w.thread, pthread_self()));
	CHECK_EQ(pthread_getname_np(w.thread, name, sizeof(name)), 0);
	CHECK_STR(name, "IO t0");

	REQUIRE(vd_loop_new(&mine) == 0);
	vd_loop_set_current(mine);
	w.calls = 0;
	CHECK_EQ(vd_loop_call_wait(mine, wait_cb, &w), 0);
	CHECK_EQ(w.calls, 1);
	CHECK(pthread_equal(w.thread, pthread_self()));
	CHECK(w.ran_on == mine);
	vd_loop_set_current(NULL);
	vd_loop_free(mine);
	vd_iothread_free(t);
}

struct poll_ctx {
	int work; /* set by the test, taken by on_read */
	int reads;
};

static bool poll_has_work(void *opaque)
{
	return ((struct poll_ctx *)opaque)->work > 0;
}

static void poll_read(void *opaque)
{
	struct poll_ctx *p = opaque;

	p->reads++;
	p->work = 0;
}

static void nop_cb(void *opaque)
{
	(void)opaque;
}

/* One blocking iteration that ends with a timer @ms away (or sooner). */
static void wait_timer_ms(struct vd_loop *loop, struct vd_timer *t, int ms)
{
	vd_timer_mod(t, vd_clock_ns() + (int64_t)ms * 1000000);
	vd_loop_run_once(loop, true);
	vd_timer_del(t);
}

/* Adaptive polling: the polling time grows from 4 us, doubling, while
 * sleeps are short, and drops to nothing after one longer than the
 * maximum; a poll function that finds work gets its handler run without
 * any fd event; off by default. */
static void test_adaptive_poll(void)
{
	struct poll_ctx p = {0};
	struct vd_loop *loop;
	struct vd_timer *t;
	int fds[2];

	REQUIRE(vd_loop_new(&loop) == 0);
	REQUIRE(pipe(fds) == 0);
	t = vd_timer_new(loop, nop_cb, NULL);
	REQUIRE(t);
	REQUIRE(vd_loop_set_fd_handler(loop, fds[0], poll_read, NULL, &p) == 0);
	CHECK_EQ(vd_loop_set_fd_poll(loop, fds[1], poll_has_work), -ENOENT);
	REQUIRE(vd_loop_set_fd_poll(loop, fds[0], poll_has_work) == 0);

	/* Off: the work is not seen without an fd event. */
	p.work = 1;
	wait_timer_ms(loop, t, 5);
	CHECK_EQ(p.reads, 0);
	CHECK_EQ(vd_loop_poll_ns(loop), 0);
	p.work = 0;

	vd_loop_set_poll_params(loop, 500 * 1000000, 0, 0);
	wait_timer_ms(loop, t, 1);
	CHECK_EQ(vd_loop_poll_ns(loop), 4000);
	wait_timer_ms(loop, t, 1);
	CHECK_EQ(vd_loop_poll_ns(loop), 8000);
	wait_timer_ms(loop, t, 1);
	CHECK_EQ(vd_loop_poll_ns(loop), 16000);

	/* Work waiting: found by polling, the handler runs, no sleep. */
	p.work = 1;
	vd_timer_mod(t, vd_clock_ns() + 2000000000);
	int64_t start = vd_clock_ns();
	CHECK(vd_loop_run_once(loop, true));
	CHECK(vd_clock_ns() - start < 1000000000);
	CHECK_EQ(p.reads, 1);
	vd_timer_del(t);

	/* A sleep longer than the maximum: polling stops. */
	vd_loop_set_poll_params(loop, 2000000, 0, 0);
	wait_timer_ms(loop, t, 20);
	CHECK_EQ(vd_loop_poll_ns(loop), 0);

	vd_timer_free(t);
	vd_loop_set_fd_handler(loop, fds[0], NULL, NULL, NULL);
	close(fds[0]);
	close(fds[1]);
	vd_loop_free(loop);
}

struct nested_ctx {
	struct vd_loop *loop;
	int called; /* by the cross-thread call */
	int called_while_nested;
	bool nested_blocking_ran;
};

static void nested_mark(void *opaque)
{
	((struct nested_ctx *)opaque)->called++;
}

static void *nested_caller(void *opaque)
{
	struct nested_ctx *c = opaque;

	vd_loop_call(c->loop, nested_mark, c);
	return NULL;
}

/* A BH that queues a cross-thread call and then waits in nested
 * iterations: the call must not run there (it could find its target half
 * torn down), only when the outermost iteration ends. */
static void nested_bh(void *opaque)
{
	struct nested_ctx *c = opaque;
	pthread_t th;

	REQUIRE(pthread_create(&th, NULL, nested_caller, c) == 0);
	pthread_join(th, NULL);
	for (int i = 0; i < 3; i++)
		vd_loop_run_once(c->loop, false);
	/* Nothing else can wake a nested blocking iteration: it returns
	 * rather than sleep on the call it leaves pending. */
	c->nested_blocking_ran = vd_loop_run_once(c->loop, true);
	c->called_while_nested = c->called;
}

static void test_calls_outermost_only(void)
{
	struct nested_ctx c = {0};
	struct vd_bh *bh;

	REQUIRE(vd_loop_new(&c.loop) == 0);
	bh = vd_bh_new(c.loop, nested_bh, &c);
	REQUIRE(bh);
	vd_bh_schedule(bh);
	CHECK(vd_loop_run_once(c.loop, false));
	CHECK_EQ(c.called_while_nested, 0);
	CHECK(!c.nested_blocking_ran);
	CHECK_EQ(c.called, 1);
	vd_bh_delete(bh);
	vd_loop_free(c.loop);
}

static void *stopper_thread(void *opaque)
{
	usleep(20000);
	vd_loop_stop(opaque);
	return NULL;
}

static void test_stop_from_thread(void)
{
	struct vd_loop *loop;
	REQUIRE(vd_loop_new(&loop) == 0);
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, stopper_thread, loop) == 0);
	vd_loop_run(loop);
	pthread_join(th, NULL);
	CHECK(1);
	vd_loop_free(loop);
}

struct slot_obj {
	int *destroyed;
};

static void slot_destroy(void *obj)
{
	struct slot_obj *o = obj;
	(*o->destroyed)++;
	free(o);
}

static void test_slots_and_current(void)
{
	struct vd_loop *loop;
	int destroyed = 0;
	REQUIRE(vd_loop_new(&loop) == 0);
	CHECK(vd_loop_current() == NULL);
	vd_loop_set_current(loop);
	CHECK(vd_loop_current() == loop);
	CHECK(vd_loop_slot_get(loop, VD_LOOP_SLOT_URING) == NULL);
	struct slot_obj *o = malloc(sizeof(*o));
	REQUIRE(o);
	o->destroyed = &destroyed;
	vd_loop_slot_set(loop, VD_LOOP_SLOT_THREADS, o, slot_destroy);
	CHECK(vd_loop_slot_get(loop, VD_LOOP_SLOT_THREADS) == o);
	vd_loop_free(loop);
	CHECK_EQ(destroyed, 1);
	/* Freeing the current loop clears it. */
	CHECK(vd_loop_current() == NULL);
}

static void test_notifier(void)
{
	struct vd_notifier n;
	REQUIRE(vd_notifier_init(&n) == 0);
	CHECK(!vd_notifier_test_and_clear(&n));
	vd_notifier_set(&n);
	vd_notifier_set(&n);
	CHECK(vd_notifier_test_and_clear(&n));
	CHECK(!vd_notifier_test_and_clear(&n));
	vd_notifier_cleanup(&n);
}

/*
 * Regression test (loop-eintr): an interrupted epoll_wait() made a blocking
 * iteration report "nothing to wait for" with work still outstanding.
 * io_uring notifies completions of requests its workers ran with a
 * signal-like task-work wake-up, so this hit test-aio's io_uring run about
 * once in a thousand and any caller that stops on false (vdisk io's aio
 * drain) could give up on in-flight requests.
 */
static volatile sig_atomic_t eintr_signals;
static bool eintr_done;

static void eintr_handler(int sig)
{
	(void)sig;
	eintr_signals++;
}

static void *eintr_thread(void *opaque)
{
	pthread_t target = *(pthread_t *)opaque;
	/* Keep interrupting until the loop returned; a signal that lands
	 * before epoll_wait() starts is simply repeated. */
	for (int i = 0; i < 500 && !__atomic_load_n(&eintr_done, __ATOMIC_ACQUIRE); i++) {
		usleep(10 * 1000);
		pthread_kill(target, SIGUSR1);
	}
	return NULL;
}

static void test_interrupted_wait(void)
{
	struct vd_loop *loop;
	struct pipe_ctx p = {.reads = 0};
	struct sigaction sa = {.sa_handler = eintr_handler}, old;
	pthread_t self = pthread_self(), th;

	REQUIRE(vd_loop_new(&loop) == 0);
	REQUIRE(pipe(p.fds) == 0);
	p.loop = loop;
	/* A user fd that never becomes readable: the iteration blocks. */
	REQUIRE(vd_loop_set_fd_handler(loop, p.fds[0], pipe_readable, NULL, &p) == 0);
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0); /* no SA_RESTART */
	eintr_done = false;
	eintr_signals = 0;
	REQUIRE(pthread_create(&th, NULL, eintr_thread, &self) == 0);
	bool ran = vd_loop_run_once(loop, true);
	__atomic_store_n(&eintr_done, true, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	CHECK(eintr_signals > 0);
	CHECK(ran); /* interrupted, not idle: the caller must iterate again */
	CHECK_EQ(p.reads, 0);
	sigaction(SIGUSR1, &old, NULL);
	vd_loop_set_fd_handler(loop, p.fds[0], NULL, NULL, NULL);
	close(p.fds[0]);
	close(p.fds[1]);
	vd_loop_free(loop);
}

int main(void)
{
	RUN(test_idle);
	RUN(test_fd_handlers);
	RUN(test_bh);
	RUN(test_bh_from_bh);
	RUN(test_timers);
	RUN(test_cross_thread_calls);
	RUN(test_stop_from_thread);
	RUN(test_slots_and_current);
	RUN(test_notifier);
	RUN(test_interrupted_wait);
	RUN(test_call_wait_iothread);
	RUN(test_adaptive_poll);
	RUN(test_calls_outermost_only);
	return test_finish();
}
