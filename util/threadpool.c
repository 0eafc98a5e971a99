/* SPDX-License-Identifier: MIT */
/*
 * The thread-pool engine: each loop gets up to POOL_MAX_THREADS workers,
 * started when requests outnumber idle workers and exiting after
 * POOL_IDLE_SEC without work.  Workers run blocking system calls; results are
 * handed back on a list and the loop is woken through an eventfd, whose
 * handler completes the requests on the loop's thread.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <vdisk/aio.h>
#include <vdisk/loop.h>

#include "util/aio-internal.h"
#include "util/loop-internal.h"

#define POOL_MAX_THREADS 64
#define POOL_IDLE_SEC 5

enum worker_state {
	WORKER_FREE,
	WORKER_RUNNING,
	WORKER_EXITED, /* returned; waiting for pthread_join() */
};

struct thread_pool;

struct worker {
	struct thread_pool *pool;
	pthread_t thread;
	enum worker_state state;
};

struct thread_pool {
	struct vd_aio aio; /* first: vd_aio_get() hands out &pool->aio */
	struct vd_notifier notifier;
	long inflight; /* loop thread only */

	pthread_mutex_t lock;
	pthread_cond_t work_cond;
	struct vd_aio_req *queue_head, *queue_tail; /* waiting for a worker */
	struct vd_aio_req *done_head, *done_tail; /* waiting for the loop */
	int pending; /* requests in the queue */
	int idle; /* workers waiting for work */
	int nthreads;
	bool stopping;
	struct worker workers[POOL_MAX_THREADS];
};

/* ---- worker side ---- */

static int pool_rw(struct vd_aio_req *req)
{
	const struct vd_qiov *q = req->qiov;
	struct iovec small[16];
	struct iovec *iov = small;
	int niov = q->niov;
	size_t done = 0;
	int ret = 0;

	/* A private copy: advancing over a short transfer edits it. */
	if (niov > (int)(sizeof(small) / sizeof(small[0]))) {
		iov = malloc((size_t)niov * sizeof(*iov));
		if (!iov)
			return -ENOMEM;
	}
	memcpy(iov, q->iov, (size_t)niov * sizeof(*iov));
	struct iovec *cur = iov;

	while (done < q->size) {
		int cnt = niov > IOV_MAX ? IOV_MAX : niov;
		off_t off = (off_t)(req->offset + (int64_t)done);
		ssize_t r = req->op == VD_AIO_OP_READ ? preadv(req->fd, cur, cnt, off)
						      : pwritev(req->fd, cur, cnt, off);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			ret = -errno;
			break;
		}
		if (r == 0) {
			/* A read at end of file returns what it got; a write
			 * that makes no progress would loop forever. */
			if (req->op == VD_AIO_OP_WRITE)
				ret = -EIO;
			break;
		}
		done += (size_t)r;
		while (r > 0) {
			if ((size_t)r >= cur->iov_len) {
				r -= (ssize_t)cur->iov_len;
				cur++;
				niov--;
			} else {
				cur->iov_base = (char *)cur->iov_base + r;
				cur->iov_len -= (size_t)r;
				r = 0;
			}
		}
	}
	if (iov != small)
		free(iov);
	return ret < 0 ? ret : (int)done;
}

static int pool_syscall(int r)
{
	return r < 0 ? -errno : r;
}

static int pool_run(struct vd_aio_req *req)
{
	int r;
	switch (req->op) {
	case VD_AIO_OP_READ:
	case VD_AIO_OP_WRITE:
		return pool_rw(req);
	case VD_AIO_OP_FSYNC:
		do {
			r = pool_syscall(fsync(req->fd));
		} while (r == -EINTR);
		return r;
	case VD_AIO_OP_FDATASYNC:
		do {
			r = pool_syscall(fdatasync(req->fd));
		} while (r == -EINTR);
		return r;
	case VD_AIO_OP_FALLOCATE:
		do {
			r = pool_syscall(fallocate(req->fd, req->mode, req->offset, req->len));
		} while (r == -EINTR || r == -EAGAIN);
		return r;
	case VD_AIO_OP_FUNC:
		return req->fn(req->opaque);
	}
	return -EINVAL;
}

