/* SPDX-License-Identifier: MIT */
/*
 * The event loop: one per thread that does I/O, built on epoll.
 *
 * A loop runs fd handlers, bottom halves (callbacks deferred to the next
 * iteration of the same loop), timers on CLOCK_MONOTONIC, and callbacks that
 * other threads hand it with vd_loop_call().  Everything except vd_loop_call()
 * and vd_loop_stop() must be called on the loop's own thread.  A block node
 * belongs to one loop; other threads reach it through vd_loop_call().
 *
 * There is no process-wide default loop: a thread that wants one creates it and
 * makes it current with vd_loop_set_current().
 */
#ifndef VDISK_LOOP_H
#define VDISK_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_loop;
struct vd_bh;
struct vd_timer;

typedef void vd_loop_fn(void *opaque);

/* Create a loop. Returns 0 or -errno. */
int vd_loop_new(struct vd_loop **out);
/* Free a loop. Pending bottom halves and calls are dropped; fd handlers and
 * timers must have been removed by their owners. */
void vd_loop_free(struct vd_loop *loop);

/* The calling thread's current loop (NULL if none was set). */
struct vd_loop *vd_loop_current(void);
void vd_loop_set_current(struct vd_loop *loop);

/*
 * Watch @fd: @on_read runs when it is readable, @on_write when writable (either
 * may be NULL).  Calling again for the same fd replaces the handlers; both NULL
 * removes the fd.  Returns 0 or -errno.  Level-triggered.
 */
int vd_loop_set_fd_handler(struct vd_loop *loop, int fd, vd_loop_fn *on_read, vd_loop_fn *on_write,
			   void *opaque);

/*
 * Adaptive polling, QEMU's poll-max-ns: before a loop sleeps in epoll_wait it
 * calls the poll functions of its fd handlers for a while, and the first that
 * finds work has its on_read handler run, saving the sleep and the wake-up.
 * How long it spins adapts: from 4 us it grows (times @grow, 0 = 2) while
 * sleeps end within @max_ns, and drops (divided by @shrink, 0 = to nothing)
 * after a longer one, so an idle loop does not spin.  @max_ns 0 (the default)
 * turns polling off.  A poll function must be cheap, must not block, and must
 * return true only when on_read would make progress.  Both calls on the loop's
 * own thread.
 */
typedef bool vd_loop_poll_fn(void *opaque);
/* @fd must have a handler; it keeps @poll until the handler is removed.
 * Returns 0 or -ENOENT. */
int vd_loop_set_fd_poll(struct vd_loop *loop, int fd, vd_loop_poll_fn *poll);
void vd_loop_set_poll_params(struct vd_loop *loop, int64_t max_ns, int64_t grow, int64_t shrink);
/* The current polling time (0: not polling). */
int64_t vd_loop_poll_ns(const struct vd_loop *loop);

/*
 * Run one iteration: bottom halves that are due, then wait for fds (up to the
 * next timer when @blocking, not at all otherwise), run their handlers and the
 * expired timers and queued cross-thread calls.  Returns true if any callback ran.
 * A blocking iteration with nothing registered that could ever wake it returns
 * false at once rather than sleeping forever.
 */
bool vd_loop_run_once(struct vd_loop *loop, bool blocking);
/* Run until vd_loop_stop(). */
void vd_loop_run(struct vd_loop *loop);
/* Make vd_loop_run() return after its current iteration. Thread-safe. */
void vd_loop_stop(struct vd_loop *loop);

/*
 * Bottom halves.  A scheduled BH runs once, at the start of the next iteration
 * (or in the current one if scheduled from a BH), on the loop's thread.
 * Scheduling an already-scheduled BH does nothing.  vd_bh_delete() cancels it.
 */
struct vd_bh *vd_bh_new(struct vd_loop *loop, vd_loop_fn *cb, void *opaque);
void vd_bh_schedule(struct vd_bh *bh);
void vd_bh_cancel(struct vd_bh *bh);
void vd_bh_delete(struct vd_bh *bh);

/* Run @cb once on @loop's next iteration; allocates. Returns 0 or -ENOMEM.
 * Only from the loop's own thread (use vd_loop_call from others). */
int vd_loop_oneshot(struct vd_loop *loop, vd_loop_fn *cb, void *opaque);

/*
 * Timers.  Deadlines are absolute CLOCK_MONOTONIC nanoseconds (vd_clock_ns()).
 * A timer fires once per vd_timer_mod(); re-arm from the callback for periodic
 * work.
 */
struct vd_timer *vd_timer_new(struct vd_loop *loop, vd_loop_fn *cb, void *opaque);
void vd_timer_mod(struct vd_timer *t, int64_t deadline_ns);
void vd_timer_del(struct vd_timer *t);
bool vd_timer_pending(const struct vd_timer *t);
void vd_timer_free(struct vd_timer *t);
int64_t vd_clock_ns(void);

/*
 * Hand @cb to @loop from any thread; it runs on the loop's thread, in order
 * with other calls from the same thread, in an outermost iteration of the
 * loop (never inside a nested vd_loop_run_once() that waits for something).
 * Returns 0 or -ENOMEM.
 */
int vd_loop_call(struct vd_loop *loop, vd_loop_fn *cb, void *opaque);

/*
 * Run @cb(@opaque) on @loop's thread and block the calling thread until it has
 * returned: a plain call when @loop is the caller's current loop.  The calling
 * thread runs nothing meanwhile, so @cb must not wait for it (the main thread
 * waits for I/O threads, never the other way round).  Allocates nothing;
 * returns 0.
 */
int vd_loop_call_wait(struct vd_loop *loop, vd_loop_fn *cb, void *opaque);

/*
 * Per-loop slots for subsystems that keep one object per loop (the io_uring
 * engine, the thread pool).  @destroy runs from vd_loop_free().
 */
enum vd_loop_slot {
	VD_LOOP_SLOT_URING,
	VD_LOOP_SLOT_THREADS,
	VD_LOOP_SLOT_MAX,
};
void *vd_loop_slot_get(struct vd_loop *loop, enum vd_loop_slot slot);
void vd_loop_slot_set(struct vd_loop *loop, enum vd_loop_slot slot, void *obj,
		      void (*destroy)(void *obj));

/* A counter that wakes a loop: an eventfd. */
struct vd_notifier {
	int fd;
};
int vd_notifier_init(struct vd_notifier *n); /* 0 or -errno */
void vd_notifier_cleanup(struct vd_notifier *n);
void vd_notifier_set(struct vd_notifier *n); /* thread-safe, async-signal-safe */
bool vd_notifier_test_and_clear(struct vd_notifier *n); /* true if it had been set */

#ifdef __cplusplus
}
#endif

#endif
