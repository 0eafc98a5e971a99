/* SPDX-License-Identifier: MIT */
/*
 * The commands of `vdisk io`, with qemu-io's (7.2) flags, messages and report
 * lines, so that a script gives the same output through either tool (apart
 * from the timing figures).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <vdisk/iov.h>

#include "tools/io.h"
#include "tools/tools.h"

/* Sizes and numbers. */

int64_t io_cvtnum(const char *s)
{
	int64_t v;
	int ret = tool_parse_size(s, &v);

	return ret < 0 ? ret : v;
}

void io_print_cvtnum_err(int64_t rc, const char *arg)
{
	switch (rc) {
	case -EINVAL:
		printf("Parsing error: non-numeric argument,"
		       " or extraneous/unrecognized suffix -- %s\n",
		       arg);
		break;
	case -ERANGE:
		printf("Parsing error: argument too large -- %s\n", arg);
		break;
	default:
		printf("Parsing error: %s\n", arg);
	}
}

void io_cvtstr(double value, char *str, size_t size)
{
	static const struct {
		double unit;
		const char *suffix;
	} units[] = {
		{1152921504606846976.0, " EiB"},
		{1125899906842624.0, " PiB"},
		{1099511627776.0, " TiB"},
		{1073741824.0, " GiB"},
		{1048576.0, " MiB"},
		{1024.0, " KiB"},
	};
	const char *suffix = " bytes";
	char *trim;
	size_t i;

	snprintf(str, size - 6, "%f", value);
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (value >= units[i].unit) {
			suffix = units[i].suffix;
			snprintf(str, size - 4, "%.3f", value / units[i].unit);
			break;
		}
	}
	trim = strstr(str, ".000");
	if (trim) {
		strcpy(trim, suffix);
	} else {
		strcat(str, suffix);
	}
}

struct timespec io_tsub(struct timespec t1, struct timespec t2)
{
	t1.tv_nsec -= t2.tv_nsec;
	if (t1.tv_nsec < 0) {
		t1.tv_nsec += 1000000000L;
		t1.tv_sec--;
	}
	t1.tv_sec -= t2.tv_sec;
	return t1;
}

static double tdiv(double value, struct timespec tv)
{
	return value / (tv.tv_sec + tv.tv_nsec / 1e9);
}

static void timestr(const struct timespec *tv, char *ts, size_t size, bool verbose)
{
	double frac = tv->tv_nsec / 1e9;
	unsigned int sec = (unsigned int)tv->tv_sec;

	if (verbose || tv->tv_sec) {
		snprintf(ts, size, "%u:%02u:%05.2f", sec / 3600, (sec % 3600) / 60,
			 (sec % 60) + frac);
	} else {
		snprintf(ts, size, "%05.2f sec", frac);
	}
}

void io_print_report(const char *op, const struct timespec *t, int64_t offset, int64_t count,
		     int64_t total, int cnt, bool Cflag)
{
	char s1[64], s2[64], ts[64];

	timestr(t, ts, sizeof(ts), Cflag);
	if (!Cflag) {
		io_cvtstr((double)total, s1, sizeof(s1));
		io_cvtstr(tdiv((double)total, *t), s2, sizeof(s2));
		printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", op, total, count,
		       offset);
		printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", s1, cnt, ts, s2,
		       tdiv((double)cnt, *t));
	} else {
		printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", total, cnt, ts, tdiv((double)total, *t),
		       tdiv((double)cnt, *t));
	}
}

int io_parse_pattern(const char *arg)
{
	char *end = NULL;
	long pattern = strtol(arg, &end, 0);

	if (pattern < 0 || pattern > UCHAR_MAX || *end != '\0') {
		printf("%s is not a valid pattern byte\n", arg);
		return -1;
	}
	return (int)pattern;
}

void io_dump_buffer(const void *buffer, int64_t offset, int64_t len)
{
	const uint8_t *p = buffer;
	int64_t i;
	int j;

	for (i = 0; i < len; i += 16) {
		const uint8_t *s = p;

		printf("%08" PRIx64 ":  ", (uint64_t)(offset + i));
		for (j = 0; j < 16 && i + j < len; j++, p++) {
			printf("%02x ", *p);
		}
		printf(" ");
		for (j = 0; j < 16 && i + j < len; j++, s++) {
			putchar(isalnum(*s) ? *s : '.');
		}
		printf("\n");
	}
}

