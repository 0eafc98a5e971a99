/* SPDX-License-Identifier: MIT */
/*
 * The QMP server (see include/vdisk/qmp.h): listeners, connections, message
 * framing, capabilities negotiation and command dispatch, after QEMU 7.2's
 * monitor/qmp.c, qapi/qmp-dispatch.c and qobject/json-streamer.c.
 *
 * Framing: like QEMU's JSON streamer, a message is a complete top-level
 * value, delimited by bracket balance rather than by lines.  The framer
 * tracks strings (double- and QEMU's single-quoted, which it rewrites to
 * double quotes for jansson), nesting depth and size, so that no input makes
 * it buffer more than the size limit or recurse: deeper nesting than
 * MAX_NESTING is answered with an error and the message skipped; a message
 * over the size limit is answered and the connection closed.  A raw control
 * character inside a string, a stray character or an unbalanced closing
 * bracket at top level is answered at once and framing restarts, which is
 * how an interactive client recovers from a typo.
 *
 * Every client's command runs in its own coroutine; while it runs the
 * client's input is not read, so commands answer in order.
 *
 * No read or write waits for a client: input is framed as it arrives, and
 * output is queued and written as the socket takes it.  A client that does
 * not read its replies stops being read once OUTPUT_PAUSE bytes wait (it
 * only delays itself); one whose output passes MAX_OUTPUT anyway (events)
 * is dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <vdisk/coroutine.h>
#include <vdisk/opts.h>
#include <vdisk/qmp.h>

#include "monitor/qmp-internal.h"

#ifndef VDISK_VERSION
#define VDISK_VERSION "0"
#endif

#define MAX_NESTING 1024 /* as QEMU's json-streamer */
#define DEFAULT_MAX_MESSAGE (1024 * 1024)
#define MAX_OUTPUT (16 * 1024 * 1024) /* a client that reads nothing is dropped */
/* Unwritten output past which a client's commands wait: one that does not
 * read its replies stops being read (it only delays itself), and events
 * alone can fill MAX_OUTPUT. */
#define OUTPUT_PAUSE 65536
#define MAX_CLIENTS 64
#define READ_CHUNK 65536

struct qmp_cmd {
	struct qmp_cmd *next;
	char *name;
	vd_qmp_handler *fn;
	void *opaque;
};

struct buf {
	char *data;
	size_t len, cap;
};

/* What the framer found. */
enum frame_event {
	FRAME_NONE,
	FRAME_MESSAGE, /* conn->msg holds a value; parse it */
	FRAME_ERROR, /* answer conn->frame_error, framing restarted */
	FRAME_FATAL, /* answer conn->frame_error, then close */
};

struct call {
	vd_qmp_handler *fn;
	void *opaque;
	json_t *args;
	json_t *id;
	json_t *result;
	struct vd_qmp_error err;
	bool done, yielded;
};

struct conn {
	struct conn *next, *prev;
	struct vd_qmp_server *s;
	int in_fd, out_fd;
	bool close_fds;
	bool negotiated, oob;
	bool busy; /* a command is running */
	bool closed; /* fds gone, waiting to be freed */
	bool eof; /* no more input */
	bool closing; /* close once the output is written */
	bool broken; /* a write failed or the output overflowed */
	bool in_pump;

	struct buf in;
	size_t in_pos;

	/* framer */
	struct buf msg;
	int depth;
	char quote; /* 0, '"' or '\'' */
	bool escape;
	bool scalar; /* inside a top-level number or keyword */
	bool discard; /* skipping a message that nests too deeply */
	bool in_token; /* inside a number or keyword below top level */
	size_t str_start, token_start;
	char frame_error[160];

	struct buf out;
	size_t out_pos;

	struct vd_bh *resume_bh;
	struct call call;
};

struct listener {
	struct listener *next;
	struct vd_qmp_server *s;
	int fd;
	char *path; /* unlinked on free */
};

struct vd_qmp_server {
	struct vd_loop *loop;
	struct qmp_cmd *cmds;
	struct conn *conns;
	struct listener *listeners;
	int nconns;
	int busy; /* commands running */
	size_t max_message;
	vd_loop_fn *disconnect_fn;
	void *disconnect_opaque;
};

static void conn_pump(struct conn *c);

/* --- buffers ------------------------------------------------------------- */

