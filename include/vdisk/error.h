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

/*
 * Messages that are not the error of a call: a warning (a qcow2 image found
 * corrupt while in use, a vhost-user connection closed on a protocol error)
 * or a line of a report (what a consistency check found, as qemu-img check
 * prints it).  The library never writes to stderr or stdout itself: it hands
 * each message, one line without its newline, to the handler the program
 * installed, or drops it when there is none (the default).  The vdisk
 * command installs one that prints "msg\n" on stderr.
 *
 * The handler may be called from any thread, also concurrently (exports run
 * on I/O threads); it must return quickly and must not call
 * vd_message_set_handler().  Only trace points (<vdisk/trace.h>), which the
 * user turns on explicitly, write to stderr directly.
 */
enum vd_message_level {
	VD_MSG_ERROR, /* something is wrong: a corruption found, a connection dropped */
	VD_MSG_WARNING, /* degraded but going on: leaked clusters, an untracked ring */
	VD_MSG_INFO, /* what a repair is doing */
};

typedef void vd_message_fn(void *opaque, enum vd_message_level level, const char *msg);

/* Install @fn (NULL: drop messages) for the whole process. */
void vd_message_set_handler(vd_message_fn *fn, void *opaque);

/* Format a message and pass it to the handler, if any; truncated past 1 KiB. */
void vd_message(enum vd_message_level level, const char *fmt, ...) VD_PRINTF(2, 3);

#ifdef __cplusplus
}
#endif

#endif
