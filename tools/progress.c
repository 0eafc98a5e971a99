/* SPDX-License-Identifier: MIT */
/*
 * Progress reports of the long-running subcommands (-p), shared by convert,
 * compare, dd, amend, commit and rebase.
 *
 * The figures and their rules are qemu-img 7.2's: the percentage goes out
 * as "    (12.34/100%)\r" on stdout when it moved by more than the minimum
 * step since the last report, and always at 0 and 100; the end is a newline.
 * On a terminal the line also says the rate and the time left, and is
 * redrawn in place.  Without -p nothing is printed, but SIGUSR1 asks for one
 * report on stderr ("    (12.34/100%)\n"), as qemu-img does.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/tools.h"

static volatile sig_atomic_t report_pending;

static void on_sigusr1(int sig)
{
	(void)sig;
	report_pending = 1;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tool_progress_init(struct tool_progress *p, bool enabled, float min_skip)
{
	memset(p, 0, sizeof(*p));
	p->enabled = enabled;
	p->min_skip = min_skip;
	p->tty = enabled && isatty(STDOUT_FILENO);
	p->t0 = now_seconds();
	if (!enabled) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sigfillset(&sa.sa_mask);
		sa.sa_handler = on_sigusr1;
		sigaction(SIGUSR1, &sa, NULL);
	}
}

void tool_progress_set_bytes(struct tool_progress *p, int64_t total)
{
	p->total_bytes = total;
}

static void print_line(struct tool_progress *p)
{
	double elapsed = now_seconds() - p->t0;
	int width;

	width = printf("    (%3.2f/100%%)", p->current);
	if (p->tty && p->current > 0 && p->current < 100 && elapsed > 0.5) {
		double left = elapsed * (100.0 - p->current) / p->current;

		if (p->total_bytes > 0)
			width += printf(" %.1f MiB/s", (double)p->total_bytes * p->current / 100.0 /
							       elapsed / (1024.0 * 1024.0));
		width += printf(", %d:%02d left", (int)left / 60, (int)left % 60);
	}
	/* Clear what a longer line before left on the terminal. */
	if (p->tty && width < p->width)
		printf("%*s", p->width - width, "");
	if (p->tty)
		p->width = width;
	printf("\r");
	fflush(stdout);
}

void tool_progress_print(struct tool_progress *p, float delta, int max)
{
	float current = max == 0 ? delta : p->current + delta / 100 * (float)max;

	if (current > 100)
		current = 100;
	p->current = current;
	if (current > p->last_print + p->min_skip || current == 100 || current == 0) {
		p->last_print = current;
		if (p->enabled) {
			print_line(p);
		} else if (report_pending) {
			fprintf(stderr, "    (%3.2f/100%%)\n", p->current);
			report_pending = 0;
		}
	}
}

void tool_progress_end(struct tool_progress *p)
{
	if (p->enabled)
		printf("\n");
}

void tool_progress_start(struct tool_progress *p, bool enabled)
{
	tool_progress_init(p, enabled, 1.0f);
	tool_progress_print(p, 0, 100);
}

void tool_progress_update(struct tool_progress *p, double pct)
{
	tool_progress_print(p, (float)pct, 0);
}

void tool_progress_finish(struct tool_progress *p)
{
	tool_progress_print(p, 100, 0);
	tool_progress_end(p);
}
