/* SPDX-License-Identifier: MIT */
/*
 * The thread-pool engine: each loop gets up to POOL_MAX_THREADS workers,
 * started when requests outnumber idle workers and exiting after
 * POOL_IDLE_SEC without work.  Workers run blocking system calls; results are
 * handed back on a lock-free stack and the loop is woken through an eventfd,
 * whose handler completes the requests on the loop's thread.
 *
 * Work is announced with a semaphore, one post per request, rather than a
 * condition variable: a woken worker does not have to reacquire the mutex the
 * submitter holds, which halves the futex traffic at high queue depths.  The
 * mutex only guards the queue itself, for a few instructions.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
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
	sem_t work; /* one count per queued request (and per stop request) */
	struct vd_aio_req *queue_head, *queue_tail; /* waiting for a worker */
	/* Finished requests waiting for the loop: a lock-free stack, so that
	 * workers finishing never contend with submissions for the lock. */
	struct vd_aio_req *done_stack;
	int pending; /* requests in the queue */
	int idle; /* workers waiting for work (atomic) */
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

	for (;;) {
		struct timespec deadline;
		int r;

		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += POOL_IDLE_SEC;
		__atomic_add_fetch(&pool->idle, 1, __ATOMIC_RELAXED);
		do {
			r = sem_clockwait(&pool->work, CLOCK_MONOTONIC, &deadline);
		} while (r < 0 && errno == EINTR);
		__atomic_sub_fetch(&pool->idle, 1, __ATOMIC_RELAXED);

		pthread_mutex_lock(&pool->lock);
		if (r < 0 || pool->stopping) {
			/* Idle too long, or told to stop.  A request posted
			 * after our timeout is taken by another waiter, or a
			 * new worker is started for it (pending > idle). */
			if (r < 0 && pool->queue_head && !pool->stopping) {
				pthread_mutex_unlock(&pool->lock);
				continue;
			}
			break;
		}
		struct vd_aio_req *req = pool->queue_head;
		assert(req); /* the semaphore counts queued requests */
		pool->queue_head = req->next;
		if (!pool->queue_head)
			pool->queue_tail = NULL;
		pool->pending--;
		pthread_mutex_unlock(&pool->lock);

		req->ret = pool_run(req);

		/* Push onto the done stack; the loop clears the notifier before
		 * taking the stack, so whoever makes it non-empty wakes the loop. */
		struct vd_aio_req *old = __atomic_load_n(&pool->done_stack, __ATOMIC_RELAXED);
		do {
			req->next = old;
		} while (!__atomic_compare_exchange_n(&pool->done_stack, &old, req, true,
						      __ATOMIC_RELEASE, __ATOMIC_RELAXED));
		if (!old)
			vd_notifier_set(&pool->notifier);
	}
	w->state = WORKER_EXITED;
	pool->nthreads--;
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

/* ---- loop side ---- */

/* A polling loop (poll-max-ns) finds completions here without waiting for
 * the notifier's wake-up. */
static bool pool_poll(void *opaque)
{
	struct thread_pool *pool = opaque;

	return __atomic_load_n(&pool->done_stack, __ATOMIC_ACQUIRE) != NULL;
}

static void pool_completions(void *opaque)
{
	struct thread_pool *pool = opaque;

	vd_notifier_test_and_clear(&pool->notifier);
	struct vd_aio_req *stack = __atomic_exchange_n(&pool->done_stack, NULL, __ATOMIC_ACQUIRE);
	struct vd_aio_req *req = NULL;

	/* The stack is newest first: complete in finishing order. */
	while (stack) {
		struct vd_aio_req *next = stack->next;
		stack->next = req;
		req = stack;
		stack = next;
	}

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
	if (pool->pending > __atomic_load_n(&pool->idle, __ATOMIC_RELAXED) &&
	    pool->nthreads < POOL_MAX_THREADS) {
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
	pthread_mutex_unlock(&pool->lock);
	sem_post(&pool->work);

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
	for (int i = 0; i < pool->nthreads; i++)
		sem_post(&pool->work);
	pthread_mutex_unlock(&pool->lock);
	for (int i = 0; i < POOL_MAX_THREADS; i++) {
		/* Workers write their state under the lock as they exit. */
		pthread_mutex_lock(&pool->lock);
		bool started = pool->workers[i].state != WORKER_FREE;
		pthread_mutex_unlock(&pool->lock);
		if (started)
			pthread_join(pool->workers[i].thread, NULL);
	}
	vd_loop_set_internal_fd_handler(pool->aio.loop, pool->notifier.fd, NULL, NULL, NULL);
	vd_notifier_cleanup(&pool->notifier);
	sem_destroy(&pool->work);
	pthread_mutex_destroy(&pool->lock);
	free(pool);
}

int vd_thread_pool_aio_get(struct vd_loop *loop, struct vd_aio **out)
{
	struct thread_pool *pool = vd_loop_slot_get(loop, VD_LOOP_SLOT_THREADS);
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
	if (sem_init(&pool->work, 0, 0) < 0) {
		ret = -errno;
		goto err_mutex;
	}
	ret = vd_loop_set_internal_fd_handler(loop, pool->notifier.fd, pool_completions, NULL,
					      pool);
	if (ret < 0)
		goto err_sem;
	vd_loop_set_fd_poll(loop, pool->notifier.fd, pool_poll);

	vd_loop_slot_set(loop, VD_LOOP_SLOT_THREADS, pool, pool_destroy);
	*out = &pool->aio;
	return 0;

err_sem:
	sem_destroy(&pool->work);
err_mutex:
	pthread_mutex_destroy(&pool->lock);
err_notifier:
	vd_notifier_cleanup(&pool->notifier);
err_free:
	free(pool);
	return ret;
}
