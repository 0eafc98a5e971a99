/* SPDX-License-Identifier: MIT */
/*
 * Option trees: keyval and json: syntax, the used-flag bookkeeping, typed
 * getters, and qemu-img's size notation.  Expected sizes and size strings were
 * taken from qemu-img 7.2 ("qemu-img create -f raw x SIZE", "qemu-img info").
 */
#include <errno.h>
#include <stdbool.h>

#include <vdisk/opts.h>

#include "tests/lib/test.h"

/*
 * Allocation failure injection: on glibc a program may replace malloc (glibc
 * manual, "Replacing malloc"), and libc's own strdup()/strndup() and jansson
 * then call the replacement.  Sanitizers replace malloc themselves, so the
 * test is compiled out there.
 */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define NO_MALLOC_HOOK 1
#endif
#endif
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(NO_MALLOC_HOOK)
#define MALLOC_HOOK 1
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

static long fail_after = -1; /* allocations left before one fails; -1: never */
static long live; /* allocations not yet freed */

static bool fail_now(void)
{
	if (fail_after < 0)
		return false;
	return fail_after-- == 0;
}

void *malloc(size_t size)
{
	void *p = fail_now() ? NULL : __libc_malloc(size);

	live += p != NULL;
	return p;
}

void *calloc(size_t n, size_t size)
{
	void *p = fail_now() ? NULL : __libc_calloc(n, size);

	live += p != NULL;
	return p;
}

void *realloc(void *old, size_t size)
{
	void *p = fail_now() ? NULL : __libc_realloc(old, size);

	live += p != NULL && old == NULL;
	return p;
}

void free(void *p)
{
	live -= p != NULL;
	__libc_free(p);
}
#endif

/* Parse @str, expecting success; NULL (and a failed check) otherwise. */
static struct vd_opts *parse_ok(const char *str, const char *implied)
{
	struct vd_error err = {0};
	struct vd_opts *o = NULL;
	int ret = vd_opts_parse(str, implied, &o, &err);

	if (ret != 0)
		fprintf(stderr, "  parse of \"%s\" failed: %s\n", str, err.msg);
	CHECK_EQ(ret, 0);
	CHECK(!vd_error_is_set(&err));
	return o;
}

/* Parse @str, expecting -EINVAL with exactly @msg. */
static void parse_fails(const char *str, const char *implied, const char *msg)
{
	struct vd_error err = {0};
	struct vd_opts *o = (struct vd_opts *)&err; /* must be reset to NULL */

	CHECK_EQ(vd_opts_parse(str, implied, &o, &err), -EINVAL);
	CHECK(o == NULL);
	CHECK_EQ(err.code, -EINVAL);
	if (msg)
		CHECK_STR(err.msg, msg);
}

/* Parse @str and compare its JSON rendering. */
static void parse_json_is(const char *str, const char *json)
{
	struct vd_opts *o = parse_ok(str, NULL);
	char *j;

	if (!o)
		return;
	j = vd_opts_to_json(o);
	CHECK_STR(j, json);
	free(j);
	vd_opts_free(o);
}

static void test_keyval_basic(void)
{
	struct vd_opts *o = parse_ok("driver=qcow2,file.filename=/tmp/x,file.aio=io_uring", NULL);
	const struct vd_opts *d;
	const char *k, *v;
	int it = 0;

	REQUIRE(o);
	CHECK_EQ(vd_opts_count(o), 2);
	CHECK_STR(vd_opts_get(o, "driver"), "qcow2");
	CHECK_STR(vd_opts_peek(o, "file.filename"), "/tmp/x");
	CHECK_STR(vd_opts_peek(o, "file.aio"), "io_uring");
	CHECK(vd_opts_get(o, "file") == NULL); /* a dictionary, not a string */
	CHECK(vd_opts_has(o, "file"));
	CHECK(vd_opts_has(o, "file.aio"));
	CHECK(!vd_opts_has(o, "file.nope"));
	CHECK(!vd_opts_has(o, "driver.x"));
	CHECK(!vd_opts_has(o, ""));
	CHECK(!vd_opts_has(o, "file."));

	CHECK(vd_opts_next(o, &it, &k, &v, &d));
	CHECK_STR(k, "driver");
	CHECK_STR(v, "qcow2");
	CHECK(d == NULL);
	CHECK(vd_opts_next(o, &it, &k, &v, &d));
	CHECK_STR(k, "file");
	CHECK(v == NULL);
	CHECK_EQ(vd_opts_count(d), 2);
	CHECK(!vd_opts_next(o, &it, &k, &v, &d));
	vd_opts_free(o);

	parse_json_is("", "{}");
	parse_json_is("a=", "{\"a\":\"\"}");
	parse_json_is("a=1,", "{\"a\":\"1\"}");
	parse_json_is("a-b_C9=x", "{\"a-b_C9\":\"x\"}");
	parse_json_is("a=x=y", "{\"a\":\"x=y\"}");
	parse_json_is("a.0=x,a.1=y", "{\"a\":{\"0\":\"x\",\"1\":\"y\"}}");
	parse_json_is("a.b.c.d=1,a.b.e=2,f=3",
		      "{\"a\":{\"b\":{\"c\":{\"d\":\"1\"},\"e\":\"2\"}},\"f\":\"3\"}");
}

