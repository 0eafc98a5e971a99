/* SPDX-License-Identifier: MIT */
/*
 * Option trees: QEMU's keyval and json: syntaxes, typed getters, and the
 * size notation of qemu-img.
 *
 * The grammar follows QEMU's util/keyval.c (keyval_parse_one) and, for the
 * json: form, block.c's parse_json_filename() followed by qdict_flatten():
 * a dotted key inside a JSON object means the same as nested objects.
 *
 * A tree is an ordered array of entries per dictionary.  Option sets are
 * small (tens of keys), so lookups are linear; order of first appearance is
 * what users expect to see back from vd_opts_to_json().
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <vdisk/opts.h>

/*
 * Deepest nesting accepted, counting dotted key segments and JSON
 * objects/arrays alike.  json: strings come from image headers (a qcow2
 * backing file name may be one), so they are untrusted input; bounding the
 * depth once here keeps every recursive walk below (free, clone,
 * check_unused, to_json) shallow.  Real configurations nest a handful of
 * levels (a chain of filter drivers).
 */
#define OPTS_MAX_DEPTH 64

struct opts_entry {
	char *key; /* one segment, never empty, never contains '.' */
	char *value; /* NULL when this entry is a dictionary */
	struct vd_opts *dict; /* NULL when this entry is a string */
	bool used;
};

struct vd_opts {
	struct opts_entry *entries;
	int count;
	int capacity;
};

/* ---- tree primitives ---------------------------------------------------- */

struct vd_opts *vd_opts_new(void)
{
	return calloc(1, sizeof(struct vd_opts));
}

static void entry_clear(struct opts_entry *e)
{
	free(e->key);
	free(e->value);
	vd_opts_free(e->dict);
}

void vd_opts_free(struct vd_opts *o)
{
	if (!o)
		return;
	for (int i = 0; i < o->count; i++)
		entry_clear(&o->entries[i]);
	free(o->entries);
	free(o);
}

static struct opts_entry *find_entry(const struct vd_opts *o, const char *key, size_t len)
{
	for (int i = 0; i < o->count; i++) {
		struct opts_entry *e = &o->entries[i];

		if (strncmp(e->key, key, len) == 0 && e->key[len] == '\0')
			return e;
	}
	return NULL;
}

/* Append an entry with no value yet; NULL on ENOMEM.  Invalidates pointers to
 * other entries of @o (not to child dictionaries). */
static struct opts_entry *append_entry(struct vd_opts *o, const char *key, size_t len)
{
	struct opts_entry *e;
	char *k;

	if (o->count == o->capacity) {
		int cap = o->capacity ? o->capacity * 2 : 8;
		struct opts_entry *n;

		if (o->capacity > INT_MAX / 2)
			return NULL;
		n = realloc(o->entries, (size_t)cap * sizeof(*n));
		if (!n)
			return NULL;
		o->entries = n;
		o->capacity = cap;
	}
	k = strndup(key, len);
	if (!k)
		return NULL;
	e = &o->entries[o->count++];
	memset(e, 0, sizeof(*e));
	e->key = k;
	return e;
}

/* The child dictionary @key of @o, created if absent.  -EINVAL if @key holds
 * a string, -ENOMEM. */
static int put_dict(struct vd_opts *o, const char *key, size_t len, struct vd_opts **child)
{
	struct opts_entry *e = find_entry(o, key, len);
	struct vd_opts *d;

	if (e) {
		if (!e->dict)
			return -EINVAL;
		*child = e->dict;
		return 0;
	}
	d = vd_opts_new();
	if (!d)
		return -ENOMEM;
	e = append_entry(o, key, len);
	if (!e) {
		free(d);
		return -ENOMEM;
	}
	e->dict = d;
	*child = d;
	return 0;
}

/* Store @value (ownership passes, also on error) at @key of @o; a previous
 * string is replaced and the entry counts as unread again.  -EINVAL if @key
 * holds a dictionary, -ENOMEM. */
static int put_value(struct vd_opts *o, const char *key, size_t len, char *value)
{
	struct opts_entry *e = find_entry(o, key, len);

	if (e && e->dict) {
		free(value);
		return -EINVAL;
	}
	if (!e) {
		e = append_entry(o, key, len);
		if (!e) {
			free(value);
			return -ENOMEM;
		}
	}
	free(e->value);
	e->value = value;
	e->used = false;
	return 0;
}

