/* SPDX-License-Identifier: MIT */
/*
 * The machine's virtual clock and its timers (QEMU_CLOCK_VIRTUAL's role).
 *
 * qtest mode: the clock is a counter that only vd_machine_clock_warp moves
 * (clock_step / clock_set), running due timers in deadline order with the
 * clock set to each deadline, as QEMU's qtest_clock_warp.
 * Real-time mode: clock = vd_clock_ns() - offset while running, frozen while
 * stopped; one loop timer is armed for the earliest deadline.
 */
#include <errno.h>
#include <stdlib.h>

#include <vdisk/trace.h>

#include "machine/machine-internal.h"

int64_t vd_machine_clock_ns(struct vd_machine *m)
{
	if (m->qtest_clock)
		return m->vclock;
	if (!m->running)
		return m->stopped_at - m->vclock;
	return vd_clock_ns() - m->vclock;
}

int64_t vd_machine_next_deadline(struct vd_machine *m)
{
	return m->timers ? m->timers->deadline : -1;
}

static void rt_rearm(struct vd_machine *m)
{
	if (m->qtest_clock || !m->rt_timer)
		return;
	if (!m->timers || !m->running) {
		vd_timer_del(m->rt_timer);
		return;
	}
	vd_timer_mod(m->rt_timer, m->timers->deadline + m->vclock);
}

static void timer_unlink(struct vd_vtimer *t)
{
	struct vd_vtimer **pp = &t->m->timers;

	while (*pp && *pp != t)
		pp = &(*pp)->next;
	if (*pp)
		*pp = t->next;
	t->next = NULL;
	t->deadline = -1;
}

/* Run the timers due at the current clock, earliest first. */
static void run_due(struct vd_machine *m)
{
	int64_t now = vd_machine_clock_ns(m);

	while (m->timers && m->timers->deadline <= now) {
		struct vd_vtimer *t = m->timers;

		timer_unlink(t);
		vd_trace(vtimer_fire, "deadline=%lld now=%lld", (long long)t->deadline,
			 (long long)now);
		t->cb(t->opaque);
		now = vd_machine_clock_ns(m);
	}
}

static void rt_timer_cb(void *opaque)
{
	struct vd_machine *m = opaque;

	if (m->running)
		run_due(m);
	rt_rearm(m);
}

void machine_clock_init(struct vd_machine *m)
{
	if (!m->qtest_clock) {
		m->vclock = vd_clock_ns();
		if (m->loop)
			m->rt_timer = vd_timer_new(m->loop, rt_timer_cb, m);
	}
}

void machine_clock_fini(struct vd_machine *m)
{
	while (m->timers)
		timer_unlink(m->timers);
	if (m->rt_timer) {
		vd_timer_del(m->rt_timer);
		vd_timer_free(m->rt_timer);
		m->rt_timer = NULL;
	}
}

void machine_clock_state_changed(struct vd_machine *m, bool running)
{
	if (m->qtest_clock)
		return;
	if (!running) {
		m->stopped_at = vd_clock_ns();
	} else {
		/* The clock stood still while stopped. */
		m->vclock += vd_clock_ns() - m->stopped_at;
	}
	rt_rearm(m);
}

struct vd_vtimer *vd_vtimer_new(struct vd_machine *m, vd_loop_fn *cb, void *opaque)
{
	struct vd_vtimer *t = calloc(1, sizeof(*t));

	if (t) {
		t->m = m;
		t->cb = cb;
		t->opaque = opaque;
		t->deadline = -1;
	}
	return t;
}

void vd_vtimer_mod(struct vd_vtimer *t, int64_t deadline_ns)
{
	struct vd_machine *m = t->m;
	struct vd_vtimer **pp;

	if (t->deadline >= 0)
		timer_unlink(t);
	if (deadline_ns < 0)
		deadline_ns = 0;
	t->deadline = deadline_ns;
	/* After timers with the same deadline: they fire in the order set. */
	for (pp = &m->timers; *pp && (*pp)->deadline <= deadline_ns; pp = &(*pp)->next)
		;
	t->next = *pp;
	*pp = t;
	rt_rearm(m);
}

void vd_vtimer_del(struct vd_vtimer *t)
{
	if (t && t->deadline >= 0) {
		timer_unlink(t);
		rt_rearm(t->m);
	}
}

bool vd_vtimer_pending(const struct vd_vtimer *t)
{
	return t->deadline >= 0;
}

void vd_vtimer_free(struct vd_vtimer *t)
{
	if (!t)
		return;
	vd_vtimer_del(t);
	free(t);
}

int64_t vd_machine_clock_warp(struct vd_machine *m, int64_t target_ns)
{
	if (!m->qtest_clock)
		return -ENOTSUP;
	while (m->vclock < target_ns) {
		int64_t next = m->timers ? m->timers->deadline : -1;

		if (next >= 0 && next <= target_ns) {
			if (next > m->vclock)
				m->vclock = next;
			run_due(m);
		} else {
			m->vclock = target_ns;
		}
	}
	run_due(m);
	return m->vclock;
}