static void test_keyval_escape(void)
{
	parse_json_is("filename=a,,b", "{\"filename\":\"a,b\"}");
	parse_json_is("filename=a,,b,c=d", "{\"filename\":\"a,b\",\"c\":\"d\"}");
	parse_json_is("x=,,", "{\"x\":\",\"}");
	parse_json_is("x=,,,,,y=1", "{\"x\":\",,\",\"y\":\"1\"}");
	parse_json_is("x=a,,", "{\"x\":\"a,\"}");
	parse_json_is("a=1,,,,,", "{\"a\":\"1,,\"}");
	parse_json_is("x=,", "{\"x\":\"\"}");
	parse_json_is("x=\"q\"\\", "{\"x\":\"\\\"q\\\"\\\\\"}");
	parse_json_is("x=\n\t", "{\"x\":\"\\u000a\\u0009\"}");
	/* Invalid UTF-8 cannot be represented in JSON: U+FFFD stands in. */
	parse_json_is("x=\xff\xc3\xa9", "{\"x\":\"\\ufffd\xc3\xa9\"}");
}

static void test_keyval_errors(void)
{
	parse_fails("a..b=1", NULL, "Invalid parameter 'a..b'");
	parse_fails(".a=1", NULL, "Invalid parameter '.a'");
	parse_fails("a.=1", NULL, "Invalid parameter 'a.'");
	parse_fails("a b=1", NULL, "Invalid parameter 'a b'");
	parse_fails("=x", NULL, "Missing parameter name at position 0");
	parse_fails("a=1,=x", NULL, "Missing parameter name at position 4");
	parse_fails(",", NULL, "Missing parameter name at position 0");
	parse_fails("foo", NULL, "Expected '=' after parameter 'foo'");
	parse_fails("a=1,foo", NULL, "Expected '=' after parameter 'foo'");
	parse_fails("a=1,foo,b=2", NULL, "Expected '=' after parameter 'foo'");
	parse_fails("a=1,a.b=2", NULL, "Parameters 'a.*' used inconsistently");
	parse_fails("a.b=2,a=1", NULL, "Parameters 'a.*' used inconsistently");
	parse_fails("x.a.b=2,x.a.b.c=1", NULL, "Parameters 'x.a.b.*' used inconsistently");
	parse_fails(NULL, NULL, "No options given");
}

static void test_keyval_deep(void)
{
	char key[400];
	size_t n = 0;

	/* 64 segments are fine, 65 are not. */
	for (int i = 0; i < 64; i++)
		n += (size_t)snprintf(key + n, sizeof(key) - n, "%sk", i ? "." : "");
	snprintf(key + n, sizeof(key) - n, "=1");
	struct vd_opts *o = parse_ok(key, NULL);
	vd_opts_free(o);
	snprintf(key + n, sizeof(key) - n, ".k=1");
	parse_fails(key, NULL, NULL);
}

static void test_keyval_implied(void)
{
	struct vd_opts *o = parse_ok("qcow2,file.filename=x", "driver");

	REQUIRE(o);
	CHECK_STR(vd_opts_peek(o, "driver"), "qcow2");
	CHECK_STR(vd_opts_peek(o, "file.filename"), "x");
	vd_opts_free(o);

	/* An element with '=' is never the implied one. */
	o = parse_ok("driver=raw", "driver");
	REQUIRE(o);
	CHECK_STR(vd_opts_peek(o, "driver"), "raw");
	vd_opts_free(o);

	/* The implied value may hold dots; it ends at the first comma. */
	o = parse_ok("a.b", "x");
	REQUIRE(o);
	CHECK_STR(vd_opts_peek(o, "x"), "a.b");
	vd_opts_free(o);

	/* Only the first element. */
	parse_fails("qcow2,raw", "driver", "Expected '=' after parameter 'raw'");
	parse_fails("a=1,qcow2", "driver", "Expected '=' after parameter 'qcow2'");
	/* As in QEMU, ",," is no escape in an implied value. */
	parse_fails("a,,b", "x", "Missing parameter name at position 2");
	parse_fails("qcow2", "bad..key", "Invalid parameter 'bad..key'");
}

