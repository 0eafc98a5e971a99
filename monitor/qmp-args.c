/* SPDX-License-Identifier: MIT */
/*
 * QMP errors and argument checking, with the messages of QEMU 7.2's QAPI
 * input visitor (qapi/qobject-input-visitor.c) and qerror.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/opts.h>
#include <vdisk/qmp.h>

#include "monitor/qmp-internal.h"

static const char *const class_names[] = {
	[VD_QMP_GENERIC_ERROR] = "GenericError",
	[VD_QMP_COMMAND_NOT_FOUND] = "CommandNotFound",
	[VD_QMP_DEVICE_NOT_ACTIVE] = "DeviceNotActive",
	[VD_QMP_DEVICE_NOT_FOUND] = "DeviceNotFound",
	[VD_QMP_KVM_MISSING_CAP] = "KVMMissingCap",
};

const char *vd_qmp_error_class_name(enum vd_qmp_error_class cls)
{
	if ((unsigned)cls < sizeof(class_names) / sizeof(class_names[0]))
		return class_names[cls];
	return "GenericError";
}

int vd_qmp_error_set(struct vd_qmp_error *err, enum vd_qmp_error_class cls, const char *fmt, ...)
{
	va_list ap;

	if (!err || err->set)
		return -EINVAL;
	err->set = true;
	err->cls = cls;
	va_start(ap, fmt);
	vsnprintf(err->desc, sizeof(err->desc), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

json_t *qmp_string(const char *s)
{
	json_t *j = json_string(s);
	char *copy;

	if (j)
		return j;
	/* Not UTF-8 (text from a client or a file name): keep ASCII only. */
	copy = strdup(s);
	if (!copy)
		return NULL;
	for (char *p = copy; *p; p++) {
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	}
	j = json_string(copy);
	free(copy);
	return j;
}

static const char *type_name(enum vd_qmp_arg_type t)
{
	switch (t) {
	case VD_QMP_ARG_STR:
	case VD_QMP_ARG_ENUM:
		return "string";
	case VD_QMP_ARG_INT:
		return "integer";
	case VD_QMP_ARG_BOOL:
		return "boolean";
	case VD_QMP_ARG_NUMBER:
		return "number";
	case VD_QMP_ARG_OBJECT:
		return "object";
	case VD_QMP_ARG_ARRAY:
		return "array";
	case VD_QMP_ARG_ANY:
	default:
		return "any";
	}
}

static bool type_ok(const json_t *v, enum vd_qmp_arg_type t)
{
	switch (t) {
	case VD_QMP_ARG_STR:
	case VD_QMP_ARG_ENUM:
		return json_is_string(v);
	case VD_QMP_ARG_INT:
		return json_is_integer(v);
	case VD_QMP_ARG_BOOL:
		return json_is_boolean(v);
	case VD_QMP_ARG_NUMBER:
		return json_is_number(v);
	case VD_QMP_ARG_OBJECT:
		return json_is_object(v);
	case VD_QMP_ARG_ARRAY:
		return json_is_array(v);
	case VD_QMP_ARG_ANY:
	default:
		return true;
	}
}

int vd_qmp_check_args(const json_t *args, const struct vd_qmp_arg *spec, struct vd_qmp_error *err)
{
	const char *key;
	json_t *v;

	if (!json_is_object(args))
		return vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
					"QMP input member 'arguments' must be an object");
	for (const struct vd_qmp_arg *a = spec; a->name; a++) {
		v = json_object_get(args, a->name);
		if (!v) {
			if (a->optional)
				continue;
			return vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
						"Parameter '%s' is missing", a->name);
		}
		if (!type_ok(v, a->type))
			return vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
						"Invalid parameter type for '%s', expected: %s",
						a->name, type_name(a->type));
		if (a->type == VD_QMP_ARG_ENUM) {
			const char *s = json_string_value(v);
			bool known = false;

			for (const char *const *e = a->values; e && *e && !known; e++)
				known = strcmp(*e, s) == 0;
			if (!known)
				return vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
							"Parameter '%s' does not accept value '%s'",
							a->name, s);
		}
	}
	json_object_foreach((json_t *)args, key, v)
	{
		bool known = false;

		for (const struct vd_qmp_arg *a = spec; a->name && !known; a++)
			known = strcmp(a->name, key) == 0;
		if (!known)
			return vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
						"Parameter '%s' is unexpected", key);
	}
	return 0;
}

int vd_qmp_args_to_opts(const json_t *args, struct vd_opts **out, struct vd_error *err)
{
	char *text = json_dumps(args, JSON_COMPACT), *js = NULL;
	int ret;

	*out = NULL;
	if (!text || asprintf(&js, "json:%s", text) < 0) {
		free(text);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	free(text);
	ret = vd_opts_parse(js, NULL, out, err);
	free(js);
	return ret;
}