static int buf_reserve(struct buf *b, size_t more)
{
	size_t want;
	char *n;

	if (b->cap - b->len >= more)
		return 0;
	if (more > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	want = b->cap ? b->cap : 256;
	while (want - b->len < more)
		want *= 2;
	n = realloc(b->data, want);
	if (!n)
		return -ENOMEM;
	b->data = n;
	b->cap = want;
	return 0;
}

static int buf_append(struct buf *b, const char *p, size_t n)
{
	if (buf_reserve(b, n + 1) < 0)
		return -ENOMEM;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

static void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* --- output -------------------------------------------------------------- */

static void on_readable(void *opaque);
static void on_writable(void *opaque);

/* Too much unwritten output to take more commands. */
static bool output_full(const struct conn *c)
{
	return c->out.len - c->out_pos > OUTPUT_PAUSE;
}

static void update_handlers(struct conn *c)
{
	bool want_read =
		!c->closed && !c->busy && !c->eof && !c->closing && !c->broken && !output_full(c);
	bool want_write = !c->closed && !c->broken && c->out_pos < c->out.len;
	struct vd_loop *loop = c->s->loop;

	if (c->closed)
		return;
	if (c->in_fd == c->out_fd) {
		vd_loop_set_fd_handler(loop, c->in_fd, want_read ? on_readable : NULL,
				       want_write ? on_writable : NULL, c);
	} else {
		vd_loop_set_fd_handler(loop, c->in_fd, want_read ? on_readable : NULL, NULL, c);
		vd_loop_set_fd_handler(loop, c->out_fd, NULL, want_write ? on_writable : NULL, c);
	}
}

static void conn_flush(struct conn *c)
{
	while (!c->broken && c->out_pos < c->out.len) {
		ssize_t n = write(c->out_fd, c->out.data + c->out_pos, c->out.len - c->out_pos);

		if (n > 0) {
			c->out_pos += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			break;
		} else {
			c->broken = true;
		}
	}
	if (c->out_pos == c->out.len) {
		c->out.len = c->out_pos = 0;
	} else if (c->out_pos > 65536 && c->out_pos * 2 > c->out.len) {
		memmove(c->out.data, c->out.data + c->out_pos, c->out.len - c->out_pos);
		c->out.len -= c->out_pos;
		c->out_pos = 0;
	}
}

/* Queue one message; never closes the connection itself (callers may be
 * deep in a command): a failure marks it broken and wakes the pump. */
static void conn_send(struct conn *c, json_t *obj)
{
	char *text;

	if (c->closed || c->broken) {
		json_decref(obj);
		return;
	}
	/* QEMU writes compact-with-spaces JSON, non-ASCII escaped, "\r\n". */
	text = obj ? json_dumps(obj, JSON_ENSURE_ASCII | JSON_ENCODE_ANY) : NULL;
	json_decref(obj);
	if (!text || c->out.len - c->out_pos + strlen(text) > MAX_OUTPUT ||
	    buf_append(&c->out, text, strlen(text)) < 0 || buf_append(&c->out, "\r\n", 2) < 0) {
		c->broken = true;
	} else {
		conn_flush(c);
	}
	free(text);
	if (c->broken) {
		vd_bh_schedule(c->resume_bh);
		return;
	}
	if (!c->in_pump)
		update_handlers(c);
}

static json_t *error_response(enum vd_qmp_error_class cls, const char *desc, json_t *id)
{
	json_t *rsp = json_object(), *e = json_object();

	json_object_set_new(e, "class", json_string(vd_qmp_error_class_name(cls)));
	json_object_set_new(e, "desc", qmp_string(desc));
	json_object_set_new(rsp, "error", e);
	if (id)
		json_object_set(rsp, "id", id);
	return rsp;
}

static void send_error(struct conn *c, enum vd_qmp_error_class cls, const char *desc, json_t *id)
{
	conn_send(c, error_response(cls, desc, id));
}

static json_t *version_json(void)
{
	return json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "micro", 0, "minor", 2, "major", 7,
			 "package", "vdisk " VDISK_VERSION);
}

/* --- connections --------------------------------------------------------- */

static void conn_free(struct conn *c)
{
	vd_bh_delete(c->resume_bh);
	buf_free(&c->in);
	buf_free(&c->msg);
	buf_free(&c->out);
	free(c);
}

/* End the connection: fds and handlers go now, the memory when no command
 * runs on it any more. */
static void conn_close(struct conn *c)
{
	struct vd_qmp_server *s = c->s;

	if (c->closed)
		return;
	c->closed = true;
	vd_loop_set_fd_handler(s->loop, c->in_fd, NULL, NULL, NULL);
	if (c->out_fd != c->in_fd)
		vd_loop_set_fd_handler(s->loop, c->out_fd, NULL, NULL, NULL);
	if (c->close_fds) {
		close(c->in_fd);
		if (c->out_fd != c->in_fd)
			close(c->out_fd);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	if (s->disconnect_fn)
		s->disconnect_fn(s->disconnect_opaque);
}

/* After any entry point: free a closed connection nobody uses. */
static void conn_settle(struct conn *c)
{
	if (c->closed && !c->busy && !c->in_pump)
		conn_free(c);
}

static void resume_bh(void *opaque)
{
	struct conn *c = opaque;

	conn_pump(c);
	conn_settle(c);
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int vd_qmp_server_add_client(struct vd_qmp_server *s, int in_fd, int out_fd, bool close_fds)
{
	struct conn *c;
	json_t *greeting;
	int ret;

	if (in_fd < 0 || out_fd < 0)
		return -EBADF;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->resume_bh = vd_bh_new(s->loop, resume_bh, c);
	if (!c->resume_bh) {
		free(c);
		return -ENOMEM;
	}
	c->s = s;
	c->in_fd = in_fd;
	c->out_fd = out_fd;
	c->close_fds = close_fds;
	/* An fd epoll cannot watch (a regular file, /dev/null) is refused
	 * here rather than never being read. */
	ret = vd_loop_set_fd_handler(s->loop, in_fd, on_readable, NULL, c);
	if (ret < 0) {
		vd_bh_delete(c->resume_bh);
		free(c);
		return ret;
	}
	set_nonblock(in_fd);
	set_nonblock(out_fd);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;

	greeting = json_pack("{s:{s:o,s:[s]}}", "QMP", "version", version_json(), "capabilities",
			     "oob");
	conn_send(c, greeting);
	update_handlers(c);
	if (c->broken)
		vd_bh_schedule(c->resume_bh);
	return 0;
}

int vd_qmp_server_client_count(const struct vd_qmp_server *s)
{
	return s->nconns;
}

/* --- framing ------------------------------------------------------------- */

static void frame_reset(struct conn *c)
{
	c->msg.len = 0;
	if (c->msg.data)
		c->msg.data[0] = '\0';
	c->depth = 0;
	c->quote = 0;
	c->escape = false;
	c->scalar = false;
	c->discard = false;
	c->in_token = false;
}

static enum frame_event frame_error(struct conn *c, enum frame_event ev, const char *fmt, ...)
	VD_PRINTF(3, 4);

static enum frame_event frame_error(struct conn *c, enum frame_event ev, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->frame_error, sizeof(c->frame_error), fmt, ap);
	va_end(ap);
	frame_reset(c);
	return ev;
}

/* Append to the message being framed; FRAME_FATAL when it grows too big. */
static enum frame_event frame_put(struct conn *c, const char *p, size_t n)
{
	if (c->discard)
		return FRAME_NONE;
	if (c->msg.len + n > c->s->max_message)
		return frame_error(c, FRAME_FATAL, "JSON token size limit exceeded");
	if (buf_append(&c->msg, p, n) < 0)
		return frame_error(c, FRAME_FATAL, "Out of memory");
	return FRAME_NONE;
}

/*
 * A number or keyword ended.  QEMU's parser reads an integer that does not
 * fit in 64 bits as a float; jansson refuses it, so such an integer gets a
 * ".0" and is parsed as a real too.
 */
static enum frame_event frame_end_token(struct conn *c)
{
	const char *t, *max = "9223372036854775807";
	size_t len, digits;

	c->in_token = false;
	if (c->discard || !c->msg.data || c->token_start >= c->msg.len)
		return FRAME_NONE;
	t = c->msg.data + c->token_start;
	len = c->msg.len - c->token_start;
	if (*t == '-') {
		t++;
		len--;
		max = "9223372036854775808";
	}
	digits = 0;
	while (digits < len && t[digits] >= '0' && t[digits] <= '9')
		digits++;
	if (digits != len || digits < 19 || t[0] == '0')
		return FRAME_NONE;
	if (digits == 19 && strncmp(t, max, 19) <= 0)
		return FRAME_NONE;
	return frame_put(c, ".0", 2);
}

/* A top-level scalar ended: it is the whole message. */
static enum frame_event frame_end_scalar(struct conn *c)
{
	enum frame_event ev = frame_end_token(c);

	c->scalar = false;
	return ev != FRAME_NONE ? ev : FRAME_MESSAGE;
}

static bool is_scalar_char(unsigned char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       ch == '+' || ch == '-' || ch == '.';
}

/* Feed one byte; *consumed is false when the byte must be fed again (it
 * ended a top-level scalar and starts something else). */
static enum frame_event frame_byte(struct conn *c, unsigned char ch, bool *consumed)
{
	enum frame_event ev;
	char chr = (char)ch;

	*consumed = true;
	if (c->quote) {
		if (c->escape) {
			c->escape = false;
			if (ch == '\'') /* QEMU's lexer knows \' in both kinds */
				return frame_put(c, "'", 1);
			if ((ev = frame_put(c, "\\", 1)) != FRAME_NONE)
				return ev;
			return frame_put(c, &chr, 1);
		}
		if (ch == '\\') {
			c->escape = true;
			return FRAME_NONE;
		}
		if (ch == (unsigned char)c->quote) {
			c->quote = 0;
			if ((ev = frame_put(c, "\"", 1)) != FRAME_NONE)
				return ev;
			return c->depth == 0 && !c->discard ? FRAME_MESSAGE : FRAME_NONE;
		}
		if (ch < 0x20) {
			/* QEMU's lexer: a raw control character ends the token
			 * with an error, and lexing starts afresh. */
			size_t start = c->str_start < c->msg.len ? c->str_start : c->msg.len;
			int len = (int)(c->msg.len - start);

			if (len > 64)
				len = 64;
			return frame_error(c, FRAME_ERROR, "JSON parse error, stray '%.*s%c'", len,
					   c->msg.data ? c->msg.data + start : "", chr);
		}
		if (c->quote == '\'' && ch == '"')
			return frame_put(c, "\\\"", 2);
		return frame_put(c, &chr, 1);
	}

	if (c->scalar && !is_scalar_char(ch)) {
		*consumed = false;
		return frame_end_scalar(c);
	}
	if (c->in_token && !is_scalar_char(ch) && (ev = frame_end_token(c)) != FRAME_NONE)
		return ev;
	switch (ch) {
	case ' ':
	case '\t':
	case '\r':
	case '\n':
		return c->depth > 0 ? frame_put(c, &chr, 1) : FRAME_NONE;
	case '"':
	case '\'':
		c->quote = chr;
		c->str_start = c->msg.len;
		return frame_put(c, "\"", 1);
	case '{':
	case '[':
		if (c->depth >= MAX_NESTING && !c->discard) {
			/* Skip the rest of this message, counting brackets. */
			frame_reset(c);
			c->discard = true;
			c->depth = MAX_NESTING + 1;
			snprintf(c->frame_error, sizeof(c->frame_error),
				 "JSON nesting depth limit exceeded");
			return FRAME_ERROR;
		}
		if (c->depth < INT_MAX)
			c->depth++;
		return frame_put(c, &chr, 1);
	case '}':
	case ']':
		if (c->depth == 0)
			return frame_error(c, FRAME_ERROR, "JSON parse error, expecting value");
		c->depth--;
		if ((ev = frame_put(c, &chr, 1)) != FRAME_NONE)
			return ev;
		if (c->depth == 0) {
			if (c->discard) {
				frame_reset(c);
				return FRAME_NONE;
			}
			return FRAME_MESSAGE;
		}
		return FRAME_NONE;
	default:
		if (is_scalar_char(ch) && !c->in_token && !c->scalar) {
			c->in_token = true;
			c->token_start = c->msg.len;
		}
		if (c->depth > 0)
			return frame_put(c, &chr, 1);
		if (is_scalar_char(ch)) {
			c->scalar = true;
			return frame_put(c, &chr, 1);
		}
		if (ch >= 0x20 && ch < 0x7f)
			return frame_error(c, FRAME_ERROR, "JSON parse error, stray '%c'", chr);
		return frame_error(c, FRAME_ERROR, "JSON parse error, stray '\\x%02x'", ch);
	}
}

/* Run the framer over buffered input until it has something to report. */
static enum frame_event frame_next(struct conn *c)
{
	while (c->in_pos < c->in.len) {
		bool consumed;
		enum frame_event ev =
			frame_byte(c, (unsigned char)c->in.data[c->in_pos], &consumed);

		if (consumed)
			c->in_pos++;
		if (ev != FRAME_NONE)
			return ev;
	}
	/* End of input ends a top-level scalar too. */
	if (c->eof && c->scalar)
		return frame_end_scalar(c);
	return FRAME_NONE;
}

/* --- dispatch ------------------------------------------------------------ */

static struct qmp_cmd *find_cmd(struct vd_qmp_server *s, const char *name)
{
	for (struct qmp_cmd *q = s->cmds; q; q = q->next) {
		if (strcmp(q->name, name) == 0)
			return q;
	}
	return NULL;
}

/* qapi/qmp-dispatch.c: qmp_dispatch_check_obj. */
static bool check_request(struct conn *c, json_t *req, const char **command, bool *oob, char *desc,
			  size_t desclen)
{
	const char *key;
	json_t *v;
	bool has_exec = false;

	json_object_foreach(req, key, v)
	{
		bool is_exec = strcmp(key, "execute") == 0;

		if (is_exec || (strcmp(key, "exec-oob") == 0 && c->oob)) {
			if (!json_is_string(v)) {
				snprintf(desc, desclen, "QMP input member '%s' must be a string",
					 key);
				return false;
			}
			if (has_exec) {
				snprintf(desc, desclen,
					 "QMP input member 'execute' clashes with 'exec-oob'");
				return false;
			}
			has_exec = true;
			*command = json_string_value(v);
			*oob = !is_exec;
		} else if (strcmp(key, "arguments") == 0) {
			if (!json_is_object(v)) {
				snprintf(desc, desclen,
					 "QMP input member 'arguments' must be an object");
				return false;
			}
		} else if (strcmp(key, "id") != 0) {
			snprintf(desc, desclen, "QMP input member '%.100s' is unexpected", key);
			return false;
		}
	}
	if (!has_exec) {
		snprintf(desc, desclen, "QMP input lacks member 'execute'");
		return false;
	}
	return true;
}

static void respond(struct conn *c, json_t *result, const struct vd_qmp_error *err, json_t *id)
{
	json_t *rsp;

	if (err->set) {
		json_decref(result);
		rsp = error_response(err->cls, err->desc, id);
	} else {
		rsp = json_object();
		json_object_set_new(rsp, "return", result ? result : json_object());
		if (id)
			json_object_set(rsp, "id", id);
	}
	conn_send(c, rsp);
}

static json_t *qmp_capabilities(struct conn *c, json_t *args, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {
		{"enable", VD_QMP_ARG_ARRAY, true},
		{NULL},
	};
	json_t *enable, *v;
	size_t i;
	bool oob = false;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	enable = json_object_get(args, "enable");
	json_array_foreach(enable, i, v)
	{
		/* (QEMU 7.2 names list elements "null" in these messages.) */
		if (!json_is_string(v)) {
			vd_qmp_error_set(
				err, VD_QMP_GENERIC_ERROR,
				"Invalid parameter type for 'enable[%zu]', expected: string", i);
			return NULL;
		}
		if (strcmp(json_string_value(v), "oob") != 0) {
			vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
					 "Parameter 'null' does not accept value '%.200s'",
					 json_string_value(v));
			return NULL;
		}
		oob = true;
	}
	c->oob = oob;
	c->negotiated = true;
	return NULL;
}

static void finish_call(struct conn *c)
{
	struct call *k = &c->call;

	c->busy = false;
	c->s->busy--;
	respond(c, k->result, &k->err, k->id);
	json_decref(k->args);
	json_decref(k->id);
	memset(k, 0, sizeof(*k));
}

static void call_entry(void *opaque)
{
	struct conn *c = opaque;
	struct call *k = &c->call;

	k->result = k->fn(k->args, k->opaque, &k->err);
	k->done = true;
	if (k->yielded)
		vd_bh_schedule(c->resume_bh);
}

static void run_command(struct conn *c, struct qmp_cmd *cmd, json_t *args, json_t *id)
{
	struct call *k = &c->call;
	struct vd_co *co;

	memset(k, 0, sizeof(*k));
	k->fn = cmd->fn;
	k->opaque = cmd->opaque;
	k->args = args ? json_incref(args) : json_object();
	k->id = id ? json_incref(id) : NULL;
	co = vd_co_create(call_entry, c);
	if (!co || !k->args) {
		json_decref(k->args);
		json_decref(k->id);
		memset(k, 0, sizeof(*k));
		send_error(c, VD_QMP_GENERIC_ERROR, "Out of memory", id);
		return;
	}
	c->busy = true;
	c->s->busy++;
	vd_co_enter(co);
	if (k->done)
		finish_call(c);
	else
		k->yielded = true; /* call_entry wakes the pump when done */
}

static void handle_request(struct conn *c, json_t *req)
{
	struct vd_qmp_error err = {0};
	const char *command = NULL;
	char desc[256];
	bool oob = false;
	struct qmp_cmd *cmd;
	json_t *id, *args;

	if (!json_is_object(req)) {
		send_error(c, VD_QMP_GENERIC_ERROR, "QMP input must be a JSON object", NULL);
		return;
	}
	id = json_object_get(req, "id");
	if (!check_request(c, req, &command, &oob, desc, sizeof(desc))) {
		send_error(c, VD_QMP_GENERIC_ERROR, desc, id);
		return;
	}
	args = json_object_get(req, "arguments");
	if (!c->negotiated) {
		if (strcmp(command, "qmp_capabilities") != 0) {
			send_error(c, VD_QMP_COMMAND_NOT_FOUND,
				   "Expecting capabilities negotiation with 'qmp_capabilities'",
				   id);
			return;
		}
		json_t *empty = args ? NULL : json_object();
		json_t *result = qmp_capabilities(c, args ? args : empty, &err);

		json_decref(empty);
		respond(c, result, &err, id);
		return;
	}
	if (strcmp(command, "qmp_capabilities") == 0) {
		send_error(c, VD_QMP_COMMAND_NOT_FOUND,
			   "Capabilities negotiation is already complete, command ignored", id);
		return;
	}
	cmd = find_cmd(c->s, command);
	if (!cmd) {
		vd_qmp_error_set(&err, VD_QMP_COMMAND_NOT_FOUND,
				 "The command %.200s has not been found", command);
		respond(c, NULL, &err, id);
		return;
	}
	if (oob) {
		vd_qmp_error_set(&err, VD_QMP_GENERIC_ERROR,
				 "The command %.200s does not support OOB", command);
		respond(c, NULL, &err, id);
		return;
	}
	run_command(c, cmd, args, id);
}

/* jansson's parse errors in the words of QEMU's JSON parser
 * (qobject/json-parser.c), where there is a counterpart. */
static void parse_error_desc(const char *text, char *desc, size_t len)
{
	static const struct {
		const char *jansson, *qemu;
	} map[] = {
		{"duplicate object key", "duplicate key"},
		{"invalid escape", "invalid escape sequence in string"},
		{"'}' expected", "expected separator in dict"},
		{"']' expected", "expected separator in list"},
		{"':' expected", "missing : in object pair"},
		{"string or '}' expected", "expecting value"},
		{"unexpected token", "expecting value"},
	};
	const char *near = strstr(text, "near '");
	bool keyword = near != NULL;

	/* A bare word: QEMU says "invalid keyword". */
	if (near) {
		near += 6;
		for (const char *p = near; *p && *p != '\'' && keyword; p++)
			keyword = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z');
		keyword = keyword && *near != '\'';
	}
	if (keyword && !strncmp(text, "invalid token", 13)) {
		snprintf(desc, len, "JSON parse error, invalid keyword '%.*s", 64, near);
		return;
	}
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (!strncmp(text, map[i].jansson, strlen(map[i].jansson))) {
			snprintf(desc, len, "JSON parse error, %s", map[i].qemu);
			return;
		}
	}
	snprintf(desc, len, "JSON parse error, %s", text);
}