bool io_buf_is_pattern(const uint8_t *buf, int pattern, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (buf[i] != pattern) {
			return false;
		}
	}
	return true;
}

/* Buffers: aligned for O_DIRECT, or 16 bytes off with -m. */
void *io_alloc(struct io_state *s, size_t len, int pattern)
{
	size_t extra = s->misalign ? MISALIGN_OFFSET : 0;
	uint8_t *p = vd_memalign(4096, len + extra ? len + extra : 1);

	if (!p) {
		return NULL;
	}
	memset(p, pattern, len + extra);
	return p + extra;
}

void io_free(struct io_state *s, void *p)
{
	if (p) {
		free((uint8_t *)p - (s->misalign ? MISALIGN_OFFSET : 0));
	}
}

/* The lengths of readv/writev/aio_*: one buffer split into a vector. */
void *io_create_iovec(struct io_state *s, struct vd_qiov *qiov, char **argv, int nr_iov,
		      int pattern)
{
	size_t *sizes = calloc(nr_iov ? nr_iov : 1, sizeof(*sizes));
	uint64_t count = 0;
	uint8_t *buf = NULL, *p;
	int i;

	if (!sizes) {
		return NULL;
	}
	for (i = 0; i < nr_iov; i++) {
		int64_t len = io_cvtnum(argv[i]);

		if (len < 0) {
			io_print_cvtnum_err(len, argv[i]);
			goto out;
		}
		if (len > IO_MAX_BYTES) {
			printf("Argument '%s' exceeds maximum size %" PRIu64 "\n", argv[i],
			       (uint64_t)IO_MAX_BYTES);
			goto out;
		}
		if (count > (uint64_t)IO_MAX_BYTES - len) {
			printf("The total number of bytes exceed the maximum size %" PRIu64 "\n",
			       (uint64_t)IO_MAX_BYTES);
			goto out;
		}
		sizes[i] = len;
		count += len;
	}
	buf = p = io_alloc(s, count, pattern);
	if (!buf) {
		printf("Out of memory\n");
		goto out;
	}
	vd_qiov_init(qiov, nr_iov);
	for (i = 0; i < nr_iov; i++) {
		if (sizes[i] && vd_qiov_add(qiov, p, sizes[i]) < 0) {
			printf("Out of memory\n");
			vd_qiov_destroy(qiov);
			io_free(s, buf);
			buf = NULL;
			goto out;
		}
		p += sizes[i];
	}
	qiov->size = count;
out:
	free(sizes);
	return buf;
}

void io_now(struct timespec *t)
{
	clock_gettime(CLOCK_MONOTONIC, t);
}

/* read */

static void read_help(void)
{
	printf("\n"
	       " reads a range of bytes from the given offset\n"
	       "\n"
	       " Example:\n"
	       " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n"
	       "\n"
	       " Reads a segment of the currently open file, optionally dumping it to the\n"
	       " standard output stream (with -v option) for subsequent inspection.\n"
	       " -b, -- read from the VM state rather than the virtual disk\n"
	       " -C, -- report statistics in a machine parsable format\n"
	       " -l, -- length for pattern verification (only with -P)\n"
	       " -p, -- ignored for backwards compatibility\n"
	       " -P, -- use a pattern to verify read data\n"
	       " -q, -- quiet mode, do not show I/O statistics\n"
	       " -s, -- start offset for pattern verification (only with -P)\n"
	       " -v, -- dump buffer to standard output\n"
	       "\n");
}

