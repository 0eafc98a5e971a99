/* SPDX-License-Identifier: MIT */
/*
 * QEMU's qtest wire protocol (QEMU 7.2 softmmu/qtest.c, "QTest Protocol"):
 * one command per line, words separated by single spaces, numbers in C
 * notation (strtoul base 0).  Replies are those of QEMU 7.2:
 *
 *   outb|outw|outl ADDR VALUE        OK
 *   inb|inw|inl ADDR                 OK 0x%04x
 *   writeb|w|l|q ADDR VALUE          OK
 *   readb|w|l|q ADDR                 OK 0x%016x
 *   read ADDR SIZE                   OK 0x<2*SIZE hex digits>
 *   write ADDR SIZE 0xDATA           OK (DATA shorter than SIZE: zero-filled)
 *   b64read ADDR SIZE                OK <base64>
 *   b64write ADDR SIZE B64           OK
 *   memset ADDR SIZE BYTE            OK
 *   irq_intercept_in|out PATH        OK, FAIL Unknown device,
 *                                    FAIL IRQ intercept already enabled
 *   set_irq_in PATH NAME N LEVEL     OK
 *   clock_step [NS]                  OK <ns>   (virtual-clock machines only,
 *   clock_set NS                     OK <ns>    else FAIL Unknown command)
 *   endianness                       OK little
 *   anything else                    FAIL Unknown command 'WORD'
 * and asynchronous "IRQ raise N" / "IRQ lower N" lines after an intercept.
 *
 * Where QEMU asserts (missing arguments, bad numbers, a port above 0xffff,
 * a zero-length read) and so dies, we answer "ERR <reason>" and go on: the
 * input is untrusted.  QEMU's own "ERR invalid argument size" (write and
 * b64write data shorter than 3 characters) is kept word for word.  Lines are
 * bounded (QTEST_MAX_LINE) and so are transfers (QTEST_MAX_XFER).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/trace.h>

#include "machine/machine-internal.h"

#define QTEST_MAX_LINE (64u << 20)
#define QTEST_MAX_XFER (16u << 20)
#define QTEST_MAX_WORDS 8

enum intercept {
	INTERCEPT_NONE,
	INTERCEPT_IN,
	INTERCEPT_OUT,
};

struct vd_qtest {
	struct vd_machine *m;
	vd_qtest_send_fn *send;
	void *opaque;
	char *line;
	size_t len, cap;
	bool discarding; /* the current line was too long: drop to its end */
	enum intercept intercept;
};

static void send_str(struct vd_qtest *q, const char *s)
{
	q->send(q->opaque, s, strlen(s));
}

static void sendf(struct vd_qtest *q, const char *fmt, ...) VD_PRINTF(2, 3);
static void sendf(struct vd_qtest *q, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	q->send(q->opaque, buf, (size_t)n);
}

static void irq_listener(void *opaque, int pin, int level)
{
	struct vd_qtest *q = opaque;

	if (q->intercept == INTERCEPT_IN)
		sendf(q, "IRQ %s %d\n", level ? "raise" : "lower", pin);
}

struct vd_qtest *vd_qtest_new(struct vd_machine *m, vd_qtest_send_fn *send, void *opaque)
{
	struct vd_qtest *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->m = m;
	q->send = send;
	q->opaque = opaque;
	return q;
}

void vd_qtest_free(struct vd_qtest *q)
{
	if (!q)
		return;
	if (q->intercept != INTERCEPT_NONE)
		vd_irq_pins_set_listener(&q->m->pins, NULL, NULL);
	free(q->line);
	free(q);
}

/* ---- argument parsing ---- */

/* A whole word as an unsigned number in C notation; "-1" wraps as strtoull
 * does (qemu_strtou64 accepts it too). */
static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!s || !*s || *s == ' ')
		return false;
	errno = 0;
	*out = strtoull(s, &end, 0);
	return errno == 0 && *end == '\0';
}

