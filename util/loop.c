/* SPDX-License-Identifier: MIT */
/*
 * The event loop (see include/vdisk/loop.h): epoll for fds, an intrusive queue
 * of bottom halves, a sorted list of timers, and a mutex-protected FIFO of
 * cross-thread calls whose arrival is signalled through an eventfd.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <vdisk/loop.h>

#include "util/loop-internal.h"

#define LOOP_MAX_EVENTS 64

struct fd_handler {
	struct fd_handler *next;
	int fd;
	vd_loop_fn *on_read;
	vd_loop_fn *on_write;
	void *opaque;
	vd_loop_poll_fn *poll; /* adaptive polling: is there work for on_read? */
	bool internal;
	/* Removed while a dispatch may still hold a pointer to it from
	 * epoll_wait(); freed when the outermost dispatch ends. */
	bool deleted;
};

struct bh_list {
	struct vd_bh *head, *tail;
};

struct vd_bh {
	struct vd_loop *loop;
	vd_loop_fn *cb;
	void *opaque;
	struct bh_list *list; /* the queue it is scheduled on, NULL if not scheduled */
	struct vd_bh *prev, *next; /* in *list */
	struct vd_bh *all_prev, *all_next; /* every BH of the loop, for vd_loop_free */
	uint64_t ran_iter; /* loop->iter when it last ran */
	bool oneshot;
};

struct vd_timer {
	struct vd_loop *loop;
	vd_loop_fn *cb;
	void *opaque;
	int64_t deadline;
	bool pending;
	struct vd_timer *prev, *next;
};

struct loop_call {
	struct loop_call *next;
	vd_loop_fn *cb;
	void *opaque;
	bool heap; /* vd_loop_call's; vd_loop_call_wait's lives on the caller's stack */
};

struct vd_loop {
	int epfd;
	struct vd_notifier notifier; /* vd_loop_call and vd_loop_stop */

	struct fd_handler *handlers;
	struct fd_handler *zombies;
	int user_fds; /* non-internal handlers: things that can wake us */
	int poll_fds; /* handlers with a poll function */
	/* Adaptive polling (QEMU's aio_poll): spin over the poll functions for
	 * poll_ns before sleeping; poll_ns grows while sleeps are short and
	 * drops when they are long.  poll_max_ns 0: never poll. */
	int64_t poll_ns, poll_max_ns, poll_grow, poll_shrink;
	int dispatch_depth;
	long inflight;

	/* BHs scheduled for this iteration, and those that already ran in this
	 * iteration and were rescheduled (they wait for the next one so a BH that
	 * always reschedules itself cannot starve fds and timers). */
	struct bh_list bh_now, bh_later;
	struct vd_bh *all_bhs;
	uint64_t iter;
	bool in_bh_phase;

	struct vd_timer *timers_head, *timers_tail;

	pthread_mutex_t call_lock;
	struct loop_call *calls_head, *calls_tail;
	int calls_pending; /* atomic; read without the lock */

	int stop; /* atomic */

	void *slot_obj[VD_LOOP_SLOT_MAX + 1];
	void (*slot_destroy[VD_LOOP_SLOT_MAX + 1])(void *obj);
};

/* The private coroutine slot lives after the public ones. */
#define LOOP_SLOT_CO VD_LOOP_SLOT_MAX

static __thread struct vd_loop *current_loop;

int64_t vd_clock_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- notifier ---- */

int vd_notifier_init(struct vd_notifier *n)
{
	n->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return n->fd < 0 ? -errno : 0;
}

void vd_notifier_cleanup(struct vd_notifier *n)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
}

void vd_notifier_set(struct vd_notifier *n)
{
	uint64_t one = 1;
	/* EAGAIN means the counter is saturated: it is set, which is all we need.
	 * errno is saved because this may run in a signal handler. */
	int saved = errno;
	ssize_t r;
	do {
		r = write(n->fd, &one, sizeof(one));
	} while (r < 0 && errno == EINTR);
	errno = saved;
}

bool vd_notifier_test_and_clear(struct vd_notifier *n)
{
	uint64_t value;
	ssize_t r;
	do {
		r = read(n->fd, &value, sizeof(value));
	} while (r < 0 && errno == EINTR);
	return r == sizeof(value) && value != 0;
}

/* ---- loop lifetime ---- */

static void loop_run_calls(struct vd_loop *loop);