static void remove_index(struct vd_opts *o, int i)
{
	entry_clear(&o->entries[i]);
	memmove(&o->entries[i], &o->entries[i + 1],
		(size_t)(o->count - i - 1) * sizeof(o->entries[0]));
	o->count--;
}

/*
 * Walk a dotted @key: the dictionary holding its last segment and that
 * entry's index, or false if any segment is absent (or a string where a
 * dictionary is needed).
 */
static bool lookup(const struct vd_opts *o, const char *key, struct vd_opts **parent, int *index)
{
	const char *s = key;

	if (!o || !key)
		return false;
	for (;;) {
		const char *dot = strchr(s, '.');
		size_t len = dot ? (size_t)(dot - s) : strlen(s);
		struct opts_entry *e = len ? find_entry(o, s, len) : NULL;

		if (!e)
			return false;
		if (!dot) {
			*parent = (struct vd_opts *)o;
			*index = (int)(e - o->entries);
			return true;
		}
		if (!e->dict)
			return false;
		o = e->dict;
		s = dot + 1;
	}
}

static struct opts_entry *lookup_entry(const struct vd_opts *o, const char *key)
{
	struct vd_opts *parent;
	int i;

	return lookup(o, key, &parent, &i) ? &parent->entries[i] : NULL;
}

static struct vd_opts *clone_depth(const struct vd_opts *o)
{
	struct vd_opts *c = vd_opts_new();

	if (!c)
		return NULL;
	if (o->count) {
		c->entries = calloc((size_t)o->count, sizeof(c->entries[0]));
		if (!c->entries)
			goto fail;
		c->capacity = o->count;
	}
	for (int i = 0; i < o->count; i++) {
		const struct opts_entry *src = &o->entries[i];
		struct opts_entry *dst = &c->entries[i];

		/* Count first so that a partial entry is freed on failure. */
		c->count++;
		dst->used = src->used;
		dst->key = strdup(src->key);
		if (!dst->key)
			goto fail;
		if (src->value) {
			dst->value = strdup(src->value);
			if (!dst->value)
				goto fail;
		} else {
			dst->dict = clone_depth(src->dict);
			if (!dst->dict)
				goto fail;
		}
	}
	return c;
fail:
	vd_opts_free(c);
	return NULL;
}

struct vd_opts *vd_opts_clone(const struct vd_opts *o)
{
	return o ? clone_depth(o) : NULL;
}

/* ---- keyval ------------------------------------------------------------- */

static bool key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

/* Number of segments in [key, end) if every one is non-empty and made of
 * key_char()s, else 0. */
static int keyval_key_segments(const char *key, const char *end)
{
	int n = 1;
	size_t seg = 0;

	for (const char *s = key; s < end; s++) {
		if (*s == '.') {
			if (!seg)
				return 0;
			n++;
			seg = 0;
		} else if (key_char(*s)) {
			seg++;
		} else {
			return 0;
		}
	}
	return seg ? n : 0;
}

/*
 * Parse one "key=value" element starting at *@pp and advance *@pp past it
 * and its separating comma.  As in QEMU's keyval_parse_one(): an element
 * without '=' takes @implied_key and its value ends at the next comma (no
 * ",," escape there); otherwise the key is validated first, then '=' is
 * required, then the value runs to the next single comma with ",," standing
 * for ','.
 */
