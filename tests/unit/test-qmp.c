/* SPDX-License-Identifier: MIT */
/*
 * The QMP server and the block commands, driven in-process through
 * socketpairs: greeting, negotiation, every command's success and error
 * shapes (as QEMU 7.2 answers them; see the expected strings), malformed
 * input answered with the connection alive, oversize input closing it,
 * events, two clients.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <vdisk/backend.h>
#include <vdisk/qmp.h>

#include "tests/lib/test.h"

static struct vd_loop *loop;

struct client {
	int fd;
	char *buf;
	size_t len, cap;
	bool eof;
	json_t *events; /* events received while waiting for replies */
};

static void client_pump(struct client *c)
{
	vd_loop_run_once(loop, false);
	for (;;) {
		if (c->cap - c->len < 65536) {
			c->cap = c->cap ? c->cap * 2 : 131072;
			c->buf = realloc(c->buf, c->cap);
		}
		ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
		if (n > 0) {
			c->len += (size_t)n;
			continue;
		}
		if (n == 0)
			c->eof = true;
		break;
	}
}

/* The next line the server sent, without "\r\n" (caller frees); NULL on
 * EOF or after 3 s. */
static char *recv_line(struct client *c)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		char *nl = c->buf ? memmem(c->buf, c->len, "\r\n", 2) : NULL;

		if (nl) {
			size_t n = (size_t)(nl - c->buf);
			char *line = strndup(c->buf, n);

			memmove(c->buf, nl + 2, c->len - n - 2);
			c->len -= n + 2;
			return line;
		}
		if (c->eof)
			return NULL;
		client_pump(c);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > 3)
			return NULL;
		if (!c->eof && !(c->buf && memmem(c->buf, c->len, "\r\n", 2)))
			usleep(200);
	}
}

static json_t *recv_any(struct client *c)
{
	char *line = recv_line(c);
	json_t *j;

	if (!line)
		return NULL;
	j = json_loads(line, 0, NULL);
	if (!j)
		fprintf(stderr, "not JSON: %s\n", line);
	free(line);
	return j;
}

/* The next reply, setting events aside. */
static json_t *recv_reply(struct client *c)
{
	for (;;) {
		json_t *j = recv_any(c);

		if (!j || !json_object_get(j, "event"))
			return j;
		json_array_append_new(c->events, j);
	}
}

static void send_raw(struct client *c, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			client_pump(c); /* let the server read */
		} else {
			return; /* closed */
		}
	}
}

static void send_str(struct client *c, const char *text)
{
	send_raw(c, text, strlen(text));
}

static json_t *qmp(struct client *c, const char *text)
{
	send_raw(c, text, strlen(text));
	send_str(c, "\n");
	return recv_reply(c);
}

/* Send on a separate fd, read the reply from the client's. */
static json_t *qmp_fds(struct client *c, int out_fd, const char *text)
{
	if (write(out_fd, text, strlen(text)) < 0 || write(out_fd, "\n", 1) < 0)
		return NULL;
	return recv_reply(c);
}

static struct client *client_new(struct vd_qmp_server *s)
{
	struct client *c = calloc(1, sizeof(*c));
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		abort();
	if (vd_qmp_server_add_client(s, sv[0], sv[0], true) < 0)
		abort();
	c->fd = sv[1];
	c->events = json_array();
	return c;
}

static void client_free(struct client *c)
{
	close(c->fd);
	json_decref(c->events);
	free(c->buf);
	free(c);
}

static struct client *client_negotiated(struct vd_qmp_server *s)
{
	struct client *c = client_new(s);
	json_t *j;

	free(recv_line(c));
	j = qmp(c, "{\"execute\": \"qmp_capabilities\"}");
	json_decref(j);
	return c;
}

/* "return" of a reply, checked to be there. */
static json_t *ret_of(json_t *r)
{
	return json_object_get(r, "return");
}

#define CHECK_ERROR(reply, cls, desc)                                            \
	do {                                                                     \
		json_t *r_ = (reply);                                            \
		json_t *e_ = json_object_get(r_, "error");                       \
		CHECK(e_ != NULL);                                               \
		CHECK_STR(json_string_value(json_object_get(e_, "class")), cls); \
		CHECK_STR(json_string_value(json_object_get(e_, "desc")), desc); \
		json_decref(r_);                                                 \
	} while (0)

#define CHECK_OK(reply)                                                       \
	do {                                                                  \
		json_t *r_ = (reply);                                         \
		CHECK(json_is_object(ret_of(r_)));                            \
		if (!ret_of(r_)) {                                            \
			char *t_ = json_dumps(r_, 0);                         \
			fprintf(stderr, "  reply: %s\n", t_ ? t_ : "(none)"); \
			free(t_);                                             \
		}                                                             \
		json_decref(r_);                                              \
	} while (0)

/* --- the machine under test: a disk without device, a CD-ROM ------------- */

struct cd {
	int loads, unloads, resizes;
};
static void cd_change(void *opaque, bool load)
{
	struct cd *cd = opaque;

	if (load)
		cd->loads++;
	else
		cd->unloads++;
}
static void cd_resize(void *opaque)
{
	((struct cd *)opaque)->resizes++;
}
static const struct vd_blk_dev_ops cd_ops = {
	.has_tray = true,
	.change_media = cd_change,
	.resize = cd_resize,
};

struct world {
	struct vd_blk_registry *reg;
	struct vd_qmp_server *s;
	struct vd_qmp_block *b;
	struct vd_blk *d0, *cd;
	struct cd cdstate;
};

static struct vd_node *open_raw(const char *name, int64_t size, int flags)
{
	struct vd_error err = {0};
	struct vd_opts *o = vd_opts_new();
	struct vd_node *n = NULL;
	char sz[32];

