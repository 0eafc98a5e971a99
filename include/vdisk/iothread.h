/* SPDX-License-Identifier: MIT */
/*
 * I/O threads: a thread that runs an event loop of its own, QEMU's
 * "-object iothread".  Nodes and the devices or exports that use them move
 * onto it (vd_node_set_loop()) so their requests are served there, in
 * parallel with the main loop and with other I/O threads.
 *
 * The thread blocks the signals a program handles (SIGTERM, SIGINT, SIGHUP,
 * SIGPIPE...): they go to the main thread.  Other threads reach the loop with
 * vd_loop_call() and vd_loop_call_wait().
 */
#ifndef VDISK_IOTHREAD_H
#define VDISK_IOTHREAD_H

#include <sys/types.h>

#include <vdisk/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_iothread;

/*
 * The default poll-max-ns of an I/O thread.  QEMU's is 32768; ours is 0 (no
 * polling) because on the machine we measure on (2 vCPUs) spinning costs more
 * than the wake-ups it saves: 4 KiB reads at depth 1 through a vhost-user-blk
 * export on an I/O thread went from 10000 to 7800 IOPS with the io_uring
 * completion ring polled (bench/RESULTS.md, "polling").  poll-max-ns=32768
 * asks for QEMU's behaviour.
 */
#define VD_IOTHREAD_POLL_MAX_NS 0

/* Start a thread named "IO @id" with a loop of its own (polling up to
 * VD_IOTHREAD_POLL_MAX_NS, see vd_loop_set_poll_params()); returns once the
 * loop runs.  0 or -errno. */
int vd_iothread_new(const char *id, struct vd_iothread **out);
/* poll-max-ns, poll-grow, poll-shrink (0: off, 0 = double, 0 = reset). */
int vd_iothread_set_poll(struct vd_iothread *t, int64_t max_ns, int64_t grow, int64_t shrink);
/* Stop the loop, join the thread, free the loop (on its own thread, so its
 * engines are torn down where they ran).  Whatever used the loop must be
 * gone. */
void vd_iothread_free(struct vd_iothread *t);

const char *vd_iothread_id(const struct vd_iothread *t);
struct vd_loop *vd_iothread_loop(const struct vd_iothread *t);
/* The kernel's thread id (query-iothreads' thread-id). */
pid_t vd_iothread_tid(const struct vd_iothread *t);

#ifdef __cplusplus
}
#endif

#endif