/* Calls from other threads run only in an outermost iteration: one must not
 * find what it works on in the middle of a nested wait (a connection being
 * torn down, a node being flushed).  Nested iterations leave them pending;
 * the outermost one runs them before it returns. */
static void loop_notifier_read(void *opaque)
{
	struct vd_loop *loop = opaque;
	vd_notifier_test_and_clear(&loop->notifier);
	if (loop->dispatch_depth <= 1)
		loop_run_calls(loop);
}

int vd_loop_new(struct vd_loop **out)
{
	struct vd_loop *loop = calloc(1, sizeof(*loop));
	int ret;

	*out = NULL;
	if (!loop)
		return -ENOMEM;
	loop->notifier.fd = -1;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		ret = -errno;
		goto err_free;
	}
	ret = vd_notifier_init(&loop->notifier);
	if (ret < 0)
		goto err_epoll;
	ret = pthread_mutex_init(&loop->call_lock, NULL);
	if (ret) {
		ret = -ret;
		goto err_notifier;
	}
	ret = vd_loop_set_internal_fd_handler(loop, loop->notifier.fd, loop_notifier_read, NULL,
					      loop);
	if (ret < 0)
		goto err_mutex;
	*out = loop;
	return 0;

err_mutex:
	pthread_mutex_destroy(&loop->call_lock);
err_notifier:
	vd_notifier_cleanup(&loop->notifier);
err_epoll:
	close(loop->epfd);
err_free:
	free(loop);
	return ret;
}

void vd_loop_free(struct vd_loop *loop)
{
	if (!loop)
		return;
	assert(loop->dispatch_depth == 0);

	/* Engines first: they delete their own BHs and fd handlers. */
	for (int i = 0; i <= VD_LOOP_SLOT_MAX; i++) {
		if (loop->slot_destroy[i] && loop->slot_obj[i])
			loop->slot_destroy[i](loop->slot_obj[i]);
		loop->slot_obj[i] = NULL;
	}

	while (loop->all_bhs) {
		struct vd_bh *bh = loop->all_bhs;
		loop->all_bhs = bh->all_next;
		free(bh);
	}
	/* Timers belong to their owners; unlink so a later vd_timer_del() on a
	 * stale timer does not walk freed memory. */
	for (struct vd_timer *t = loop->timers_head, *next; t; t = next) {
		next = t->next;
		t->pending = false;
		t->prev = t->next = NULL;
	}
	while (loop->handlers) {
		struct fd_handler *h = loop->handlers;
		loop->handlers = h->next;
		free(h);
	}
	while (loop->zombies) {
		struct fd_handler *h = loop->zombies;
		loop->zombies = h->next;
		free(h);
	}
	while (loop->calls_head) {
		struct loop_call *c = loop->calls_head;
		loop->calls_head = c->next;
		free(c);
	}
	pthread_mutex_destroy(&loop->call_lock);
	vd_notifier_cleanup(&loop->notifier);
	close(loop->epfd);
	if (current_loop == loop)
		current_loop = NULL;
	vd_co_loop_freed(loop);
	free(loop);
}

struct vd_loop *vd_loop_current(void)
{
	return current_loop;
}

void vd_loop_set_current(struct vd_loop *loop)
{
	current_loop = loop;
}

/* ---- fd handlers ---- */

static struct fd_handler *find_handler(struct vd_loop *loop, int fd)
{
	for (struct fd_handler *h = loop->handlers; h; h = h->next) {
		if (h->fd == fd)
			return h;
	}
	return NULL;
}

