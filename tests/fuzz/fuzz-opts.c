/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the option parser: every input is parsed as keyval text and
 * as "json:" + input, and each tree that parses is read through every getter,
 * checked for unused keys, cloned, rendered as JSON (which must parse back
 * as the same JSON) and freed.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/opts/ through it (make
 * check); tests/fuzz/run-libfuzzer.sh opts SECONDS runs a libFuzzer campaign.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <vdisk/opts.h>

#include "tests/fuzz/fuzz.h"

/* Walk @o, reading every entry through the getters; depth-first. */
static void exercise(struct vd_opts *o, int depth)
{
	static const char *const names[] = {"on", "off", "writeback", "", NULL};
	const struct vd_opts *child;
	const char *key, *value;
	int it = 0;

	FUZZ_ASSERT(depth <= 100);
	while (vd_opts_next(o, &it, &key, &value, &child)) {
		struct vd_error err = {0};
		uint64_t u;
		bool b;
		int e;

		FUZZ_ASSERT(key && *key && !strchr(key, '.'));
		FUZZ_ASSERT(!value != !child);
		FUZZ_ASSERT(vd_opts_has(o, key));
		if (value) {
			FUZZ_ASSERT(vd_opts_peek(o, key) == value);
			vd_opts_get_bool(o, key, false, &b, &err);
			vd_opts_get_u64(o, key, 0, &u, &err);
			vd_opts_get_size(o, key, 0, &u, &err);
			vd_opts_get_enum(o, key, names, 0, &e, &err);
			FUZZ_ASSERT(strlen(err.msg) < sizeof(err.msg));
			if (vd_parse_size(value, &u) == 0) {
				char buf[32];

				vd_format_size(u, buf, sizeof(buf));
			}
		} else {
			FUZZ_ASSERT(vd_opts_get(o, key) == NULL);
			exercise(vd_opts_get_dict(o, key), depth + 1);
		}
	}
}

static void check_tree(struct vd_opts *o)
{
	struct vd_error err = {0};
	struct vd_opts *copy, *taken;
	const char *key;
	char *json, *json2;
	json_t *back;
	int it = 0;

	/* Rendered JSON is valid JSON, and survives a round trip. */
	json = vd_opts_to_json(o);
	FUZZ_ASSERT(json);
	back = json_loads(json, 0, NULL);
	FUZZ_ASSERT(back);
	json_decref(back);

	copy = vd_opts_clone(o);
	FUZZ_ASSERT(copy);
	json2 = vd_opts_to_json(copy);
	FUZZ_ASSERT(json2 && strcmp(json, json2) == 0);
	free(json2);

	vd_opts_check_unused(o, "fuzz", &err);
	exercise(o, 0);
	vd_error_clear(&err);
	FUZZ_ASSERT(vd_opts_check_unused(o, NULL, &err) == 0);

	/* Take the first dictionary, remove the first key of the copy. */
	while (vd_opts_next(copy, &it, &key, NULL, NULL)) {
		taken = vd_opts_take_dict(copy, key);
		if (taken) {
			vd_opts_free(taken);
			break;
		}
	}
	it = 0;
	if (vd_opts_next(copy, &it, &key, NULL, NULL)) {
		char *k = strdup(key);

		FUZZ_ASSERT(k);
		FUZZ_ASSERT(vd_opts_remove(copy, k));
		FUZZ_ASSERT(!vd_opts_has(copy, k));
		free(k);
	}
	vd_opts_free(copy);
	free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 6);
	struct vd_opts *o;
	struct vd_error err = {0};
	uint64_t u;

	if (!text)
		return 0;
	/* The API takes C strings: the input ends at its first NUL. */
	memcpy(text, "json:", 5);
	memcpy(text + 5, data, size);
	text[size + 5] = '\0';

	for (int pass = 0; pass < 2; pass++) {
		const char *str = pass ? text : text + 5;

		vd_error_clear(&err);
		if (vd_opts_parse(str, pass ? NULL : "implied", &o, &err) == 0) {
			FUZZ_ASSERT(!vd_error_is_set(&err));
			check_tree(o);
			/* Merging the same text again must succeed too. */
			vd_error_clear(&err);
			FUZZ_ASSERT(vd_opts_parse_into(o, str, NULL, &err) == 0 ||
				    vd_error_is_set(&err));
			vd_opts_free(o);
		} else {
			FUZZ_ASSERT(o == NULL);
			FUZZ_ASSERT(vd_error_is_set(&err) && err.msg[0]);
		}
	}
	vd_parse_size(text + 5, &u);
	free(text);
	return 0;
}
