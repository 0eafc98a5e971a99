/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the vpc (VHD) driver: see fuzz-image.h.  Corpus:
 * tests/fuzz/corpus/vpc/, made by make-vpc-corpus.py.
 */
#include "tests/fuzz/fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_image("vpc", data, size);
}
