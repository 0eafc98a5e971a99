/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the vmdk driver.  A sparse extent ("KDMV", "COWD") goes
 * through fuzz-image.h as it is.  Anything else is taken for a descriptor:
 * it is written as image.vmdk into a fresh directory beside two extent files
 * it may name, flat.bin (1 MiB of zeroes) and sparse.vmdk (a 1 MiB
 * monolithicSparse extent made by the driver), and opened and exercised the
 * same way; the directory is then checked to hold nothing else (an extent
 * name must never make the driver create or reach a file outside it).
 * Corpus: tests/fuzz/corpus/vmdk/, made by make-vmdk-corpus.py.
 */
#include <dirent.h>
#include <fcntl.h>

#include "tests/fuzz/fuzz-image.h"

static void put_file(const char *dir, const char *name, const void *data, size_t len, off_t size)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return;
	if (len && write(fd, data, len) != (ssize_t)len)
		fprintf(stderr, "short write\n");
	if (size && ftruncate(fd, size) < 0)
		fprintf(stderr, "ftruncate failed\n");
	close(fd);
}

static int fuzz_descriptor(const uint8_t *data, size_t size)
{
	static struct vd_loop *loop;
	char dir[] = "/tmp/fuzz-vmdk-XXXXXX", path[512];
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	struct vd_opts *o;
	struct dirent *de;
	DIR *d;

	if (!loop) {
		if (vd_loop_new(&loop) < 0)
			return 0;
		vd_loop_set_current(loop);
	}
	if (!mkdtemp(dir))
		return 0;
	put_file(dir, "image.vmdk", data, size, 0);
	put_file(dir, "flat.bin", NULL, 0, 1 << 20);
	snprintf(path, sizeof(path), "%s/sparse.vmdk", dir);
	if (vd_opts_parse("size=1M", NULL, &o, NULL) == 0) {
		vd_image_create(path, "vmdk", o, &err);
		vd_opts_free(o);
	}
	snprintf(path, sizeof(path), "%s/image.vmdk", dir);
	err.code = 0;
	err.msg[0] = 0;
	if (vd_node_open(path, "vmdk", NULL, VD_OPEN_NO_BACKING, &n, &err) == 0) {
		fuzz_image_read(n);
		vd_node_unref(n);
		if (vd_node_open(path, "vmdk", NULL, VD_OPEN_NO_BACKING | VD_OPEN_RDWR, &n, &err) ==
		    0) {
			fuzz_image_write(n);
			fuzz_image_read(n);
			vd_node_unref(n);
		}
	} else if (!err.msg[0]) {
		fprintf(stderr, "open failed without a message\n");
		abort();
	}
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		FUZZ_ASSERT(!strcmp(de->d_name, "image.vmdk") || !strcmp(de->d_name, "flat.bin") ||
			    !strcmp(de->d_name, "sparse.vmdk"));
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(dir);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= 4 && (!memcmp(data, "KDMV", 4) || !memcmp(data, "COWD", 4)))
		return fuzz_image("vmdk", data, size);
	return fuzz_descriptor(data, size);
}