static void handle_message(struct conn *c)
{
	json_error_t jerr;
	json_t *req;

	req = json_loadb(c->msg.data ? c->msg.data : "", c->msg.len,
			 JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!req) {
		char desc[300];
		bool keyword = c->msg.len > 0;

		/* A bare word at top level. */
		for (size_t i = 0; i < c->msg.len && keyword; i++) {
			char ch = c->msg.data[i];
			keyword = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
		}
		if (keyword && c->msg.len <= 64)
			snprintf(desc, sizeof(desc), "JSON parse error, invalid keyword '%s'",
				 c->msg.data);
		else
			parse_error_desc(jerr.text, desc, sizeof(desc));
		send_error(c, VD_QMP_GENERIC_ERROR, desc, NULL);
	} else {
		handle_request(c, req);
		json_decref(req);
	}
	frame_reset(c);
}

/* Process what is buffered, as far as the running command allows. */
static void conn_pump(struct conn *c)
{
	if (c->busy && c->call.done && !c->in_pump)
		finish_call(c);
	if (c->closed || c->in_pump)
		return;
	c->in_pump = true;
	while (!c->busy && !c->broken && !c->closing && !output_full(c)) {
		enum frame_event ev = frame_next(c);

		if (ev == FRAME_NONE)
			break;
		if (ev == FRAME_MESSAGE) {
			handle_message(c);
		} else {
			send_error(c, VD_QMP_GENERIC_ERROR, c->frame_error, NULL);
			if (ev == FRAME_FATAL)
				c->closing = true;
		}
	}
	/* Drop consumed input. */
	if (c->in_pos == c->in.len) {
		c->in.len = c->in_pos = 0;
	} else if (c->in_pos > 0) {
		memmove(c->in.data, c->in.data + c->in_pos, c->in.len - c->in_pos);
		c->in.len -= c->in_pos;
		c->in_pos = 0;
	}
	c->in_pump = false;
	if (c->broken || ((c->closing || c->eof) && !c->busy && c->out_pos == c->out.len))
		conn_close(c);
	else
		update_handlers(c);
}