static void test_keyval_duplicates(void)
{
	struct vd_opts *o = parse_ok("a=1,b=2,a=3,c.d=4,c.d=5", NULL);
	char *j;

	REQUIRE(o);
	j = vd_opts_to_json(o);
	CHECK_STR(j, "{\"a\":\"3\",\"b\":\"2\",\"c\":{\"d\":\"5\"}}");
	free(j);

	/* A replaced value must be read again. */
	CHECK_STR(vd_opts_get(o, "a"), "3");
	CHECK_EQ(vd_opts_parse_into(o, "a=9", NULL, NULL), 0);
	CHECK_STR(vd_opts_peek(o, "a"), "9");
	CHECK_STR(vd_opts_get(o, "b"), "2");
	CHECK_STR(vd_opts_get(o, "c.d"), "5");
	struct vd_error err = {0};
	CHECK_EQ(vd_opts_check_unused(o, NULL, &err), -EINVAL);
	CHECK_STR(err.msg, "Invalid parameter 'a'");
	vd_opts_free(o);
}

static void test_parse_into(void)
{
	struct vd_opts *o = parse_ok("a=1,b.c=2", NULL);
	struct vd_error err = {0};
	char *j;

	REQUIRE(o);
	CHECK_EQ(vd_opts_parse_into(o, "b.d=3,e=4", NULL, &err), 0);
	CHECK_EQ(vd_opts_parse_into(o, "json:{\"b\":{\"c\":\"x\"},\"f\":true}", NULL, &err), 0);
	j = vd_opts_to_json(o);
	CHECK_STR(j, "{\"a\":\"1\",\"b\":{\"c\":\"x\",\"d\":\"3\"},\"e\":\"4\",\"f\":\"true\"}");
	free(j);

	/* A failed merge leaves the tree as it was. */
	CHECK_EQ(vd_opts_parse_into(o, "z=1,b=2", NULL, &err), -EINVAL);
	CHECK_STR(err.msg, "Parameters 'b.*' used inconsistently");
	CHECK(!vd_opts_has(o, "z"));
	CHECK_STR(vd_opts_peek(o, "b.c"), "x");
	vd_opts_free(o);
}

static void test_json(void)
{
	parse_json_is("json:{}", "{}");
	parse_json_is(
		"json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"x\"}}",
		"{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"x\"}}");
	/* Dotted member names nest as in qdict_flatten()/crumple. */
	parse_json_is("json:{\"file.filename\":\"x\",\"file.aio\":\"native\",\"a\":\"b\"}",
		      "{\"file\":{\"filename\":\"x\",\"aio\":\"native\"},\"a\":\"b\"}");
	parse_json_is("json:{\"file\":{\"a\":\"1\"},\"file.b\":\"2\",\"file.a\":\"3\"}",
		      "{\"file\":{\"a\":\"3\",\"b\":\"2\"}}");
	parse_json_is("json:{\"x\":{\"y.z\":{\"w\":\"1\"}}}",
		      "{\"x\":{\"y\":{\"z\":{\"w\":\"1\"}}}}");
	/* Arrays become dictionaries keyed by index. */
	parse_json_is("json:{\"a\":[\"x\",{\"b\":1},[true]],\"e\":[]}",
		      "{\"a\":{\"0\":\"x\",\"1\":{\"b\":\"1\"},\"2\":{\"0\":\"true\"}},\"e\":{}}");
	/* Numbers keep their text; booleans become "true"/"false". */
	parse_json_is("json:{\"i\":42,\"n\":-7,\"big\":9223372036854775807,\"r\":1.5,"
		      "\"r2\":0.1,\"r3\":1e300,\"t\":true,\"f\":false}",
		      "{\"i\":\"42\",\"n\":\"-7\",\"big\":\"9223372036854775807\",\"r\":\"1.5\","
		      "\"r2\":\"0.1\",\"r3\":\"1e+300\",\"t\":\"true\",\"f\":\"false\"}");
	/* Any member name is kept (check_unused will report what nobody reads). */
	parse_json_is("json:{\"a b\":\"\\u00e9\",\"k\":\"a,b\"}",
		      "{\"a b\":\"\xc3\xa9\",\"k\":\"a,b\"}");
	/* json: is recognised only as a prefix. */
	parse_json_is("x=json:{}", "{\"x\":\"json:{}\"}");

	struct vd_opts *o = parse_ok("json:{\"size\":1073741824,\"ro\":true}", NULL);
	uint64_t size = 0;
	bool ro = false;
	REQUIRE(o);
	CHECK_EQ(vd_opts_get_size(o, "size", 0, &size, NULL), 0);
	CHECK_EQ(size, 1073741824);
	CHECK_EQ(vd_opts_get_bool(o, "ro", false, &ro, NULL), 0);
	CHECK(ro);
	vd_opts_free(o);
}