static int keyval_parse_one(struct vd_opts *o, const char **pp, const char *implied_key,
			    const char *start, struct vd_error *err)
{
	const char *p = *pp;
	size_t len = strcspn(p, "=,");
	const char *key = p, *key_end = p + len, *s;
	struct vd_opts *cur = o;
	char *value;
	int segments, ret;

	if (len && p[len] != '=' && implied_key) {
		key = implied_key;
		key_end = key + strlen(key);
	}
	if (key == key_end)
		return vd_error_set(err, -EINVAL, "Missing parameter name at position %zu",
				    (size_t)(p - start));
	segments = keyval_key_segments(key, key_end);
	if (!segments)
		return vd_error_set(err, -EINVAL, "Invalid parameter '%.*s'", (int)(key_end - key),
				    key);
	if (segments > OPTS_MAX_DEPTH)
		return vd_error_set(err, -EINVAL, "Parameter '%.*s' is nested too deeply",
				    (int)(key_end - key), key);

	if (key != p) {
		/* Implied key: the whole element is the value. */
		value = strndup(p, len);
		if (!value)
			goto nomem;
		s = p + len;
		if (*s == ',')
			s++;
	} else {
		size_t n = 0;
		char *d;

		if (*key_end != '=')
			return vd_error_set(err, -EINVAL, "Expected '=' after parameter '%.*s'",
					    (int)(key_end - key), key);
		/* Measure, then copy while folding ",," into ','. */
		for (s = key_end + 1; *s; s++, n++) {
			if (*s == ',') {
				if (s[1] != ',')
					break;
				s++;
			}
		}
		value = malloc(n + 1);
		if (!value)
			goto nomem;
		d = value;
		for (s = key_end + 1; *s; s++) {
			if (*s == ',') {
				if (s[1] != ',')
					break;
				s++;
			}
			*d++ = *s;
		}
		*d = '\0';
		if (*s == ',')
			s++;
	}

	/* Walk the dotted key, creating dictionaries on the way. */
	for (const char *seg = key;;) {
		const char *dot = memchr(seg, '.', (size_t)(key_end - seg));

		if (!dot) {
			ret = put_value(cur, seg, (size_t)(key_end - seg), value);
			if (ret == -EINVAL)
				return vd_error_set(err, ret,
						    "Parameters '%.*s.*' used inconsistently",
						    (int)(key_end - key), key);
			if (ret < 0)
				goto nomem;
			break;
		}
		ret = put_dict(cur, seg, (size_t)(dot - seg), &cur);
		if (ret < 0) {
			free(value);
			if (ret != -EINVAL)
				goto nomem;
			return vd_error_set(err, ret, "Parameters '%.*s.*' used inconsistently",
					    (int)(dot - key), key);
		}
		seg = dot + 1;
	}
	*pp = s;
	return 0;
nomem:
	return vd_error_set(err, -ENOMEM, "Out of memory while parsing options");
}

static int keyval_parse(struct vd_opts *o, const char *str, const char *implied_key,
			struct vd_error *err)
{
	const char *p = str;

	while (*p) {
		int ret = keyval_parse_one(o, &p, implied_key, str, err);

		if (ret < 0)
			return ret;
		implied_key = NULL; /* only the first element may omit its key */
	}
	return 0;
}

/* ---- json: -------------------------------------------------------------- */

/* The dotted path being converted, for error messages only (truncated). */
struct json_path {
	char buf[VD_ERROR_MSG_MAX];
	size_t len;
};

static size_t path_push(struct json_path *path, const char *seg, size_t len)
{
	size_t old = path->len;
	int n = snprintf(path->buf + old, sizeof(path->buf) - old, "%s%.*s", old ? "." : "",
			 (int)len, seg);

	if (n > 0)
		path->len = old + (size_t)n < sizeof(path->buf) ? old + (size_t)n
								: sizeof(path->buf) - 1;
	return old;
}

static void path_pop(struct json_path *path, size_t old)
{
	path->len = old;
	path->buf[old] = '\0';
}

/* JSON text of a scalar, as the tree keeps it; NULL on ENOMEM. */
static char *json_scalar_text(const json_t *v)
{
	char buf[64];

	switch (json_typeof(v)) {
	case JSON_STRING:
		return strdup(json_string_value(v));
	case JSON_INTEGER:
		snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return strdup(buf);
	case JSON_REAL: {
		double d = json_real_value(v);

		/* Shortest text that reads back as the same double. */
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(buf, sizeof(buf), "%.*g", prec, d);
			if (strtod(buf, NULL) == d)
				break;
		}
		return strdup(buf);
	}
	case JSON_TRUE:
		return strdup("true");
	case JSON_FALSE:
		return strdup("false");
	default:
		return NULL;
	}
}

static int json_put_key(struct vd_opts *o, const char *key, const json_t *v, int depth,
			struct json_path *path, struct vd_error *err);