static void on_readable(void *opaque)
{
	struct conn *c = opaque;
	ssize_t n;

	if (buf_reserve(&c->in, READ_CHUNK) < 0) {
		c->broken = true;
	} else {
		n = read(c->in_fd, c->in.data + c->in.len, READ_CHUNK);
		if (n > 0)
			c->in.len += (size_t)n;
		else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			c->eof = true;
	}
	conn_pump(c);
	conn_settle(c);
}

static void on_writable(void *opaque)
{
	struct conn *c = opaque;

	conn_flush(c);
	if (c->broken)
		conn_close(c);
	else if (c->in_pump) /* a command runs the loop: only the handlers */
		update_handlers(c);
	else /* closes once done; else takes up commands that waited for
	      * the output to drain */
		conn_pump(c);
	conn_settle(c);
}

/* --- events -------------------------------------------------------------- */

void vd_qmp_emit_event(struct vd_qmp_server *s, const char *name, json_t *data)
{
	struct timeval tv;
	json_t *ev;

	gettimeofday(&tv, NULL);
	ev = json_pack("{s:{s:I,s:I},s:s}", "timestamp", "seconds", (json_int_t)tv.tv_sec,
		       "microseconds", (json_int_t)tv.tv_usec, "event", name);
	if (ev && data)
		json_object_set(ev, "data", data);
	json_decref(data);
	if (!ev)
		return;
	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->negotiated)
			conn_send(c, json_incref(ev));
	}
	json_decref(ev);
}

