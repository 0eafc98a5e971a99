/* SPDX-License-Identifier: MIT */
/*
 * Per-node I/O accounting, the counters behind query-blockstats: operations,
 * bytes, failures, requests refused by validation, total time and a latency
 * histogram with power-of-two nanosecond bins.
 */
#include <string.h>

#include "block/internal.h"

static int hist_bin(uint64_t ns)
{
	int bin = ns ? 63 - __builtin_clzll(ns) : 0;
	return bin < VD_ACCT_HIST_BINS ? bin : VD_ACCT_HIST_BINS - 1;
}

void vd_acct_done(struct vd_node *n, enum vd_acct_type type, int64_t bytes, int ret,
		  int64_t start_ns)
{
	struct vd_acct_op *op = &n->stats.op[type];
	int64_t now = vd_clock_ns();
	uint64_t lat = now > start_ns ? (uint64_t)(now - start_ns) : 0;

	if (ret < 0) {
		op->failed_ops++;
	} else {
		op->ops++;
		op->bytes += (uint64_t)bytes;
	}
	op->total_time_ns += lat;
	op->hist[hist_bin(lat)]++;
	n->stats.last_access_ns = now;
}

void vd_acct_invalid(struct vd_node *n, enum vd_acct_type type)
{
	if (!n) /* a request on no node at all: nothing to count it on */
		return;
	n->stats.op[type].invalid_ops++;
	n->stats.last_access_ns = vd_clock_ns();
}

void vd_node_acct_merged(struct vd_node *n, enum vd_acct_type type, unsigned count)
{
	n->stats.op[type].ops += count;
	n->stats.op[type].merged += count;
}

void vd_node_get_stats(const struct vd_node *n, struct vd_acct_stats *st)
{
	*st = n->stats;
}

void vd_node_reset_stats(struct vd_node *n)
{
	memset(&n->stats, 0, sizeof(n->stats));
}

uint64_t vd_acct_percentile_ns(const struct vd_acct_op *op, double pct)
{
	uint64_t total = 0, seen = 0;

	for (int i = 0; i < VD_ACCT_HIST_BINS; i++)
		total += op->hist[i];
	if (total == 0)
		return 0;
	if (pct < 0)
		pct = 0;
	if (pct > 100)
		pct = 100;
	/* The smallest bin edge below which at least pct% of requests lie. */
	uint64_t want = (uint64_t)((double)total * pct / 100.0 + 0.999999);
	if (want == 0)
		want = 1;
	for (int i = 0; i < VD_ACCT_HIST_BINS; i++) {
		seen += op->hist[i];
		if (seen >= want)
			return i >= 63 ? UINT64_MAX : UINT64_C(1) << (i + 1);
	}
	return UINT64_MAX;
}