static int read_f(struct io_state *s, int argc, char **argv)
{
	bool Cflag = false, qflag = false, vflag = false, Pflag = false, sflag = false;
	bool lflag = false, bflag = false;
	int64_t offset, count, pattern_offset = 0, pattern_count = 0;
	struct timespec t1, t2;
	int c, ret, pattern = 0;
	uint8_t *buf;

	while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
		switch (c) {
		case 'b':
			bflag = true;
			break;
		case 'C':
			Cflag = true;
			break;
		case 'l':
			lflag = true;
			pattern_count = io_cvtnum(optarg);
			if (pattern_count < 0) {
				io_print_cvtnum_err(pattern_count, optarg);
				return (int)pattern_count;
			}
			break;
		case 'p':
			break;
		case 'P':
			Pflag = true;
			pattern = io_parse_pattern(optarg);
			if (pattern < 0) {
				return -EINVAL;
			}
			break;
		case 'q':
			qflag = true;
			break;
		case 's':
			sflag = true;
			pattern_offset = io_cvtnum(optarg);
			if (pattern_offset < 0) {
				io_print_cvtnum_err(pattern_offset, optarg);
				return (int)pattern_offset;
			}
			break;
		case 'v':
			vflag = true;
			break;
		default:
			io_command_usage(io_find_command("read"));
			return -EINVAL;
		}
	}
	if (optind != argc - 2) {
		io_command_usage(io_find_command("read"));
		return -EINVAL;
	}
	offset = io_cvtnum(argv[optind]);
	if (offset < 0) {
		io_print_cvtnum_err(offset, argv[optind]);
		return (int)offset;
	}
	optind++;
	count = io_cvtnum(argv[optind]);
	if (count < 0) {
		io_print_cvtnum_err(count, argv[optind]);
		return (int)count;
	} else if (count > IO_MAX_BYTES) {
		printf("length cannot exceed %" PRIu64 ", given %s\n", (uint64_t)IO_MAX_BYTES,
		       argv[optind]);
		return -EINVAL;
	}
	if (!Pflag && (lflag || sflag)) {
		io_command_usage(io_find_command("read"));
		return -EINVAL;
	}
	if (!lflag) {
		pattern_count = count - pattern_offset;
	}
	if (pattern_count < 0 || pattern_count + pattern_offset > count) {
		printf("pattern verification range exceeds end of read data\n");
		return -EINVAL;
	}
	if (bflag) {
		/* No VM state area in vdisk's formats (yet): as raw in QEMU. */
		printf("read failed: %s\n", strerror(ENOTSUP));
		return -ENOTSUP;
	}

	buf = io_alloc(s, count, 0xab);
	if (!buf) {
		printf("read failed: %s\n", strerror(ENOMEM));
		return -ENOMEM;
	}
	io_now(&t1);
	ret = vd_blk_pread(s->blk, offset, buf, count);
	io_now(&t2);
	if (ret < 0) {
		printf("read failed: %s\n", strerror(-ret));
		goto out;
	}
	ret = 0;
	if (Pflag && !io_buf_is_pattern(buf + pattern_offset, pattern, pattern_count)) {
		printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
		       offset + pattern_offset, pattern_count);
		ret = -EINVAL;
	}
	if (qflag) {
		goto out;
	}
	if (vflag) {
		io_dump_buffer(buf, offset, count);
	}
	t2 = io_tsub(t2, t1);
	io_print_report("read", &t2, offset, count, count, 1, Cflag);
out:
	io_free(s, buf);
	return ret;
}

/* readv */

static void readv_help(void)
{
	printf("\n"
	       " reads a range of bytes from the given offset into multiple buffers\n"
	       "\n"
	       " Example:\n"
	       " 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
	       "\n"
	       " Reads a segment of the currently open file, optionally dumping it to the\n"
	       " standard output stream (with -v option) for subsequent inspection.\n"
	       " Uses multiple iovec buffers if more than one byte range is specified.\n"
	       " -C, -- report statistics in a machine parsable format\n"
	       " -P, -- use a pattern to verify read data\n"
	       " -v, -- dump buffer to standard output\n"
	       " -q, -- quiet mode, do not show I/O statistics\n"
	       "\n");
}

static int readv_f(struct io_state *s, int argc, char **argv)
{
	bool Cflag = false, qflag = false, vflag = false, Pflag = false;
	struct timespec t1, t2;
	struct vd_qiov qiov;
	int c, ret, pattern = 0;
	int64_t offset;
	uint8_t *buf;

	while ((c = getopt(argc, argv, "CP:qv")) != -1) {
		switch (c) {
		case 'C':
			Cflag = true;
			break;
		case 'P':
			Pflag = true;
			pattern = io_parse_pattern(optarg);
			if (pattern < 0) {
				return -EINVAL;
			}
			break;
		case 'q':
			qflag = true;
			break;
		case 'v':
			vflag = true;
			break;
		default:
			io_command_usage(io_find_command("readv"));
			return -EINVAL;
		}
	}
	if (optind > argc - 2) {
		io_command_usage(io_find_command("readv"));
		return -EINVAL;
	}
	offset = io_cvtnum(argv[optind]);
	if (offset < 0) {
		io_print_cvtnum_err(offset, argv[optind]);
		return (int)offset;
	}
	optind++;
	buf = io_create_iovec(s, &qiov, &argv[optind], argc - optind, 0xab);
	if (!buf) {
		return -EINVAL;
	}
	io_now(&t1);
	ret = vd_blk_preadv(s->blk, offset, &qiov);
	io_now(&t2);
	if (ret < 0) {
		printf("readv failed: %s\n", strerror(-ret));
		goto out;
	}
	ret = 0;
	if (Pflag && !io_buf_is_pattern(buf, pattern, qiov.size)) {
		printf("Pattern verification failed at offset %" PRId64 ", %zu bytes\n", offset,
		       qiov.size);
		ret = -EINVAL;
	}
	if (qflag) {
		goto out;
	}
	if (vflag) {
		io_dump_buffer(buf, offset, qiov.size);
	}
	t2 = io_tsub(t2, t1);
	io_print_report("read", &t2, offset, qiov.size, qiov.size, 1, Cflag);
out:
	io_free(s, buf);
	vd_qiov_destroy(&qiov);
	return ret;
}