/* --- commands ------------------------------------------------------------ */

static bool valid_command_name(const char *name)
{
	if (!*name || strlen(name) > 128)
		return false;
	for (const char *p = name; *p; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return false;
	}
	return true;
}

int vd_qmp_register(struct vd_qmp_server *s, const char *name, vd_qmp_handler *fn, void *opaque)
{
	struct qmp_cmd *q, **p;

	if (!name || !fn || !valid_command_name(name))
		return -EINVAL;
	if (find_cmd(s, name) || strcmp(name, "qmp_capabilities") == 0)
		return -EEXIST;
	q = calloc(1, sizeof(*q));
	if (!q || !(q->name = strdup(name))) {
		free(q);
		return -ENOMEM;
	}
	q->fn = fn;
	q->opaque = opaque;
	for (p = &s->cmds; *p; p = &(*p)->next)
		;
	*p = q;
	return 0;
}

int vd_qmp_unregister(struct vd_qmp_server *s, const char *name)
{
	for (struct qmp_cmd **p = &s->cmds; *p; p = &(*p)->next) {
		if (strcmp((*p)->name, name) == 0) {
			struct qmp_cmd *q = *p;

			*p = q->next;
			free(q->name);
			free(q);
			return 0;
		}
	}
	return -ENOENT;
}

