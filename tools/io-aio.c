/* SPDX-License-Identifier: MIT */
/*
 * `vdisk io`: the asynchronous commands (aio_read, aio_write, aio_discard,
 * aio_flush) and the other request commands without a buffer to verify
 * (discard, flush).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <vdisk/iov.h>

#include "tools/io.h"
#include "tools/tools.h"

/* aio_read, aio_write, aio_discard, aio_flush */

struct aio_ctx {
	struct io_state *s;
	struct vd_qiov qiov;
	uint8_t *buf; /* NULL for zero writes and discards */
	int64_t offset;
	size_t size;
	bool qflag, vflag, Cflag, Pflag;
	int pattern;
	struct timespec t1;
};

static void aio_ctx_free(struct aio_ctx *ctx)
{
	if (ctx->buf) {
		io_free(ctx->s, ctx->buf);
		vd_qiov_destroy(&ctx->qiov);
	}
	ctx->s->aio_in_flight--;
	free(ctx);
}

static void aio_write_done(void *opaque, int ret)
{
	struct aio_ctx *ctx = opaque;
	struct timespec t2;

	io_now(&t2);
	if (ret < 0) {
		printf("aio_write failed: %s\n", strerror(-ret));
	} else if (!ctx->qflag) {
		t2 = io_tsub(t2, ctx->t1);
		io_print_report("wrote", &t2, ctx->offset, ctx->size, ctx->size, 1, ctx->Cflag);
	}
	aio_ctx_free(ctx);
}

static void aio_read_done(void *opaque, int ret)
{
	struct aio_ctx *ctx = opaque;
	struct timespec t2;

	io_now(&t2);
	if (ret < 0) {
		printf("readv failed: %s\n", strerror(-ret));
		goto out;
	}
	if (ctx->Pflag && !io_buf_is_pattern(ctx->buf, ctx->pattern, ctx->size)) {
		printf("Pattern verification failed at offset %" PRId64 ", %zu bytes\n",
		       ctx->offset, ctx->size);
	}
	if (ctx->qflag) {
		goto out;
	}
	if (ctx->vflag) {
		io_dump_buffer(ctx->buf, ctx->offset, ctx->size);
	}
	t2 = io_tsub(t2, ctx->t1);
	io_print_report("read", &t2, ctx->offset, ctx->size, ctx->size, 1, ctx->Cflag);
out:
	aio_ctx_free(ctx);
}

static void aio_discard_done(void *opaque, int ret)
{
	struct aio_ctx *ctx = opaque;
	struct timespec t2;

	io_now(&t2);
	if (ret < 0) {
		printf("aio_discard failed: %s\n", strerror(-ret));
	} else if (!ctx->qflag) {
		t2 = io_tsub(t2, ctx->t1);
		io_print_report("discarded ", &t2, ctx->offset, ctx->size, ctx->size, 1,
				ctx->Cflag);
	}
	aio_ctx_free(ctx);
}

static struct aio_ctx *aio_ctx_new(struct io_state *s)
{
	struct aio_ctx *ctx = calloc(1, sizeof(*ctx));

	if (ctx) {
		ctx->s = s;
	} else {
		printf("Out of memory\n");
	}
	return ctx;
}

void aio_read_help(void)
{
	printf("\n"
	       " asynchronously reads a range of bytes from the given offset\n"
	       "\n"
	       " Example:\n"
	       " 'aio_read -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
	       "\n"
	       " Reads a segment of the currently open file, optionally dumping it to the\n"
	       " standard output stream (with -v option) for subsequent inspection.\n"
	       " The read is performed asynchronously and the aio_flush command must be\n"
	       " used to ensure all outstanding aio requests have been completed.\n"
	       " Note that due to its asynchronous nature, this command will be\n"
	       " considered successful once the request is submitted, independently\n"
	       " of potential I/O errors or pattern mismatches.\n"
	       " -C, -- report statistics in a machine parsable format\n"
	       " -P, -- use a pattern to verify read data\n"
	       " -i, -- treat request as invalid, for exercising stats\n"
	       " -v, -- dump buffer to standard output\n"
	       " -q, -- quiet mode, do not show I/O statistics\n"
	       "\n");
}