	snprintf(sz, sizeof(sz), "%lld", (long long)size);
	vd_opts_set(o, "size", sz);
	if (vd_image_create(test_path(name), "raw", o, &err) < 0)
		fprintf(stderr, "create: %s\n", err.msg);
	vd_opts_free(o);
	if (vd_node_open(test_path(name), "raw", NULL, flags, &n, &err) < 0)
		fprintf(stderr, "open: %s\n", err.msg);
	return n;
}

static int world_init(struct world *w)
{
	struct vd_node *n;

	memset(w, 0, sizeof(*w));
	if (vd_blk_registry_new(&w->reg) < 0 || vd_qmp_server_new(loop, &w->s) < 0 ||
	    vd_qmp_block_init(w->s, w->reg, &w->b) < 0)
		return -1;
	if (vd_blk_new(w->reg, "d0", &w->d0) < 0 || vd_blk_new(w->reg, "cd", &w->cd) < 0)
		return -1;
	n = open_raw("d0.raw", 1 << 20, VD_OPEN_RDWR);
	if (!n || vd_blk_insert_node(w->d0, n) < 0)
		return -1;
	vd_node_unref(n);
	n = open_raw("cd.raw", 1 << 19, 0);
	if (!n || vd_blk_insert_node(w->cd, n) < 0)
		return -1;
	vd_node_unref(n);
	vd_blk_set_read_only(w->cd, true);
	if (vd_blk_attach_dev(w->cd, "cd0", &cd_ops, &w->cdstate) < 0)
		return -1;
	vd_node_unref(open_raw("iso.raw", 1 << 18, 0));
	return 0;
}

static void world_free(struct world *w)
{
	vd_qmp_block_free(w->b);
	vd_qmp_server_free(w->s);
	vd_blk_unref(w->d0);
	vd_blk_unref(w->cd);
	vd_blk_registry_free(w->reg);
}

/* --- tests --------------------------------------------------------------- */

static void test_greeting_and_negotiation(void)
{
	struct world w;
	struct client *c;
	char *line;

	REQUIRE(world_init(&w) == 0);
	c = client_new(w.s);
	line = recv_line(c);
	CHECK_STR(line, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
			"\"major\": 7}, \"package\": \"vdisk " VDISK_VERSION
			"\"}, \"capabilities\": [\"oob\"]}}");
	free(line);

	CHECK_ERROR(qmp(c, "{\"execute\": \"query-block\"}"), "CommandNotFound",
		    "Expecting capabilities negotiation with 'qmp_capabilities'");
	CHECK_ERROR(qmp(c, "{\"execute\": \"nope\"}"), "CommandNotFound",
		    "Expecting capabilities negotiation with 'qmp_capabilities'");
	CHECK_ERROR(qmp(c, "[1,2]"), "GenericError", "QMP input must be a JSON object");
	CHECK_ERROR(qmp(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": "
			   "{\"enable\": [\"foo\"]}}"),
		    "GenericError", "Parameter 'null' does not accept value 'foo'");
	CHECK_ERROR(qmp(c, "{\"execute\": \"qmp_capabilities\", \"arguments\": "
			   "{\"enable\": \"oob\"}}"),
		    "GenericError", "Invalid parameter type for 'enable', expected: array");
	/* Events wait for negotiation. */
	vd_qmp_emit_event(w.s, "EARLY", NULL);

	line = NULL;
	send_str(c, "{\"execute\": \"qmp_capabilities\", \"id\": 5}\n");
	line = recv_line(c);
	CHECK_STR(line, "{\"return\": {}, \"id\": 5}");
	free(line);
	json_t *r = qmp(c, "{\"execute\": \"qmp_capabilities\", \"id\": 6}");
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 6);
	CHECK_ERROR(r, "CommandNotFound",
		    "Capabilities negotiation is already complete, command ignored");
	CHECK_EQ(json_array_size(c->events), 0);

	/* query-version and query-commands. */
	r = qmp(c, "{\"execute\": \"query-version\"}");
	CHECK_EQ(json_integer_value(json_object_get(json_object_get(ret_of(r), "qemu"), "major")),
		 7);
	CHECK_STR(json_string_value(json_object_get(ret_of(r), "package")), "vdisk " VDISK_VERSION);
	json_decref(r);
	r = qmp(c, "{\"execute\": \"query-commands\"}");
	{
		size_t i;
		json_t *v;
		int found = 0;

		json_array_foreach(ret_of(r), i, v)
		{
			const char *name = json_string_value(json_object_get(v, "name"));
			found += name && (!strcmp(name, "query-block") ||
					  !strcmp(name, "qmp_capabilities") ||
					  !strcmp(name, "blockdev-change-medium"));
		}
		CHECK_EQ(found, 3);
	}
	json_decref(r);
	CHECK_ERROR(qmp(c, "{\"execute\": \"query-commands\", \"arguments\": {\"a\": 1}}"),
		    "GenericError", "Parameter 'a' is unexpected");
	client_free(c);
	world_free(&w);
}

