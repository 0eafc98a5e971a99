/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for RBD image names (block/drivers/rbd-name.c): every input
 * is parsed as is and behind "rbd:".  A name that parses has a non-empty
 * pool and image, at most RBD_MAX_CONF librados keys, no string longer than
 * the input, and renders back to a name that parses to the same pool,
 * namespace, image and snapshot when none of them holds a character the
 * rendering does not escape.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/rbd-name/ through it
 * (make check); tests/fuzz/run-libfuzzer.sh rbd-name SECONDS runs a campaign.
 */
#include <stdlib.h>
#include <string.h>

#include "block/drivers/rbd-name.h"
#include "tests/fuzz/fuzz.h"

static int same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int plain(const char *s)
{
	return !s || !strpbrk(s, "/@:\\=");
}

static void check(const char *name, size_t len)
{
	struct rbd_spec sp = {0}, again = {0};
	struct vd_error err = {0};
	char *out;

	if (rbd_parse_filename(name, &sp, &err) < 0) {
		FUZZ_ASSERT(err.msg[0]);
		rbd_spec_free(&sp);
		return;
	}
	FUZZ_ASSERT(sp.pool && sp.image && *sp.image);
	FUZZ_ASSERT(strlen(sp.pool) <= len && strlen(sp.image) <= len);
	FUZZ_ASSERT(sp.nkeys >= 0 && sp.nkeys <= RBD_MAX_CONF);
	for (int i = 0; i < sp.nkeys; i++)
		FUZZ_ASSERT(sp.keys[i] && sp.values[i]);
	out = rbd_spec_filename(&sp);
	FUZZ_ASSERT(out);
	if (plain(sp.pool) && *sp.pool && plain(sp.namespace) && plain(sp.image) &&
	    plain(sp.snapshot) && plain(sp.conf)) {
		FUZZ_ASSERT(rbd_parse_filename(out, &again, &err) == 0);
		FUZZ_ASSERT(same(sp.pool, again.pool) && same(sp.image, again.image));
		FUZZ_ASSERT(same(sp.snapshot, again.snapshot) && same(sp.conf, again.conf));
	}
	rbd_spec_free(&again);
	free(out);
	rbd_spec_free(&sp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 5);

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	check(s, size);
	memcpy(s, "rbd:", 4);
	memcpy(s + 4, data, size);
	s[size + 4] = '\0';
	check(s, size + 4);
	free(s);
	return 0;
}