/* Store @v under the single segment @seg of @o, at nesting @depth. */
static int json_put_segment(struct vd_opts *o, const char *seg, size_t len, const json_t *v,
			    int depth, struct json_path *path, struct vd_error *err)
{
	struct vd_opts *child = NULL;
	int ret = 0;

	if (depth > OPTS_MAX_DEPTH)
		return vd_error_set(err, -EINVAL, "Parameter '%s' is nested too deeply", path->buf);
	if (json_is_null(v))
		return vd_error_set(err, -EINVAL, "Parameter '%s' must not be null", path->buf);
	if (json_is_object(v) || json_is_array(v)) {
		ret = put_dict(o, seg, len, &child);
		if (ret == -EINVAL)
			return vd_error_set(err, ret, "Parameters '%s.*' used inconsistently",
					    path->buf);
		if (ret < 0)
			return ret;
	}
	if (json_is_object(v)) {
		const char *k;
		json_t *member;

		json_object_foreach((json_t *)v, k, member)
		{
			ret = json_put_key(child, k, member, depth + 1, path, err);
			if (ret < 0)
				return ret;
		}
	} else if (json_is_array(v)) {
		/* Arrays become dictionaries keyed "0", "1", ... as in keyval. */
		for (size_t i = 0; i < json_array_size(v); i++) {
			char idx[24];
			int n = snprintf(idx, sizeof(idx), "%zu", i);
			size_t old = path_push(path, idx, (size_t)n);

			ret = json_put_segment(child, idx, (size_t)n, json_array_get(v, i),
					       depth + 1, path, err);
			path_pop(path, old);
			if (ret < 0)
				return ret;
		}
	} else {
		char *text = json_scalar_text(v);

		if (!text)
			return -ENOMEM;
		ret = put_value(o, seg, len, text);
		if (ret == -EINVAL)
			return vd_error_set(err, ret, "Parameters '%s.*' used inconsistently",
					    path->buf);
	}
	return ret;
}

/* Store @v under the possibly dotted JSON member name @key of @o. */
static int json_put_key(struct vd_opts *o, const char *key, const json_t *v, int depth,
			struct json_path *path, struct vd_error *err)
{
	size_t old = path->len;
	const char *seg = key;
	int ret;

	for (;;) {
		const char *dot = strchr(seg, '.');
		size_t len = dot ? (size_t)(dot - seg) : strlen(seg);

		if (!len) {
			/* Name the member as written, after its parent's path. */
			ret = vd_error_set(err, -EINVAL, "Invalid parameter '%.*s%s%s'", (int)old,
					   path->buf, old ? "." : "", key);
			break;
		}
		path_push(path, seg, len);
		if (!dot) {
			ret = json_put_segment(o, seg, len, v, depth, path, err);
			break;
		}
		if (depth >= OPTS_MAX_DEPTH) {
			ret = vd_error_set(err, -EINVAL, "Parameter '%s' is nested too deeply",
					   path->buf);
			break;
		}
		ret = put_dict(o, seg, len, &o);
		if (ret == -EINVAL)
			vd_error_set(err, ret, "Parameters '%s.*' used inconsistently", path->buf);
		if (ret < 0)
			break;
		depth++;
		seg = dot + 1;
	}
	path_pop(path, old);
	return ret;
}

static int json_parse(struct vd_opts *o, const char *text, struct vd_error *err)
{
	struct json_path *path;
	json_error_t jerr;
	const char *k;
	json_t *root, *member;
	int ret = 0;

	/*
	 * QEMU's JSON parser rejects duplicate member names; so do we.  jansson
	 * reports most of its own allocation failures as syntax errors, so
	 * those come back as -EINVAL; only what it labels as such is -ENOMEM.
	 */
	root = json_loads(text, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root) {
		if (json_error_code(&jerr) == json_error_out_of_memory)
			return vd_error_set(err, -ENOMEM, "Out of memory while parsing options");
		return vd_error_set(err, -EINVAL,
				    "Could not parse the JSON options: %s (line %d, column %d)",
				    jerr.text, jerr.line, jerr.column);
	}
	if (!json_is_object(root)) {
		json_decref(root);
		return vd_error_set(err, -EINVAL, "Invalid JSON object given");
	}
	path = calloc(1, sizeof(*path));
	if (!path) {
		json_decref(root);
		return vd_error_set(err, -ENOMEM, "Out of memory while parsing options");
	}
	json_object_foreach(root, k, member)
	{
		ret = json_put_key(o, k, member, 1, path, err);
		if (ret < 0)
			break;
	}
	free(path);
	json_decref(root);
	if (ret == -ENOMEM)
		vd_error_set(err, ret, "Out of memory while parsing options");
	return ret;
}

