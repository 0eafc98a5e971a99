/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <unistd.h>

#include "test.h"

int test_failures;
int test_checks;
const char *test_current = "";
static int skipped;
static char skip_reason[256];
static char tmpdir[256];

void test_run(const char *name, void (*fn)(void))
{
	int before = test_failures;
	test_current = name;
	fn();
	fprintf(stderr, "  %s %s\n", test_failures == before ? "ok  " : "FAIL", name);
}

void test_skip(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(skip_reason, sizeof(skip_reason), fmt, ap);
	va_end(ap);
	skipped = 1;
}

static void remove_tmpdir(void)
{
	char cmd[300];
	if (tmpdir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "warning: could not remove %s\n", tmpdir);
	}
}

const char *test_tmpdir(void)
{
	if (!tmpdir[0]) {
		const char *base = getenv("TMPDIR");
		snprintf(tmpdir, sizeof(tmpdir), "%s/vdisk-test-XXXXXX", base ? base : "/tmp");
		if (!mkdtemp(tmpdir)) {
			perror("mkdtemp");
			exit(1);
		}
		atexit(remove_tmpdir);
	}
	return tmpdir;
}

const char *test_path(const char *name)
{
	static char bufs[8][512];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof(bufs[0]), "%s/%s", test_tmpdir(), name);
	return b;
}

int test_finish(void)
{
	if (skipped && test_failures == 0) {
		printf("SKIP: %s\n", skip_reason);
		return 77;
	}
	printf("%d checks, %d failed\n", test_checks, test_failures);
	if (test_checks == 0) {
		printf("no checks ran: counting as a failure\n");
		return 1;
	}
	return test_failures ? 1 : 0;
}