static void test_malformed(void)
{
	struct world w;
	struct client *c;
	json_t *r;

	REQUIRE(world_init(&w) == 0);
	c = client_negotiated(w.s);
	CHECK_ERROR(qmp(c, "[1,2]"), "GenericError", "QMP input must be a JSON object");
	CHECK_ERROR(qmp(c, "\"str\""), "GenericError", "QMP input must be a JSON object");
	CHECK_ERROR(qmp(c, "true"), "GenericError", "QMP input must be a JSON object");
	CHECK_ERROR(qmp(c, "42"), "GenericError", "QMP input must be a JSON object");
	CHECK_ERROR(qmp(c, "{}"), "GenericError", "QMP input lacks member 'execute'");
	CHECK_ERROR(qmp(c, "{\"execute\": 3}"), "GenericError",
		    "QMP input member 'execute' must be a string");
	CHECK_ERROR(qmp(c, "{\"execute\": \"query-block\", \"arguments\": 3}"), "GenericError",
		    "QMP input member 'arguments' must be an object");
	CHECK_ERROR(qmp(c, "{\"execute\": \"query-block\", \"arguments\": null}"), "GenericError",
		    "QMP input member 'arguments' must be an object");
	CHECK_ERROR(qmp(c, "{\"execute\": \"query-block\", \"foo\": 3}"), "GenericError",
		    "QMP input member 'foo' is unexpected");
	CHECK_ERROR(qmp(c, "{\"exec-oob\": \"query-block\"}"), "GenericError",
		    "QMP input member 'exec-oob' is unexpected");
	CHECK_ERROR(qmp(c, "{\"execute\": \"query-block\", \"arguments\": {\"x\": 1}}"),
		    "GenericError", "Parameter 'x' is unexpected");
	r = qmp(c, "{\"execute\": \"nope\", \"id\": [1]}");
	CHECK(json_is_array(json_object_get(r, "id")));
	CHECK_ERROR(r, "CommandNotFound", "The command nope has not been found");
	/* Lexical errors, answered at once. */
	CHECK_ERROR(qmp(c, "{\"foo"), "GenericError", "JSON parse error, stray '\"foo\n'");
	CHECK_ERROR(qmp(c, "abc"), "GenericError", "JSON parse error, invalid keyword 'abc'");
	CHECK_ERROR(qmp(c, "}"), "GenericError", "JSON parse error, expecting value");
	CHECK_ERROR(qmp(c, "@"), "GenericError", "JSON parse error, stray '@'");
	r = qmp(c, "{\"execute\": \"query-block\", \"execute\": \"x\"}");
	CHECK(json_object_get(r, "error") != NULL);
	json_decref(r);
	r = qmp(c, "{\"execute\" \"query-block\"}");
	CHECK(json_object_get(r, "error") != NULL);
	json_decref(r);
	/* Invalid UTF-8 inside a string. */
	r = qmp(c, "{\"execute\": \"\xff\xfe\"}");
	CHECK(json_object_get(r, "error") != NULL);
	json_decref(r);

	/* Two messages on one line, whitespace, QEMU's single quotes. */
	send_raw(c,
		 "  {\"execute\"  :  \"query-version\", \"id\": 1}{'execute': 'query-version', "
		 "'id': 'it''s'}\n",
		 strlen("  {\"execute\"  :  \"query-version\", \"id\": 1}{'execute': "
			"'query-version', 'id': 'it''s'}\n"));
	r = recv_reply(c);
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 1);
	json_decref(r);
	/* 'it''s' is two strings in a row: a parse error, then framing goes on. */
	r = recv_reply(c);
	CHECK(json_object_get(r, "error") != NULL);
	json_decref(r);
	r = qmp(c, "{'execute': 'query-version', 'id': 'a\\'b\"c'}");
	CHECK_STR(json_string_value(json_object_get(r, "id")), "a'b\"c");
	json_decref(r);
	/* Drain whatever the odd input above produced. */
	for (int i = 0; i < 4; i++) {
		r = qmp(c, "{\"execute\": \"query-version\", \"id\": \"sync\"}");
		bool done = r && json_is_string(json_object_get(r, "id"));
		json_decref(r);
		if (done)
			break;
	}

	/* Deep nesting: an error, the rest of the message skipped. */
	{
		size_t depth = 5000;
		char *deep = malloc(depth * 2 + 1);

		memset(deep, '[', depth);
		memset(deep + depth, ']', depth);
		deep[depth * 2] = '\0';
		CHECK_ERROR(qmp(c, deep), "GenericError", "JSON nesting depth limit exceeded");
		/* Nesting within the limit parses (and is not an object). */
		memset(deep, '[', 1000);
		memset(deep + 1000, ']', 1000);
		deep[2000] = '\0';
		CHECK_ERROR(qmp(c, deep), "GenericError", "QMP input must be a JSON object");
		free(deep);
	}
	/* Wrong argument types. */
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": 5, "
			   "\"size\": 1}}"),
		    "GenericError", "Invalid parameter type for 'device', expected: string");
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": \"d0\", "
			   "\"size\": 1.5}}"),
		    "GenericError", "Invalid parameter type for 'size', expected: integer");
	CHECK_ERROR(qmp(c, "{\"execute\": \"eject\", \"arguments\": {\"device\": \"cd\", "
			   "\"force\": \"yes\"}}"),
		    "GenericError", "Invalid parameter type for 'force', expected: boolean");
	CHECK_ERROR(qmp(c, "{\"execute\": \"query-blockstats\", \"arguments\": "
			   "{\"query-nodes\": 1}}"),
		    "GenericError", "Invalid parameter type for 'query-nodes', expected: boolean");

	/* Integers beyond 64 bits are floats, as QEMU reads them. */
	r = qmp(c, "{\"execute\": \"query-version\", \"id\": 18446744073709551616}");
	CHECK(json_is_real(json_object_get(r, "id")));
	json_decref(r);
	r = qmp(c, "{\"execute\": \"query-version\", \"id\": [-9223372036854775808, "
		   "9223372036854775807, -9223372036854775809]}");
	CHECK(json_is_integer(json_array_get(json_object_get(r, "id"), 0)));
	CHECK(json_is_integer(json_array_get(json_object_get(r, "id"), 1)));
	CHECK(json_is_real(json_array_get(json_object_get(r, "id"), 2)));
	json_decref(r);
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": \"d0\", "
			   "\"size\": 18446744073709551615}}"),
		    "GenericError", "Invalid parameter type for 'size', expected: integer");
	CHECK_ERROR(qmp(c, "18446744073709551616"), "GenericError",
		    "QMP input must be a JSON object");

	/* Still alive. */
	r = qmp(c, "{\"execute\": \"query-version\", \"id\": 99}");
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 99);
	json_decref(r);
	CHECK_EQ(vd_qmp_server_client_count(w.s), 1);

	/* Oversize: an error, then the connection closes. */
	{
		size_t big = 2 * 1024 * 1024;
		char *huge = malloc(big + 64);

		strcpy(huge, "{\"execute\": \"query-version\", \"id\": \"");
		memset(huge + strlen(huge), 'x', big);
		strcpy(huge + big, "\"}");
		CHECK_ERROR(qmp(c, huge), "GenericError", "JSON token size limit exceeded");
		free(huge);
		CHECK(recv_line(c) == NULL);
		CHECK(c->eof);
		CHECK_EQ(vd_qmp_server_client_count(w.s), 0);
	}
	client_free(c);
	world_free(&w);
}

