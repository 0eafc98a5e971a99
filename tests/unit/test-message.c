/* SPDX-License-Identifier: MIT */
/* vd_message(): dropped without a handler, one line per call to the handler
 * the program installed, from any thread. */
#include <pthread.h>
#include <stdatomic.h>

#include <vdisk/error.h>

#include "tests/lib/test.h"

struct sink {
	int calls;
	enum vd_message_level level;
	char last[2048];
	atomic_int concurrent_calls;
};

static void record(void *opaque, enum vd_message_level level, const char *msg)
{
	struct sink *s = opaque;

	s->calls++;
	s->level = level;
	snprintf(s->last, sizeof(s->last), "%s", msg);
}

static void count(void *opaque, enum vd_message_level level, const char *msg)
{
	struct sink *s = opaque;

	atomic_fetch_add(&s->concurrent_calls, 1);
}

static void test_default_drops(void)
{
	/* No handler installed: nothing happens (and nothing is printed). */
	vd_message(VD_MSG_ERROR, "dropped %d", 1);
	CHECK(1);
}

static void test_handler_gets_lines(void)
{
	struct sink s = {0};

	vd_message_set_handler(record, &s);
	vd_message(VD_MSG_WARNING, "Leaked cluster %d refcount=%d reference=%d", 5, 2, 1);
	CHECK_EQ(s.calls, 1);
	CHECK_EQ(s.level, VD_MSG_WARNING);
	CHECK_STR(s.last, "Leaked cluster 5 refcount=2 reference=1");
	vd_message(VD_MSG_INFO, "Rebuilding refcount structure");
	CHECK_EQ(s.calls, 2);
	CHECK_EQ(s.level, VD_MSG_INFO);

	vd_message_set_handler(NULL, NULL);
	vd_message(VD_MSG_ERROR, "after removal");
	CHECK_EQ(s.calls, 2);
}

static void test_long_message_truncated(void)
{
	struct sink s = {0};
	char big[1500];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	vd_message_set_handler(record, &s);
	vd_message(VD_MSG_ERROR, "%s", big);
	vd_message_set_handler(NULL, NULL);
	CHECK_EQ(s.calls, 1);
	CHECK_EQ(strlen(s.last), 1023);
}

static void *reporter(void *arg)
{
	for (int i = 0; i < 1000; i++)
		vd_message(VD_MSG_ERROR, "thread message %d", i);
	return NULL;
}

static void test_threads(void)
{
	struct sink s = {0};
	pthread_t t[4];

	vd_message_set_handler(count, &s);
	for (int i = 0; i < 4; i++)
		REQUIRE(pthread_create(&t[i], NULL, reporter, NULL) == 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	vd_message_set_handler(NULL, NULL);
	CHECK_EQ(atomic_load(&s.concurrent_calls), 4000);
}

int main(void)
{
	RUN(test_default_drops);
	RUN(test_handler_gets_lines);
	RUN(test_long_message_truncated);
	RUN(test_threads);
	return test_finish();
}
