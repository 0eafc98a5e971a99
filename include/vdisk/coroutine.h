/* SPDX-License-Identifier: MIT */
/*
 * Coroutines: cooperative, stackful, one thread each.
 *
 * Format drivers are written as straight-line code that runs in a coroutine and
 * yields while host I/O is in flight.  A coroutine is entered from its thread's
 * loop (or from another coroutine, which then waits until the entered one
 * yields or ends).  A coroutine that ends is recycled to a per-thread pool, so
 * creating one per request is cheap.  Stack switches are announced to
 * AddressSanitizer (fiber annotations) when built with it.
 *
 * Rules: a coroutine is only entered on the thread that created it; entering a
 * coroutine that is running or not yielded is a bug (asserted).
 */
#ifndef VDISK_COROUTINE_H
#define VDISK_COROUTINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vdisk/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_co;
typedef void vd_co_fn(void *opaque);

/* Marks functions that may only be called from coroutine context. */
#define vd_coroutine_fn

/* Create a coroutine that will run @fn(@opaque); NULL on ENOMEM. */
struct vd_co *vd_co_create(vd_co_fn *fn, void *opaque);
/* Switch into @co until it yields or returns. */
void vd_co_enter(struct vd_co *co);
/* Return to whoever entered the current coroutine. */
void vd_coroutine_fn vd_co_yield(void);
/* The running coroutine, or NULL outside coroutine context. */
struct vd_co *vd_co_self(void);
static inline bool vd_in_coroutine(void)
{
	return vd_co_self() != NULL;
}

/*
 * Wake a yielded coroutine from a completion: enters it at once when called
 * outside coroutine context; from inside a coroutine, enters it as soon as
 * the running coroutine (and whoever entered it) has yielded back to the
 * thread's own stack, in the same loop iteration, so the caller's coroutine
 * is never nested into the woken one.
 */
void vd_co_wake(struct vd_co *co);

/* Yield and come back on the next loop iteration (lets others run). */
void vd_coroutine_fn vd_co_yield_to_loop(void);
/* Sleep at least @ns nanoseconds. */
void vd_coroutine_fn vd_co_sleep_ns(int64_t ns);

/*
 * Run @fn(@opaque) in a new coroutine and drive the current thread's loop
 * until it returns.  For tools and tests that need a synchronous call.  If
 * already in a coroutine, calls @fn directly.  Returns 0 or -ENOMEM (the
 * function's own result travels through @opaque).
 */
int vd_co_run_sync(vd_co_fn *fn, void *opaque);

/* A queue of coroutines waiting for something (QEMU's CoQueue). */
struct vd_co_waiter;
struct vd_co_queue {
	struct vd_co_waiter *head, *tail;
};
static inline void vd_co_queue_init(struct vd_co_queue *q)
{
	q->head = q->tail = NULL;
}
/* Park the current coroutine until woken. */
void vd_coroutine_fn vd_co_queue_wait(struct vd_co_queue *q);
/* Wake the first waiter (returns false if none) or all of them. Wakes are
 * deferred with vd_co_wake() semantics. */
bool vd_co_queue_next(struct vd_co_queue *q);
void vd_co_queue_restart_all(struct vd_co_queue *q);
static inline bool vd_co_queue_empty(const struct vd_co_queue *q)
{
	return q->head == NULL;
}

/* A mutex between coroutines of one thread (QEMU's CoMutex, single-threaded). */
struct vd_co_mutex {
	bool locked;
	struct vd_co_queue waiters;
};
static inline void vd_co_mutex_init(struct vd_co_mutex *m)
{
	m->locked = false;
	vd_co_queue_init(&m->waiters);
}
void vd_coroutine_fn vd_co_mutex_lock(struct vd_co_mutex *m);
void vd_coroutine_fn vd_co_mutex_unlock(struct vd_co_mutex *m);

#ifdef __cplusplus
}
#endif

#endif
