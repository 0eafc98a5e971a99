/* SPDX-License-Identifier: MIT */
/*
 * Coroutines (see include/vdisk/coroutine.h).
 *
 * A new coroutine gets onto its stack once with makecontext/setcontext; every
 * later switch is _setjmp/_longjmp, because swapcontext makes a sigprocmask
 * system call per switch.  This is QEMU's util/coroutine-ucontext.c design,
 * including its AddressSanitizer fiber annotations: ASan must be told about
 * each stack switch or it reports false stack-buffer errors and mismanages
 * fake stacks.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <vdisk/coroutine.h>
#include <vdisk/loop.h>

#include "util/loop-internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define CO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CO_ASAN 1
#endif
#endif

#ifdef CO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define CO_STACK_SIZE (1u << 20)
#define CO_POOL_MAX 64

enum co_action {
	CO_ENTER = 1,
	CO_YIELD,
	CO_TERMINATE,
};

struct vd_co {
	jmp_buf env;
	vd_co_fn *fn;
	void *opaque;
	/* Who entered us and gets control back on yield or termination; NULL
	 * while yielded (or not started), which is what makes entering legal. */
	struct vd_co *caller;
	void *map; /* mapping including the guard page */
	size_t map_size;
	void *stack; /* usable stack: bounds for ASan */
	size_t stack_size;
	struct vd_co *pool_next;
	struct vd_co *wake_next;
	bool wake_scheduled;
};

struct co_thread {
	struct vd_co leader; /* the thread's own stack */
	struct vd_co *current; /* &leader outside coroutines; NULL until first use */
	struct vd_co *pool;
	int pool_size;
	/* Wakes from coroutines on a thread without a current loop run when
	 * control returns to the thread's own stack. */
	struct vd_co *wake_head, *wake_tail;
	bool flushing;
	/* Set by vd_co_run_sync() when the thread had no loop. */
	struct vd_loop *sync_loop;
	/* vd_co_create() hands these to the trampoline to come back. */
	jmp_buf *create_env;
	struct vd_co *creator;
	struct vd_co *switch_from; /* for ASan: whose stack we leave */
};

/* initial-exec: a coroutine switch touches this several times, and the
 * default model for -fPIC code calls __tls_get_addr on each access. */
static __thread struct co_thread co_thread __attribute__((tls_model("initial-exec")));

static pthread_key_t co_key;
static pthread_once_t co_key_once = PTHREAD_ONCE_INIT;

static void co_free(struct vd_co *co);

/* Thread exit: release the pool and the loop vd_co_run_sync() created. */
static void co_thread_exit(void *unused)
{
	struct co_thread *t = &co_thread;
	while (t->pool) {
		struct vd_co *co = t->pool;
		t->pool = co->pool_next;
		co_free(co);
	}
	t->pool_size = 0;
	if (t->sync_loop)
		vd_loop_free(t->sync_loop); /* clears t->sync_loop */
}

void vd_co_loop_freed(struct vd_loop *loop)
{
	if (co_thread.sync_loop == loop)
		co_thread.sync_loop = NULL;
}

static void co_key_init(void)
{
	/* Failure only costs the per-thread cleanup at thread exit. */
	if (pthread_key_create(&co_key, co_thread_exit) != 0)
		co_key = (pthread_key_t)-1;
}

static struct co_thread *co_thread_get(void)
{
	struct co_thread *t = &co_thread;
	if (__builtin_expect(!t->current, 0)) {
		t->current = &t->leader;
		pthread_once(&co_key_once, co_key_init);
		if (co_key != (pthread_key_t)-1)
			pthread_setspecific(co_key, t);
	}
	return t;
}

/* ---- ASan fiber annotations ---- */

static inline void co_asan_start(struct co_thread *t, void **fake_stack_save, struct vd_co *from,
				 struct vd_co *to)
{
	t->switch_from = from;
#ifdef CO_ASAN
	__sanitizer_start_switch_fiber(fake_stack_save, to->stack, to->stack_size);
#else
	(void)fake_stack_save;
	(void)to;
#endif
}