/* ---- parse entry points --------------------------------------------------- */

static int parse_text(struct vd_opts *o, const char *str, const char *implied_key,
		      struct vd_error *err)
{
	if (!str)
		return vd_error_set(err, -EINVAL, "No options given");
	if (strncmp(str, "json:", 5) == 0)
		return json_parse(o, str + 5, err);
	return keyval_parse(o, str, implied_key, err);
}

int vd_opts_parse(const char *str, const char *implied_key, struct vd_opts **out,
		  struct vd_error *err)
{
	struct vd_opts *o = vd_opts_new();
	int ret;

	*out = NULL;
	if (!o)
		return vd_error_set(err, -ENOMEM, "Out of memory while parsing options");
	ret = parse_text(o, str, implied_key, err);
	if (ret < 0) {
		vd_opts_free(o);
		return ret;
	}
	*out = o;
	return 0;
}

int vd_opts_parse_into(struct vd_opts *o, const char *str, const char *implied_key,
		       struct vd_error *err)
{
	struct vd_opts *tmp, swap;
	int ret;

	if (!o)
		return vd_error_set(err, -EINVAL, "No option tree given");
	/* Parse into a copy so that @o is untouched when the text is bad. */
	tmp = vd_opts_clone(o);
	if (!tmp)
		return vd_error_set(err, -ENOMEM, "Out of memory while parsing options");
	ret = parse_text(tmp, str, implied_key, err);
	if (ret == 0) {
		swap = *o;
		*o = *tmp;
		*tmp = swap;
	}
	vd_opts_free(tmp);
	return ret;
}

/* ---- programmatic access -------------------------------------------------- */

static int set_value(struct vd_opts *o, const char *key, const char *value, bool only_default)
{
	const char *seg = key;
	int depth = 1;
	char *copy;
	int ret;

	if (!o || !key || !value)
		return -EINVAL;
	/* Validate the whole key first so that nothing is created for a bad one. */
	for (const char *s = key; *s; s++) {
		if (*s == '.') {
			if (s == key || s[1] == '.' || s[1] == '\0' || ++depth > OPTS_MAX_DEPTH)
				return -EINVAL;
		}
	}
	if (!*key)
		return -EINVAL;
	for (;;) {
		const char *dot = strchr(seg, '.');
		size_t len = dot ? (size_t)(dot - seg) : strlen(seg);

		if (!dot) {
			struct opts_entry *e = find_entry(o, seg, len);

			if (only_default && e)
				return 0;
			copy = strdup(value);
			if (!copy)
				return -ENOMEM;
			return put_value(o, seg, len, copy);
		}
		ret = put_dict(o, seg, len, &o);
		if (ret < 0)
			return ret;
		seg = dot + 1;
	}
}

int vd_opts_set(struct vd_opts *o, const char *key, const char *value)
{
	return set_value(o, key, value, false);
}

int vd_opts_set_default(struct vd_opts *o, const char *key, const char *value)
{
	return set_value(o, key, value, true);
}

bool vd_opts_remove(struct vd_opts *o, const char *key)
{
	struct vd_opts *parent;
	int i;

	if (!lookup(o, key, &parent, &i))
		return false;
	remove_index(parent, i);
	return true;
}

bool vd_opts_has(const struct vd_opts *o, const char *key)
{
	return lookup_entry(o, key) != NULL;
}

const char *vd_opts_get(struct vd_opts *o, const char *key)
{
	struct opts_entry *e = lookup_entry(o, key);

	if (!e || !e->value)
		return NULL;
	e->used = true;
	return e->value;
}

const char *vd_opts_peek(const struct vd_opts *o, const char *key)
{
	struct opts_entry *e = lookup_entry(o, key);

	return e ? e->value : NULL;
}

struct vd_opts *vd_opts_get_dict(struct vd_opts *o, const char *key)
{
	struct opts_entry *e = lookup_entry(o, key);

	if (!e || !e->dict)
		return NULL;
	e->used = true;
	return e->dict;
}

