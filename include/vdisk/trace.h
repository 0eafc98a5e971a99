/* SPDX-License-Identifier: MIT */
/*
 * Trace points.  vd_trace(name, fmt, ...) costs one predictable branch when
 * off.  They are turned on in one place: the VDISK_TRACE environment variable
 * (comma-separated glob patterns: VDISK_TRACE=ide_*,qcow2_l2_*) or
 * vd_trace_enable() (the same syntax, for --trace options).  Output goes to
 * stderr as "name args", one line per event, with a monotonic timestamp.
 */
#ifndef VDISK_TRACE_H
#define VDISK_TRACE_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_trace_point {
	const char *name;
	int generation; /* settings generation this state was computed for */
	bool on;
};

extern int vd_trace_generation; /* bumped by vd_trace_enable() */
bool vd_trace_check(struct vd_trace_point *tp);
void vd_trace_emit(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Replace the pattern list (NULL or "" turns everything off). 0 or -ENOMEM. */
int vd_trace_enable(const char *patterns);

#define vd_trace(name, fmt, ...)                                                                  \
	do {                                                                                      \
		static struct vd_trace_point vd_tp_ = {#name, -1, false};                         \
		if (__builtin_expect(vd_tp_.generation != vd_trace_generation || vd_tp_.on, 0) && \
		    vd_trace_check(&vd_tp_))                                                      \
			vd_trace_emit(#name, fmt, ##__VA_ARGS__);                                 \
	} while (0)

#ifdef __cplusplus
}
#endif

#endif
