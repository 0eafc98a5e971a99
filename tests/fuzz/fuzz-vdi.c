/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the vdi driver: see fuzz-image.h.  Corpus:
 * tests/fuzz/corpus/vdi/, made by make-vdi-corpus.py.
 */
#include "tests/fuzz/fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_image("vdi", data, size);
}
