/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the dmg driver: see fuzz-image.h.  Corpus:
 * tests/fuzz/corpus/dmg/, made by make-dmg-corpus.py.
 */
#include "tests/fuzz/fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_image("dmg", data, size);
}