static json_t *find_device(json_t *list, const char *device)
{
	size_t i;
	json_t *v;

	json_array_foreach(list, i, v)
	{
		if (!strcmp(json_string_value(json_object_get(v, "device")) ?: "", device))
			return v;
	}
	return NULL;
}

static bool has_keys(json_t *o, const char *const *keys)
{
	bool ok = json_is_object(o);

	for (; ok && *keys; keys++) {
		if (!json_object_get(o, *keys)) {
			fprintf(stderr, "  missing key '%s'\n", *keys);
			ok = false;
		}
	}
	return ok;
}

static void test_query_block(void)
{
	static const char *const block_keys[] = {"device", "locked", "removable", "type", NULL};
	static const char *const inserted_keys[] = {"file",
						    "node-name",
						    "ro",
						    "drv",
						    "encrypted",
						    "detect_zeroes",
						    "bps",
						    "bps_rd",
						    "bps_wr",
						    "iops",
						    "iops_rd",
						    "iops_wr",
						    "image",
						    "cache",
						    "write_threshold",
						    "backing_file_depth",
						    NULL};
	static const char *const image_keys[] = {"virtual-size", "filename",   "format",
						 "actual-size",	 "dirty-flag", NULL};
	static const char *const stats_keys[] = {"rd_bytes",
						 "wr_bytes",
						 "unmap_bytes",
						 "rd_operations",
						 "wr_operations",
						 "flush_operations",
						 "unmap_operations",
						 "rd_total_time_ns",
						 "wr_total_time_ns",
						 "flush_total_time_ns",
						 "unmap_total_time_ns",
						 "wr_highest_offset",
						 "rd_merged",
						 "wr_merged",
						 "unmap_merged",
						 "failed_rd_operations",
						 "failed_wr_operations",
						 "failed_flush_operations",
						 "failed_unmap_operations",
						 "invalid_rd_operations",
						 "invalid_wr_operations",
						 "invalid_flush_operations",
						 "invalid_unmap_operations",
						 "account_invalid",
						 "account_failed",
						 "timed_stats",
						 NULL};
	struct world w;
	struct client *c;
	json_t *r, *d0, *cd, *ins;
	char buf[4096] = {0};

	REQUIRE(world_init(&w) == 0);
	c = client_negotiated(w.s);
	r = qmp(c, "{\"execute\": \"query-block\", \"id\": \"x\"}");
	CHECK_STR(json_string_value(json_object_get(r, "id")), "x");
	d0 = find_device(ret_of(r), "d0");
	cd = find_device(ret_of(r), "cd");
	CHECK(has_keys(d0, block_keys));
	CHECK(has_keys(cd, block_keys));
	/* No device: removable, no tray, no io-status, no qdev. */
	CHECK(json_is_true(json_object_get(d0, "removable")));
	CHECK(!json_object_get(d0, "tray_open"));
	CHECK(!json_object_get(d0, "io-status"));
	CHECK(!json_object_get(d0, "qdev"));
	CHECK_STR(json_string_value(json_object_get(d0, "type")), "unknown");
	ins = json_object_get(d0, "inserted");
	CHECK(has_keys(ins, inserted_keys));
	CHECK(has_keys(json_object_get(ins, "image"), image_keys));
	CHECK_STR(json_string_value(json_object_get(ins, "drv")), "raw");
	CHECK_STR(json_string_value(json_object_get(ins, "file")), test_path("d0.raw"));
	CHECK(json_is_false(json_object_get(ins, "ro")));
	CHECK_EQ(json_integer_value(json_object_get(json_object_get(ins, "image"), "virtual-size")),
		 1 << 20);
	CHECK(json_is_true(json_object_get(json_object_get(ins, "cache"), "writeback")));
	CHECK(json_is_boolean(json_object_get(json_object_get(ins, "cache"), "direct")));
	CHECK(json_is_boolean(json_object_get(json_object_get(ins, "cache"), "no-flush")));
	CHECK_STR(json_string_value(json_object_get(ins, "detect_zeroes")), "off");
	CHECK(json_string_value(json_object_get(ins, "node-name"))[0] == '#');
	/* The CD-ROM: qdev, tray, io-status. */
	CHECK_STR(json_string_value(json_object_get(cd, "qdev")), "cd0");
	CHECK(json_is_false(json_object_get(cd, "tray_open")));
	CHECK_STR(json_string_value(json_object_get(cd, "io-status")), "ok");
	CHECK(json_is_true(json_object_get(json_object_get(cd, "inserted"), "ro")));
	json_decref(r);

	/* Stats: one write and one read on d0. */
	REQUIRE(vd_node_pwrite(vd_blk_root(w.d0), 0, buf, sizeof(buf), 0) == 0);
	REQUIRE(vd_node_pread(vd_blk_root(w.d0), 0, buf, sizeof(buf)) == 0);
	r = qmp(c, "{\"execute\": \"query-blockstats\"}");
	d0 = find_device(ret_of(r), "d0");
	CHECK(has_keys(json_object_get(d0, "stats"), stats_keys));
	CHECK_EQ(json_integer_value(json_object_get(json_object_get(d0, "stats"), "wr_bytes")),
		 4096);
	CHECK_EQ(json_integer_value(json_object_get(json_object_get(d0, "stats"), "rd_operations")),
		 1);
	CHECK(json_is_integer(json_object_get(json_object_get(d0, "stats"), "idle_time_ns")));
	CHECK(json_is_array(json_object_get(json_object_get(d0, "stats"), "timed_stats")));
	CHECK(json_is_string(json_object_get(d0, "node-name")));
	CHECK(has_keys(json_object_get(json_object_get(d0, "parent"), "stats"), stats_keys));
	cd = find_device(ret_of(r), "cd");
	CHECK_STR(json_string_value(json_object_get(cd, "qdev")), "cd0");
	json_decref(r);
	r = qmp(c, "{\"execute\": \"query-blockstats\", \"arguments\": {\"query-nodes\": true}}");
	CHECK_EQ(json_array_size(ret_of(r)), 4); /* raw+file twice */
	CHECK(!json_object_get(json_array_get(ret_of(r), 0), "device"));
	json_decref(r);

	/* An empty drive: no "inserted". */
	vd_blk_remove_node(w.d0);
	r = qmp(c, "{\"execute\": \"query-block\"}");
	d0 = find_device(ret_of(r), "d0");
	CHECK(d0 && !json_object_get(d0, "inserted"));
	json_decref(r);
	r = qmp(c, "{\"execute\": \"query-blockstats\"}");
	d0 = find_device(ret_of(r), "d0");
	CHECK(has_keys(json_object_get(d0, "stats"), stats_keys));
	json_decref(r);
	client_free(c);
	world_free(&w);
}