static json_t *cmd_query_commands(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {{NULL}};
	struct vd_qmp_server *s = opaque;
	json_t *list;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	list = json_array();
	json_array_append_new(list, json_pack("{s:s}", "name", "qmp_capabilities"));
	for (struct qmp_cmd *q = s->cmds; q; q = q->next)
		json_array_append_new(list, json_pack("{s:s}", "name", q->name));
	return list;
}

static json_t *cmd_query_version(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {{NULL}};

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	return version_json();
}

/* --- the server ---------------------------------------------------------- */

int vd_qmp_server_new(struct vd_loop *loop, struct vd_qmp_server **out)
{
	struct vd_qmp_server *s;

	*out = NULL;
	if (!loop)
		loop = vd_loop_current();
	if (!loop)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->max_message = DEFAULT_MAX_MESSAGE;
	if (vd_qmp_register(s, "query-commands", cmd_query_commands, s) < 0 ||
	    vd_qmp_register(s, "query-version", cmd_query_version, s) < 0) {
		vd_qmp_server_free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void vd_qmp_server_set_disconnect_handler(struct vd_qmp_server *s, vd_loop_fn *fn, void *opaque)
{
	s->disconnect_fn = fn;
	s->disconnect_opaque = opaque;
}

void vd_qmp_server_set_max_message(struct vd_qmp_server *s, size_t bytes)
{
	s->max_message = bytes ? bytes : DEFAULT_MAX_MESSAGE;
}

static void on_accept(void *opaque)
{
	struct listener *l = opaque;
	int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	if (l->s->nconns >= MAX_CLIENTS || vd_qmp_server_add_client(l->s, fd, fd, true) < 0)
		close(fd);
}

static int unix_address(const char *path, struct sockaddr_un *sa, struct vd_error *err)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!*path || strlen(path) >= sizeof(sa->sun_path))
		return vd_error_set(err, -ENAMETOOLONG, "UNIX socket path '%s' is too long", path);
	strcpy(sa->sun_path, path);
	return 0;
}