/* write */

static void write_help(void)
{
	printf("\n"
	       " writes a range of bytes from the given offset\n"
	       "\n"
	       " Example:\n"
	       " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n"
	       "\n"
	       " Writes into a segment of the currently open file, using a buffer\n"
	       " filled with a set pattern (0xcdcdcdcd).\n"
	       " -b, -- write to the VM state rather than the virtual disk\n"
	       " -c, -- write compressed data with blk_write_compressed\n"
	       " -f, -- use Force Unit Access semantics\n"
	       " -n, -- with -z, don't allow slow fallback\n"
	       " -p, -- ignored for backwards compatibility\n"
	       " -P, -- use different pattern to fill file\n"
	       " -s, -- use a pattern file to fill the write buffer\n"
	       " -C, -- report statistics in a machine parsable format\n"
	       " -q, -- quiet mode, do not show I/O statistics\n"
	       " -u, -- with -z, allow unmapping\n"
	       " -z, -- write zeroes using blk_co_pwrite_zeroes\n"
	       "\n");
}

/* -s FILE: the buffer filled with the file's content, repeated. */
static void *alloc_from_file(struct io_state *s, size_t len, const char *file_name)
{
	uint8_t *buf, *p, *end;
	size_t got;
	FILE *f = fopen(file_name, "r");

	if (!f) {
		perror(file_name);
		return NULL;
	}
	buf = io_alloc(s, len, 0);
	if (!buf) {
		fclose(f);
		return NULL;
	}
	got = fread(buf, 1, len, f);
	if (ferror(f)) {
		perror(file_name);
		goto fail;
	}
	if (got == 0) {
		fprintf(stderr, "%s: file is empty\n", file_name);
		goto fail;
	}
	fclose(f);
	end = buf + len;
	for (p = buf + got; p < end; p += got) {
		memcpy(p, buf, (size_t)(end - p) < got ? (size_t)(end - p) : got);
	}
	return buf;
fail:
	fclose(f);
	io_free(s, buf);
	return NULL;
}

