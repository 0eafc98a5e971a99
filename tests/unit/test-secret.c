/* SPDX-License-Identifier: MIT */
/*
 * The secrets registry (<vdisk/secret.h>): add, look up (a copy, NUL after
 * the bytes, binary data kept), duplicates and unknown IDs with QEMU's
 * messages, removal, and concurrent use from several threads.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <vdisk/secret.h>

#include "tests/lib/test.h"

static void test_add_lookup(void)
{
	struct vd_error err = {0};
	uint8_t *p;
	size_t len;

	CHECK_EQ(vd_secret_add("sec0", "hunter2", 7, &err), 0);
	CHECK_EQ(vd_secret_lookup("sec0", &p, &len, &err), 0);
	REQUIRE(p);
	CHECK_EQ(len, 7);
	CHECK(memcmp(p, "hunter2", 8) == 0); /* NUL-terminated copy */
	vd_secret_free(p, len);
	/* Binary bytes, NULs inside, and an empty secret. */
	CHECK_EQ(vd_secret_add("bin", "a\0b", 3, &err), 0);
	CHECK_EQ(vd_secret_lookup("bin", &p, &len, &err), 0);
	CHECK_EQ(len, 3);
	CHECK(memcmp(p, "a\0b", 3) == 0);
	vd_secret_free(p, len);
	CHECK_EQ(vd_secret_add("empty", "", 0, &err), 0);
	CHECK_EQ(vd_secret_lookup("empty", &p, &len, &err), 0);
	CHECK_EQ(len, 0);
	CHECK_EQ(p[0], 0);
	vd_secret_free(p, len);
	vd_secret_remove_all();
}

static void test_errors(void)
{
	struct vd_error err = {0};
	uint8_t *p = (uint8_t *)"x";
	size_t len = 5;

	CHECK_EQ(vd_secret_lookup("nope", &p, &len, &err), -ENOENT);
	CHECK(p == NULL && len == 0);
	CHECK_STR(err.msg, "No secret with id 'nope'");
	CHECK_EQ(vd_secret_add("s", "1", 1, NULL), 0);
	memset(&err, 0, sizeof(err));
	CHECK_EQ(vd_secret_add("s", "2", 1, &err), -EEXIST);
	CHECK_STR(err.msg, "attempt to add duplicate property 's' to object (type 'container')");
	CHECK_EQ(vd_secret_add("", "2", 1, NULL), -EINVAL);
	CHECK_EQ(vd_secret_remove("s"), 0);
	CHECK_EQ(vd_secret_remove("s"), -ENOENT);
	CHECK_EQ(vd_secret_lookup("s", &p, &len, NULL), -ENOENT);
	/* The ID is free again. */
	CHECK_EQ(vd_secret_add("s", "3", 1, NULL), 0);
	vd_secret_remove_all();
	CHECK_EQ(vd_secret_lookup("s", &p, &len, NULL), -ENOENT);
}

static void *worker(void *arg)
{
	char id[32];
	long n = (long)arg;
	int bad = 0;

	for (int i = 0; i < 200; i++) {
		uint8_t *p;
		size_t len;

		snprintf(id, sizeof(id), "t%ld-%d", n, i);
		if (vd_secret_add(id, id, strlen(id), NULL) < 0 ||
		    vd_secret_lookup(id, &p, &len, NULL) < 0 || len != strlen(id) ||
		    memcmp(p, id, len) != 0)
			bad++;
		else
			vd_secret_free(p, len);
		if (i % 2 && vd_secret_remove(id) < 0)
			bad++;
	}
	return (void *)(long)bad;
}

static void test_threads(void)
{
	pthread_t t[4];
	void *bad;

	for (long i = 0; i < 4; i++)
		REQUIRE(pthread_create(&t[i], NULL, worker, (void *)i) == 0);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], &bad);
		CHECK_EQ((long)bad, 0);
	}
	vd_secret_remove_all();
}

static void test_memzero(void)
{
	char buf[16] = "secret";

	vd_memzero_explicit(buf, sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++)
		CHECK_EQ(buf[i], 0);
	vd_memzero_explicit(NULL, 10); /* allowed */
}

int main(void)
{
	RUN(test_add_lookup);
	RUN(test_errors);
	RUN(test_threads);
	RUN(test_memzero);
	return test_finish();
}
