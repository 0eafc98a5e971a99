/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the parallels driver: see fuzz-image.h.  Corpus:
 * tests/fuzz/corpus/parallels/, made by make-parallels-corpus.py.
 */
#include "tests/fuzz/fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_image("parallels", data, size);
}