static bool parse_i64(const char *s, int64_t *out)
{
	char *end;

	if (!s || !*s || *s == ' ')
		return false;
	errno = 0;
	*out = strtoll(s, &end, 0);
	return errno == 0 && *end == '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const uint8_t *d, size_t len)
{
	char *out = malloc((len + 2) / 3 * 4 + 1), *p = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16;
		size_t n = len - i < 3 ? len - i : 3;

		if (n > 1)
			v |= (uint32_t)d[i + 1] << 8;
		if (n > 2)
			v |= d[i + 2];
		*p++ = b64chars[(v >> 18) & 63];
		*p++ = b64chars[(v >> 12) & 63];
		*p++ = n > 1 ? b64chars[(v >> 6) & 63] : '=';
		*p++ = n > 2 ? b64chars[v & 63] : '=';
	}
	*p = '\0';
	return out;
}

/* Decode into @out (room for @max bytes; the rest of the input is ignored).
 * Returns the decoded length, or -1 for a character outside the alphabet. */
static long b64_decode(const char *s, uint8_t *out, size_t max)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;

	for (; *s && *s != '='; s++) {
		const char *c = strchr(b64chars, *s);

		if (!c || !*s)
			return -1;
		acc = (acc << 6) | (uint32_t)(c - b64chars);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n < max)
				out[n] = (uint8_t)(acc >> bits);
			n++;
		}
	}
	for (; *s; s++) {
		if (*s != '=')
			return -1;
	}
	return (long)(n < max ? n : max);
}

/* ---- commands ---- */

static void cmd_out(struct vd_qtest *q, char **w, int nw)
{
	struct vd_address_space *io = q->m->io;
	uint64_t addr, val;
	unsigned size = w[0][3] == 'b' ? 1 : w[0][3] == 'w' ? 2 : 4;
	uint8_t buf[4];

	if (nw < 3 || !parse_u64(w[1], &addr) || !parse_u64(w[2], &val))
		return send_str(q, "ERR usage: outb|outw|outl ADDR VALUE\n");
	if (addr > 0xffff)
		return send_str(q, "ERR port above 0xffff\n");
	for (unsigned i = 0; i < size; i++)
		buf[i] = (uint8_t)(val >> (i * 8));
	vd_address_space_write(io, addr, buf, size);
	send_str(q, "OK\n");
}

static void cmd_in(struct vd_qtest *q, char **w, int nw)
{
	uint64_t addr;
	unsigned size = w[0][2] == 'b' ? 1 : w[0][2] == 'w' ? 2 : 4;
	uint8_t buf[4];
	uint32_t val = 0;

	if (nw < 2 || !parse_u64(w[1], &addr))
		return send_str(q, "ERR usage: inb|inw|inl ADDR\n");
	if (addr > 0xffff)
		return send_str(q, "ERR port above 0xffff\n");
	vd_address_space_read(q->m->io, addr, buf, size);
	for (unsigned i = 0; i < size; i++)
		val |= (uint32_t)buf[i] << (i * 8);
	sendf(q, "OK 0x%04x\n", val);
}

static unsigned mem_size(char c)
{
	return c == 'b' ? 1 : c == 'w' ? 2 : c == 'l' ? 4 : 8;
}

static void cmd_write_n(struct vd_qtest *q, char **w, int nw)
{
	uint64_t addr, val;
	unsigned size = mem_size(w[0][5]);
	uint8_t buf[8];

	if (nw < 3 || !parse_u64(w[1], &addr) || !parse_u64(w[2], &val))
		return send_str(q, "ERR usage: writeb|writew|writel|writeq ADDR VALUE\n");
	for (unsigned i = 0; i < size; i++)
		buf[i] = (uint8_t)(val >> (i * 8));
	vd_address_space_write(q->m->mem, addr, buf, size);
	send_str(q, "OK\n");
}

static void cmd_read_n(struct vd_qtest *q, char **w, int nw)
{
	uint64_t addr, val = 0;
	unsigned size = mem_size(w[0][4]);
	uint8_t buf[8];

	if (nw < 2 || !parse_u64(w[1], &addr))
		return send_str(q, "ERR usage: readb|readw|readl|readq ADDR\n");
	vd_address_space_read(q->m->mem, addr, buf, size);
	for (unsigned i = 0; i < size; i++)
		val |= (uint64_t)buf[i] << (i * 8);
	sendf(q, "OK 0x%016" PRIx64 "\n", val);
}