static int set_fd_handler(struct vd_loop *loop, int fd, vd_loop_fn *on_read, vd_loop_fn *on_write,
			  void *opaque, bool internal)
{
	struct fd_handler *h = find_handler(loop, fd);

	if (fd < 0)
		return -EBADF;
	if (!on_read && !on_write) {
		if (!h)
			return 0;
		struct fd_handler **pp = &loop->handlers;
		while (*pp != h)
			pp = &(*pp)->next;
		*pp = h->next;
		/* The fd may already be closed by its owner; that removed it. */
		epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
		if (!h->internal)
			loop->user_fds--;
		if (h->poll)
			loop->poll_fds--;
		h->poll = NULL;
		if (loop->dispatch_depth > 0) {
			h->deleted = true;
			h->next = loop->zombies;
			loop->zombies = h;
		} else {
			free(h);
		}
		return 0;
	}

	struct epoll_event ev = {
		.events = (on_read ? EPOLLIN : 0) | (on_write ? EPOLLOUT : 0),
	};
	bool added = false;
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (!h)
			return -ENOMEM;
		h->fd = fd;
		added = true;
	}
	ev.data.ptr = h;
	if (epoll_ctl(loop->epfd, added ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) < 0) {
		int ret = -errno;
		if (added)
			free(h);
		return ret;
	}
	if (added) {
		h->next = loop->handlers;
		loop->handlers = h;
		h->internal = internal;
		if (!internal)
			loop->user_fds++;
	} else if (h->internal != internal) {
		loop->user_fds += internal ? -1 : 1;
		h->internal = internal;
	}
	h->on_read = on_read;
	h->on_write = on_write;
	h->opaque = opaque;
	return 0;
}

int vd_loop_set_fd_handler(struct vd_loop *loop, int fd, vd_loop_fn *on_read, vd_loop_fn *on_write,
			   void *opaque)
{
	return set_fd_handler(loop, fd, on_read, on_write, opaque, false);
}

int vd_loop_set_internal_fd_handler(struct vd_loop *loop, int fd, vd_loop_fn *on_read,
				    vd_loop_fn *on_write, void *opaque)
{
	return set_fd_handler(loop, fd, on_read, on_write, opaque, true);
}

int vd_loop_set_fd_poll(struct vd_loop *loop, int fd, vd_loop_poll_fn *poll)
{
	struct fd_handler *h = find_handler(loop, fd);

	if (!h)
		return -ENOENT;
	loop->poll_fds += (poll != NULL) - (h->poll != NULL);
	h->poll = poll;
	return 0;
}

void vd_loop_set_poll_params(struct vd_loop *loop, int64_t max_ns, int64_t grow, int64_t shrink)
{
	loop->poll_max_ns = max_ns > 0 ? max_ns : 0;
	loop->poll_grow = grow;
	loop->poll_shrink = shrink;
	if (loop->poll_ns > loop->poll_max_ns)
		loop->poll_ns = loop->poll_max_ns;
}

int64_t vd_loop_poll_ns(const struct vd_loop *loop)
{
	return loop->poll_ns;
}

/* Spin over the poll functions for up to poll_ns: the first handler with work
 * runs (the rest wait for the non-blocking epoll_wait that follows, since
 * running a handler may change the list).  True if one ran. */
static bool loop_poll(struct vd_loop *loop)
{
	int64_t deadline = vd_clock_ns() + loop->poll_ns;

	do {
		for (struct fd_handler *h = loop->handlers; h; h = h->next) {
			if (h->poll && h->on_read && !h->deleted && h->poll(h->opaque)) {
				h->on_read(h->opaque);
				return true;
			}
		}
		if (__atomic_load_n(&loop->calls_pending, __ATOMIC_ACQUIRE) ||
		    __atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE))
			return false;
	} while (vd_clock_ns() < deadline);
	return false;
}

/* After a wait of @block_ns that polling did not end: QEMU's adjustment. */
static void loop_adjust_poll(struct vd_loop *loop, int64_t block_ns)
{
	if (block_ns <= loop->poll_ns)
		return; /* the sweet spot */
	if (block_ns > loop->poll_max_ns) {
		loop->poll_ns = loop->poll_shrink ? loop->poll_ns / loop->poll_shrink : 0;
	} else if (loop->poll_ns < loop->poll_max_ns) {
		int64_t grown = loop->poll_ns
					? loop->poll_ns * (loop->poll_grow ? loop->poll_grow : 2)
					: 4000;
		loop->poll_ns = grown < loop->poll_max_ns ? grown : loop->poll_max_ns;
	}
}

void vd_loop_inflight_add(struct vd_loop *loop, int delta)
{
	loop->inflight += delta;
	assert(loop->inflight >= 0);
}

/* ---- bottom halves ---- */

static void bh_list_append(struct bh_list *l, struct vd_bh *bh)
{
	bh->list = l;
	bh->next = NULL;
	bh->prev = l->tail;
	if (l->tail)
		l->tail->next = bh;
	else
		l->head = bh;
	l->tail = bh;
}

