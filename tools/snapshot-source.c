/* SPDX-License-Identifier: MIT */
/*
 * -l of convert and measure: an internal snapshot as the source, read-only
 * (qemu-img's -l snapshot.id=ID[,snapshot.name=NAME] or -l ID_OR_NAME).
 * Parsed as qemu-img parses internal_snapshot_opts (QemuOpts: comma
 * separated key=value, ",," a literal comma, a bare key means "on"); the
 * snapshot is loaded by the block layer (vd_node_snapshot_load_tmp).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tools.h"

#define SNAPSHOT_OPT_BASE "snapshot."

/* One value up to an unescaped ',' (QEMU's get_opt_value): a malloc'd copy
 * with ",," turned into ','; *end is the ',' or the NUL after it. */
static char *opt_value(const char *p, const char **end)
{
	char *v = malloc(strlen(p) + 1), *o = v;

	if (!v)
		return NULL;
	while (*p) {
		if (*p == ',') {
			if (p[1] != ',')
				break;
			p++;
		}
		*o++ = *p++;
	}
	*o = '\0';
	*end = p;
	return v;
}

int tool_snapshot_arg_parse(const char *arg, struct tool_snapshot_arg *sa)
{
	const char *p = arg;

	memset(sa, 0, sizeof(*sa));
	if (strncmp(arg, SNAPSHOT_OPT_BASE, strlen(SNAPSHOT_OPT_BASE))) {
		sa->id_or_name = arg;
		return 0;
	}
	sa->opts = true;
	while (*p) {
		size_t len = strcspn(p, "=,");
		char *key = strndup(p, len), *val;

		if (!key)
			goto oom;
		if (p[len] == '=') {
			val = opt_value(p + len + 1, &p);
		} else {
			/* A flag: "key" is "key=on" (QEMU's short-form boolean,
			 * with its deprecation warning). */
			tool_error("warning: short-form boolean option '%s' deprecated", key);
			fprintf(stderr, "Please use %s=on instead\n", key);
			val = strdup("on");
			p += len;
		}
		if (!val) {
			free(key);
			goto oom;
		}
		if (!strcmp(key, "snapshot.id")) {
			free(sa->id);
			sa->id = val;
		} else if (!strcmp(key, "snapshot.name")) {
			free(sa->name);
			sa->name = val;
		} else {
			tool_error("Invalid parameter '%s'", key);
			tool_error("Failed in parsing snapshot param '%s'", arg);
			free(key);
			free(val);
			tool_snapshot_arg_free(sa);
			return -1;
		}
		free(key);
		if (*p == ',')
			p++;
	}
	return 0;
oom:
	tool_error("Out of memory");
	tool_snapshot_arg_free(sa);
	return -1;
}

void tool_snapshot_arg_free(struct tool_snapshot_arg *sa)
{
	free(sa->id);
	free(sa->name);
	memset(sa, 0, sizeof(*sa));
}

int tool_snapshot_arg_load(struct vd_node *n, const struct tool_snapshot_arg *sa)
{
	struct vd_error err = {0};
	int ret;

	if (sa->opts)
		ret = vd_node_snapshot_load_tmp(n, sa->id, sa->name, &err);
	else
		ret = vd_node_snapshot_load_tmp_by_id_or_name(n, sa->id_or_name, &err);
	if (ret < 0) {
		tool_error("Failed to load snapshot: %s", err.msg[0] ? err.msg : strerror(-ret));
		return -1;
	}
	return 0;
}