/* ADDR SIZE with 0 < SIZE <= QTEST_MAX_XFER (or 0 when @zero_ok). */
static bool parse_range(struct vd_qtest *q, char **w, int nw, int need, bool zero_ok,
			uint64_t *addr, uint64_t *len)
{
	if (nw < need || !parse_u64(w[1], addr) || !parse_u64(w[2], len)) {
		sendf(q, "ERR usage: %s ADDR SIZE%s\n", w[0], need > 3 ? " DATA" : "");
		return false;
	}
	if ((*len == 0 && !zero_ok) || *len > QTEST_MAX_XFER) {
		sendf(q, "ERR invalid size (1 to %u bytes)\n", QTEST_MAX_XFER);
		return false;
	}
	return true;
}

static void cmd_read(struct vd_qtest *q, char **w, int nw)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t addr, len;
	uint8_t *data;
	char *enc;

	if (!parse_range(q, w, nw, 3, false, &addr, &len))
		return;
	data = malloc(len);
	enc = malloc(2 * len + 5);
	if (!data || !enc) {
		free(data);
		free(enc);
		return send_str(q, "ERR out of memory\n");
	}
	vd_address_space_read(q->m->mem, addr, data, len);
	memcpy(enc, "OK 0x", 5);
	for (uint64_t i = 0; i < len; i++) {
		enc[5 + 2 * i] = hex[data[i] >> 4];
		enc[6 + 2 * i] = hex[data[i] & 15];
	}
	q->send(q->opaque, enc, 5 + 2 * len);
	send_str(q, "\n");
	free(data);
	free(enc);
}

static void cmd_b64read(struct vd_qtest *q, char **w, int nw)
{
	uint64_t addr, len;
	uint8_t *data;
	char *enc;

	if (!parse_range(q, w, nw, 3, true, &addr, &len))
		return;
	data = malloc(len ? len : 1);
	if (!data)
		return send_str(q, "ERR out of memory\n");
	vd_address_space_read(q->m->mem, addr, data, len);
	enc = b64_encode(data, len);
	free(data);
	if (!enc)
		return send_str(q, "ERR out of memory\n");
	send_str(q, "OK ");
	send_str(q, enc);
	send_str(q, "\n");
	free(enc);
}

static void cmd_write(struct vd_qtest *q, char **w, int nw)
{
	uint64_t addr, len;
	size_t dlen;
	uint8_t *data;

	if (!parse_range(q, w, nw, 4, true, &addr, &len))
		return;
	dlen = strlen(w[3]);
	if (dlen < 3)
		return send_str(q, "ERR invalid argument size\n");
	if (w[3][0] != '0' || (w[3][1] != 'x' && w[3][1] != 'X'))
		return send_str(q, "ERR data must start with 0x\n");
	for (size_t i = 2; i < dlen; i++) {
		if (hexval(w[3][i]) < 0)
			return send_str(q, "ERR invalid hex data\n");
	}
	data = calloc(1, len ? len : 1);
	if (!data)
		return send_str(q, "ERR out of memory\n");
	/* As QEMU: bytes the data does not cover are zero. */
	for (uint64_t i = 0; i < len && i * 2 + 4 <= dlen; i++)
		data[i] = (uint8_t)(hexval(w[3][i * 2 + 2]) << 4 | hexval(w[3][i * 2 + 3]));
	vd_address_space_write(q->m->mem, addr, data, len);
	free(data);
	send_str(q, "OK\n");
}

static void cmd_b64write(struct vd_qtest *q, char **w, int nw)
{
	uint64_t addr, len;
	uint8_t *data;
	long n;

	if (!parse_range(q, w, nw, 4, true, &addr, &len))
		return;
	if (strlen(w[3]) < 3)
		return send_str(q, "ERR invalid argument size\n");
	data = calloc(1, len ? len : 1);
	if (!data)
		return send_str(q, "ERR out of memory\n");
	n = b64_decode(w[3], data, len);
	if (n < 0) {
		free(data);
		return send_str(q, "ERR invalid base64 data\n");
	}
	/* Shorter data than SIZE: QEMU logs the mismatch and writes SIZE bytes;
	 * ours are zero past the data. */
	vd_address_space_write(q->m->mem, addr, data, len);
	free(data);
	send_str(q, "OK\n");
}