int aio_read_f(struct io_state *s, int argc, char **argv)
{
	struct aio_ctx *ctx = aio_ctx_new(s);
	int c;

	if (!ctx) {
		return -ENOMEM;
	}
	while ((c = getopt(argc, argv, "CP:iqv")) != -1) {
		switch (c) {
		case 'C':
			ctx->Cflag = true;
			break;
		case 'P':
			ctx->Pflag = true;
			ctx->pattern = io_parse_pattern(optarg);
			if (ctx->pattern < 0) {
				free(ctx);
				return -EINVAL;
			}
			break;
		case 'i':
			printf("injecting invalid read request\n");
			free(ctx);
			return 0;
		case 'q':
			ctx->qflag = true;
			break;
		case 'v':
			ctx->vflag = true;
			break;
		default:
			free(ctx);
			io_command_usage(io_find_command("aio_read"));
			return -EINVAL;
		}
	}
	if (optind > argc - 2) {
		free(ctx);
		io_command_usage(io_find_command("aio_read"));
		return -EINVAL;
	}
	ctx->offset = io_cvtnum(argv[optind]);
	if (ctx->offset < 0) {
		int ret = (int)ctx->offset;

		io_print_cvtnum_err(ret, argv[optind]);
		free(ctx);
		return ret;
	}
	optind++;
	ctx->buf = io_create_iovec(s, &ctx->qiov, &argv[optind], argc - optind, 0xab);
	if (!ctx->buf) {
		free(ctx);
		return -EINVAL;
	}
	ctx->size = ctx->qiov.size;
	io_now(&ctx->t1);
	s->aio_in_flight++;
	vd_blk_aio_preadv(s->blk, ctx->offset, &ctx->qiov, 0, aio_read_done, ctx);
	return 0;
}

void aio_write_help(void)
{
	printf("\n"
	       " asynchronously writes a range of bytes from the given offset source\n"
	       " from multiple buffers\n"
	       "\n"
	       " Example:\n"
	       " 'aio_write 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
	       "\n"
	       " Writes into a segment of the currently open file, using a buffer\n"
	       " filled with a set pattern (0xcdcdcdcd).\n"
	       " The write is performed asynchronously and the aio_flush command must be\n"
	       " used to ensure all outstanding aio requests have been completed.\n"
	       " Note that due to its asynchronous nature, this command will be\n"
	       " considered successful once the request is submitted, independently\n"
	       " of potential I/O errors or pattern mismatches.\n"
	       " -P, -- use different pattern to fill file\n"
	       " -C, -- report statistics in a machine parsable format\n"
	       " -f, -- use Force Unit Access semantics\n"
	       " -i, -- treat request as invalid, for exercising stats\n"
	       " -q, -- quiet mode, do not show I/O statistics\n"
	       " -u, -- with -z, allow unmapping\n"
	       " -z, -- write zeroes using blk_aio_pwrite_zeroes\n"
	       "\n");
}

int aio_write_f(struct io_state *s, int argc, char **argv)
{
	struct aio_ctx *ctx = aio_ctx_new(s);
	int c, flags = 0, pattern = 0xcd;
	bool zflag = false;

	if (!ctx) {
		return -ENOMEM;
	}
	while ((c = getopt(argc, argv, "CfiqP:uz")) != -1) {
		switch (c) {
		case 'C':
			ctx->Cflag = true;
			break;
		case 'f':
			flags |= VD_REQ_FUA;
			break;
		case 'q':
			ctx->qflag = true;
			break;
		case 'u':
			flags |= VD_REQ_MAY_UNMAP;
			break;
		case 'P':
			pattern = io_parse_pattern(optarg);
			if (pattern < 0) {
				free(ctx);
				return -EINVAL;
			}
			break;
		case 'i':
			printf("injecting invalid write request\n");
			free(ctx);
			return 0;
		case 'z':
			zflag = true;
			break;
		default:
			free(ctx);
			io_command_usage(io_find_command("aio_write"));
			return -EINVAL;
		}
	}
	if (optind > argc - 2) {
		free(ctx);
		io_command_usage(io_find_command("aio_write"));
		return -EINVAL;
	}
	if (zflag && optind != argc - 2) {
		printf("-z supports only a single length parameter\n");
		free(ctx);
		return -EINVAL;
	}
	if ((flags & VD_REQ_MAY_UNMAP) && !zflag) {
		printf("-u requires -z to be specified\n");
		free(ctx);
		return -EINVAL;
	}
	ctx->offset = io_cvtnum(argv[optind]);
	if (ctx->offset < 0) {
		int ret = (int)ctx->offset;

		io_print_cvtnum_err(ret, argv[optind]);
		free(ctx);
		return ret;
	}
	optind++;
	if (zflag) {
		int64_t count = io_cvtnum(argv[optind]);

		if (count < 0) {
			io_print_cvtnum_err(count, argv[optind]);
			free(ctx);
			return (int)count;
		}
		ctx->size = count;
		io_now(&ctx->t1);
		s->aio_in_flight++;
		vd_blk_aio_pwrite_zeroes(s->blk, ctx->offset, count, flags, aio_write_done, ctx);
		return 0;
	}
	ctx->buf = io_create_iovec(s, &ctx->qiov, &argv[optind], argc - optind, pattern);
	if (!ctx->buf) {
		free(ctx);
		return -EINVAL;
	}
	ctx->size = ctx->qiov.size;
	io_now(&ctx->t1);
	s->aio_in_flight++;
	vd_blk_aio_pwritev(s->blk, ctx->offset, &ctx->qiov, flags, aio_write_done, ctx);
	return 0;
}