static void test_json_errors(void)
{
	parse_fails("json:{\"a\":null}", NULL, "Parameter 'a' must not be null");
	parse_fails("json:{\"a\":{\"b\":[1,null]}}", NULL, "Parameter 'a.b.1' must not be null");
	parse_fails("json:{\"a.b\":{\"c\":null}}", NULL, "Parameter 'a.b.c' must not be null");
	parse_fails("json:[1]", NULL, "Invalid JSON object given");
	parse_fails("json:\"x\"", NULL, "Invalid JSON object given");
	parse_fails("json:{\"a\":\"1\",\"a.b\":\"2\"}", NULL,
		    "Parameters 'a.*' used inconsistently");
	parse_fails("json:{\"a.b\":\"2\",\"a\":\"1\"}", NULL,
		    "Parameters 'a.*' used inconsistently");
	parse_fails("json:{\"a\":{\"b\":\"1\"},\"a.b\":{}}", NULL,
		    "Parameters 'a.b.*' used inconsistently");
	parse_fails("json:{\"x\":{\"a..b\":\"1\"}}", NULL, "Invalid parameter 'x.a..b'");
	parse_fails("json:{\"\":\"1\"}", NULL, "Invalid parameter ''");
	parse_fails("json:{\".a\":\"1\"}", NULL, "Invalid parameter '.a'");

	/* The parser's own messages are passed on; only the prefix is ours. */
	struct vd_error err = {0};
	struct vd_opts *o = NULL;
	static const char *const bad[] = {
		"json:",
		"json:{",
		"json:{\"a\":\"1\"",
		"json:{\"a\":\"1\"} x",
		"json:{\"a\":\"1\",\"a\":\"2\"}", /* QEMU's parser rejects duplicates too */
		"json:{\"a\":\"\\u0000\"}",
		"json:{\"a\":\"\xff\"}",
		"json:{\"a\":1e999}",
		"json:{\"a\":99999999999999999999}",
		"json:{a:1}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vd_error_clear(&err);
		CHECK_EQ(vd_opts_parse(bad[i], NULL, &o, &err), -EINVAL);
		CHECK(o == NULL);
		CHECK(strncmp(err.msg, "Could not parse the JSON options: ", 34) == 0);
	}
}