static void bh_list_remove(struct vd_bh *bh)
{
	struct bh_list *l = bh->list;
	if (bh->prev)
		bh->prev->next = bh->next;
	else
		l->head = bh->next;
	if (bh->next)
		bh->next->prev = bh->prev;
	else
		l->tail = bh->prev;
	bh->list = NULL;
	bh->prev = bh->next = NULL;
}

struct vd_bh *vd_bh_new(struct vd_loop *loop, vd_loop_fn *cb, void *opaque)
{
	struct vd_bh *bh = calloc(1, sizeof(*bh));
	if (!bh)
		return NULL;
	bh->loop = loop;
	bh->cb = cb;
	bh->opaque = opaque;
	bh->ran_iter = UINT64_MAX;
	bh->all_next = loop->all_bhs;
	if (loop->all_bhs)
		loop->all_bhs->all_prev = bh;
	loop->all_bhs = bh;
	return bh;
}

void vd_bh_schedule(struct vd_bh *bh)
{
	struct vd_loop *loop = bh->loop;
	if (bh->list)
		return;
	if (loop->in_bh_phase && bh->ran_iter == loop->iter)
		bh_list_append(&loop->bh_later, bh);
	else
		bh_list_append(&loop->bh_now, bh);
}

void vd_bh_cancel(struct vd_bh *bh)
{
	if (bh->list)
		bh_list_remove(bh);
}

void vd_bh_delete(struct vd_bh *bh)
{
	if (!bh)
		return;
	struct vd_loop *loop = bh->loop;
	vd_bh_cancel(bh);
	if (bh->all_prev)
		bh->all_prev->all_next = bh->all_next;
	else
		loop->all_bhs = bh->all_next;
	if (bh->all_next)
		bh->all_next->all_prev = bh->all_prev;
	free(bh);
}

int vd_loop_oneshot(struct vd_loop *loop, vd_loop_fn *cb, void *opaque)
{
	struct vd_bh *bh = vd_bh_new(loop, cb, opaque);
	if (!bh)
		return -ENOMEM;
	bh->oneshot = true;
	vd_bh_schedule(bh);
	return 0;
}

/*
 * Run the bottom halves scheduled now; true if any ran.  A bottom half that
 * schedules itself again waits for the next iteration (bh_later);
 * @end_of_iteration hands those over.
 */
static bool loop_run_bhs(struct vd_loop *loop, bool end_of_iteration)
{
	bool ran = false;
	bool outer_phase = loop->in_bh_phase;
	uint64_t iter = ++loop->iter;

	loop->in_bh_phase = true;
	struct vd_bh *bh;
	while ((bh = loop->bh_now.head)) {
		bh_list_remove(bh);
		bh->ran_iter = iter;
		vd_loop_fn *cb = bh->cb;
		void *opaque = bh->opaque;
		if (bh->oneshot)
			vd_bh_delete(bh);
		/* @bh may be deleted by its own callback: do not touch it after. */
		cb(opaque);
		ran = true;
		/* A nested vd_loop_run_once() from @cb moved the counter on. */
		loop->iter = iter;
		loop->in_bh_phase = true;
	}
	loop->in_bh_phase = outer_phase;
	if (!end_of_iteration)
		return ran;
	/* Hand the rescheduled ones to the next iteration. */
	while ((bh = loop->bh_later.head)) {
		bh_list_remove(bh);
		bh_list_append(&loop->bh_now, bh);
	}
	return ran;
}

/* ---- timers ---- */

struct vd_timer *vd_timer_new(struct vd_loop *loop, vd_loop_fn *cb, void *opaque)
{
	struct vd_timer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->loop = loop;
	t->cb = cb;
	t->opaque = opaque;
	return t;
}

void vd_timer_del(struct vd_timer *t)
{
	if (!t || !t->pending)
		return;
	struct vd_loop *loop = t->loop;
	if (t->prev)
		t->prev->next = t->next;
	else
		loop->timers_head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	else
		loop->timers_tail = t->prev;
	t->prev = t->next = NULL;
	t->pending = false;
}

void vd_timer_mod(struct vd_timer *t, int64_t deadline_ns)
{
	struct vd_loop *loop = t->loop;
	vd_timer_del(t);
	t->deadline = deadline_ns;
	t->pending = true;

	/* Search from the tail: new deadlines are usually the latest.  Equal
	 * deadlines fire in the order they were set. */
	struct vd_timer *after = loop->timers_tail;
	while (after && after->deadline > deadline_ns)
		after = after->prev;
	t->prev = after;
	t->next = after ? after->next : loop->timers_head;
	if (t->prev)
		t->prev->next = t;
	else
		loop->timers_head = t;
	if (t->next)
		t->next->prev = t;
	else
		loop->timers_tail = t;
}