struct vd_opts *vd_opts_take_dict(struct vd_opts *o, const char *key)
{
	struct vd_opts *parent, *d;
	int i;

	if (!lookup(o, key, &parent, &i) || !parent->entries[i].dict)
		return NULL;
	d = parent->entries[i].dict;
	parent->entries[i].dict = NULL;
	remove_index(parent, i);
	return d;
}

/* ---- typed getters -------------------------------------------------------- */

/*
 * The entry for a typed getter: NULL if absent.  A present entry is marked
 * used even if its value turns out bad: the key was understood, and the
 * value error is the one to report.  *@value is NULL for a dictionary.
 */
static struct opts_entry *typed_entry(struct vd_opts *o, const char *key, const char **value)
{
	struct opts_entry *e = lookup_entry(o, key);

	if (e) {
		e->used = true;
		*value = e->value;
	}
	return e;
}

int vd_opts_get_bool(struct vd_opts *o, const char *key, bool def, bool *out, struct vd_error *err)
{
	/* qapi_bool_parse() of QEMU 7.2, which also takes "y" and "n". */
	static const char *const yes[] = {"on", "yes", "true", "y"};
	static const char *const no[] = {"off", "no", "false", "n"};
	const char *v = NULL;

	if (!typed_entry(o, key, &v)) {
		*out = def;
		return 0;
	}
	for (size_t i = 0; v && i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return vd_error_set(err, -EINVAL, "Parameter '%s' expects 'on' or 'off'", key);
}

/* Decimal or 0x-prefixed hex, nothing else (no sign, no blanks).  Unlike
 * QEMU's QemuOpts (strtoull base 0) a leading 0 does not mean octal. */
static int parse_u64(const char *s, uint64_t *out)
{
	unsigned base = 10;
	uint64_t v = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			return -EINVAL;
		if (__builtin_mul_overflow(v, base, &v) || __builtin_add_overflow(v, d, &v))
			return -ERANGE;
	}
	*out = v;
	return 0;
}

int vd_opts_get_u64(struct vd_opts *o, const char *key, uint64_t def, uint64_t *out,
		    struct vd_error *err)
{
	const char *v = NULL;

	if (!typed_entry(o, key, &v)) {
		*out = def;
		return 0;
	}
	if (!v || parse_u64(v, out) < 0)
		return vd_error_set(err, -EINVAL, "Parameter '%s' expects a non-negative number",
				    key);
	return 0;
}

int vd_opts_get_size(struct vd_opts *o, const char *key, uint64_t def, uint64_t *out,
		     struct vd_error *err)
{
	const char *v = NULL;

	if (!typed_entry(o, key, &v)) {
		*out = def;
		return 0;
	}
	if (!v || vd_parse_size(v, out) < 0)
		return vd_error_set(err, -EINVAL, "Parameter '%s' expects a size", key);
	return 0;
}