static void test_block_resize(void)
{
	struct world w;
	struct client *c;
	char cmd[256];

	REQUIRE(world_init(&w) == 0);
	c = client_negotiated(w.s);
	CHECK_OK(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": \"d0\", "
			"\"size\": 2097152}}"));
	CHECK_EQ(vd_node_size(vd_blk_root(w.d0)), 2097152);
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\": \"block_resize\", \"arguments\": {\"node-name\": \"%s\", "
		 "\"size\": 1048576}}",
		 vd_node_name(vd_blk_root(w.d0)));
	CHECK_OK(qmp(c, cmd));
	CHECK_EQ(vd_node_size(vd_blk_root(w.d0)), 1048576);
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": "
			   "\"nosuch\", \"size\": 1048576}}"),
		    "GenericError", "Cannot find device='nosuch' nor node-name=''");
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"node-name\": "
			   "\"nosuch\", \"size\": 1048576}}"),
		    "GenericError", "Cannot find device='' nor node-name='nosuch'");
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"size\": 1}}"),
		    "GenericError", "Cannot find device='' nor node-name=''");
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": \"d0\", "
			   "\"size\": -1}}"),
		    "GenericError", "Parameter 'size' expects a >0 size");
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": "
			   "\"d0\"}}"),
		    "GenericError", "Parameter 'size' is missing");
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": \"d0\", "
			   "\"size\": 9223372036854775807}}"),
		    "GenericError",
		    "offset(9223372036854775807) exceeds maximum(9223372035781033984)");
	/* The CD-ROM's device hears of the resize (its medium is read-only
	 * here, so use a read-write one). */
	vd_blk_remove_node(w.cd);
	struct vd_node *n = open_raw("cd2.raw", 1 << 19, VD_OPEN_RDWR);
	REQUIRE(n && vd_blk_insert_node(w.cd, n) == 0);
	vd_node_unref(n);
	CHECK_OK(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": \"cd\", "
			"\"size\": 1048576}}"));
	CHECK_EQ(w.cdstate.resizes, 1);
	/* An empty drive. */
	vd_blk_remove_node(w.d0);
	CHECK_ERROR(qmp(c, "{\"execute\": \"block_resize\", \"arguments\": {\"device\": \"d0\", "
			   "\"size\": 1048576}}"),
		    "GenericError", "Device 'd0' has no medium");
	client_free(c);
	world_free(&w);
}

static json_t *next_event(struct client *c)
{
	json_t *e;

	if (json_array_size(c->events) == 0) {
		e = recv_any(c);
		if (e)
			json_array_append_new(c->events, e);
	}
	e = json_incref(json_array_get(c->events, 0));
	json_array_remove(c->events, 0);
	return e;
}

static void check_tray_event(struct client *c, bool open)
{
	json_t *e = next_event(c), *d = json_object_get(e, "data");

	CHECK_STR(json_string_value(json_object_get(e, "event")), "DEVICE_TRAY_MOVED");
	CHECK_STR(json_string_value(json_object_get(d, "device")), "cd");
	CHECK_STR(json_string_value(json_object_get(d, "id")), "cd0");
	CHECK(json_is_boolean(json_object_get(d, "tray-open")));
	CHECK_EQ(json_is_true(json_object_get(d, "tray-open")), open);
	CHECK(json_is_integer(json_object_get(json_object_get(e, "timestamp"), "seconds")));
	CHECK(json_is_integer(json_object_get(json_object_get(e, "timestamp"), "microseconds")));
	json_decref(e);
}