static void cmd_memset(struct vd_qtest *q, char **w, int nw)
{
	uint64_t addr, len, pattern;
	uint8_t chunk[4096];

	if (!parse_range(q, w, nw, 4, true, &addr, &len))
		return;
	if (!parse_u64(w[3], &pattern))
		return send_str(q, "ERR usage: memset ADDR SIZE VALUE\n");
	memset(chunk, (int)(pattern & 0xff), sizeof(chunk));
	while (len > 0) {
		uint64_t l = len < sizeof(chunk) ? len : sizeof(chunk);

		vd_address_space_write(q->m->mem, addr, chunk, l);
		addr += l;
		len -= l;
	}
	send_str(q, "OK\n");
}

/* The one interrupt controller we have: QOM path "ioapic" (QEMU resolves
 * partial paths; "/machine/ioapic" style full paths end the same way). */
static bool is_ioapic_path(const char *p)
{
	const char *last = strrchr(p, '/');

	return strcmp(last ? last + 1 : p, "ioapic") == 0 && (last || p[0] != '\0');
}

static void cmd_irq_intercept(struct vd_qtest *q, char **w, int nw)
{
	enum intercept kind = w[0][14] == 'o' ? INTERCEPT_OUT : INTERCEPT_IN;

	if (nw < 2)
		return sendf(q, "ERR usage: %s QOM-PATH\n", w[0]);
	if (!is_ioapic_path(w[1]))
		return send_str(q, "FAIL Unknown device\n");
	if (q->intercept != INTERCEPT_NONE) {
		/* QEMU compares devices only: the same device is OK again. */
		return send_str(q, "OK\n");
	}
	q->intercept = kind;
	if (kind == INTERCEPT_IN)
		vd_irq_pins_set_listener(&q->m->pins, irq_listener, q);
	send_str(q, "OK\n");
}

static void cmd_set_irq_in(struct vd_qtest *q, char **w, int nw)
{
	int64_t num, level;

	if (nw < 5 || !parse_i64(w[3], &num) || !parse_i64(w[4], &level))
		return send_str(q, "ERR usage: set_irq_in QOM-PATH NAME NUM LEVEL\n");
	if (!is_ioapic_path(w[1]))
		return send_str(q, "FAIL Unknown device\n");
	if (strcmp(w[2], "unnamed-gpio-in") != 0 || num < 0 || num >= VD_IRQ_PINS)
		return send_str(q, "ERR no such interrupt input\n");
	vd_irq_set(&q->m->pins.in[num], level != 0);
	send_str(q, "OK\n");
}

static void cmd_clock_step(struct vd_qtest *q, char **w, int nw)
{
	struct vd_machine *m = q->m;
	int64_t ns, now = vd_machine_clock_ns(m), target;

	if (nw >= 2) {
		if (!parse_i64(w[1], &ns))
			return send_str(q, "ERR usage: clock_step [NS]\n");
	} else {
		/* To the next deadline; none: QEMU's -1, i.e. no move. */
		int64_t d = vd_machine_next_deadline(m);

		ns = d < 0 ? -1 : d - now;
	}
	target = ns > INT64_MAX - now ? INT64_MAX : now + ns;
	sendf(q, "OK %" PRIi64 "\n", vd_machine_clock_warp(m, target));
}

static void cmd_clock_set(struct vd_qtest *q, char **w, int nw)
{
	int64_t ns;

	if (nw < 2 || !parse_i64(w[1], &ns))
		return send_str(q, "ERR usage: clock_set NS\n");
	sendf(q, "OK %" PRIi64 "\n", vd_machine_clock_warp(q->m, ns));
}