void discard_help(void)
{
	printf("\n"
	       " discards a range of bytes from the given offset\n"
	       "\n"
	       " Example:\n"
	       " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n"
	       "\n"
	       " Discards a segment of the currently open file.\n"
	       " -C, -- report statistics in a machine parsable format\n"
	       " -q, -- quiet mode, do not show I/O statistics\n"
	       "\n");
}

static int discard_args(const char *name, int argc, char **argv, bool *Cflag, bool *qflag,
			int64_t *offset, int64_t *bytes, bool limit)
{
	int c;

	while ((c = getopt(argc, argv, "Cq")) != -1) {
		switch (c) {
		case 'C':
			*Cflag = true;
			break;
		case 'q':
			*qflag = true;
			break;
		default:
			io_command_usage(io_find_command(name));
			return -EINVAL;
		}
	}
	if (optind != argc - 2) {
		io_command_usage(io_find_command(name));
		return -EINVAL;
	}
	*offset = io_cvtnum(argv[optind]);
	if (*offset < 0) {
		io_print_cvtnum_err(*offset, argv[optind]);
		return (int)*offset;
	}
	optind++;
	*bytes = io_cvtnum(argv[optind]);
	if (*bytes < 0) {
		io_print_cvtnum_err(*bytes, argv[optind]);
		return (int)*bytes;
	} else if (limit && *bytes > IO_MAX_BYTES) {
		printf("length cannot exceed %" PRIu64 ", given %s\n", (uint64_t)IO_MAX_BYTES,
		       argv[optind]);
		return -EINVAL;
	}
	return 0;
}

int discard_f(struct io_state *s, int argc, char **argv)
{
	bool Cflag = false, qflag = false;
	struct timespec t1, t2;
	int64_t offset, bytes;
	int ret;

	ret = discard_args("discard", argc, argv, &Cflag, &qflag, &offset, &bytes, true);
	if (ret < 0) {
		return ret;
	}
	io_now(&t1);
	ret = vd_blk_pdiscard(s->blk, offset, bytes);
	io_now(&t2);
	if (ret < 0) {
		printf("discard failed: %s\n", strerror(-ret));
		return ret;
	}
	if (!qflag) {
		t2 = io_tsub(t2, t1);
		io_print_report("discard", &t2, offset, bytes, bytes, 1, Cflag);
	}
	return 0;
}

int aio_discard_f(struct io_state *s, int argc, char **argv)
{
	bool Cflag = false, qflag = false;
	int64_t offset, bytes;
	struct aio_ctx *ctx;
	int ret;

	ret = discard_args("aio_discard", argc, argv, &Cflag, &qflag, &offset, &bytes, false);
	if (ret < 0) {
		return ret;
	}
	ctx = aio_ctx_new(s);
	if (!ctx) {
		return -ENOMEM;
	}
	ctx->Cflag = Cflag;
	ctx->qflag = qflag;
	ctx->offset = offset;
	ctx->size = bytes;
	io_now(&ctx->t1);
	s->aio_in_flight++;
	vd_blk_aio_pdiscard(s->blk, offset, bytes, aio_discard_done, ctx);
	return 0;
}

void io_drain(struct io_state *s)
{
	while (s->aio_in_flight > 0) {
		if (!vd_loop_run_once(s->loop, true) && s->aio_in_flight > 0) {
			/* Nothing could wake us: let the library settle it. */
			if (s->blk) {
				vd_blk_drain(s->blk);
			}
			if (s->aio_in_flight > 0 && !vd_loop_run_once(s->loop, false)) {
				tool_error("%d aio requests never completed", s->aio_in_flight);
				return;
			}
		}
	}
	fflush(stdout);
}

int aio_flush_f(struct io_state *s, int argc, char **argv)
{
	io_drain(s);
	return 0;
}

int flush_f(struct io_state *s, int argc, char **argv)
{
	return vd_blk_flush(s->blk);
}
