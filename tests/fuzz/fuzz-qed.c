/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the qed driver: see fuzz-image.h.  Corpus:
 * tests/fuzz/corpus/qed/, made by make-qed-corpus.py.
 */
#include "tests/fuzz/fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_image("qed", data, size);
}
