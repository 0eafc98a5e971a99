/* SPDX-License-Identifier: MIT */
/*
 * A minimal unit-test harness.  Each tests/unit/test-*.c is one program:
 *
 *	static void test_split(void) { CHECK_EQ(f(1), 2); }
 *	int main(void) { RUN(test_split); return test_finish(); }
 *
 * A failed CHECK prints file:line and the values, and marks the test failed
 * (it goes on, so one run shows every failure).  test_finish() prints the
 * summary and returns 0, 1 (failures) or 77 (test_skip() was called: SKIP).
 */
#ifndef VDISK_TEST_H
#define VDISK_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int test_failures;
extern int test_checks;
extern const char *test_current;

void test_run(const char *name, void (*fn)(void));
int test_finish(void);
/* Mark the whole program skipped with a reason (exit 77 from test_finish). */
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A scratch directory for this program, created on first use, removed at exit. */
const char *test_tmpdir(void);
/* "tmpdir/name" in a static buffer rotation (8 entries). */
const char *test_path(const char *name);

#define RUN(fn) test_run(#fn, fn)

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		test_checks++;                                                               \
		if (!(cond)) {                                                               \
			fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, \
				test_current, #cond);                                        \
			test_failures++;                                                     \
		}                                                                            \
	} while (0)

#define CHECK_EQ(a, b)                                                                          \
	do {                                                                                    \
		long long a_ = (long long)(a), b_ = (long long)(b);                             \
		test_checks++;                                                                  \
		if (a_ != b_) {                                                                 \
			fprintf(stderr, "%s:%d: %s: %s == %s failed: %lld != %lld\n", __FILE__, \
				__LINE__, test_current, #a, #b, a_, b_);                        \
			test_failures++;                                                        \
		}                                                                               \
	} while (0)

#define CHECK_STR(a, b)                                                                       \
	do {                                                                                  \
		const char *a_ = (a), *b_ = (b);                                              \
		test_checks++;                                                                \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                      \
			fprintf(stderr, "%s:%d: %s: %s == %s failed: \"%s\" != \"%s\"\n",     \
				__FILE__, __LINE__, test_current, #a, #b, a_ ? a_ : "(null)", \
				b_ ? b_ : "(null)");                                          \
			test_failures++;                                                      \
		}                                                                             \
	} while (0)

/* Stop the current test function if a precondition fails. */
#define REQUIRE(cond)                                                                          \
	do {                                                                                   \
		test_checks++;                                                                 \
		if (!(cond)) {                                                                 \
			fprintf(stderr, "%s:%d: %s: REQUIRE(%s) failed\n", __FILE__, __LINE__, \
				test_current, #cond);                                          \
			test_failures++;                                                       \
			return;                                                                \
		}                                                                              \
	} while (0)

#endif
