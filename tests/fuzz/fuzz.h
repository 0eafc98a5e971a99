/* SPDX-License-Identifier: MIT */
/* Shared by the fuzz targets in tests/fuzz/ (fuzz-NAME.c). */
#ifndef VDISK_TESTS_FUZZ_H
#define VDISK_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The entry point libFuzzer and tests/fuzz/run-corpus.sh call. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Interpreting a crash as a finding needs a crash, not a quiet exit. */
#define FUZZ_ASSERT(cond)                                                                   \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "%s:%d: assertion %s failed\n", __FILE__, __LINE__, \
				#cond);                                                     \
			abort();                                                            \
		}                                                                           \
	} while (0)

#endif