static void test_eject_and_change(void)
{
	struct world w;
	struct client *c;
	char cmd[512];
	json_t *r;

	REQUIRE(world_init(&w) == 0);
	c = client_negotiated(w.s);
	/* Without a device: the medium just goes, no event. */
	CHECK_OK(qmp(c, "{\"execute\": \"eject\", \"arguments\": {\"device\": \"d0\"}}"));
	CHECK(!vd_blk_is_inserted(w.d0));
	CHECK_EQ(json_array_size(c->events), 0);
	/* The CD-ROM by qdev id: tray opens (event), medium removed. */
	CHECK_OK(qmp(c, "{\"execute\": \"eject\", \"arguments\": {\"id\": \"cd0\"}}"));
	check_tray_event(c, true);
	CHECK(!vd_blk_is_inserted(w.cd));
	CHECK_EQ(w.cdstate.unloads, 1);
	CHECK_OK(qmp(c, "{\"execute\": \"eject\", \"arguments\": {\"device\": \"cd\"}}"));
	CHECK_EQ(json_array_size(c->events), 0);
	CHECK_ERROR(qmp(c, "{\"execute\": \"eject\", \"arguments\": {\"device\": \"nosuch\"}}"),
		    "DeviceNotFound", "Device 'nosuch' not found");
	CHECK_ERROR(qmp(c, "{\"execute\": \"eject\", \"arguments\": {\"id\": \"nosuch\"}}"),
		    "DeviceNotFound", "Device 'nosuch' not found");
	CHECK_ERROR(qmp(c, "{\"execute\": \"eject\", \"arguments\": {}}"), "GenericError",
		    "Need exactly one of 'device' and 'id'");
	CHECK_ERROR(qmp(c, "{\"execute\": \"eject\", \"arguments\": {\"device\": \"cd\", "
			   "\"id\": \"cd0\"}}"),
		    "GenericError", "Need exactly one of 'device' and 'id'");

	/* Change medium: tray was open; it closes (one event). */
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\": \"blockdev-change-medium\", \"arguments\": {\"device\": \"cd\", "
		 "\"filename\": \"%s\", \"format\": \"raw\"}}",
		 test_path("iso.raw"));
	CHECK_OK(qmp(c, cmd));
	check_tray_event(c, false);
	CHECK(vd_blk_is_inserted(w.cd));
	CHECK(vd_node_is_read_only(vd_blk_root(w.cd))); /* retain: read-only drive */
	CHECK_EQ(vd_node_size(vd_blk_root(w.cd)), 1 << 18);
	CHECK_EQ(w.cdstate.loads, 1);
	/* Again, closed tray: open and close events. */
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\": \"blockdev-change-medium\", \"arguments\": {\"id\": \"cd0\", "
		 "\"filename\": \"%s\", \"read-only-mode\": \"read-only\"}, \"id\": 3}",
		 test_path("iso.raw"));
	r = qmp(c, cmd);
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 3);
	CHECK_OK(r);
	check_tray_event(c, true);
	check_tray_event(c, false);
	/* Errors: the old medium stays. */
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\": \"blockdev-change-medium\", \"arguments\": {\"id\": \"cd0\", "
		 "\"filename\": \"%s\", \"format\": \"raw\"}}",
		 test_path("nonexist"));
	r = qmp(c, cmd);
	CHECK(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "desc")) ?: "",
		     "No such file or directory") != NULL);
	json_decref(r);
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\": \"blockdev-change-medium\", \"arguments\": {\"id\": \"cd0\", "
		 "\"filename\": \"%s\", \"format\": \"bogus\"}}",
		 test_path("iso.raw"));
	CHECK_ERROR(qmp(c, cmd), "GenericError", "Unknown driver 'bogus'");
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\": \"blockdev-change-medium\", \"arguments\": {\"id\": \"cd0\", "
		 "\"filename\": \"%s\", \"read-only-mode\": \"bogus\"}}",
		 test_path("iso.raw"));
	CHECK_ERROR(qmp(c, cmd), "GenericError",
		    "Parameter 'read-only-mode' does not accept value 'bogus'");
	CHECK_ERROR(qmp(c, "{\"execute\": \"blockdev-change-medium\", \"arguments\": "
			   "{\"device\": \"cd\"}}"),
		    "GenericError", "Parameter 'filename' is missing");
	CHECK(vd_blk_is_inserted(w.cd));
	/* Locked by the guest: refused without force, done with it. */
	vd_blk_lock_medium(w.cd, true);
	CHECK_ERROR(qmp(c, "{\"execute\": \"eject\", \"arguments\": {\"device\": \"cd\"}}"),
		    "GenericError",
		    "Device 'cd' is locked and force was not specified, wait for tray to open "
		    "and try again");
	CHECK(vd_blk_is_inserted(w.cd));
	CHECK_OK(qmp(c, "{\"execute\": \"eject\", \"arguments\": {\"device\": \"cd\", "
			"\"force\": true}}"));
	check_tray_event(c, true);
	CHECK(!vd_blk_is_inserted(w.cd));
	client_free(c);
	world_free(&w);
}