static void process_line(struct vd_qtest *q, char *line, size_t len)
{
	char *w[QTEST_MAX_WORDS];
	int nw = 0;
	char *p = line;

	if (len && line[len - 1] == '\r')
		line[--len] = '\0';
	if (memchr(line, '\0', len)) {
		send_str(q, "ERR invalid character in command\n");
		return;
	}
	/* Split on single spaces as g_strsplit(cmd, " ", 0) does; words past
	 * the last one a command reads are ignored, as in QEMU. */
	while (nw < QTEST_MAX_WORDS) {
		char *sp = strchr(p, ' ');

		w[nw++] = p;
		if (!sp)
			break;
		*sp = '\0';
		p = sp + 1;
	}
	vd_trace(qtest_command, "%s%s%s", w[0], nw > 1 ? " " : "", nw > 1 ? w[1] : "");
	if (w[0][0] == '\0') {
		send_str(q, "ERR empty command\n");
	} else if (!strcmp(w[0], "outb") || !strcmp(w[0], "outw") || !strcmp(w[0], "outl")) {
		cmd_out(q, w, nw);
	} else if (!strcmp(w[0], "inb") || !strcmp(w[0], "inw") || !strcmp(w[0], "inl")) {
		cmd_in(q, w, nw);
	} else if (!strcmp(w[0], "writeb") || !strcmp(w[0], "writew") || !strcmp(w[0], "writel") ||
		   !strcmp(w[0], "writeq")) {
		cmd_write_n(q, w, nw);
	} else if (!strcmp(w[0], "readb") || !strcmp(w[0], "readw") || !strcmp(w[0], "readl") ||
		   !strcmp(w[0], "readq")) {
		cmd_read_n(q, w, nw);
	} else if (!strcmp(w[0], "read")) {
		cmd_read(q, w, nw);
	} else if (!strcmp(w[0], "b64read")) {
		cmd_b64read(q, w, nw);
	} else if (!strcmp(w[0], "write")) {
		cmd_write(q, w, nw);
	} else if (!strcmp(w[0], "b64write")) {
		cmd_b64write(q, w, nw);
	} else if (!strcmp(w[0], "memset")) {
		cmd_memset(q, w, nw);
	} else if (!strcmp(w[0], "irq_intercept_in") || !strcmp(w[0], "irq_intercept_out")) {
		cmd_irq_intercept(q, w, nw);
	} else if (!strcmp(w[0], "set_irq_in")) {
		cmd_set_irq_in(q, w, nw);
	} else if (!strcmp(w[0], "endianness")) {
		send_str(q, "OK little\n");
	} else if (q->m->qtest_clock && !strcmp(w[0], "clock_step")) {
		cmd_clock_step(q, w, nw);
	} else if (q->m->qtest_clock && !strcmp(w[0], "clock_set")) {
		cmd_clock_set(q, w, nw);
	} else if (!strcmp(w[0], "module_load")) {
		send_str(q, "FAIL\n"); /* no loadable modules */
	} else {
		/* The word is echoed; keep the reply one bounded line. */
		sendf(q, "FAIL Unknown command '%.64s'\n", w[0]);
	}
}

void vd_qtest_feed(struct vd_qtest *q, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		const char *nl = memchr(p, '\n', len);
		size_t n = nl ? (size_t)(nl - p) : len;

		if (q->discarding) {
			/* The rest of an overlong line. */
		} else if (n > QTEST_MAX_LINE - q->len) {
			send_str(q, "ERR line too long\n");
			q->discarding = true;
			q->len = 0;
		} else {
			if (q->len + n + 1 > q->cap) {
				size_t cap = q->cap ? q->cap : 256;
				char *nb;

				while (cap < q->len + n + 1)
					cap *= 2;
				nb = realloc(q->line, cap);
				if (!nb) {
					send_str(q, "ERR out of memory\n");
					q->discarding = true;
					q->len = 0;
					goto next;
				}
				q->line = nb;
				q->cap = cap;
			}
			memcpy(q->line + q->len, p, n);
			q->len += n;
		}
	next:
		if (!nl)
			return;
		if (!q->discarding) {
			q->line[q->len] = '\0';
			process_line(q, q->line, q->len);
		}
		q->discarding = false;
		q->len = 0;
		p = nl + 1;
		len -= n + 1;
	}
}