static inline void co_asan_finish(struct co_thread *t, void *fake_stack_save)
{
#ifdef CO_ASAN
	const void *bottom_old;
	size_t size_old;
	__sanitizer_finish_switch_fiber(fake_stack_save, &bottom_old, &size_old);
	/* The thread's own stack is learnt from the first switch away from it,
	 * as in QEMU: it is needed to announce switches back to it. */
	if (t->switch_from == &t->leader && !t->leader.stack) {
		t->leader.stack = (void *)bottom_old;
		t->leader.stack_size = size_old;
	}
#else
	(void)t;
	(void)fake_stack_save;
#endif
}

/* A terminating coroutine is recycled when the pool has room. */
static inline bool co_will_pool(const struct co_thread *t)
{
	return t->pool_size < CO_POOL_MAX;
}

/* Switch from @from (the running context) to @to; returns the action that
 * eventually switches back to @from. */
static int co_switch(struct vd_co *from, struct vd_co *to, enum co_action action)
{
	struct co_thread *t = &co_thread;
	void *fake_stack_save = NULL;

	t->current = to;
	int ret = _setjmp(from->env);
	if (ret == 0) {
		/* A coroutine that terminates for good passes NULL so that ASan
		 * drops its fake stack, as QEMU does.  One that goes back to the
		 * pool keeps it: its trampoline frame still lives there, and
		 * with detect_stack_use_after_return=1 the next run would
		 * otherwise find no fake stack at all. */
		co_asan_start(t,
			      action == CO_TERMINATE && !co_will_pool(t) ? NULL : &fake_stack_save,
			      from, to);
		_longjmp(to->env, action);
	}
	co_asan_finish(t, fake_stack_save);
	return ret;
}

/* ---- creation ---- */

static void co_trampoline(int lo, int hi)
{
	struct co_thread *t = &co_thread;
	struct vd_co *co = (struct vd_co *)(((uintptr_t)(uint32_t)hi << 32) | (uint32_t)lo);
	void *fake_stack_save = NULL;

	co_asan_finish(t, NULL);
	/* Record where to resume us, then go back to vd_co_create(). */
	if (!_setjmp(co->env)) {
		co_asan_start(t, &fake_stack_save, co, t->creator);
		_longjmp(*t->create_env, 1);
	}
	co_asan_finish(t, fake_stack_save);

	/* Pooled coroutines come back here for their next function. */
	for (;;) {
		co->fn(co->opaque);
		struct vd_co *caller = co->caller;
		co->caller = NULL;
		co_switch(co, caller, CO_TERMINATE);
	}
}

static void co_free(struct vd_co *co)
{
#ifdef CO_ASAN
	/* The mapping may be reused by anything; leave no stale poison. */
	ASAN_UNPOISON_MEMORY_REGION(co->stack, co->stack_size);
#endif
	munmap(co->map, co->map_size);
	free(co);
}

/* Run the trampoline on @co's stack until it has saved its resume point.
 * Kept apart from co_new() so nothing live across _setjmp() is modified. */
static __attribute__((noinline)) int co_start(struct co_thread *t, struct vd_co *co)
{
	ucontext_t uc;
	jmp_buf old_env;
	void *fake_stack_save = NULL;

	if (getcontext(&uc) < 0)
		return -errno;
	uc.uc_link = NULL;
	uc.uc_stack.ss_sp = co->stack;
	uc.uc_stack.ss_size = co->stack_size;
	uc.uc_stack.ss_flags = 0;
	uintptr_t p = (uintptr_t)co;
	makecontext(&uc, (void (*)(void))co_trampoline, 2, (int)(uint32_t)p,
		    (int)(uint32_t)(p >> 32));

	t->create_env = &old_env;
	t->creator = t->current;
	/* setcontext() in, _longjmp() back out.  Not swapcontext(): nothing
	 * needs saving in a ucontext (old_env holds the way back), and ASan
	 * intercepts swapcontext() only to warn that it cannot follow it, while
	 * the fiber annotations below already tell it about the switch. */
	if (!_setjmp(old_env)) {
		co_asan_start(t, &fake_stack_save, t->current, co);
		setcontext(&uc);
		return -errno; /* setcontext() returns only on failure */
	}
	co_asan_finish(t, fake_stack_save);
	return 0;
}