static int listen_unix(struct vd_qmp_server *s, const char *path, bool wait, struct vd_error *err)
{
	struct sockaddr_un sa;
	struct listener *l;
	struct stat st;
	int fd, ret;

	ret = unix_address(path, &sa, err);
	if (ret < 0)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vd_error_setg_errno(err, -errno, "Failed to create socket");
	/* A stale socket from an earlier run (never another kind of file). */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		ret = vd_error_setg_errno(err, -errno, "Failed to bind socket to %s", path);
		close(fd);
		return ret;
	}
	l = calloc(1, sizeof(*l));
	if (!l || !(l->path = strdup(path))) {
		free(l);
		unlink(path);
		close(fd);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	l->s = s;
	l->fd = fd;
	if (wait) {
		int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

		if (cfd >= 0 && vd_qmp_server_add_client(s, cfd, cfd, true) < 0)
			close(cfd);
	}
	set_nonblock(fd);
	ret = vd_loop_set_fd_handler(s->loop, fd, on_accept, NULL, l);
	if (ret < 0) {
		unlink(path);
		close(fd);
		free(l->path);
		free(l);
		return vd_error_setg_errno(err, ret, "Failed to watch %s", path);
	}
	l->next = s->listeners;
	s->listeners = l;
	return 0;
}

