/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the qcow2 driver: each input is written to a temporary
 * file and opened read-only as qcow2 (no backing files); if it opens, a few
 * ranges are read, block status walked, the image information (with the
 * persistent bitmaps) taken and the image measured; then, if it has internal
 * snapshots, it is opened again with the first one loaded as the source
 * (qemu-img convert -l) and exercised the same way.
 * Every input must end in a clean error or clean reads: no crash, no hang,
 * no huge allocation.
 *
 * With -DVD_LIBFUZZER this is a libFuzzer target:
 *	clang -fsanitize=fuzzer,address,undefined -DVD_LIBFUZZER -Iinclude -I. \
 *		tests/fuzz/fuzz-qcow2.c build/libvdisk.a -ljansson -lz -lzstd -luring
 * Without it, a plain program that replays the files named on its command
 * line (the corpus in tests/fuzz/corpus/qcow2/) and exits 0 if none crashed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vdisk/block.h>
#include <vdisk/loop.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(struct vd_node *n)
{
	static uint8_t buf[256 * 1024];
	int64_t size = vd_node_size(n);
	int64_t offs[] = {0, 512, 65536 - 100, size / 2, size - 4096, size - 1};
	struct vd_image_info info;
	struct vd_error err = {0};
	int64_t pos = 0;

	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		int64_t off = offs[i], len = sizeof(buf);
		if (off < 0 || off >= size)
			continue;
		if (len > size - off)
			len = size - off;
		vd_node_pread(n, off, buf, len);
	}
	for (int i = 0; i < 64 && pos < size; i++) {
		int64_t pnum = 0, map = 0;
		struct vd_node *file = NULL;
		int ret = vd_node_block_status(n, pos, size - pos, &pnum, &map, &file);
		if (ret < 0 || pnum <= 0)
			break;
		pos += pnum;
	}
	if (vd_node_get_info(n, &info, &err) == 0)
		vd_image_info_cleanup(&info);
	/* qemu-img measure of the image: a walk of the whole chain's status
	 * and the persistent bitmap directory. */
	struct vd_opts *opts = vd_opts_new();
	struct vd_measure_info mi;
	if (opts) {
		vd_image_measure("qcow2", opts, n, &mi, &err);
		vd_opts_free(opts);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vd_loop *loop;
	char path[] = "/tmp/fuzz-qcow2-XXXXXX";
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	int fd;

	if (!loop) {
		if (vd_loop_new(&loop) < 0)
			return 0;
		vd_loop_set_current(loop);
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
	if (vd_node_open(path, "qcow2", NULL, VD_OPEN_NO_BACKING, &n, &err) == 0) {
		struct vd_snapshot_info *sn = NULL;
		char id[sizeof(sn->id)] = "";

		exercise(n);
		if (vd_node_snapshot_list(n, &sn) > 0)
			snprintf(id, sizeof(id), "%s", sn[0].id);
		free(sn);
		vd_node_unref(n);
		n = NULL;
		/* qemu-img convert -l: the first snapshot as the source. */
		if (id[0] && vd_node_open(path, "qcow2", NULL, VD_OPEN_NO_BACKING, &n, &err) == 0) {
			vd_error_clear(&err);
			if (vd_node_snapshot_load_tmp_by_id_or_name(n, id, &err) == 0)
				exercise(n);
			else if (!err.msg[0]) {
				fprintf(stderr, "snapshot load failed without a message\n");
				abort();
			}
			vd_node_unref(n);
		}
	} else if (!err.msg[0]) {
		fprintf(stderr, "open failed without a message\n");
		abort();
	}
	unlink(path);
	return 0;
}

#ifndef VD_LIBFUZZER
int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		uint8_t *buf;
		long len;

		if (!f) {
			perror(argv[i]);
			return 1;
		}
		fseek(f, 0, SEEK_END);
		len = ftell(f);
		fseek(f, 0, SEEK_SET);
		buf = malloc(len > 0 ? (size_t)len : 1);
		if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
			fprintf(stderr, "%s: read failed\n", argv[i]);
			fclose(f);
			free(buf);
			return 1;
		}
		fclose(f);
		fprintf(stderr, "replay %s (%ld bytes)\n", argv[i], len);
		LLVMFuzzerTestOneInput(buf, (size_t)len);
		free(buf);
	}
	return 0;
}
#endif