bool vd_timer_pending(const struct vd_timer *t)
{
	return t->pending;
}

void vd_timer_free(struct vd_timer *t)
{
	if (!t)
		return;
	vd_timer_del(t);
	free(t);
}

static bool loop_run_timers(struct vd_loop *loop)
{
	bool ran = false;
	int64_t now = vd_clock_ns();
	struct vd_timer *t;

	/* One head at a time: a callback may delete or re-arm any timer. */
	while ((t = loop->timers_head) && t->deadline <= now) {
		vd_timer_del(t);
		t->cb(t->opaque);
		ran = true;
	}
	return ran;
}

/* Milliseconds until the first deadline, rounded up so we never wake early
 * and spin; -1 without timers. */
static int loop_timeout_ms(struct vd_loop *loop)
{
	if (!loop->timers_head)
		return -1;
	int64_t delta = loop->timers_head->deadline - vd_clock_ns();
	if (delta <= 0)
		return 0;
	int64_t ms = (delta + 999999) / 1000000;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ---- cross-thread calls ---- */

static void loop_queue_call(struct vd_loop *loop, struct loop_call *c)
{
	pthread_mutex_lock(&loop->call_lock);
	if (loop->calls_tail)
		loop->calls_tail->next = c;
	else
		loop->calls_head = c;
	loop->calls_tail = c;
	__atomic_store_n(&loop->calls_pending, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&loop->call_lock);
	vd_notifier_set(&loop->notifier);
}

int vd_loop_call(struct vd_loop *loop, vd_loop_fn *cb, void *opaque)
{
	struct loop_call *c = malloc(sizeof(*c));

	if (!c)
		return -ENOMEM;
	*c = (struct loop_call){.cb = cb, .opaque = opaque, .heap = true};
	loop_queue_call(loop, c);
	return 0;
}

struct call_wait {
	struct loop_call call;
	vd_loop_fn *cb;
	void *opaque;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void call_wait_run(void *opaque)
{
	struct call_wait *w = opaque;

	w->cb(w->opaque);
	pthread_mutex_lock(&w->lock);
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

int vd_loop_call_wait(struct vd_loop *loop, vd_loop_fn *cb, void *opaque)
{
	struct call_wait w = {.cb = cb, .opaque = opaque};

	if (loop == current_loop) {
		cb(opaque);
		return 0;
	}
	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	/* Nothing to allocate: the call waits here, on this stack. */
	w.call = (struct loop_call){.cb = call_wait_run, .opaque = &w};
	loop_queue_call(loop, &w.call);
	pthread_mutex_lock(&w.lock);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	pthread_cond_destroy(&w.cond);
	pthread_mutex_destroy(&w.lock);
	return 0;
}

static void loop_run_calls(struct vd_loop *loop)
{
	if (!__atomic_load_n(&loop->calls_pending, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&loop->call_lock);
	struct loop_call *c = loop->calls_head;
	loop->calls_head = loop->calls_tail = NULL;
	__atomic_store_n(&loop->calls_pending, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&loop->call_lock);

	while (c) {
		struct loop_call *next = c->next;
		bool heap = c->heap; /* a waiter's call is gone once it ran */

		c->cb(c->opaque);
		if (heap)
			free(c);
		c = next;
	}
}

/* ---- slots ---- */

void *vd_loop_slot_get(struct vd_loop *loop, enum vd_loop_slot slot)
{
	assert(slot >= 0 && slot < VD_LOOP_SLOT_MAX);
	return loop->slot_obj[slot];
}

void vd_loop_slot_set(struct vd_loop *loop, enum vd_loop_slot slot, void *obj,
		      void (*destroy)(void *obj))
{
	assert(slot >= 0 && slot < VD_LOOP_SLOT_MAX);
	loop->slot_obj[slot] = obj;
	loop->slot_destroy[slot] = destroy;
}

void *vd_loop_co_slot_get(struct vd_loop *loop)
{
	return loop->slot_obj[LOOP_SLOT_CO];
}

void vd_loop_co_slot_set(struct vd_loop *loop, void *obj, void (*destroy)(void *obj))
{
	loop->slot_obj[LOOP_SLOT_CO] = obj;
	loop->slot_destroy[LOOP_SLOT_CO] = destroy;
}

/* ---- running ---- */

/* (Pending calls wake only an outermost iteration: a nested one leaves them.) */
static bool loop_can_wake(struct vd_loop *loop)
{
	return loop->bh_now.head || loop->user_fds > 0 || loop->timers_head || loop->inflight > 0 ||
	       (loop->dispatch_depth <= 1 &&
		__atomic_load_n(&loop->calls_pending, __ATOMIC_ACQUIRE));
}

/*
 * One iteration.  @wait_always: block even when nothing local can wake us (for
 * vd_loop_run(), which another thread may stop or call into).
 */
static bool loop_iterate(struct vd_loop *loop, bool blocking, bool wait_always)
{
	struct epoll_event events[LOOP_MAX_EVENTS];
	bool ran;
	int timeout = 0;

	loop->dispatch_depth++;
	ran = loop_run_bhs(loop, false);

	/* Bottom halves that ran may have completed what the caller waits for:
	 * only sleep when this iteration has made no progress yet. */
	if (blocking && !ran && !loop->bh_now.head && (wait_always || loop_can_wake(loop)))
		timeout = loop_timeout_ms(loop);

	/* About to sleep: poll first if that has paid off lately. */
	bool adapt = timeout != 0 && loop->poll_max_ns > 0 && loop->poll_fds > 0;
	int64_t wait_start = adapt ? vd_clock_ns() : 0;
	if (adapt && loop->poll_ns > 0 && loop_poll(loop)) {
		ran = true;
		timeout = 0;
		adapt = false;
	}

	int n = epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, timeout);
	if (adapt)
		loop_adjust_poll(loop, vd_clock_ns() - wait_start);
	/* A signal, or io_uring's task work (completions of requests punted
	 * to its workers are run with a signal-like notification), interrupts
	 * the wait: that is not "nothing can happen", so let the caller
	 * iterate again. */
	if (n < 0 && errno == EINTR)
		ran = true;
	for (int i = 0; i < n; i++) {
		struct fd_handler *h = events[i].data.ptr;
		uint32_t ev = events[i].events;
		/* Errors and hang-ups go to whichever handler will notice them. */
		if (!h->deleted && h->on_read && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
			if (!h->internal)
				ran = true;
			h->on_read(h->opaque);
		}
		if (!h->deleted && h->on_write && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
			if (!h->internal)
				ran = true;
			h->on_write(h->opaque);
		}
	}
	/* Internal handlers (the call queue, engine completions) run user
	 * callbacks; count them as progress so callers keep iterating. */
	if (n > 0)
		ran = true;

	if (loop_run_timers(loop))
		ran = true;

	/* What fd handlers and timers scheduled runs before we return, as in
	 * QEMU's aio_poll: a completion that queues the next request gets it
	 * submitted in this iteration, instead of in a next one that first
	 * polls again for nothing (one epoll_wait more per request at
	 * depth 1). */
	if (loop_run_bhs(loop, true))
		ran = true;

	/* Calls a nested iteration left pending (see loop_notifier_read). */
	if (loop->dispatch_depth == 1 && __atomic_load_n(&loop->calls_pending, __ATOMIC_ACQUIRE)) {
		loop_run_calls(loop);
		ran = true;
	}

	if (--loop->dispatch_depth == 0) {
		while (loop->zombies) {
			struct fd_handler *h = loop->zombies;
			loop->zombies = h->next;
			free(h);
		}
	}
	return ran;
}

bool vd_loop_run_once(struct vd_loop *loop, bool blocking)
{
	return loop_iterate(loop, blocking, false);
}

bool vd_loop_run_once_wait(struct vd_loop *loop)
{
	return loop_iterate(loop, true, true);
}

void vd_loop_run(struct vd_loop *loop)
{
	while (!__atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE))
		loop_iterate(loop, true, true);
	__atomic_store_n(&loop->stop, 0, __ATOMIC_RELEASE);
}

void vd_loop_stop(struct vd_loop *loop)
{
	__atomic_store_n(&loop->stop, 1, __ATOMIC_RELEASE);
	vd_notifier_set(&loop->notifier);
}