static void test_tray_commands(void)
{
	struct world w;
	struct client *c;
	struct vd_node *n;

	REQUIRE(world_init(&w) == 0);
	n = open_raw("ins.raw", 1 << 18, 0);
	REQUIRE(n && vd_node_set_name(n, "ins") == 0);
	REQUIRE(vd_blk_registry_add_node(w.reg, n) == 0);
	vd_node_unref(n);
	c = client_negotiated(w.s);
	CHECK_OK(qmp(c, "{\"execute\": \"blockdev-open-tray\", \"arguments\": {\"id\": \"cd0\"}}"));
	check_tray_event(c, true);
	CHECK(vd_blk_is_inserted(w.cd));
	CHECK_OK(qmp(c,
		     "{\"execute\": \"blockdev-open-tray\", \"arguments\": {\"device\": \"d0\"}}"));
	CHECK_ERROR(qmp(c, "{\"execute\": \"blockdev-remove-medium\", \"arguments\": "
			   "{\"device\": \"cd\"}}"),
		    "GenericError", "Parameter 'id' is missing");
	CHECK_OK(qmp(
		c, "{\"execute\": \"blockdev-remove-medium\", \"arguments\": {\"id\": \"cd0\"}}"));
	CHECK(!vd_blk_is_inserted(w.cd));
	CHECK_ERROR(qmp(c, "{\"execute\": \"blockdev-insert-medium\", \"arguments\": "
			   "{\"id\": \"cd0\", \"node-name\": \"nosuch\"}}"),
		    "GenericError", "Node 'nosuch' not found");
	CHECK_OK(qmp(c, "{\"execute\": \"blockdev-insert-medium\", \"arguments\": "
			"{\"id\": \"cd0\", \"node-name\": \"ins\"}}"));
	CHECK(vd_blk_root(w.cd) == n);
	CHECK_ERROR(qmp(c, "{\"execute\": \"blockdev-insert-medium\", \"arguments\": "
			   "{\"id\": \"cd0\", \"node-name\": \"ins\"}}"),
		    "GenericError", "Node 'ins' is already in use");
	CHECK_EQ(json_array_size(c->events), 0);
	CHECK_OK(
		qmp(c, "{\"execute\": \"blockdev-close-tray\", \"arguments\": {\"id\": \"cd0\"}}"));
	check_tray_event(c, false);
	CHECK_EQ(w.cdstate.loads, 1);
	CHECK_ERROR(qmp(c, "{\"execute\": \"blockdev-remove-medium\", \"arguments\": "
			   "{\"id\": \"cd0\"}}"),
		    "GenericError", "Tray of device 'cd0' is not open");
	/* Locked: open-tray is no error, the tray stays shut. */
	vd_blk_lock_medium(w.cd, true);
	CHECK_OK(qmp(c, "{\"execute\": \"blockdev-open-tray\", \"arguments\": {\"id\": \"cd0\"}}"));
	CHECK(!vd_blk_is_tray_open(w.cd));
	client_free(c);
	world_free(&w);
}

static void test_events_and_clients(void)
{
	struct world w;
	struct client *a, *b, *early;
	json_t *e, *d;

	REQUIRE(world_init(&w) == 0);
	a = client_negotiated(w.s);
	b = client_negotiated(w.s);
	early = client_new(w.s); /* greeted, not negotiated */
	free(recv_line(early));
	CHECK_EQ(vd_qmp_server_client_count(w.s), 3);

	vd_qmp_emit_event(w.s, "RESUME", NULL);
	vd_qmp_emit_event(w.s, "STOP", json_object());
	for (int i = 0; i < 2; i++) {
		struct client *c = i ? b : a;

		e = next_event(c);
		CHECK_STR(json_string_value(json_object_get(e, "event")), "RESUME");
		CHECK(!json_object_get(e, "data"));
		CHECK(json_is_object(json_object_get(e, "timestamp")));
		json_decref(e);
		e = next_event(c);
		CHECK_STR(json_string_value(json_object_get(e, "event")), "STOP");
		CHECK(json_is_object(json_object_get(e, "data")));
		json_decref(e);
	}
	/* Not before negotiation. */
	client_pump(early);
	CHECK_EQ(early->len, 0);

	/* BLOCK_IO_ERROR from the block layer. */
	vd_blk_report_error(w.cd, VD_BLK_ACTION_REPORT, true, EIO);
	e = next_event(a);
	d = json_object_get(e, "data");
	CHECK_STR(json_string_value(json_object_get(e, "event")), "BLOCK_IO_ERROR");
	CHECK_STR(json_string_value(json_object_get(d, "device")), "cd");
	CHECK(json_string_value(json_object_get(d, "node-name"))[0] == '#');
	CHECK_STR(json_string_value(json_object_get(d, "operation")), "read");
	CHECK_STR(json_string_value(json_object_get(d, "action")), "report");
	CHECK(json_is_false(json_object_get(d, "nospace")));
	CHECK_STR(json_string_value(json_object_get(d, "reason")), "Input/output error");
	json_decref(e);
	e = next_event(b);
	CHECK_STR(json_string_value(json_object_get(e, "event")), "BLOCK_IO_ERROR");
	json_decref(e);
	/* A stop on ENOSPC: nospace, and query-block's io-status says so. */
	vd_blk_report_error(w.cd, VD_BLK_ACTION_STOP, false, -ENOSPC);
	e = next_event(a);
	d = json_object_get(e, "data");
	CHECK_STR(json_string_value(json_object_get(d, "operation")), "write");
	CHECK_STR(json_string_value(json_object_get(d, "action")), "stop");
	CHECK(json_is_true(json_object_get(d, "nospace")));
	CHECK_STR(json_string_value(json_object_get(d, "reason")), "No space left on device");
	json_decref(e);
	json_decref(next_event(b));
	json_t *q = qmp(a, "{\"execute\": \"query-block\"}");
	CHECK_STR(json_string_value(json_object_get(find_device(ret_of(q), "cd"), "io-status")),
		  "nospace");
	json_decref(q);
	/* No device: no io-status, so no "nospace"; no medium: no node-name. */
	vd_blk_remove_node(w.d0);
	vd_blk_report_error(w.d0, VD_BLK_ACTION_IGNORE, true, EIO);
	e = next_event(a);
	d = json_object_get(e, "data");
	CHECK(!json_object_get(d, "nospace"));
	CHECK(!json_object_get(d, "node-name"));
	CHECK_STR(json_string_value(json_object_get(d, "action")), "ignore");
	json_decref(e);
	json_decref(next_event(b));

	/* One client sends garbage and hangs up mid-message; the other lives. */
	send_str(early, "\x01\x02{\"execute\": [[[");
	close(early->fd);
	early->fd = -1;
	for (int i = 0; i < 10; i++)
		vd_loop_run_once(loop, false);
	CHECK_EQ(vd_qmp_server_client_count(w.s), 2);
	json_t *r = qmp(b, "{\"execute\": \"query-version\", \"id\": 1}");
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 1);
	json_decref(r);
	close(a->fd);
	a->fd = -1;
	r = qmp(b, "{\"execute\": \"query-block\", \"id\": 2}");
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 2);
	json_decref(r);
	CHECK_EQ(vd_qmp_server_client_count(w.s), 1);
	client_free(a);
	client_free(b);
	client_free(early);
	world_free(&w);
}

