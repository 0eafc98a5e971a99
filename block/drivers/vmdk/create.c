/* SPDX-License-Identifier: MIT */
/*
 * Creating vmdk images with qemu-img's options and output: the same file
 * names (NAME.vmdk, NAME-flat.vmdk, NAME-s001.vmdk / NAME-f001.vmdk for the
 * 2 GiB extents), the same sparse extent layout (64 KiB grains, 512-entry
 * grain tables, descriptor at sector 1, redundant grain directory and
 * tables, then the grain directory and tables, grains from the next 64 KiB)
 * and the same descriptor text; only the CID is random.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "block/drivers/byteorder.h"
#include "block/drivers/vmdk/vmdk.h"
#include "block/internal.h"

const char *const vmdk_create_opts[] = {
	"subformat", "adapter_type", "hwversion",   "toolsversion", "zeroed_grain",
	"compat6",   "backing_file", "backing_fmt", NULL,
};

enum {
	SUB_MONO_SPARSE,
	SUB_MONO_FLAT,
	SUB_2G_SPARSE,
	SUB_2G_FLAT,
	SUB_STREAM
};

static const char *const subformats[] = {"monolithicSparse",	 "monolithicFlat",
					 "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
					 "streamOptimized",	 NULL};
static const char *const adapters[] = {"ide", "buslogic", "lsilogic", "legacyESX", NULL};

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t w = pwrite(fd, buf, len, off);

	return w == (ssize_t)len ? 0 : (w < 0 ? -errno : -EIO);
}

/* Create @path with the file driver (size 0 or @size for flat), open it. */
static int create_file(const char *path, uint64_t size, int *fd, struct vd_error *err)
{
	struct vd_opts *fopts = vd_opts_new();
	char buf[32];
	int ret;

	snprintf(buf, sizeof(buf), "%" PRIu64, size);
	if (!fopts || vd_opts_set(fopts, "size", buf) < 0) {
		vd_opts_free(fopts);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = vd_driver_file.create(path, fopts, err);
	vd_opts_free(fopts);
	if (ret < 0)
		return ret;
	*fd = open(path, O_WRONLY | O_CLOEXEC);
	if (*fd < 0)
		return vd_error_setg_errno(err, -errno, "Could not open '%s'", path);
	return 0;
}

/* QEMU's vmdk_init_extent for a hosted sparse extent of @size bytes. */
static int init_sparse(int fd, uint64_t size, bool compress, bool zeroed_grain)
{
	uint8_t h[512] = {0};
	uint64_t grains = (size / 512 + 127) / 128;
	uint64_t gt_size = (512 * 4 + 511) / 512; /* sectors per grain table */
	uint64_t gt_count = (grains + 511) / 512;
	uint64_t gd_sectors = (gt_count * 4 + 511) / 512;
	uint64_t rgd = 1 + 20, gd = rgd + gd_sectors + gt_size * gt_count;
	uint64_t grain_offset = (gd + gd_sectors + gt_size * gt_count + 127) / 128 * 128;
	uint32_t *dir;
	int ret;

	st_be32(h, VMDK4_MAGIC);
	st_le32(h + H4_VERSION, compress ? 3 : zeroed_grain ? 2 : 1);
	st_le32(h + H4_FLAGS, VMDK4_FLAG_RGD | VMDK4_FLAG_NL_DETECT |
				      (compress ? VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER : 0) |
				      (zeroed_grain ? VMDK4_FLAG_ZERO_GRAIN : 0));
	st_le64(h + H4_CAPACITY, size / 512);
	st_le64(h + H4_GRANULARITY, 128);
	st_le64(h + H4_DESC_OFFSET, 1);
	st_le64(h + H4_DESC_SIZE, 20);
	st_le32(h + H4_NUM_GTES, 512);
	st_le64(h + H4_RGD_OFFSET, rgd);
	st_le64(h + H4_GD_OFFSET, gd);
	st_le64(h + H4_GRAIN_OFFSET, grain_offset);
	memcpy(h + H4_CHECK_BYTES, "\n \r\n", 4);
	h[H4_COMPRESS] = compress ? VMDK4_COMPRESSION_DEFLATE : 0;
	ret = write_all(fd, h, sizeof(h), 0);
	if (ret == 0 && ftruncate(fd, (off_t)(grain_offset * 512)) < 0)
		ret = -errno;
	if (ret < 0 || gd_sectors == 0)
		return ret;
	dir = calloc(gd_sectors, 512);
	if (!dir)
		return -ENOMEM;
	for (uint64_t i = 0; i < gt_count; i++)
		st_le32((uint8_t *)&dir[i], (uint32_t)(rgd + gd_sectors + i * gt_size));
	ret = write_all(fd, dir, gd_sectors * 512, (off_t)(rgd * 512));
	for (uint64_t i = 0; ret == 0 && i < gt_count; i++)
		st_le32((uint8_t *)&dir[i], (uint32_t)(gd + gd_sectors + i * gt_size));
	if (ret == 0)
		ret = write_all(fd, dir, gd_sectors * 512, (off_t)(gd * 512));
	free(dir);
	return ret;
}

/* The parent's CID, for parentCID; the parent must be a vmdk. */
static int parent_cid(const char *filename, const char *backing, uint32_t *cid,
		      struct vd_error *err)
{
	const char *slash = strrchr(filename, '/');
	struct vd_node *bn = NULL;
	char *path = NULL;
	int ret;

	if (backing[0] == '/' || !slash)
		path = strdup(backing);
	else if (asprintf(&path, "%.*s/%s", (int)(slash - filename), filename, backing) < 0)
		path = NULL;
	if (!path)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = vd_node_open(path, "vmdk", NULL, VD_OPEN_NO_BACKING, &bn, err);
	free(path);
	if (ret < 0)
		return ret;
	*cid = ((struct vmdk_state *)bn->opaque)->cid;
	vd_node_unref(bn);
	return 0;
}

int vmdk_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	const char *hw, *tools, *backing, *backing_fmt, *base, *dot;
	char *desc = NULL, *lines = NULL, *path = NULL, *prefix = NULL, *postfix = NULL;
	char *ext = NULL, parent_line[1100] = "";
	uint64_t size, created = 0, extent_size;
	size_t lines_len = 0;
	uint32_t pcid = 0xffffffff, cid, heads;
	int sub, adapter, fd = -1, ret, idx;
	bool zeroed, compat6, flat, split, compress;

	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "subformat", subformats, SUB_MONO_SPARSE, &sub, err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "adapter_type", adapters, 0, &adapter, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "zeroed_grain", false, &zeroed, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "compat6", false, &compat6, err);
	if (ret < 0)
		return ret;
	hw = vd_opts_get(opts, "hwversion");
	tools = vd_opts_get(opts, "toolsversion");
	backing = vd_opts_get(opts, "backing_file");
	backing_fmt = vd_opts_get(opts, "backing_fmt");
	if (hw && strcmp(hw, "undefined") == 0)
		hw = NULL;
	if (backing_fmt && strcmp(backing_fmt, "vmdk"))
		return vd_error_set(err, -EINVAL, "backing_file must be a vmdk image");
	if (compat6 && hw)
		return vd_error_set(err, -EINVAL, "compat6 cannot be enabled with hwversion set");
	if (compat6)
		hw = "6";
	if (!hw)
		hw = "4";
	if (!tools)
		tools = "2147483647";
	/* Only what fits the descriptor line QEMU builds. */
	if (strlen(hw) > 64 || strlen(tools) > 64 || (backing && strlen(backing) > 1023) ||
	    strpbrk(hw, "\"\n\r") || strpbrk(tools, "\"\n\r") ||
	    (backing && strpbrk(backing, "\"\n\r")))
		return vd_error_set(err, -EINVAL,
				    "Invalid hwversion, toolsversion or backing_file");
	if (size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EFBIG, "Image size too large");
	size = (size + 511) & ~511ull;
	split = sub == SUB_2G_SPARSE || sub == SUB_2G_FLAT;
	flat = sub == SUB_MONO_FLAT || sub == SUB_2G_FLAT;
	compress = sub == SUB_STREAM;
	if (!split && !flat && size / 512 > VMDK_EXTENT_MAX_SECTORS)
		return vd_error_set(err, -EFBIG, "Image size too large for a sparse extent");
	if (flat && backing)
		return vd_error_set(err, -ENOTSUP, "Flat image can't have backing file");
	if (flat && zeroed)
		return vd_error_set(err, -ENOTSUP, "Flat image can't enable zeroed grain");
	heads = adapter == 0 ? 16 : 255;

	/* path / prefix . postfix, as QEMU's filename_decompose. */
	if (!*filename)
		return vd_error_set(err, -EINVAL, "No filename provided");
	base = strrchr(filename, '/');
	base = base ? base + 1 : filename;
	dot = strrchr(base, '.');
	path = strndup(filename, (size_t)(base - filename));
	prefix = strndup(base, dot ? (size_t)(dot - base) : strlen(base));
	postfix = strdup(dot ? dot : "");
	lines = calloc(1, 1);
	if (!path || !prefix || !postfix || !lines) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}

	/* The descriptor file (also the extent of a monolithic sparse). */
	ret = create_file(filename, 0, &fd, err);
	if (ret < 0)
		goto out;
	if (!split && !flat) {
		ret = init_sparse(fd, size, compress, zeroed);
		free(lines);
		lines = NULL;
		if (ret == 0 &&
		    asprintf(&lines, "RW %" PRIu64 " SPARSE \"%s\"\n", size / 512, base) < 0)
			ret = -ENOMEM;
		if (ret < 0)
			goto io_error;
		if (!lines) {
			ret = -ENOMEM;
			goto io_error;
		}
		lines_len = strlen(lines);
		created = size;
	}
	if (backing) {
		ret = parent_cid(filename, backing, &pcid, err);
		if (ret < 0)
			goto out;
		/* No newline: in QEMU's text the template's blank line ends it. */
		snprintf(parent_line, sizeof(parent_line), "parentFileNameHint=\"%s\"", backing);
	}
	extent_size = split ? 0x80000000ull : size;
	for (idx = 1; created < size; idx++) {
		uint64_t cur = size - created < extent_size ? size - created : extent_size;
		const char *name;
		char *line, *grown;
		int efd = -1;

		free(ext);
		if (split)
			ret = asprintf(&ext, "%s%s-%c%03d%s", path, prefix, flat ? 'f' : 's', idx,
				       postfix);
		else
			ret = asprintf(&ext, "%s%s-flat%s", path, prefix, postfix);
		if (ret < 0) {
			ext = NULL;
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		ret = create_file(ext, flat ? cur : 0, &efd, err);
		if (ret < 0)
			goto out;
		if (!flat)
			ret = init_sparse(efd, cur, compress, zeroed);
		if (ret == 0 && fsync(efd) < 0)
			ret = -errno;
		close(efd);
		if (ret < 0)
			goto io_error;
		name = strrchr(ext, '/') ? strrchr(ext, '/') + 1 : ext;
		if (asprintf(&line,
			     flat ? "RW %" PRIu64 " FLAT \"%s\" 0\n"
				  : "RW %" PRIu64 " SPARSE \"%s\"\n",
			     (cur + 511) / 512, name) < 0) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		grown = realloc(lines, lines_len + strlen(line) + 1);
		if (!grown) {
			free(line);
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		lines = grown;
		memcpy(lines + lines_len, line, strlen(line) + 1);
		lines_len += strlen(line);
		free(line);
		created += cur;
	}

	if (getrandom(&cid, sizeof(cid), 0) != sizeof(cid)) {
		ret = vd_error_setg_errno(err, -errno, "Could not generate a CID");
		goto out;
	}
	if (asprintf(&desc,
		     "# Disk DescriptorFile\n"
		     "version=1\n"
		     "CID=%" PRIx32 "\n"
		     "parentCID=%" PRIx32 "\n"
		     "createType=\"%s\"\n"
		     "%s"
		     "\n"
		     "# Extent description\n"
		     "%s"
		     "\n"
		     "# The Disk Data Base\n"
		     "#DDB\n"
		     "\n"
		     "ddb.virtualHWVersion = \"%s\"\n"
		     "ddb.geometry.cylinders = \"%" PRIu64 "\"\n"
		     "ddb.geometry.heads = \"%" PRIu32 "\"\n"
		     "ddb.geometry.sectors = \"63\"\n"
		     "ddb.adapterType = \"%s\"\n"
		     "ddb.toolsVersion = \"%s\"\n",
		     cid, pcid, subformats[sub], parent_line, lines, hw,
		     size / ((uint64_t)63 * heads * 512), heads, adapters[adapter], tools) < 0) {
		desc = NULL;
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	if (!split && !flat && strlen(desc) > 20 * 512) {
		ret = vd_error_set(err, -EINVAL, "The descriptor does not fit in 20 sectors");
		goto out;
	}
	ret = write_all(fd, desc, strlen(desc), !split && !flat ? 512 : 0);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
io_error:
	if (ret < 0 && !vd_error_is_set(err))
		vd_error_setg_errno(err, ret, "Could not write the vmdk image");
out:
	if (fd >= 0)
		close(fd);
	free(desc);
	free(lines);
	free(path);
	free(prefix);
	free(postfix);
	free(ext);
	return ret;
}