static void test_json_deep(void)
{
	char buf[1024];
	size_t n = 5;

	memcpy(buf, "json:", 5);
	/* 64 nested objects: the innermost member is at depth 64. */
	for (int i = 0; i < 63; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{\"a\":");
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{\"b\":\"1\"}");
	for (int i = 0; i < 63; i++)
		buf[n++] = '}';
	buf[n] = '\0';
	struct vd_opts *o = parse_ok(buf, NULL);
	vd_opts_free(o);

	/* One more level, written with a dotted member name. */
	memcpy(strstr(buf, "{\"b\":\"1\"}"), "{\"b.c\":1}", 9);
	parse_fails(buf, NULL, NULL);
}

static void test_check_unused(void)
{
	struct vd_opts *o =
		parse_ok("driver=qcow2,file.driver=file,file.filename=x,file.aoi=y", NULL);
	struct vd_error err = {0};

	REQUIRE(o);
	CHECK_EQ(vd_opts_check_unused(o, NULL, &err), -EINVAL);
	CHECK_STR(err.msg, "Invalid parameter 'driver'");

	vd_error_clear(&err);
	CHECK(vd_opts_get(o, "driver"));
	struct vd_opts *file = vd_opts_get_dict(o, "file");
	REQUIRE(file);
	CHECK_STR(vd_opts_get(file, "driver"), "file");
	CHECK_STR(vd_opts_get(file, "filename"), "x");
	/* The dictionary was taken, but its leaves are still checked. */
	CHECK_EQ(vd_opts_check_unused(o, NULL, &err), -EINVAL);
	CHECK_STR(err.msg, "Invalid parameter 'file.aoi'");
	vd_error_clear(&err);
	CHECK_EQ(vd_opts_check_unused(o, "drive0", &err), -EINVAL);
	CHECK_STR(err.msg, "Invalid parameter 'drive0.file.aoi'");
	vd_error_clear(&err);
	CHECK_EQ(vd_opts_check_unused(file, "file", &err), -EINVAL);
	CHECK_STR(err.msg, "Invalid parameter 'file.aoi'");
	vd_error_clear(&err);
	CHECK_EQ(vd_opts_check_unused(o, "", &err), -EINVAL);
	CHECK_STR(err.msg, "Invalid parameter 'file.aoi'");

	/* peek does not count. */
	vd_error_clear(&err);
	CHECK_STR(vd_opts_peek(o, "file.aoi"), "y");
	CHECK_EQ(vd_opts_check_unused(o, NULL, &err), -EINVAL);
	CHECK_STR(vd_opts_get(o, "file.aoi"), "y");
	vd_error_clear(&err);
	CHECK_EQ(vd_opts_check_unused(o, NULL, &err), 0);
	CHECK(!vd_error_is_set(&err));
	CHECK_EQ(vd_opts_check_unused(o, NULL, NULL), 0);
	vd_opts_free(o);

	/* An empty dictionary nobody asked for is reported too. */
	o = parse_ok("json:{\"a\":\"1\",\"opts\":{}}", NULL);
	REQUIRE(o);
	CHECK(vd_opts_get(o, "a"));
	vd_error_clear(&err);
	CHECK_EQ(vd_opts_check_unused(o, NULL, &err), -EINVAL);
	CHECK_STR(err.msg, "Invalid parameter 'opts'");
	CHECK(vd_opts_get_dict(o, "opts"));
	CHECK_EQ(vd_opts_check_unused(o, NULL, NULL), 0);
	vd_opts_free(o);

	/* Nested deep within arrays. */
	o = parse_ok("json:{\"s\":[{\"a\":\"1\"},{\"a\":\"2\",\"zz\":3}]}", NULL);
	REQUIRE(o);
	CHECK(vd_opts_get(o, "s.0.a"));
	CHECK(vd_opts_get(o, "s.1.a"));
	vd_error_clear(&err);
	CHECK_EQ(vd_opts_check_unused(o, "x", &err), -EINVAL);
	CHECK_STR(err.msg, "Invalid parameter 'x.s.1.zz'");
	vd_opts_free(o);
}

static void test_take_dict(void)
{
	struct vd_opts *o = parse_ok("a=1,file.filename=x,file.sub.k=v,b=2", NULL);
	struct vd_opts *file, *sub;
	char *j;

	REQUIRE(o);
	CHECK(vd_opts_take_dict(o, "a") == NULL); /* a string */
	CHECK(vd_opts_take_dict(o, "nope") == NULL);
	file = vd_opts_take_dict(o, "file");
	REQUIRE(file);
	CHECK(!vd_opts_has(o, "file"));
	CHECK_EQ(vd_opts_count(o), 2);
	j = vd_opts_to_json(o);
	CHECK_STR(j, "{\"a\":\"1\",\"b\":\"2\"}");
	free(j);
	sub = vd_opts_take_dict(file, "sub");
	REQUIRE(sub);
	CHECK_STR(vd_opts_get(sub, "k"), "v");
	CHECK_EQ(vd_opts_check_unused(sub, "file.sub", NULL), 0);
	vd_opts_free(sub);
	vd_opts_free(o); /* the detached tree outlives its old parent */
	CHECK_STR(vd_opts_get(file, "filename"), "x");
	CHECK_EQ(vd_opts_count(file), 1);
	vd_opts_free(file);

	/* Take a dotted path. */
	o = parse_ok("x.y.z=1", NULL);
	REQUIRE(o);
	sub = vd_opts_take_dict(o, "x.y");
	REQUIRE(sub);
	CHECK_STR(vd_opts_peek(sub, "z"), "1");
	CHECK(vd_opts_has(o, "x"));
	CHECK(!vd_opts_has(o, "x.y"));
	vd_opts_free(sub);
	vd_opts_free(o);
}

static void test_set_remove_clone(void)
{
	struct vd_opts *o = vd_opts_new(), *c;
	char *j;

	REQUIRE(o);
	CHECK_EQ(vd_opts_set(o, "driver", "raw"), 0);
	CHECK_EQ(vd_opts_set(o, "file.filename", "x"), 0);
	CHECK_EQ(vd_opts_set(o, "file.filename", "y"), 0);
	CHECK_EQ(vd_opts_set_default(o, "file.filename", "z"), 0);
	CHECK_EQ(vd_opts_set_default(o, "file.aio", "threads"), 0);
	CHECK_EQ(vd_opts_set_default(o, "file", "threads"), 0); /* present (a dict) */
	CHECK_EQ(vd_opts_set(o, "driver.x", "1"), -EINVAL);
	CHECK_EQ(vd_opts_set(o, "file", "1"), -EINVAL);
	CHECK_EQ(vd_opts_set(o, "a..b", "1"), -EINVAL);
	CHECK_EQ(vd_opts_set(o, "new.", "1"), -EINVAL);
	CHECK_EQ(vd_opts_set(o, ".new", "1"), -EINVAL);
	CHECK_EQ(vd_opts_set(o, "", "1"), -EINVAL);
	CHECK_EQ(vd_opts_set(o, "new.x..y", "1"), -EINVAL);
	CHECK(!vd_opts_has(o, "new")); /* nothing created for a bad key */
	CHECK_EQ(vd_opts_set(o, "k", NULL), -EINVAL);
	j = vd_opts_to_json(o);
	CHECK_STR(j, "{\"driver\":\"raw\",\"file\":{\"filename\":\"y\",\"aio\":\"threads\"}}");
	free(j);

	CHECK(vd_opts_get(o, "driver"));
	c = vd_opts_clone(o);
	REQUIRE(c);
	CHECK(vd_opts_remove(o, "file.aio"));
	CHECK(!vd_opts_remove(o, "file.aio"));
	CHECK(vd_opts_remove(o, "file"));
	CHECK(!vd_opts_has(o, "file.filename"));
	CHECK_EQ(vd_opts_count(o), 1);
	/* The clone is independent and keeps the used flags. */
	CHECK_STR(vd_opts_peek(c, "file.aio"), "threads");
	struct vd_error err = {0};
	CHECK_EQ(vd_opts_check_unused(c, NULL, &err), -EINVAL);
	CHECK_STR(err.msg, "Invalid parameter 'file.filename'");
	vd_opts_free(c);
	vd_opts_free(o);

	CHECK(vd_opts_clone(NULL) == NULL);
	vd_opts_free(NULL);
	j = vd_opts_to_json(NULL);
	CHECK_STR(j, "{}");
	free(j);
}

static void test_get_bool(void)
{
	static const struct {
		const char *text;
		int ret;
		bool value;
	} cases[] = {
		{"on", 0, true},    {"yes", 0, true},  {"true", 0, true},   {"y", 0, true},
		{"off", 0, false},  {"no", 0, false},  {"false", 0, false}, {"n", 0, false},
		{"ON", -EINVAL, 0}, {"1", -EINVAL, 0}, {"", -EINVAL, 0},    {"maybe", -EINVAL, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vd_opts *o = vd_opts_new();
		struct vd_error err = {0};
		bool v = !cases[i].value;

		REQUIRE(o);
		CHECK_EQ(vd_opts_set(o, "ro", cases[i].text), 0);
		CHECK_EQ(vd_opts_get_bool(o, "ro", false, &v, &err), cases[i].ret);
		if (cases[i].ret == 0) {
			CHECK_EQ(v, cases[i].value);
		} else {
			CHECK_EQ(err.code, -EINVAL);
			CHECK_STR(err.msg, "Parameter 'ro' expects 'on' or 'off'");
		}
		CHECK_EQ(vd_opts_check_unused(o, NULL, NULL), 0);
		vd_opts_free(o);
	}

	struct vd_opts *o = parse_ok("a.b=on,c.d=x", NULL);
	struct vd_error err = {0};
	bool v = false;
	REQUIRE(o);
	CHECK_EQ(vd_opts_get_bool(o, "nope", true, &v, &err), 0);
	CHECK(v);
	CHECK_EQ(vd_opts_get_bool(o, "nope", false, &v, &err), 0);
	CHECK(!v);
	CHECK_EQ(vd_opts_get_bool(o, "a.b", false, &v, &err), 0);
	CHECK(v);
	CHECK_EQ(vd_opts_get_bool(o, "c", false, &v, &err), -EINVAL);
	CHECK_STR(err.msg, "Parameter 'c' expects 'on' or 'off'");
	vd_opts_free(o);
}

static void test_get_u64(void)
{
	static const struct {
		const char *text;
		int ret;
		uint64_t value;
	} cases[] = {
		{"0", 0, 0},
		{"42", 0, 42},
		{"010", 0, 10},
		{"0x10", 0, 16},
		{"0XfF", 0, 255},
		{"18446744073709551615", 0, UINT64_MAX},
		{"0xffffffffffffffff", 0, UINT64_MAX},
		{"18446744073709551616", -EINVAL, 0},
		{"0x10000000000000000", -EINVAL, 0},
		{"-1", -EINVAL, 0},
		{"+1", -EINVAL, 0},
		{" 1", -EINVAL, 0},
		{"1 ", -EINVAL, 0},
		{"", -EINVAL, 0},
		{"0x", -EINVAL, 0},
		{"1k", -EINVAL, 0},
		{"0xg", -EINVAL, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vd_opts *o = vd_opts_new();
		struct vd_error err = {0};
		uint64_t v = 7;

		REQUIRE(o);
		CHECK_EQ(vd_opts_set(o, "n", cases[i].text), 0);
		CHECK_EQ(vd_opts_get_u64(o, "n", 0, &v, &err), cases[i].ret);
		if (cases[i].ret == 0) {
			CHECK(v == cases[i].value);
		} else {
			CHECK_STR(err.msg, "Parameter 'n' expects a non-negative number");
		}
		vd_opts_free(o);
	}
	uint64_t v = 0;
	CHECK_EQ(vd_opts_get_u64(NULL, "n", 99, &v, NULL), 0);
	CHECK_EQ(v, 99);
}

static void test_get_size_enum(void)
{
	struct vd_opts *o = parse_ok("s=1.5G,bad=1.5,cache=writeback,c2=wb", NULL);
	static const char *const modes[] = {"none", "writeback", "writethrough", NULL};
	struct vd_error err = {0};
	uint64_t v = 0;
	int e = -1;

	REQUIRE(o);
	CHECK_EQ(vd_opts_get_size(o, "s", 0, &v, &err), 0);
	CHECK(v == 1610612736ull);
	CHECK_EQ(vd_opts_get_size(o, "absent", 4096, &v, &err), 0);
	CHECK_EQ(v, 4096);
	CHECK_EQ(vd_opts_get_size(o, "bad", 0, &v, &err), -EINVAL);
	CHECK_STR(err.msg, "Parameter 'bad' expects a size");

	vd_error_clear(&err);
	CHECK_EQ(vd_opts_get_enum(o, "cache", modes, 0, &e, &err), 0);
	CHECK_EQ(e, 1);
	CHECK_EQ(vd_opts_get_enum(o, "absent", modes, 2, &e, &err), 0);
	CHECK_EQ(e, 2);
	CHECK_EQ(vd_opts_get_enum(o, "c2", modes, 0, &e, &err), -EINVAL);
	CHECK_STR(err.msg, "Parameter 'c2' does not accept value 'wb' "
			   "(expected none, writeback, writethrough)");
	CHECK_EQ(vd_opts_check_unused(o, NULL, NULL), 0);
	vd_opts_free(o);
}

static void test_parse_size(void)
{
	/* Each row checked against "qemu-img create -f raw x SIZE" (7.2). */
	static const struct {
		const char *text;
		int ret;
		uint64_t value;
	} cases[] = {
		{"0", 0, 0},
		{"1", 0, 1},
		{"00010", 0, 10},
		{"64b", 0, 64},
		{"64B", 0, 64},
		{"1k", 0, 1024},
		{"1K", 0, 1024},
		{"1m", 0, 1048576},
		{"1M", 0, 1048576},
		{"1.5M", 0, 1572864},
		{"1g", 0, 1073741824},
		{"1.5G", 0, 1610612736},
		{"1t", 0, 1099511627776ull},
		{"1p", 0, 1125899906842624ull},
		{"1e", 0, 1152921504606846976ull},
		{"1.5e", 0, 1729382256910270464ull},
		{"1.5k", 0, 1536},
		{"1.7k", 0, 1741}, /* 1740.8 rounds to nearest */
		{"1.3333k", 0, 1365},
		{"0.00049k", 0, 1}, /* 0.50176 rounds up */
		{"0.0000000001k", 0, 0},
		{"1.k", 0, 1024},
		{"1.", 0, 1},
		{"1.0", 0, 1},
		{"1.0k", 0, 1024},
		{"010k", 0, 10240},
		{" 1k", 0, 1024},
		{"\t1", 0, 1},
		{"+1", 0, 1},
		{" +1k", 0, 1024},
		{"0x10", 0, 16},
		{"0X10", 0, 16},
		{"9223372036854775807", 0, 9223372036854775807ull},
		{"7.99999999999999E", 0, 9223372036854764279ull}, /* QEMU: ...764288 (double) */
		{"1.5", -EINVAL, 0},
		{"0.5", -EINVAL, 0},
		{"1.5b", -EINVAL, 0},
		{"1.5B", -EINVAL, 0},
		{"-1", -EINVAL, 0},
		{"-0", -EINVAL, 0},
		{"1k ", -EINVAL, 0},
		{"1 k", -EINVAL, 0},
		{".5G", -EINVAL, 0},
		{"1e3", -EINVAL, 0},
		{"1.5e3k", -EINVAL, 0},
		{"", -EINVAL, 0},
		{"k", -EINVAL, 0},
		{"1KB", -EINVAL, 0},
		{"1Z", -EINVAL, 0},
		{"1.5kk", -EINVAL, 0},
		{"1.2.3", -EINVAL, 0},
		{"1,5k", -EINVAL, 0},
		{"0x", -EINVAL, 0},
		{"1x", -EINVAL, 0},
		{"0b1", -EINVAL, 0},
		{"0x1.5k", -EINVAL, 0},
		{"0x10k", -EINVAL, 0}, /* QEMU 7.2: deprecated, accepted with a warning */
		{"nan", -EINVAL, 0},
		{"inf", -EINVAL, 0},
		{"8E", -ERANGE, 0},
		{"15E", -ERANGE, 0},
		{"16E", -ERANGE, 0},
		{"9223372036854775808", -ERANGE, 0},
		{"18446744073709551615", -ERANGE, 0},
		{"99999999999999999999", -ERANGE, 0},
		{"0x8000000000000000", -ERANGE, 0},
		{"0xffffffffffffffffff", -ERANGE, 0},
		{"99999999999999999999E", -ERANGE, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 12345;
		int ret = vd_parse_size(cases[i].text, &v);

		if (ret != cases[i].ret)
			fprintf(stderr, "  size \"%s\": %d\n", cases[i].text, ret);
		CHECK_EQ(ret, cases[i].ret);
		if (cases[i].ret == 0)
			CHECK(v == cases[i].value);
		else
			CHECK_EQ(v, 12345); /* untouched on error */
	}
	uint64_t v;
	CHECK_EQ(vd_parse_size(NULL, &v), -EINVAL);
}

static void test_format_size(void)
{
	/* Each row as "qemu-img info" prints the virtual size (7.2). */
	static const struct {
		uint64_t size;
		const char *text;
	} cases[] = {
		{0, "0 B"},
		{1, "1 B"},
		{512, "512 B"},
		{999, "999 B"},
		{1000, "0.977 KiB"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{10240, "10 KiB"},
		{1023488, "1e+03 KiB"}, /* sic: "%.3g" of 999.5 */
		{1047552, "0.999 MiB"},
		{1048064, "1 MiB"},
		{1048576, "1 MiB"},
		{67108864, "64 MiB"},
		{104857600, "100 MiB"},
		{123457024, "118 MiB"},
		{1073741824, "1 GiB"},
		{1245708288, "1.16 GiB"},
		{1610612736, "1.5 GiB"},
		{100000000000ull, "93.1 GiB"},
		{1099511627776ull, "1 TiB"},
		{1125899906842624ull, "1 PiB"},
		{1152921504606846976ull, "1 EiB"},
		{4611686018427387904ull, "4 EiB"},
		{8070450532247928832ull, "7 EiB"},
		{UINT64_MAX, "16 EiB"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[32];

		vd_format_size(cases[i].size, buf, sizeof(buf));
		CHECK_STR(buf, cases[i].text);
	}
	char small[4] = "xyz";
	vd_format_size(67108864, small, sizeof(small));
	CHECK_STR(small, "64 ");
	vd_format_size(1, small, 0); /* must not write */
	CHECK_STR(small, "64 ");
}

#ifdef MALLOC_HOOK
/*
 * Run @op with the n-th allocation failing, for n = 0, 1, ... until it
 * succeeds: every failure must be -ENOMEM (never a crash) and leak nothing.
 */
static void oom_loop(const char *what, int (*op)(void))
{
	for (long n = 0;; n++) {
		long before = live;
		int ret;

		fail_after = n;
		ret = op();
		fail_after = -1;
		if (live != before)
			fprintf(stderr, "  %s: leak with allocation %ld failing\n", what, n);
		CHECK_EQ(live, before);
		if (ret == 0)
			break;
		if (ret != -ENOMEM)
			fprintf(stderr, "  %s: %d with allocation %ld failing\n", what, ret, n);
		CHECK_EQ(ret, -ENOMEM);
		if (n > 10000) {
			CHECK(!"oom_loop does not converge");
			break;
		}
	}
}

static int oom_parse(const char *str)
{
	struct vd_error err = {0};
	struct vd_opts *o, *c;
	char *j;
	int ret = vd_opts_parse(str, "implied", &o, &err);

	if (ret < 0) {
		CHECK_EQ(err.code, ret);
		/* jansson reports its own allocation failures as syntax errors
		 * (json_error_code() is not json_error_out_of_memory). */
		if (ret == -EINVAL && strncmp(err.msg, "Could not parse the JSON", 24) == 0)
			return -ENOMEM;
		return ret;
	}
	ret = vd_opts_parse_into(o, "more.x=1,more.y=2", NULL, &err);
	if (ret == 0)
		ret = vd_opts_set(o, "p.q.r", "s");
	if (ret == 0)
		ret = vd_opts_set_default(o, "p.q.t", "u");
	if (ret == 0) {
		c = vd_opts_clone(o);
		if (!c)
			ret = -ENOMEM;
		vd_opts_free(c);
	}
	if (ret == 0) {
		j = vd_opts_to_json(o);
		if (!j)
			ret = -ENOMEM;
		free(j);
	}
	vd_opts_free(o);
	return ret;
}

static int oom_keyval(void)
{
	return oom_parse("qcow2,file.filename=a,,b,file.aio=x,a.b.c=1,a.b.d=2,e=3,e=4,"
			 "k1=1,k2=2,k3=3,k4=4,k5=5,k6=6,k7=7,k8=8,k9=9");
}

static int oom_json(void)
{
	return oom_parse("json:{\"driver\":\"qcow2\",\"file.x\":{\"filename\":\"a\"},"
			 "\"arr\":[1,2.5,true,{\"x\":\"y\"}],\"n\":-3}");
}

static void test_out_of_memory(void)
{
	oom_loop("keyval", oom_keyval);
	oom_loop("json", oom_json);
}
#endif

int main(void)
{
	RUN(test_keyval_basic);
	RUN(test_keyval_escape);
	RUN(test_keyval_errors);
	RUN(test_keyval_deep);
	RUN(test_keyval_implied);
	RUN(test_keyval_duplicates);
	RUN(test_parse_into);
	RUN(test_json);
	RUN(test_json_errors);
	RUN(test_json_deep);
	RUN(test_check_unused);
	RUN(test_take_dict);
	RUN(test_set_remove_clone);
	RUN(test_get_bool);
	RUN(test_get_u64);
	RUN(test_get_size_enum);
	RUN(test_parse_size);
	RUN(test_format_size);
#ifdef MALLOC_HOOK
	RUN(test_out_of_memory);
#endif
	return test_finish();
}