static int write_f(struct io_state *s, int argc, char **argv)
{
	bool Cflag = false, qflag = false, bflag = false, Pflag = false, zflag = false;
	bool cflag = false, sflag = false;
	const char *file_name = NULL;
	int c, ret, flags = 0, pattern = 0xcd;
	struct timespec t1, t2;
	int64_t offset, count;
	uint8_t *buf = NULL;

	while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
		switch (c) {
		case 'b':
			bflag = true;
			break;
		case 'c':
			cflag = true;
			break;
		case 'C':
			Cflag = true;
			break;
		case 'f':
			flags |= VD_REQ_FUA;
			break;
		case 'n':
			flags |= VD_REQ_NO_FALLBACK;
			break;
		case 'p':
			break;
		case 'P':
			Pflag = true;
			pattern = io_parse_pattern(optarg);
			if (pattern < 0) {
				return -EINVAL;
			}
			break;
		case 'q':
			qflag = true;
			break;
		case 's':
			sflag = true;
			file_name = optarg;
			break;
		case 'u':
			flags |= VD_REQ_MAY_UNMAP;
			break;
		case 'z':
			zflag = true;
			break;
		default:
			io_command_usage(io_find_command("write"));
			return -EINVAL;
		}
	}
	if (optind != argc - 2) {
		io_command_usage(io_find_command("write"));
		return -EINVAL;
	}
	if (bflag && zflag) {
		printf("-b and -z cannot be specified at the same time\n");
		return -EINVAL;
	}
	if ((flags & VD_REQ_FUA) && (bflag || cflag)) {
		printf("-f and -b or -c cannot be specified at the same time\n");
		return -EINVAL;
	}
	if ((flags & VD_REQ_NO_FALLBACK) && !zflag) {
		printf("-n requires -z to be specified\n");
		return -EINVAL;
	}
	if ((flags & VD_REQ_MAY_UNMAP) && !zflag) {
		printf("-u requires -z to be specified\n");
		return -EINVAL;
	}
	if (zflag + Pflag + sflag > 1) {
		printf("Only one of -z, -P, and -s can be specified at the same time\n");
		return -EINVAL;
	}
	offset = io_cvtnum(argv[optind]);
	if (offset < 0) {
		io_print_cvtnum_err(offset, argv[optind]);
		return (int)offset;
	}
	optind++;
	count = io_cvtnum(argv[optind]);
	if (count < 0) {
		io_print_cvtnum_err(count, argv[optind]);
		return (int)count;
	} else if (count > IO_MAX_BYTES && !(flags & VD_REQ_NO_FALLBACK)) {
		printf("length cannot exceed %" PRIu64 " without -n, given %s\n",
		       (uint64_t)IO_MAX_BYTES, argv[optind]);
		return -EINVAL;
	}
	if (bflag || cflag) {
		if (offset % 512) {
			printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", offset);
			return -EINVAL;
		}
		if (count % 512) {
			printf("%" PRId64 " is not a sector-aligned value for 'count'\n", count);
			return -EINVAL;
		}
	}
	if (bflag) {
		printf("write failed: %s\n", strerror(ENOTSUP));
		return -ENOTSUP;
	}
	if (!zflag) {
		buf = sflag ? alloc_from_file(s, count, file_name) : io_alloc(s, count, pattern);
		if (!buf) {
			return -EINVAL;
		}
	}
	if (cflag) {
		flags |= VD_REQ_COMPRESSED;
	}

	io_now(&t1);
	if (zflag) {
		ret = vd_blk_pwrite_zeroes(s->blk, offset, count, flags);
	} else {
		ret = vd_blk_pwrite(s->blk, offset, buf, count, flags);
	}
	io_now(&t2);
	if (ret < 0) {
		printf("write failed: %s\n", strerror(-ret));
		goto out;
	}
	ret = 0;
	if (qflag) {
		goto out;
	}
	t2 = io_tsub(t2, t1);
	io_print_report("wrote", &t2, offset, count, count, 1, Cflag);
out:
	io_free(s, buf);
	return ret;
}

/* writev */

static void writev_help(void)
{
	printf("\n"
	       " writes a range of bytes from the given offset source from multiple buffers\n"
	       "\n"
	       " Example:\n"
	       " 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
	       "\n"
	       " Writes into a segment of the currently open file, using a buffer\n"
	       " filled with a set pattern (0xcdcdcdcd).\n"
	       " -P, -- use different pattern to fill file\n"
	       " -C, -- report statistics in a machine parsable format\n"
	       " -f, -- use Force Unit Access semantics\n"
	       " -q, -- quiet mode, do not show I/O statistics\n"
	       "\n");
}

static int writev_f(struct io_state *s, int argc, char **argv)
{
	bool Cflag = false, qflag = false;
	int c, ret, flags = 0, pattern = 0xcd;
	struct timespec t1, t2;
	struct vd_qiov qiov;
	int64_t offset;
	uint8_t *buf;

	while ((c = getopt(argc, argv, "CfqP:")) != -1) {
		switch (c) {
		case 'C':
			Cflag = true;
			break;
		case 'f':
			flags |= VD_REQ_FUA;
			break;
		case 'q':
			qflag = true;
			break;
		case 'P':
			pattern = io_parse_pattern(optarg);
			if (pattern < 0) {
				return -EINVAL;
			}
			break;
		default:
			io_command_usage(io_find_command("writev"));
			return -EINVAL;
		}
	}
	if (optind > argc - 2) {
		io_command_usage(io_find_command("writev"));
		return -EINVAL;
	}
	offset = io_cvtnum(argv[optind]);
	if (offset < 0) {
		io_print_cvtnum_err(offset, argv[optind]);
		return (int)offset;
	}
	optind++;
	buf = io_create_iovec(s, &qiov, &argv[optind], argc - optind, pattern);
	if (!buf) {
		return -EINVAL;
	}
	io_now(&t1);
	ret = vd_blk_pwritev(s->blk, offset, &qiov, flags);
	io_now(&t2);
	if (ret < 0) {
		printf("writev failed: %s\n", strerror(-ret));
		goto out;
	}
	ret = 0;
	if (qflag) {
		goto out;
	}
	t2 = io_tsub(t2, t1);
	io_print_report("wrote", &t2, offset, qiov.size, qiov.size, 1, Cflag);
out:
	io_free(s, buf);
	vd_qiov_destroy(&qiov);
	return ret;
}

