/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for format probing (block/probe.c and the drivers' probes):
 * the input is the start of a file.
 *
 *  - Every probe runs over exactly the input's bytes (an exact-size copy,
 *    so ASan sees any read past the end), with and without a file name.
 *  - The input, written to a memfd, is probed as a file: that is the same
 *    answer as probing the input zero-padded to VD_PROBE_BYTES (QEMU reads
 *    a short file as zeroes past its end); a format vdisk cannot open is
 *    -ENOTSUP, raw is returned as raw, and a non-empty file is never raw
 *    when the padded buffer carries another format's magic.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/probe/ (make check);
 * tests/fuzz/make-probe-corpus.py writes the crafted entries there.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vdisk/block.h>

#include "block/internal.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct vd_block_driver *drv, *padded_drv;
	uint8_t padded[VD_PROBE_BYTES] = {0};
	const char *name, *padded_name, *fmt = NULL;
	struct vd_error err = {0};
	char path[64];
	uint8_t *copy;
	int fd, ret;

	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	if (size)
		memcpy(copy, data, size);
	name = vd_probe_buffer(copy, size, "fuzz.img", &drv);
	FUZZ_ASSERT(name != NULL); /* raw matches anything */
	name = vd_probe_buffer(copy, size, NULL, &drv);
	FUZZ_ASSERT(name != NULL);
	name = vd_probe_buffer(copy, size, "fuzz.dmg", &drv);
	FUZZ_ASSERT(name != NULL && (drv != NULL || strcmp(name, "raw") != 0));
	free(copy);

	memcpy(padded, data, size < sizeof(padded) ? size : sizeof(padded));
	padded_name = vd_probe_buffer(padded, sizeof(padded), "fuzz.img", &padded_drv);
	FUZZ_ASSERT(padded_name != NULL);

	fd = memfd_create("fuzz.img", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (size && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	/* Neither name ends in ".dmg", so dmg (probed by name) agrees. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ret = vd_probe_format(path, &fmt, &err);
	close(fd);
	if (size == 0) {
		FUZZ_ASSERT(ret == 0 && strcmp(fmt, "raw") == 0);
		return 0;
	}
	if (!padded_drv) {
		FUZZ_ASSERT(ret == -ENOTSUP);
		FUZZ_ASSERT(strstr(err.msg, padded_name) != NULL);
	} else if (padded_drv->references_files) {
		FUZZ_ASSERT(ret == -EINVAL);
	} else {
		FUZZ_ASSERT(ret == 0 && strcmp(fmt, padded_name) == 0);
	}
	return 0;
}
