/* SPDX-License-Identifier: MIT */
/*
 * Error reporting for control-path functions.
 *
 * Every library function returns 0 or a negative errno; it never exits and never
 * relies on the global errno.  Control-path functions (open, create, option
 * parsing) additionally take a struct vd_error * that, when not NULL, receives a
 * message meant for a person.  Only the first error is kept: a low-level message
 * ("Could not open 'x': No such file or directory") is not overwritten by the
 * callers that propagate it.
 */
#ifndef VDISK_ERROR_H
#define VDISK_ERROR_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VD_ERROR_MSG_MAX 512

struct vd_error {
	int code; /* negative errno, 0 while unset */
	char msg[VD_ERROR_MSG_MAX]; /* NUL-terminated */
};

#define VD_PRINTF(a, b) __attribute__((format(printf, a, b)))

/*
 * Record @code (a negative errno) and a formatted message in @err unless it
 * already holds one.  Returns @code so that "return vd_error_set(err, -EINVAL,
 * ...)" reads naturally.  @err may be NULL.
 */
int vd_error_set(struct vd_error *err, int code, const char *fmt, ...) VD_PRINTF(3, 4);

/* Like vd_error_set() with ": strerror(-code)" appended to the message. */
int vd_error_setg_errno(struct vd_error *err, int code, const char *fmt, ...) VD_PRINTF(3, 4);

static inline bool vd_error_is_set(const struct vd_error *err)
{
	return err && err->code != 0;
}

static inline void vd_error_clear(struct vd_error *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}

#ifdef __cplusplus
}
#endif

#endif