int vd_opts_get_enum(struct vd_opts *o, const char *key, const char *const *names, int def,
		     int *out, struct vd_error *err)
{
	char list[VD_ERROR_MSG_MAX];
	const char *v = NULL;
	size_t len = 0;

	if (!typed_entry(o, key, &v)) {
		*out = def;
		return 0;
	}
	for (int i = 0; v && names && names[i]; i++) {
		if (strcmp(v, names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	list[0] = '\0';
	for (int i = 0; names && names[i] && len < sizeof(list); i++) {
		int n = snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", names[i]);

		if (n < 0)
			break;
		len += (size_t)n;
	}
	return vd_error_set(err, -EINVAL, "Parameter '%s' does not accept value '%s' (expected %s)",
			    key, v ? v : "{...}", list);
}

/* ---- check_unused, iteration, JSON output --------------------------------- */

/* Fill @chain with the path to the first never-read leaf (or never-read empty
 * dictionary) below @o; its length, or 0 if everything was read. */
static int find_unused(const struct vd_opts *o, const struct opts_entry **chain, int depth)
{
	for (int i = 0; i < o->count; i++) {
		const struct opts_entry *e = &o->entries[i];

		chain[depth] = e;
		if (e->value || e->dict->count == 0) {
			if (!e->used)
				return depth + 1;
		} else {
			int n = find_unused(e->dict, chain, depth + 1);

			if (n)
				return n;
		}
	}
	return 0;
}

int vd_opts_check_unused(const struct vd_opts *o, const char *prefix, struct vd_error *err)
{
	const struct opts_entry *chain[OPTS_MAX_DEPTH + 1];
	char path[VD_ERROR_MSG_MAX];
	size_t len = 0;
	int n;

	if (!o)
		return 0;
	n = find_unused(o, chain, 0);
	if (!n)
		return 0;
	path[0] = '\0';
	if (prefix && *prefix)
		len = (size_t)snprintf(path, sizeof(path), "%s", prefix);
	for (int i = 0; i < n && len < sizeof(path); i++)
		len += (size_t)snprintf(path + len, sizeof(path) - len, "%s%s", len ? "." : "",
					chain[i]->key);
	return vd_error_set(err, -EINVAL, "Invalid parameter '%s'", path);
}

bool vd_opts_next(const struct vd_opts *o, int *iter, const char **key, const char **value,
		  const struct vd_opts **dict)
{
	const struct opts_entry *e;

	if (!o || *iter < 0 || *iter >= o->count)
		return false;
	e = &o->entries[(*iter)++];
	if (key)
		*key = e->key;
	if (value)
		*value = e->value;
	if (dict)
		*dict = e->dict;
	return true;
}

int vd_opts_count(const struct vd_opts *o)
{
	return o ? o->count : 0;
}

struct strbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_add(struct strbuf *sb, const char *s, size_t n)
{
	if (sb->oom)
		return;
	if (sb->cap - sb->len <= n) {
		size_t cap = sb->cap ? sb->cap : 64;
		char *p;

		while (cap - sb->len <= n) {
			if (cap > SIZE_MAX / 2) {
				sb->oom = true;
				return;
			}
			cap *= 2;
		}
		p = realloc(sb->p, cap);
		if (!p) {
			sb->oom = true;
			return;
		}
		sb->p = p;
		sb->cap = cap;
	}
	memcpy(sb->p + sb->len, s, n);
	sb->len += n;
	sb->p[sb->len] = '\0';
}

/* Length of the well-formed UTF-8 sequence at @s (RFC 3629), 0 if there is
 * none.  Stops at a NUL since a NUL is never a continuation byte. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
			return 0; /* overlong, or a UTF-16 surrogate */
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
			return 0; /* overlong, or beyond U+10FFFF */
		return 4;
	}
	return 0;
}

/* A JSON string (RFC 8259 section 7).  keyval values are bytes, not
 * necessarily UTF-8: a byte that starts no valid sequence becomes U+FFFD so
 * that the output is always valid JSON. */
static void sb_add_string(struct strbuf *sb, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	sb_add(sb, "\"", 1);
	while (*s) {
		size_t n = utf8_len(s);
		char esc[8];

		if (*s == '"' || *s == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*s;
			sb_add(sb, esc, 2);
		} else if (*s < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", *s);
			sb_add(sb, esc, 6);
		} else if (!n) {
			sb_add(sb, "\\ufffd", 6);
			n = 1;
		} else {
			sb_add(sb, (const char *)s, n);
		}
		s += n ? n : 1;
	}
	sb_add(sb, "\"", 1);
}

static void sb_add_dict(struct strbuf *sb, const struct vd_opts *o)
{
	sb_add(sb, "{", 1);
	for (int i = 0; i < o->count; i++) {
		const struct opts_entry *e = &o->entries[i];

		if (i)
			sb_add(sb, ",", 1);
		sb_add_string(sb, e->key);
		sb_add(sb, ":", 1);
		if (e->value)
			sb_add_string(sb, e->value);
		else
			sb_add_dict(sb, e->dict);
	}
	sb_add(sb, "}", 1);
}

char *vd_opts_to_json(const struct vd_opts *o)
{
	struct strbuf sb = {0};
	struct vd_opts empty = {0};

	sb_add_dict(&sb, o ? o : &empty);
	if (sb.oom) {
		free(sb.p);
		return NULL;
	}
	return sb.p;
}

/* ---- sizes ---------------------------------------------------------------- */

static int size_shift(char c)
{
	switch (c) {
	case 'b':
	case 'B':
		return 0;
	case 'k':
	case 'K':
		return 10;
	case 'm':
	case 'M':
		return 20;
	case 'g':
	case 'G':
		return 30;
	case 't':
	case 'T':
		return 40;
	case 'p':
	case 'P':
		return 50;
	case 'e':
	case 'E':
		return 60;
	default:
		return -1;
	}
}

/* Count of decimal fraction digits kept: 10^18 < 2^60, so the long division
 * in vd_parse_size() never overflows.  That is more precision than QEMU's,
 * which goes through a double. */
#define SIZE_FRACTION_DIGITS 18

/*
 * qemu_strtosz() as qemu-img 7.2 applies it to "create ... SIZE":
 *   - leading blanks and '+' are skipped (strtoull); '-' anywhere is -EINVAL
 *   - decimal digits, optionally ".digits" ("1." and "1.0" are fine, ".5" is
 *     not); a fraction needs a suffix unless it is zero ("1.5" is -EINVAL)
 *   - "0x" hex without fraction; QEMU 7.2 still takes a suffix there with a
 *     deprecation warning ("0x10k"), we reject it since we cannot warn
 *   - one optional suffix b/B k/K m/M g/G t/T p/P e/E (powers of 1024)
 *   - nothing after it
 * The fraction is rounded to the nearest byte, ties upward, like QEMU
 * ("1.7k" = 1741), but computed exactly rather than through a double.
 * Results above INT64_MAX are -ERANGE: qemu-img refuses them too ("Must be
 * between 0 and 9223372036854775807"), and image offsets are int64_t.
 */
int vd_parse_size(const char *str, uint64_t *out)
{
	const char *s = str;
	uint64_t val = 0, frac = 0, den = 1, q = 0;
	bool frac_nonzero = false;
	int shift = 0, digits = 0, ret;

	if (!s)
		return -EINVAL;
	while (*s == ' ' || (*s >= '\t' && *s <= '\r'))
		s++;
	if (*s == '+')
		s++;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		ret = parse_u64(s, &val);
		if (ret < 0)
			return ret;
		goto range;
	}
	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (__builtin_mul_overflow(val, 10, &val) ||
		    __builtin_add_overflow(val, (uint64_t)(*s - '0'), &val))
			return -ERANGE;
	}
	if (*s == '.') {
		for (s++; *s >= '0' && *s <= '9'; s++) {
			if (*s != '0')
				frac_nonzero = true;
			if (digits < SIZE_FRACTION_DIGITS) {
				frac = frac * 10 + (uint64_t)(*s - '0');
				den *= 10;
				digits++;
			}
		}
	}
	if (*s) {
		shift = size_shift(*s++);
		if (shift < 0 || *s)
			return -EINVAL;
	}
	if (shift == 0 && frac_nonzero)
		return -EINVAL; /* a fraction of a byte */

	/* q = round(frac / den * 2^shift) by binary long division. */
	for (int i = 0; i < shift; i++) {
		frac <<= 1;
		q <<= 1;
		if (frac >= den) {
			frac -= den;
			q |= 1;
		}
	}
	if (frac * 2 >= den)
		q++;
	if (shift && val > (UINT64_MAX >> shift))
		return -ERANGE;
	val <<= shift;
	if (__builtin_add_overflow(val, q, &val))
		return -ERANGE;
range:
	if (val > INT64_MAX)
		return -ERANGE;
	*out = val;
	return 0;
}

/*
 * size_to_str() of QEMU, which qemu-img info prints: three significant
 * digits ("%.3g") in the unit that keeps the integer part below 1000.  The
 * switch happens at 1000 of a unit, not 1024, so 1047552 bytes is
 * "0.999 MiB"; and "%.3g" itself turns 999.5 to 999.99 KiB into
 * "1e+03 KiB", which is what qemu-img prints, so we do too.
 */
void vd_format_size(uint64_t size, char *buf, int buflen)
{
	static const char *const suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
	double x = (double)size / (1000.0 / 1024.0);
	int exponent = 0, i;

	if (!buf || buflen <= 0)
		return;
	/* frexp()'s exponent without libm: halving a double is exact. */
	while (x >= 1.0) {
		x /= 2;
		exponent++;
	}
	i = exponent > 0 ? (exponent - 1) / 10 : 0;
	if (i > 6)
		i = 6;
	snprintf(buf, (size_t)buflen, "%.3g %sB", (double)size / (double)(1ULL << (i * 10)),
		 suffixes[i]);
}
