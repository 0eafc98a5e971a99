/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the bochs driver: see fuzz-image.h.  Corpus:
 * tests/fuzz/corpus/bochs/, made by make-bochs-corpus.py.
 */
#include "tests/fuzz/fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_image("bochs", data, size);
}
