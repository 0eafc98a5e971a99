/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the luks driver.  Each input is written to a file and
 * opened three ways: as fuzz-image.h does (no secret: refused with
 * QEMU's "key-secret is required"), header-only (VD_OPEN_NO_IO, as vdisk
 * info: the image information is taken), and with the secret "fuzz" = "pw"
 * that the corpus images are made with: then ranges are read, written and
 * read back as for the other formats.  Every input must end in a clean
 * error with a message or clean I/O: no crash, no huge allocation, and no
 * PBKDF2 run longer than the driver's iteration cap allows.
 * Corpus: tests/fuzz/corpus/luks/, made by make-luks-corpus.py.
 */
#include <vdisk/opts.h>
#include <vdisk/secret.h>

#include "tests/fuzz/fuzz-image.h"

static int open_luks(const char *path, int flags, bool secret, struct vd_node **n)
{
	struct vd_error err = {0};
	struct vd_opts *opts = vd_opts_new();
	int ret;

	if (!opts || (secret && vd_opts_set(opts, "key-secret", "fuzz") < 0)) {
		vd_opts_free(opts);
		return -1;
	}
	ret = vd_node_open(path, "luks", opts, flags, n, &err);
	vd_opts_free(opts);
	if (ret < 0 && !err.msg[0]) {
		fprintf(stderr, "open failed without a message\n");
		abort();
	}
	return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool registered;
	char path[] = "/tmp/fuzz-luks-XXXXXX";
	struct vd_node *n = NULL;
	int fd;

	fuzz_image("luks", data, size); /* also sets up the loop */
	if (!registered) {
		FUZZ_ASSERT(vd_secret_add("fuzz", "pw", 2, NULL) == 0);
		registered = true;
	}
	fd = mkstemp(path);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		unlink(path);
		return 0;
	}
	close(fd);
	if (open_luks(path, VD_OPEN_NO_IO, false, &n) == 0) {
		struct vd_image_info info;
		struct vd_error err = {0};

		if (vd_node_get_info(n, &info, &err) == 0) {
			FUZZ_ASSERT(info.encrypted);
			vd_image_info_cleanup(&info);
		}
		vd_node_unref(n);
	}
	if (open_luks(path, 0, true, &n) == 0) {
		fuzz_image_read(n);
		vd_node_unref(n);
		if (open_luks(path, VD_OPEN_RDWR, true, &n) == 0) {
			fuzz_image_write(n);
			fuzz_image_read(n);
			vd_node_unref(n);
		}
	}
	unlink(path);
	return 0;
}
