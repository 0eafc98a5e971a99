/* SPDX-License-Identifier: MIT */
/*
 * "-o help": the creation and amend options of a format, listed as qemu-img
 * 7.2 lists them (create, convert, amend), so that scripts reading that list
 * see the same names.  The names, types and one-line descriptions are the
 * interface qemu-img documents; the list is the format's as qemu-img has it,
 * and an option vdisk does not implement is refused when used, with a
 * message that says so.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tools/tools.h"

struct opt_help {
	const char *name, *type, *desc;
};

static const struct opt_help raw_create_help[] = {
	{"size", "size", "Virtual disk size"},
	{NULL, NULL, NULL},
};

static const struct opt_help qcow2_create_help[] = {
	{"backing_file", "str", "File name of a base image"},
	{"backing_fmt", "str", "Image format of the base image"},
	{"cluster_size", "size", "qcow2 cluster size"},
	{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
	{"compression_type", "str", "Compression method used for image cluster compression"},
	{"data_file", "str", "File name of an external data file"},
	{"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"},
	{"encrypt.cipher-alg", "str", "Name of encryption cipher algorithm"},
	{"encrypt.cipher-mode", "str", "Name of encryption cipher mode"},
	{"encrypt.format", "str", "Encrypt the image, format choices: 'aes', 'luks'"},
	{"encrypt.hash-alg", "str", "Name of encryption hash algorithm"},
	{"encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"},
	{"encrypt.ivgen-alg", "str", "Name of IV generator algorithm"},
	{"encrypt.ivgen-hash-alg", "str", "Name of IV generator hash algorithm"},
	{"encrypt.key-secret", "str", "ID of secret providing qcow AES key or LUKS passphrase"},
	{"encryption", "bool (on/off)",
	 "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"},
	{"extended_l2", "bool (on/off)", "Extended L2 tables"},
	{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
	{"preallocation", "str",
	 "Preallocation mode (allowed values: off, metadata, falloc, full)"},
	{"refcount_bits", "num", "Width of a reference count entry in bits"},
	{"size", "size", "Virtual disk size"},
	{NULL, NULL, NULL},
};

static const struct opt_help vpc_create_help[] = {
	{"force_size", "bool (on/off)",
	 "Force disk size calculation to use the actual size specified, rather than using the "
	 "nearest CHS-based calculation"},
	{"size", "size", "Virtual disk size"},
	{"subformat", "str",
	 "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} "},
	{NULL, NULL, NULL},
};

static const struct opt_help vdi_create_help[] = {
	{"size", "size", "Virtual disk size"},
	{"static", "bool (on/off)", "VDI static (pre-allocated) image"},
	{NULL, NULL, NULL},
};

static const struct opt_help file_create_help[] = {
	{"extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"},
	{"nocow", "bool (on/off)", "Turn off copy-on-write (valid only on btrfs)"},
	{"preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"},
	{"size", "size", "Virtual disk size"},
	{NULL, NULL, NULL},
};

static const struct opt_help qcow2_amend_help[] = {
	{"backing_file", "str", "File name of a base image"},
	{"backing_fmt", "str", "Image format of the base image"},
	{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
	{"data_file", "str", "File name of an external data file"},
	{"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"},
	{"encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"},
	{"encrypt.keyslot", "num", "Select a single keyslot to modify explicitly"},
	{"encrypt.new-secret", "str",
	 "New secret to set in the matching keyslots. Empty string to erase"},
	{"encrypt.old-secret", "str", "Select all keyslots that match this password"},
	{"encrypt.state", "str", "Select new state of affected keyslots (active/inactive)"},
	{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
	{"refcount_bits", "num", "Width of a reference count entry in bits"},
	{"size", "size", "Virtual disk size"},
	{NULL, NULL, NULL},
};
static const struct {
	const char *format;
	const struct opt_help *create, *amend;
} formats[] = {
	{"raw", raw_create_help, NULL},	  {"qcow2", qcow2_create_help, qcow2_amend_help},
	{"vpc", vpc_create_help, NULL},	  {"vdi", vdi_create_help, NULL},
	{"file", file_create_help, NULL},
};

static const struct opt_help size_only_help[] = {
	{"size", "size", "Virtual disk size"},
	{NULL, NULL, NULL},
};

static const struct opt_help *find(const char *format, bool amend)
{
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
		if (!strcmp(formats[i].format, format))
			return amend ? formats[i].amend : formats[i].create;
	return amend ? NULL : size_only_help;
}

static void print_one(const struct opt_help *o)
{
	char left[64];

	snprintf(left, sizeof(left), "%s=<%s>", o->name, o->type);
	printf("  %-22s - %s\n", left, o->desc);
}

bool tool_is_help_option(const char *opts)
{
	size_t n = strlen(opts);

	return !strcmp(opts, "help") || !strcmp(opts, "?") ||
	       (n > 5 && !strcmp(opts + n - 5, ",help")) || (n > 2 && !strcmp(opts + n - 2, ",?"));
}

void tool_print_create_help(const char *format, const char *filename)
{
	const struct opt_help *f = find(format, false), *p = file_create_help;

	if (!filename) {
		printf("Supported %s options:\n", format);
		for (; f->name; f++)
			print_one(f);
		printf("\nThe protocol level may support further options.\n"
		       "Specify the target filename to include those options.\n");
		return;
	}
	/* With a file name, the protocol's options join the format's, sorted
	 * by name; the format's description wins for a name in both. */
	printf("Supported options:\n");
	if (!strcmp(format, "file"))
		p = size_only_help;
	while (f->name || p->name) {
		int c = !f->name ? 1 : !p->name ? -1 : strcmp(f->name, p->name);

		if (c <= 0) {
			print_one(f++);
			if (c == 0)
				p++;
		} else {
			print_one(p++);
		}
	}
}