static struct vd_co *co_new(struct co_thread *t)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct vd_co *co = calloc(1, sizeof(*co));

	if (!co)
		return NULL;
	co->map_size = CO_STACK_SIZE + page;
	co->map = mmap(NULL, co->map_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
	if (co->map == MAP_FAILED)
		goto err_free;
	/* Guard page below the stack: an overflow faults instead of silently
	 * corrupting the neighbouring mapping. */
	if (mprotect(co->map, page, PROT_NONE) < 0)
		goto err_unmap;
	co->stack = (char *)co->map + page;
	co->stack_size = CO_STACK_SIZE;
	if (co_start(t, co) < 0)
		goto err_unmap;
	return co;

err_unmap:
	munmap(co->map, co->map_size);
err_free:
	free(co);
	return NULL;
}

struct vd_co *vd_co_create(vd_co_fn *fn, void *opaque)
{
	struct co_thread *t = co_thread_get();
	struct vd_co *co = t->pool;

	if (co) {
		t->pool = co->pool_next;
		t->pool_size--;
	} else {
		co = co_new(t);
		if (!co)
			return NULL;
	}
	co->fn = fn;
	co->opaque = opaque;
	co->caller = NULL;
	co->pool_next = NULL;
	co->wake_next = NULL;
	co->wake_scheduled = false;
	return co;
}

static void co_cancel_wake(struct co_thread *t, struct vd_co *co);

static void co_release(struct co_thread *t, struct vd_co *co)
{
	/* Woken while it ran, then returned: entering it again later would
	 * run a finished (or recycled) coroutine. */
	if (co->wake_scheduled)
		co_cancel_wake(t, co);
	if (co_will_pool(t)) {
		co->pool_next = t->pool;
		t->pool = co;
		t->pool_size++;
	} else {
		co_free(co);
	}
}

/* ---- entering and yielding ---- */

static void co_flush_thread_wakes(struct co_thread *t)
{
	if (t->flushing)
		return;
	t->flushing = true;
	struct vd_co *co;
	while ((co = t->wake_head)) {
		t->wake_head = co->wake_next;
		if (!t->wake_head)
			t->wake_tail = NULL;
		co->wake_next = NULL;
		co->wake_scheduled = false;
		vd_co_enter(co);
	}
	t->flushing = false;
}

void vd_co_enter(struct vd_co *co)
{
	struct co_thread *t = co_thread_get();
	struct vd_co *self = t->current;

	/* Entering a running coroutine (or ourselves) is a bug. */
	assert(co != self && co->caller == NULL);
	co->caller = self;
	if (co_switch(self, co, CO_ENTER) == CO_TERMINATE)
		co_release(t, co);
	if (self == &t->leader && t->wake_head)
		co_flush_thread_wakes(t);
}

void vd_co_yield(void)
{
	struct co_thread *t = &co_thread;
	struct vd_co *self = t->current;

	assert(self && self != &t->leader);
	struct vd_co *caller = self->caller;
	self->caller = NULL;
	co_switch(self, caller, CO_YIELD);
}

struct vd_co *vd_co_self(void)
{
	struct co_thread *t = &co_thread;
	return t->current == &t->leader ? NULL : t->current;
}

/* ---- deferred wake-ups ---- */

struct co_loop_wakes {
	struct vd_bh *bh;
	struct vd_co *head, *tail;
};

static void co_loop_wakes_bh(void *opaque)
{
	struct co_loop_wakes *w = opaque;
	/* Detach first: the coroutines we enter may schedule more wakes, which
	 * then run in a later pass of the BH phase. */
	struct vd_co *co = w->head;
	w->head = w->tail = NULL;
	while (co) {
		struct vd_co *next = co->wake_next;
		co->wake_next = NULL;
		co->wake_scheduled = false;
		vd_co_enter(co);
		co = next;
	}
}

static void co_loop_wakes_destroy(void *obj)
{
	struct co_loop_wakes *w = obj;
	for (struct vd_co *co = w->head; co; co = co->wake_next)
		co->wake_scheduled = false;
	vd_bh_delete(w->bh);
	free(w);
}