/* A handler that yields: the next command of the client waits for it. */
static json_t *slow_cmd(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	int *state = opaque;

	(*state)++;
	vd_co_sleep_ns(5 * 1000 * 1000);
	(*state)++;
	return json_pack("{s:i}", "state", *state);
}

static void test_yielding_and_unix(void)
{
	struct vd_qmp_server *s;
	struct vd_error err = {0};
	struct client *c;
	int state = 0;
	json_t *r;

	REQUIRE(vd_qmp_server_new(loop, &s) == 0);
	CHECK_EQ(vd_qmp_register(s, "slow", slow_cmd, &state), 0);
	CHECK_EQ(vd_qmp_register(s, "slow", slow_cmd, &state), -EEXIST);
	CHECK_EQ(vd_qmp_register(s, "bad name", slow_cmd, &state), -EINVAL);
	c = client_negotiated(s);
	send_str(c, "{\"execute\": \"slow\", \"id\": 1}{\"execute\": \"slow\", \"id\": 2}");
	r = recv_reply(c);
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 1);
	CHECK_EQ(json_integer_value(json_object_get(ret_of(r), "state")), 2);
	json_decref(r);
	r = recv_reply(c);
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 2);
	CHECK_EQ(json_integer_value(json_object_get(ret_of(r), "state")), 4);
	json_decref(r);
	/* The client goes away while a command runs. */
	send_str(c, "{\"execute\": \"slow\"}");
	for (int i = 0; i < 3; i++)
		vd_loop_run_once(loop, false);
	client_free(c);
	CHECK_EQ(vd_qmp_unregister(s, "nosuch"), -ENOENT);

	/* A unix socket server, QEMU's spelling. */
	char spec[300];
	snprintf(spec, sizeof(spec), "unix:%s,server,nowait", test_path("q.sock"));
	CHECK_EQ(vd_qmp_server_open(s, spec, &err), 0);
	CHECK_EQ(vd_qmp_server_open(s, "tcp:localhost:4444", &err), -EINVAL);
	vd_error_clear(&err);
	CHECK_EQ(vd_qmp_server_open(s, "unix:/x,server=maybe", &err), -EINVAL);
	vd_error_clear(&err);
	{
		struct client uc = {0};
		struct vd_qmp_server *s2;
		char spec2[300];

		/* A second server connecting to the first ("server" absent). */
		REQUIRE(vd_qmp_server_new(loop, &s2) == 0);
		snprintf(spec2, sizeof(spec2), "unix:%s", test_path("q.sock"));
		CHECK_EQ(vd_qmp_server_open(s2, spec2, &err), 0);
		CHECK_EQ(vd_qmp_server_client_count(s2), 1);
		for (int i = 0; i < 10 && vd_qmp_server_client_count(s) < 1; i++)
			vd_loop_run_once(loop, false);
		CHECK_EQ(vd_qmp_server_client_count(s), 1);
		vd_qmp_server_free(s2);
		(void)uc;
	}
	vd_qmp_server_free(s);
	CHECK(access(test_path("q.sock"), F_OK) != 0); /* removed */
	CHECK_EQ(state >= 5, 1); /* the orphaned command finished */
}

/* An fd pair, as stdio: separate input and output fds. */
static void test_fd_pair(void)
{
	struct vd_qmp_server *s;
	struct client c = {0};
	int to_server[2], from_server[2], fd;
	json_t *r;

	REQUIRE(vd_qmp_server_new(loop, &s) == 0);
	REQUIRE(pipe2(to_server, O_CLOEXEC) == 0 && pipe2(from_server, O_CLOEXEC) == 0);
	CHECK_EQ(vd_qmp_server_add_client(s, to_server[0], from_server[1], true), 0);
	c.fd = from_server[0];
	c.events = json_array();
	fcntl(c.fd, F_SETFL, O_NONBLOCK);
	free(recv_line(&c));
	CHECK_ERROR(qmp_fds(&c, to_server[1],
			    "{\"execute\": \"qmp_capabilities\", \"arguments\": "
			    "{\"enable\": [1]}}"),
		    "GenericError", "Invalid parameter type for 'enable[0]', expected: string");
	CHECK_OK(qmp_fds(&c, to_server[1], "{\"execute\": \"qmp_capabilities\"}"));
	r = qmp_fds(&c, to_server[1], "{\"execute\": \"query-version\", \"id\": 7}");
	CHECK_EQ(json_integer_value(json_object_get(r, "id")), 7);
	json_decref(r);
	/* Input closed: the connection ends. */
	close(to_server[1]);
	for (int i = 0; i < 10 && vd_qmp_server_client_count(s) > 0; i++)
		vd_loop_run_once(loop, false);
	CHECK_EQ(vd_qmp_server_client_count(s), 0);
	close(c.fd);
	json_decref(c.events);
	free(c.buf);

	/* A regular file cannot be polled. */
	fd = open(test_path("plain"), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	REQUIRE(fd >= 0);
	CHECK_EQ(vd_qmp_server_add_client(s, fd, fd, false), -EPERM);
	close(fd);
	vd_qmp_server_free(s);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (vd_loop_new(&loop) < 0)
		return 1;
	vd_loop_set_current(loop);
	RUN(test_greeting_and_negotiation);
	RUN(test_malformed);
	RUN(test_query_block);
	RUN(test_block_resize);
	RUN(test_eject_and_change);
	RUN(test_tray_commands);
	RUN(test_events_and_clients);
	RUN(test_yielding_and_unix);
	RUN(test_fd_pair);
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
	return test_finish();
}