/* truncate, length, info */

static int truncate_f(struct io_state *s, int argc, char **argv)
{
	enum vd_prealloc prealloc = VD_PREALLOC_OFF;
	struct vd_error err = {0};
	int64_t offset;
	int c, i, ret;

	while ((c = getopt(argc, argv, "m:")) != -1) {
		switch (c) {
		case 'm':
			for (i = 0; vd_prealloc_names[i]; i++) {
				if (!strcmp(vd_prealloc_names[i], optarg)) {
					break;
				}
			}
			if (!vd_prealloc_names[i]) {
				tool_error("Invalid preallocation mode '%s'", optarg);
				return -EINVAL;
			}
			prealloc = (enum vd_prealloc)i;
			break;
		default:
			io_command_usage(io_find_command("truncate"));
			return -EINVAL;
		}
	}
	if (optind >= argc) {
		io_command_usage(io_find_command("truncate"));
		return -EINVAL;
	}
	offset = io_cvtnum(argv[optind]);
	if (offset < 0) {
		io_print_cvtnum_err(offset, argv[1]);
		return (int)offset;
	}
	ret = vd_node_truncate(vd_blk_root(s->blk), offset, false, prealloc, &err);
	if (ret < 0) {
		tool_error("%s", err.msg[0] ? err.msg : strerror(-ret));
		return ret;
	}
	return 0;
}

static int length_f(struct io_state *s, int argc, char **argv)
{
	int64_t size = vd_blk_getlength(s->blk);
	char s1[64];

	if (size < 0) {
		printf("getlength: %s\n", strerror((int)-size));
		return (int)size;
	}
	io_cvtstr((double)size, s1, sizeof(s1));
	printf("%s\n", s1);
	return 0;
}

static int info_f(struct io_state *s, int argc, char **argv)
{
	struct vd_image_info info;
	struct vd_error err = {0};
	char s1[64], s2[64];
	int ret;

	printf("format name: %s\n", vd_node_format(vd_blk_root(s->blk)));
	memset(&info, 0, sizeof(info));
	ret = vd_node_get_info(vd_blk_root(s->blk), &info, &err);
	if (ret < 0) {
		return ret;
	}
	io_cvtstr((double)info.cluster_size, s1, sizeof(s1));
	io_cvtstr(0, s2, sizeof(s2));
	printf("cluster size: %s\n", s1);
	printf("vm state offset: %s\n", s2);
	if (info.format_specific && vd_opts_count(info.format_specific) > 0) {
		printf("Format specific information:\n");
		tool_dump_specific(info.format_specific, 4);
	}
	vd_image_info_cleanup(&info);
	return 0;
}

/* alloc, map */

/* Allocation in the image itself, not its backing chain (bdrv_is_allocated). */
static int is_allocated(struct io_state *s, int64_t offset, int64_t bytes, int64_t *pnum)
{
	return vd_node_is_allocated_above(vd_blk_root(s->blk), vd_node_backing(vd_blk_root(s->blk)),
					  offset, bytes, pnum);
}

static int alloc_f(struct io_state *s, int argc, char **argv)
{
	int64_t offset, start, remaining, count, num, sum_alloc = 0;
	char s1[64];
	int ret;

	start = offset = io_cvtnum(argv[1]);
	if (offset < 0) {
		io_print_cvtnum_err(offset, argv[1]);
		return (int)offset;
	}
	if (argc == 3) {
		count = io_cvtnum(argv[2]);
		if (count < 0) {
			io_print_cvtnum_err(count, argv[2]);
			return (int)count;
		}
	} else {
		count = 512;
	}
	remaining = count;
	while (remaining) {
		ret = is_allocated(s, offset, remaining, &num);
		if (ret < 0) {
			printf("is_allocated failed: %s\n", strerror(-ret));
			return ret;
		}
		offset += num;
		remaining -= num;
		if (ret) {
			sum_alloc += num;
		}
		if (num == 0) {
			count -= remaining;
			remaining = 0;
		}
	}
	io_cvtstr((double)start, s1, sizeof(s1));
	printf("%" PRId64 "/%" PRId64 " bytes allocated at offset %s\n", sum_alloc, count, s1);
	return 0;
}

