/* SPDX-License-Identifier: MIT */
/*
 * Loop internals shared by util/ only (coroutine.c, aio*.c, threadpool.c).
 * Not installed; nothing outside util/ may include it.
 */
#ifndef VDISK_UTIL_LOOP_INTERNAL_H
#define VDISK_UTIL_LOOP_INTERNAL_H

#include <vdisk/loop.h>

/*
 * Like vd_loop_set_fd_handler(), but the fd does not by itself count as
 * something that could wake a blocking vd_loop_run_once().  The engines keep
 * their completion fds registered for the loop's lifetime (no epoll_ctl per
 * request) and say instead with vd_loop_inflight_add() when a completion is
 * actually owed; an idle engine then does not make an idle loop sleep forever.
 */
int vd_loop_set_internal_fd_handler(struct vd_loop *loop, int fd, vd_loop_fn *on_read,
				    vd_loop_fn *on_write, void *opaque);
/* +1 when a request goes in flight, -1 when its completion has been handled. */
void vd_loop_inflight_add(struct vd_loop *loop, int delta);

/*
 * One blocking iteration that waits even when nothing local could wake the
 * loop (another thread may still vd_loop_call() it).  For vd_co_run_sync(),
 * which must not spin while its coroutine waits.
 */
bool vd_loop_run_once_wait(struct vd_loop *loop);

/*
 * A private slot for coroutine.c's per-loop wake list.  Destroyed in
 * vd_loop_free() after the public slots (the engines), which may still wake
 * coroutines while they are torn down.
 */
void *vd_loop_co_slot_get(struct vd_loop *loop);
void vd_loop_co_slot_set(struct vd_loop *loop, void *obj, void (*destroy)(void *obj));

/* coroutine.c: forget @loop if it is the thread's vd_co_run_sync() loop, so
 * that a caller freeing it does not leave a dangling pointer behind. */
void vd_co_loop_freed(struct vd_loop *loop);

#endif
