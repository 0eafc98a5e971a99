/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the cloop driver: see fuzz-image.h.  Corpus:
 * tests/fuzz/corpus/cloop/, made by make-cloop-corpus.py.
 */
#include "tests/fuzz/fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_image("cloop", data, size);
}