static int map_is_allocated(struct io_state *s, int64_t offset, int64_t bytes, int64_t *pnum)
{
	int64_t num;
	int ret, firstret;

	ret = is_allocated(s, offset, bytes, &num);
	if (ret < 0) {
		return ret;
	}
	firstret = ret;
	*pnum = num;
	while (bytes > 0 && ret == firstret) {
		offset += num;
		bytes -= num;
		ret = is_allocated(s, offset, bytes, &num);
		if (ret == firstret && num) {
			*pnum += num;
		} else {
			break;
		}
	}
	return firstret;
}

static int map_f(struct io_state *s, int argc, char **argv)
{
	int64_t offset = 0, bytes, num;
	char s1[64], s2[64];
	int ret;

	bytes = vd_blk_getlength(s->blk);
	if (bytes < 0) {
		tool_error("Failed to query image length: %s", strerror((int)-bytes));
		return (int)bytes;
	}
	while (bytes) {
		ret = map_is_allocated(s, offset, bytes, &num);
		if (ret < 0) {
			tool_error("Failed to get allocation status: %s", strerror(-ret));
			return ret;
		} else if (!num) {
			tool_error("Unexpected end of image");
			return -EIO;
		}
		io_cvtstr((double)num, s1, sizeof(s1));
		io_cvtstr((double)offset, s2, sizeof(s2));
		printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n", s1,
		       (uint64_t)num, ret ? "    allocated" : "not allocated", s2,
		       (uint64_t)offset);
		offset += num;
		bytes -= num;
	}
	return 0;
}

/* sleep, help, quit */

static void sleep_done(void *opaque)
{
	*(bool *)opaque = true;
}

static int sleep_f(struct io_state *s, int argc, char **argv)
{
	struct vd_timer *timer;
	bool done = false;
	char *end;
	long ms;

	ms = strtol(argv[1], &end, 10);
	if (ms < 0 || *end != '\0') {
		printf("%s is not a valid number\n", argv[1]);
		return -EINVAL;
	}
	/* Run the loop meanwhile: aio completions report as in qemu-io. */
	timer = vd_timer_new(s->loop, sleep_done, &done);
	if (!timer) {
		usleep(ms * 1000);
		return 0;
	}
	vd_timer_mod(timer, vd_clock_ns() + (int64_t)ms * 1000000);
	while (!done) {
		vd_loop_run_once(s->loop, true);
	}
	vd_timer_free(timer);
	return 0;
}

static int help_f(struct io_state *s, int argc, char **argv);

static int quit_f(struct io_state *s, int argc, char **argv)
{
	s->quit = true;
	return 0;
}

/* Sorted by name, as qemu-io lists them. */
static const struct io_cmd commands[] = {
	{"aio_discard", NULL, aio_discard_f, 2, -1, "[-Cq] off len",
	 "asynchronously discards a number of bytes", NULL, false, true},
	{"aio_flush", NULL, aio_flush_f, 0, 0, NULL, "completes all outstanding aio requests", NULL,
	 false, false},
	{"aio_read", NULL, aio_read_f, 2, -1, "[-Ciqv] [-P pattern] off len [len..]",
	 "asynchronously reads a number of bytes", aio_read_help, false, false},
	{"aio_write", NULL, aio_write_f, 2, -1, "[-Cfiquz] [-P pattern] off len [len..]",
	 "asynchronously writes a number of bytes", aio_write_help, false, true},
	{"alloc", "a", alloc_f, 1, 2, "offset [count]", "checks if offset is allocated in the file",
	 NULL, false, false},
	{"discard", "d", discard_f, 2, -1, "[-Cq] off len",
	 "discards a number of bytes at a specified offset", discard_help, false, true},
	{"flush", "f", flush_f, 0, 0, NULL, "flush all in-core file state to disk", NULL, false,
	 false},
	{"help", "?", help_f, 0, 1, "[command]", "help for one or all commands", NULL, true, false},
	{"info", "i", info_f, 0, 0, NULL, "prints information about the current file", NULL, false,
	 false},
	{"length", "l", length_f, 0, 0, NULL, "gets the length of the current file", NULL, false,
	 false},
	{"map", NULL, map_f, 0, 0, "", "prints the allocated areas of a file", NULL, false, false},
	{"quit", "q", quit_f, 0, 0, NULL, "exit the program", NULL, true, false},
	{"read", "r", read_f, 2, -1, "[-abCqv] [-P pattern [-s off] [-l len]] off len",
	 "reads a number of bytes at a specified offset", read_help, false, false},
	{"readv", NULL, readv_f, 2, -1, "[-Cqv] [-P pattern] off len [len..]",
	 "reads a number of bytes at a specified offset", readv_help, false, false},
	{"sleep", NULL, sleep_f, 1, 1, NULL, "waits for the given value in milliseconds", NULL,
	 true, false},
	{"truncate", "t", truncate_f, 1, 3, "[-m prealloc_mode] off",
	 "truncates the current file at the given offset", NULL, false, true},
	{"write", "w", write_f, 2, -1, "[-bcCfnquz] [-P pattern | -s source_file] off len",
	 "writes a number of bytes at a specified offset", write_help, false, true},
	{"writev", NULL, writev_f, 2, -1, "[-Cfq] [-P pattern] off len [len..]",
	 "writes a number of bytes at a specified offset", writev_help, false, true},
};