static int connect_unix(struct vd_qmp_server *s, const char *path, struct vd_error *err)
{
	struct sockaddr_un sa;
	int fd, ret;

	ret = unix_address(path, &sa, err);
	if (ret < 0)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vd_error_setg_errno(err, -errno, "Failed to create socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = vd_error_setg_errno(err, -errno, "Failed to connect to '%s'", path);
		close(fd);
		return ret;
	}
	ret = vd_qmp_server_add_client(s, fd, fd, true);
	if (ret < 0) {
		close(fd);
		return vd_error_setg_errno(err, ret, "Failed to serve '%s'", path);
	}
	return 0;
}

/* QEMU's legacy bare flags ("server", "nowait") as key=value. */
static char *normalise_spec(const char *spec)
{
	size_t len = strlen(spec);
	char *out = malloc(len * 2 + 16), *o = out;
	const char *p = spec;
	bool first = true;

	if (!out)
		return NULL;
	while (*p) {
		const char *start = p;
		size_t n;

		/* One element, with ",," as a literal comma. */
		while (*p && !(*p == ',' && p[1] != ',')) {
			p += (*p == ',') ? 2 : 1;
		}
		n = (size_t)(p - start);
		if (!first && n == 6 && !memcmp(start, "server", 6)) {
			o += sprintf(o, "server=on");
		} else if (!first && n == 6 && !memcmp(start, "nowait", 6)) {
			o += sprintf(o, "wait=off");
		} else if (!first && n == 4 && !memcmp(start, "wait", 4)) {
			o += sprintf(o, "wait=on");
		} else {
			memcpy(o, start, n);
			o += n;
		}
		if (*p == ',') {
			*o++ = ',';
			p++;
		}
		first = false;
	}
	*o = '\0';
	return out;
}

int vd_qmp_server_open(struct vd_qmp_server *s, const char *spec, struct vd_error *err)
{
	struct vd_opts *o = NULL;
	const char *backend;
	bool server, wait;
	char *norm;
	int ret;

	if (strcmp(spec, "stdio") == 0) {
		ret = vd_qmp_server_add_client(s, 0, 1, false);
		return ret < 0 ? vd_error_setg_errno(err, ret, "Failed to serve stdio") : 0;
	}
	norm = normalise_spec(spec);
	if (!norm)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = vd_opts_parse(norm, "backend", &o, err);
	free(norm);
	if (ret < 0)
		return ret;
	backend = vd_opts_get(o, "backend");
	if (!backend || strncmp(backend, "unix:", 5) != 0) {
		ret = vd_error_set(err, -EINVAL,
				   "'%s' is not a supported QMP channel (unix:PATH[,server=on] "
				   "or stdio)",
				   spec);
		goto out;
	}
	ret = vd_opts_get_bool(o, "server", false, &server, err);
	if (ret == 0)
		ret = vd_opts_get_bool(o, "wait", true, &wait, err);
	if (ret == 0)
		ret = vd_opts_check_unused(o, NULL, err);
	if (ret < 0)
		goto out;
	ret = server ? listen_unix(s, backend + 5, wait, err) : connect_unix(s, backend + 5, err);
out:
	vd_opts_free(o);
	return ret;
}

void vd_qmp_server_free(struct vd_qmp_server *s)
{
	if (!s)
		return;
	/* Let running commands answer (their handlers hold pointers into the
	 * program's state, which the caller frees next). */
	while (s->busy > 0) {
		if (!vd_loop_run_once(s->loop, true))
			break;
	}
	while (s->listeners) {
		struct listener *l = s->listeners;

		s->listeners = l->next;
		vd_loop_set_fd_handler(s->loop, l->fd, NULL, NULL, NULL);
		close(l->fd);
		unlink(l->path);
		free(l->path);
		free(l);
	}
	s->disconnect_fn = NULL;
	while (s->conns) {
		struct conn *c = s->conns;

		conn_flush(c);
		conn_close(c);
		if (!c->busy)
			conn_free(c);
		/* (A command that never finished leaks its connection rather
		 * than freeing memory its coroutine still uses.) */
	}
	while (s->cmds) {
		struct qmp_cmd *q = s->cmds;

		s->cmds = q->next;
		free(q->name);
		free(q);
	}
	free(s);
}
