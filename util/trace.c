/* SPDX-License-Identifier: MIT */
/*
 * Trace points (see include/vdisk/trace.h).  Each point caches whether it is
 * on together with the settings generation it computed that for; changing the
 * patterns bumps the generation, so every point re-checks once.
 */
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vdisk/trace.h>

int vd_trace_generation;

static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
static char *trace_patterns; /* comma-separated; NULL when off */
static bool trace_env_read;

static bool trace_match(const char *name)
{
	if (!trace_patterns)
		return false;
	const char *p = trace_patterns;
	char pat[256];
	while (*p) {
		size_t len = strcspn(p, ",");
		/* Patterns longer than any trace point name cannot match one. */
		if (len > 0 && len < sizeof(pat)) {
			memcpy(pat, p, len);
			pat[len] = '\0';
			if (fnmatch(pat, name, 0) == 0)
				return true;
		}
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

/* Called with trace_lock held. */
static int trace_set(const char *patterns)
{
	char *copy = NULL;
	if (patterns && *patterns) {
		copy = strdup(patterns);
		if (!copy)
			return -ENOMEM;
	}
	free(trace_patterns);
	trace_patterns = copy;
	trace_env_read = true;
	__atomic_add_fetch(&vd_trace_generation, 1, __ATOMIC_RELEASE);
	return 0;
}

bool vd_trace_check(struct vd_trace_point *tp)
{
	pthread_mutex_lock(&trace_lock);
	if (!trace_env_read) {
		/* Out of memory leaves tracing off; it never stops the program. */
		if (trace_set(getenv("VDISK_TRACE")) < 0)
			trace_env_read = true;
	}
	int gen = __atomic_load_n(&vd_trace_generation, __ATOMIC_ACQUIRE);
	if (tp->generation != gen) {
		tp->on = trace_match(tp->name);
		tp->generation = gen;
	}
	bool on = tp->on;
	pthread_mutex_unlock(&trace_lock);
	return on;
}

int vd_trace_enable(const char *patterns)
{
	pthread_mutex_lock(&trace_lock);
	int ret = trace_set(patterns);
	pthread_mutex_unlock(&trace_lock);
	return ret;
}

void vd_trace_emit(const char *name, const char *fmt, ...)
{
	struct timespec ts;
	char line[1024];
	va_list ap;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	int n = snprintf(line, sizeof(line), "%.6f %s ", (double)ts.tv_sec + ts.tv_nsec / 1e9,
			 name);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(line)) {
		va_start(ap, fmt);
		int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		va_end(ap);
		if (m > 0)
			n += m;
	}
	if ((size_t)n >= sizeof(line) - 1)
		n = sizeof(line) - 2; /* truncated: still one whole line */
	line[n++] = '\n';
	/* One write per event so lines from different threads do not mix. */
	fwrite(line, 1, (size_t)n, stderr);
}