#define N_COMMANDS ((int)(sizeof(commands) / sizeof(commands[0])))

const struct io_cmd *io_find_command(const char *name)
{
	int i;

	for (i = 0; i < N_COMMANDS; i++) {
		if (!strcmp(commands[i].name, name) ||
		    (commands[i].altname && !strcmp(commands[i].altname, name))) {
			return &commands[i];
		}
	}
	return NULL;
}

static void help_oneline(const char *name, const struct io_cmd *ct)
{
	printf("%s ", name);
	if (ct->args) {
		printf("%s ", ct->args);
	}
	printf("-- %s\n", ct->oneline);
}

void io_command_usage(const struct io_cmd *ct)
{
	printf("%s %s -- %s\n", ct->name, ct->args ? ct->args : "", ct->oneline);
}

static int help_f(struct io_state *s, int argc, char **argv)
{
	const struct io_cmd *ct;
	int i;

	if (argc == 1) {
		for (i = 0; i < N_COMMANDS; i++) {
			help_oneline(commands[i].name, &commands[i]);
		}
		printf("\nUse 'help commandname' for extended help.\n");
		return 0;
	}
	ct = io_find_command(argv[1]);
	if (!ct) {
		printf("command %s not found\n", argv[1]);
		return -EINVAL;
	}
	help_oneline(argv[1], ct);
	if (ct->help) {
		ct->help();
	}
	return 0;
}

int io_command(struct io_state *s, char *line)
{
	const struct io_cmd *ct;
	char *argv[256];
	char *p, *save = NULL;
	int argc = 0;

	for (p = strtok_r(line, " ", &save); p; p = strtok_r(NULL, " ", &save)) {
		if (argc == (int)(sizeof(argv) / sizeof(argv[0])) - 1) {
			fprintf(stderr, "too many arguments\n");
			return -E2BIG;
		}
		argv[argc++] = p;
	}
	argv[argc] = NULL;
	if (argc == 0) {
		return 0;
	}
	ct = io_find_command(argv[0]);
	if (!ct) {
		fprintf(stderr, "command \"%s\" not found\n", argv[0]);
		return -EINVAL;
	}
	if (!ct->nofile_ok && !s->blk) {
		fprintf(stderr, "no file open, try 'help open'\n");
		return -EINVAL;
	}
	if (argc - 1 < ct->argmin || (ct->argmax != -1 && argc - 1 > ct->argmax)) {
		if (ct->argmax == -1) {
			fprintf(stderr,
				"bad argument count %d to %s, expected at least %d arguments\n",
				argc - 1, argv[0], ct->argmin);
		} else if (ct->argmin == ct->argmax) {
			fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n",
				argc - 1, argv[0], ct->argmin);
		} else {
			fprintf(stderr,
				"bad argument count %d to %s, expected between %d and %d "
				"arguments\n",
				argc - 1, argv[0], ct->argmin, ct->argmax);
		}
		return -EINVAL;
	}
	if (ct->needs_write && !vd_blk_is_writable(s->blk)) {
		tool_error("Block node is read-only");
		return -EPERM;
	}
	optind = 0; /* glibc: reinitialise getopt for the new argv */
	return ct->fn(s, argc, argv);
}