static void *pool_worker(void *opaque)
{
	struct worker *w = opaque;
	struct thread_pool *pool = w->pool;

	pthread_mutex_lock(&pool->lock);
	while (!pool->stopping) {
		if (!pool->queue_head) {
			struct timespec deadline;
			int r = 0;
			clock_gettime(CLOCK_MONOTONIC, &deadline);
			deadline.tv_sec += POOL_IDLE_SEC;
			pool->idle++;
			while (!pool->queue_head && !pool->stopping && r != ETIMEDOUT)
				r = pthread_cond_timedwait(&pool->work_cond, &pool->lock,
							   &deadline);
			pool->idle--;
			if (!pool->queue_head)
				break; /* idle too long, or stopping */
		}
		struct vd_aio_req *req = pool->queue_head;
		pool->queue_head = req->next;
		if (!pool->queue_head)
			pool->queue_tail = NULL;
		pool->pending--;
		pthread_mutex_unlock(&pool->lock);

		req->ret = pool_run(req);

		pthread_mutex_lock(&pool->lock);
		req->next = NULL;
		bool was_empty = !pool->done_head;
		if (pool->done_tail)
			pool->done_tail->next = req;
		else
			pool->done_head = req;
		pool->done_tail = req;
		/* The loop clears the notifier before taking the list, so a
		 * non-empty list always has a wake-up on its way. */
		if (was_empty)
			vd_notifier_set(&pool->notifier);
	}
	w->state = WORKER_EXITED;
	pool->nthreads--;
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

/* ---- loop side ---- */

static void pool_completions(void *opaque)
{
	struct thread_pool *pool = opaque;

	vd_notifier_test_and_clear(&pool->notifier);
	pthread_mutex_lock(&pool->lock);
	struct vd_aio_req *req = pool->done_head;
	pool->done_head = pool->done_tail = NULL;
	pthread_mutex_unlock(&pool->lock);

	while (req) {
		struct vd_aio_req *next = req->next;
		pool->inflight--;
		vd_loop_inflight_add(pool->aio.loop, -1);
		vd_aio_req_complete(req, req->ret);
		req = next;
	}
}

/* Called with the lock held. */
static int pool_spawn(struct thread_pool *pool)
{
	struct worker *w = NULL;
	for (int i = 0; i < POOL_MAX_THREADS; i++) {
		struct worker *it = &pool->workers[i];
		if (it->state == WORKER_EXITED) {
			/* It has dropped the lock for good; the join is quick. */
			pthread_join(it->thread, NULL);
			it->state = WORKER_FREE;
		}
		if (it->state == WORKER_FREE && !w)
			w = it;
	}
	if (!w)
		return -EAGAIN;

	/* Workers take no signals: those belong to the application's threads. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	w->pool = pool;
	int r = pthread_create(&w->thread, NULL, pool_worker, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		return -r;
	w->state = WORKER_RUNNING;
	pool->nthreads++;
	return 0;
}

static int pool_submit(struct vd_aio *aio, struct vd_aio_req *req)
{
	struct thread_pool *pool = (struct thread_pool *)aio;

	req->next = NULL;
	pthread_mutex_lock(&pool->lock);
	if (pool->queue_tail)
		pool->queue_tail->next = req;
	else
		pool->queue_head = req;
	pool->queue_tail = req;
	pool->pending++;
	if (pool->pending > pool->idle && pool->nthreads < POOL_MAX_THREADS) {
		int r = pool_spawn(pool);
		if (r < 0 && pool->nthreads == 0) {
			/* Nobody would ever run it: fail it now.  It is the
			 * only entry, as the queue drains while threads run. */
			pool->queue_head = pool->queue_tail = NULL;
			pool->pending--;
			pthread_mutex_unlock(&pool->lock);
			return r;
		}
	}
	pthread_cond_signal(&pool->work_cond);
	pthread_mutex_unlock(&pool->lock);

	pool->inflight++;
	vd_loop_inflight_add(aio->loop, 1);
	return 0;
}

static void pool_destroy(void *obj)
{
	struct thread_pool *pool = obj;

	/* Freeing a loop with requests in flight is a caller bug. */
	assert(pool->inflight == 0);
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->work_cond);
	pthread_mutex_unlock(&pool->lock);
	for (int i = 0; i < POOL_MAX_THREADS; i++) {
		if (pool->workers[i].state != WORKER_FREE)
			pthread_join(pool->workers[i].thread, NULL);
	}
	vd_loop_set_internal_fd_handler(pool->aio.loop, pool->notifier.fd, NULL, NULL, NULL);
	vd_notifier_cleanup(&pool->notifier);
	pthread_cond_destroy(&pool->work_cond);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}

int vd_thread_pool_aio_get(struct vd_loop *loop, struct vd_aio **out)
{
	struct thread_pool *pool = vd_loop_slot_get(loop, VD_LOOP_SLOT_THREADS);
	pthread_condattr_t attr;
	int ret;

	if (pool) {
		*out = &pool->aio;
		return 0;
	}
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->aio.kind = VD_AIO_THREADS;
	pool->aio.loop = loop;
	pool->aio.submit = pool_submit;

	ret = vd_notifier_init(&pool->notifier);
	if (ret < 0)
		goto err_free;
	ret = -pthread_mutex_init(&pool->lock, NULL);
	if (ret < 0)
		goto err_notifier;
	/* Idle timeouts must not jump with the wall clock. */
	ret = -pthread_condattr_init(&attr);
	if (ret < 0)
		goto err_mutex;
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	ret = -pthread_cond_init(&pool->work_cond, &attr);
	pthread_condattr_destroy(&attr);
	if (ret < 0)
		goto err_mutex;
	ret = vd_loop_set_internal_fd_handler(loop, pool->notifier.fd, pool_completions, NULL,
					      pool);
	if (ret < 0)
		goto err_cond;

	vd_loop_slot_set(loop, VD_LOOP_SLOT_THREADS, pool, pool_destroy);
	*out = &pool->aio;
	return 0;

err_cond:
	pthread_cond_destroy(&pool->work_cond);
err_mutex:
	pthread_mutex_destroy(&pool->lock);
err_notifier:
	vd_notifier_cleanup(&pool->notifier);
err_free:
	free(pool);
	return ret;
}
