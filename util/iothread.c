/* SPDX-License-Identifier: MIT */
/*
 * I/O threads (see include/vdisk/iothread.h).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <vdisk/iothread.h>

struct vd_iothread {
	char *id;
	pthread_t thread;
	struct vd_loop *loop;
	pid_t tid;

	/* Start-up hand-shake: the thread creates its loop and reports. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started;
	int start_ret;
};

static void *iothread_main(void *opaque)
{
	struct vd_iothread *t = opaque;
	struct vd_loop *loop = NULL;
	int ret = vd_loop_new(&loop);

	if (ret == 0) {
		vd_loop_set_current(loop);
		vd_loop_set_poll_params(loop, VD_IOTHREAD_POLL_MAX_NS, 0, 0);
	}
	pthread_mutex_lock(&t->lock);
	t->loop = loop;
	t->tid = (pid_t)syscall(SYS_gettid);
	t->start_ret = ret;
	t->started = true;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	if (ret < 0)
		return NULL;

	vd_loop_run(loop);

	vd_loop_set_current(NULL);
	vd_loop_free(loop);
	return NULL;
}

int vd_iothread_new(const char *id, struct vd_iothread **out)
{
	struct vd_iothread *t = calloc(1, sizeof(*t));
	sigset_t all, old;
	char name[16];
	int ret;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	t->id = strdup(id);
	if (!t->id) {
		free(t);
		return -ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	/* The new thread inherits this mask: every signal stays with the
	 * threads that handle them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&t->thread, NULL, iothread_main, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0)
		goto fail;
	snprintf(name, sizeof(name), "IO %s", id);
	pthread_setname_np(t->thread, name);
	pthread_mutex_lock(&t->lock);
	while (!t->started)
		pthread_cond_wait(&t->cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
	ret = t->start_ret;
	if (ret < 0) {
		pthread_join(t->thread, NULL);
		goto fail;
	}
	*out = t;
	return 0;

fail:
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	free(t->id);
	free(t);
	return ret;
}

void vd_iothread_free(struct vd_iothread *t)
{
	if (!t)
		return;
	vd_loop_stop(t->loop);
	pthread_join(t->thread, NULL);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	free(t->id);
	free(t);
}

struct poll_params {
	struct vd_loop *loop;
	int64_t max_ns, grow, shrink;
};

static void set_poll_fn(void *opaque)
{
	struct poll_params *p = opaque;

	vd_loop_set_poll_params(p->loop, p->max_ns, p->grow, p->shrink);
}

int vd_iothread_set_poll(struct vd_iothread *t, int64_t max_ns, int64_t grow, int64_t shrink)
{
	struct poll_params p = {t->loop, max_ns, grow, shrink};

	return vd_loop_call_wait(t->loop, set_poll_fn, &p);
}

const char *vd_iothread_id(const struct vd_iothread *t)
{
	return t->id;
}

struct vd_loop *vd_iothread_loop(const struct vd_iothread *t)
{
	return t->loop;
}

pid_t vd_iothread_tid(const struct vd_iothread *t)
{
	return t->tid;
}
