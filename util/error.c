/* SPDX-License-Identifier: MIT */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <vdisk/error.h>

static int error_vset(struct vd_error *err, int code, bool with_errno, const char *fmt, va_list ap)
{
	if (!err || err->code != 0)
		return code;
	err->code = code;
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	if (with_errno && n >= 0 && (size_t)n < sizeof(err->msg))
		snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(-code));
	return code;
}

int vd_error_set(struct vd_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_vset(err, code, false, fmt, ap);
	va_end(ap);
	return code;
}

int vd_error_setg_errno(struct vd_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_vset(err, code, true, fmt, ap);
	va_end(ap);
	return code;
}

/* The message handler: read by every reporting thread, written rarely. */
static pthread_rwlock_t message_lock = PTHREAD_RWLOCK_INITIALIZER;
static vd_message_fn *message_fn;
static void *message_opaque;

void vd_message_set_handler(vd_message_fn *fn, void *opaque)
{
	pthread_rwlock_wrlock(&message_lock);
	message_fn = fn;
	message_opaque = opaque;
	pthread_rwlock_unlock(&message_lock);
}

void vd_message(enum vd_message_level level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	pthread_rwlock_rdlock(&message_lock);
	if (message_fn) {
		va_start(ap, fmt);
		if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
			msg[0] = '\0';
		va_end(ap);
		message_fn(message_opaque, level, msg);
	}
	pthread_rwlock_unlock(&message_lock);
}
