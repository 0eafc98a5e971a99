/* SPDX-License-Identifier: MIT */
/*
 * `vdisk io`: qemu-io's command interpreter (tools/io.c runs it,
 * tools/io-cmds.c and tools/io-aio.c hold the commands).
 */
#ifndef VDISK_TOOLS_IO_H
#define VDISK_TOOLS_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <vdisk/iov.h>

#include <vdisk/backend.h>
#include <vdisk/loop.h>

struct io_state {
	struct vd_blk *blk; /* NULL: no file open */
	struct vd_loop *loop;
	int aio_in_flight; /* aio_read/aio_write/... not yet completed */
	bool misalign; /* -m: buffers 16 bytes off alignment */
	bool quit; /* "quit" was run */
};

/* Run one command line.  Returns 0, or -errno when the command failed (the
 * exit status of `vdisk io` becomes 1).  The line is modified. */
int io_command(struct io_state *s, char *line);

/* Wait for every aio_* request to complete (their reports print). */
void io_drain(struct io_state *s);

/* qemu-io's human-readable size: "4 KiB", "1.500 KiB", "512 bytes". */
void io_cvtstr(double value, char *str, size_t size);

/* A command: qemu-io's cmdinfo_t. */
struct io_cmd {
	const char *name;
	const char *altname;
	int (*fn)(struct io_state *s, int argc, char **argv);
	int argmin, argmax; /* argmax -1: no limit */
	const char *args; /* NULL: none shown */
	const char *oneline;
	void (*help)(void);
	bool nofile_ok; /* runs without an image */
	bool needs_write; /* fails on a read-only image */
};

/* Shared by io-cmds.c and io-aio.c: qemu-io's helpers, same output. */
#define MISALIGN_OFFSET 16
/*
 * The length limit qemu-io checks and prints (QEMU 7.2 BDRV_REQUEST_MAX_BYTES,
 * INT_MAX rounded down to a sector).  Longer requests than the library takes
 * (VD_REQUEST_MAX_BYTES) then fail in the library with EINVAL.
 */
#define IO_MAX_BYTES ((int64_t)(INT32_MAX & ~511))
int64_t io_cvtnum(const char *s);
void io_print_cvtnum_err(int64_t rc, const char *arg);
struct timespec io_tsub(struct timespec t1, struct timespec t2);
void io_now(struct timespec *t);
void io_print_report(const char *op, const struct timespec *t, int64_t offset, int64_t count,
		     int64_t total, int cnt, bool Cflag);
int io_parse_pattern(const char *arg);
void io_dump_buffer(const void *buffer, int64_t offset, int64_t len);
bool io_buf_is_pattern(const uint8_t *buf, int pattern, size_t len);
void *io_alloc(struct io_state *s, size_t len, int pattern);
void io_free(struct io_state *s, void *p);
void *io_create_iovec(struct io_state *s, struct vd_qiov *qiov, char **argv, int nr_iov,
		      int pattern);
const struct io_cmd *io_find_command(const char *name);
void io_command_usage(const struct io_cmd *ct);

/* Commands in io-aio.c. */
int aio_read_f(struct io_state *s, int argc, char **argv);
int aio_write_f(struct io_state *s, int argc, char **argv);
int aio_discard_f(struct io_state *s, int argc, char **argv);
int aio_flush_f(struct io_state *s, int argc, char **argv);
int discard_f(struct io_state *s, int argc, char **argv);
int flush_f(struct io_state *s, int argc, char **argv);
void aio_read_help(void);
void aio_write_help(void);
void discard_help(void);

#endif
