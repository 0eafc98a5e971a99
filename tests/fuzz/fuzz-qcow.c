/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the qcow driver: see fuzz-image.h.  Corpus:
 * tests/fuzz/corpus/qcow/, made by make-qcow-corpus.py.
 */
#include "tests/fuzz/fuzz-image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_image("qcow", data, size);
}