static struct co_loop_wakes *co_loop_wakes_get(struct vd_loop *loop)
{
	struct co_loop_wakes *w = vd_loop_co_slot_get(loop);
	if (w)
		return w;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->bh = vd_bh_new(loop, co_loop_wakes_bh, w);
	if (!w->bh) {
		free(w);
		return NULL;
	}
	vd_loop_co_slot_set(loop, w, co_loop_wakes_destroy);
	return w;
}

/* Queue @co to be entered when control is back on the thread's own stack. */
static void co_wake_on_thread(struct co_thread *t, struct vd_co *co)
{
	if (t->wake_tail)
		t->wake_tail->wake_next = co;
	else
		t->wake_head = co;
	t->wake_tail = co;
}

/*
 * From inside a coroutine, a woken coroutine runs as soon as the running
 * chain has yielded back to the thread's own stack, in the same loop
 * iteration (QEMU's co_queue_wakeup).  Deferring it to the next iteration
 * instead serialises every hand-over of a co-mutex behind a loop turn: a
 * queue of 32 readers then submits one host request per iteration and loses
 * all io_uring batching.
 */
void vd_co_wake(struct vd_co *co)
{
	struct co_thread *t = co_thread_get();

	if (t->current == &t->leader) {
		vd_co_enter(co);
		return;
	}
	if (co->wake_scheduled)
		return;
	co->wake_scheduled = true;
	co->wake_next = NULL;
	co_wake_on_thread(t, co);
}

/* Enter @co from the loop's next iteration (a bottom half). */
static void co_wake_from_loop(struct co_thread *t, struct vd_co *co)
{
	struct vd_loop *loop = vd_loop_current();
	struct co_loop_wakes *w = loop ? co_loop_wakes_get(loop) : NULL;

	if (co->wake_scheduled)
		return;
	co->wake_scheduled = true;
	co->wake_next = NULL;
	if (!w) {
		/* No loop (or no memory for its wake list): run it when
		 * control is back on the thread's own stack. */
		co_wake_on_thread(t, co);
		return;
	}
	if (w->tail)
		w->tail->wake_next = co;
	else
		w->head = co;
	w->tail = co;
	vd_bh_schedule(w->bh);
}

/* Take @co off whichever wake list holds it. */
static bool co_unlink(struct vd_co **head, struct vd_co **tail, struct vd_co *co)
{
	struct vd_co *prev = NULL;

	for (struct vd_co *it = *head; it; prev = it, it = it->wake_next) {
		if (it != co)
			continue;
		if (prev)
			prev->wake_next = co->wake_next;
		else
			*head = co->wake_next;
		if (*tail == co)
			*tail = prev;
		return true;
	}
	return false;
}

static void co_cancel_wake(struct co_thread *t, struct vd_co *co)
{
	struct vd_loop *loop = vd_loop_current();
	struct co_loop_wakes *w = loop ? vd_loop_co_slot_get(loop) : NULL;

	if (!co_unlink(&t->wake_head, &t->wake_tail, co) && w)
		co_unlink(&w->head, &w->tail, co);
	co->wake_next = NULL;
	co->wake_scheduled = false;
}

void vd_co_yield_to_loop(void)
{
	co_wake_from_loop(co_thread_get(), vd_co_self());
	vd_co_yield();
}

static void co_sleep_cb(void *opaque)
{
	vd_co_wake(opaque);
}

void vd_co_sleep_ns(int64_t ns)
{
	struct vd_loop *loop = vd_loop_current();
	int64_t deadline = vd_clock_ns() + (ns > 0 ? ns : 0);

	assert(loop && vd_in_coroutine());
	struct vd_timer *timer = vd_timer_new(loop, co_sleep_cb, vd_co_self());
	if (!timer) {
		/* Out of memory: still honour the contract, less efficiently. */
		while (vd_clock_ns() < deadline)
			vd_co_yield_to_loop();
		return;
	}
	vd_timer_mod(timer, deadline);
	/* Loop in case something else wakes us early. */
	while (vd_timer_pending(timer))
		vd_co_yield();
	vd_timer_free(timer);
}