int tool_print_amend_help(const char *format)
{
	const struct opt_help *a = find(format, true);

	if (!a) {
		tool_error("Format driver '%s' does not support option amendment", format);
		return 1;
	}
	printf("Amend options for '%s':\n", format);
	for (; a->name; a++)
		print_one(a);
	return 0;
}

static bool listed(const struct opt_help *list, const char *name)
{
	for (; list && list->name; list++)
		if (!strcmp(list->name, name))
			return true;
	return false;
}

/* The first name of @o (dotted for nested ones) not in @list, or NULL. */
static const char *first_unknown(const struct vd_opts *o, const char *prefix,
				 const struct opt_help *list, char *buf, size_t len)
{
	const char *key, *value;
	const struct vd_opts *dict;
	int iter = 0;

	while (vd_opts_next(o, &iter, &key, &value, &dict)) {
		char name[128];

		snprintf(name, sizeof(name), "%s%s%s", prefix ? prefix : "", prefix ? "." : "",
			 key);
		if (dict) {
			const char *bad = first_unknown(dict, name, list, buf, len);

			if (bad)
				return bad;
		} else if (!listed(list, name)) {
			snprintf(buf, len, "%s", name);
			return buf;
		}
	}
	return NULL;
}

int tool_check_amend_options(const char *format, const char *options, struct vd_opts **out)
{
	const struct opt_help *amend = find(format, true);
	struct vd_error err = {0};
	struct vd_opts *o = vd_opts_new();
	const char *bad;
	char buf[128];

	*out = NULL;
	if (!amend) {
		vd_opts_free(o);
		tool_error("Format driver '%s' does not support option amendment", format);
		return -ENOTSUP;
	}
	if (!o || vd_opts_parse_into(o, options, NULL, &err) < 0) {
		tool_error("Invalid option list: %s", options);
		vd_opts_free(o);
		return -EINVAL;
	}
	bad = first_unknown(o, NULL, amend, buf, sizeof(buf));
	if (bad) {
		tool_error("Invalid parameter '%s'", bad);
		if (listed(find(format, false), bad) || listed(file_create_help, bad))
			fprintf(stderr, "This option is only supported for image creation\n");
		vd_opts_free(o);
		return -EINVAL;
	}
	*out = o;
	return 0;
}
