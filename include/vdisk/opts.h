/* SPDX-License-Identifier: MIT */
/*
 * One option grammar for every command line: QEMU's.
 *
 *   key=value,key2=value2         plain form ("keyval")
 *   file.filename=x,file.aio=io_uring
 *                                 dotted keys build nested dictionaries
 *   filename=a,,b                 ",," is a literal comma inside a value
 *   json:{"driver":"qcow2","file":{"driver":"file","filename":"x"}}
 *                                 the same tree written as JSON
 *
 * The parsed result is a tree: each key maps to a string or to a nested
 * dictionary.  JSON numbers and booleans are kept as their text ("42",
 * "true"); JSON arrays become dictionaries keyed "0", "1", ... as in QEMU's
 * keyval.  Keys keep their order of first appearance.
 *
 * Consumers read options through the getters below, which mark the entry as
 * used; vd_opts_check_unused() then reports the first key nobody understood,
 * naming its full dotted path ("Invalid parameter 'file.aoi'").  Bad values are
 * errors that name the key as well.
 */
#ifndef VDISK_OPTS_H
#define VDISK_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/error.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_opts;

struct vd_opts *vd_opts_new(void); /* NULL on ENOMEM */
void vd_opts_free(struct vd_opts *o);
struct vd_opts *vd_opts_clone(const struct vd_opts *o);

/*
 * Parse @str ("json:{...}" or key=value list) into a new tree.  @implied_key,
 * if not NULL, names the key of a leading element that has no '=' (as QEMU's
 * -drive has none, but "-o" style help lookups or "--export" may want one).
 * Duplicate keys: the later value wins, as in QEMU's command lines.  A key that
 * is both a value and a dictionary ("a=1,a.b=2") is an error.
 * Returns 0 or -EINVAL with a message naming the offending key or position.
 */
int vd_opts_parse(const char *str, const char *implied_key, struct vd_opts **out,
		  struct vd_error *err);
/* Merge key=value/json text into an existing tree (later values win). */
int vd_opts_parse_into(struct vd_opts *o, const char *str, const char *implied_key,
		       struct vd_error *err);

/* Set a string at a dotted path, creating dictionaries on the way. 0/-errno. */
int vd_opts_set(struct vd_opts *o, const char *key, const char *value);
/* Set only if the key is absent. */
int vd_opts_set_default(struct vd_opts *o, const char *key, const char *value);
/* Remove a key (value or subtree); true if it existed. */
bool vd_opts_remove(struct vd_opts *o, const char *key);

bool vd_opts_has(const struct vd_opts *o, const char *key);
/* The string at a dotted path (NULL if absent or a dictionary). Marks it used. */
const char *vd_opts_get(struct vd_opts *o, const char *key);
/* Look without marking. */
const char *vd_opts_peek(const struct vd_opts *o, const char *key);
/* The dictionary at a dotted path, or NULL. Marks the entry used (its own
 * entries are checked separately by whoever consumes it). */
struct vd_opts *vd_opts_get_dict(struct vd_opts *o, const char *key);
/* Detach the dictionary at @key from @o and hand it to the caller (NULL if absent). */
struct vd_opts *vd_opts_take_dict(struct vd_opts *o, const char *key);

/*
 * Typed getters.  Absent key: *out = @def, return 0.  Present: convert, mark
 * used, or return -EINVAL with "Parameter 'KEY' expects ..." in @err.
 * Booleans accept on/off, yes/no, true/false.  Sizes accept qemu-img's
 * suffixes (see vd_parse_size).  Enums take a NULL-terminated name list and
 * return the index.
 */
int vd_opts_get_bool(struct vd_opts *o, const char *key, bool def, bool *out, struct vd_error *err);
int vd_opts_get_u64(struct vd_opts *o, const char *key, uint64_t def, uint64_t *out,
		    struct vd_error *err);
int vd_opts_get_size(struct vd_opts *o, const char *key, uint64_t def, uint64_t *out,
		     struct vd_error *err);
int vd_opts_get_enum(struct vd_opts *o, const char *key, const char *const *names, int def,
		     int *out, struct vd_error *err);

/* -EINVAL and "Invalid parameter 'PREFIX.KEY'" for the first entry never
 * read; @prefix may be NULL. */
int vd_opts_check_unused(const struct vd_opts *o, const char *prefix, struct vd_error *err);

/* Iterate top-level entries in order; *dict is set for dictionaries, *value for
 * strings.  Returns false at the end.  Start with *iter = 0. */
bool vd_opts_next(const struct vd_opts *o, int *iter, const char **key, const char **value,
		  const struct vd_opts **dict);
int vd_opts_count(const struct vd_opts *o);

/* Render as compact JSON ({"a":"1","b":{"c":"x"}}); caller frees. NULL on ENOMEM. */
char *vd_opts_to_json(const struct vd_opts *o);

/*
 * Sizes as qemu-img reads them: a number with an optional suffix k/K, M, G, T,
 * P, E (powers of 1024; 'b' or 'B' for bytes).  A fraction is allowed with a
 * suffix ("1.5G").  Returns 0 or -EINVAL (syntax), -ERANGE (overflow).
 */
int vd_parse_size(const char *str, uint64_t *out);
/* Human-readable size as qemu-img prints it ("64 MiB", "1.5 GiB", "512 B"). */
void vd_format_size(uint64_t size, char *buf, int buflen);

#ifdef __cplusplus
}
#endif

#endif