/* ---- synchronous helper ---- */

struct co_sync {
	vd_co_fn *fn;
	void *opaque;
	bool done;
};

static void co_sync_entry(void *opaque)
{
	struct co_sync *s = opaque;
	s->fn(s->opaque);
	s->done = true;
}

int vd_co_run_sync(vd_co_fn *fn, void *opaque)
{
	struct co_thread *t = co_thread_get();

	if (t->current != &t->leader) {
		fn(opaque);
		return 0;
	}
	struct vd_loop *loop = vd_loop_current();
	if (!loop) {
		if (!t->sync_loop) {
			int ret = vd_loop_new(&t->sync_loop);
			if (ret < 0)
				return ret;
		}
		loop = t->sync_loop;
		vd_loop_set_current(loop);
	}

	struct co_sync s = {fn, opaque, false};
	struct vd_co *co = vd_co_create(co_sync_entry, &s);
	if (!co)
		return -ENOMEM;
	vd_co_enter(co);
	while (!s.done)
		vd_loop_run_once_wait(loop);
	return 0;
}

/* ---- queues and mutexes ---- */

struct vd_co_waiter {
	struct vd_co *co;
	struct vd_co_waiter *next;
	bool queued;
	bool handed; /* vd_co_mutex_unlock() passed the lock to this waiter */
};

static void co_queue_wait(struct vd_co_queue *q, struct vd_co_waiter *w)
{
	w->co = vd_co_self();
	w->next = NULL;
	w->queued = true;
	w->handed = false;
	assert(w->co);
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;

	vd_co_yield();

	/* Woken by something other than the queue: @w lives on our stack, so
	 * it must leave the queue before we return. */
	if (w->queued) {
		struct vd_co_waiter *prev = NULL;
		for (struct vd_co_waiter *it = q->head; it; prev = it, it = it->next) {
			if (it != w)
				continue;
			if (prev)
				prev->next = w->next;
			else
				q->head = w->next;
			if (q->tail == w)
				q->tail = prev;
			break;
		}
		w->queued = false;
	}
}

void vd_co_queue_wait(struct vd_co_queue *q)
{
	struct vd_co_waiter w;
	co_queue_wait(q, &w);
}

static struct vd_co_waiter *co_queue_pop(struct vd_co_queue *q)
{
	struct vd_co_waiter *w = q->head;
	if (!w)
		return NULL;
	q->head = w->next;
	if (!q->head)
		q->tail = NULL;
	w->queued = false;
	return w;
}

bool vd_co_queue_next(struct vd_co_queue *q)
{
	struct vd_co_waiter *w = co_queue_pop(q);
	if (!w)
		return false;
	vd_co_wake(w->co);
	return true;
}

void vd_co_queue_restart_all(struct vd_co_queue *q)
{
	/* Detach the list: a woken coroutine that waits again (when woken
	 * directly, outside coroutine context) joins a fresh queue and must not
	 * be woken twice by this call. */
	struct vd_co_waiter *w = q->head;
	q->head = q->tail = NULL;
	while (w) {
		/* @w is on the woken coroutine's stack: read it before waking. */
		struct vd_co_waiter *next = w->next;
		struct vd_co *co = w->co;
		w->queued = false;
		vd_co_wake(co);
		w = next;
	}
}

void vd_co_mutex_lock(struct vd_co_mutex *m)
{
	if (!m->locked) {
		m->locked = true;
		return;
	}
	for (;;) {
		struct vd_co_waiter w;
		co_queue_wait(&m->waiters, &w);
		/* vd_co_mutex_unlock() handed the lock to us by popping us while
		 * keeping it locked: no one can slip in between the wake and our
		 * running (FIFO, as QEMU's CoMutex). */
		if (w.handed)
			return;
		if (!m->locked) {
			m->locked = true;
			return;
		}
	}
}

void vd_co_mutex_unlock(struct vd_co_mutex *m)
{
	assert(m->locked);
	struct vd_co_waiter *w = co_queue_pop(&m->waiters);
	if (!w) {
		m->locked = false;
		return;
	}
	w->handed = true;
	vd_co_wake(w->co);
}
