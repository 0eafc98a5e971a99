/* SPDX-License-Identifier: MIT */
/*
 * Secrets: passphrases and keys that drivers look up by ID, as QEMU's
 * "secret" objects (--object secret,id=sec0,data=...) and the
 * "key-secret=sec0" option of the luks driver.
 *
 * The registry belongs to the process (QEMU's object tree plays that role);
 * it is guarded by a mutex, so any thread may add, look up or remove.  The
 * library never parses command lines: a program turns its own options into
 * vd_secret_add() calls (the vdisk tool's --object secret,... does).
 * Stored bytes and every copy handed out are wiped before they are freed.
 */
#ifndef VDISK_SECRET_H
#define VDISK_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include <vdisk/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Register @len bytes of @data under @id (copied).  -EEXIST if @id is
 * taken ("attempt to add duplicate property"), -EINVAL for an empty id,
 * -ENOMEM.  The message is in @err.
 */
int vd_secret_add(const char *id, const void *data, size_t len, struct vd_error *err);

/*
 * A copy of the secret @id: *out is malloc'd with a NUL after the *len
 * bytes; release it with vd_secret_free().  -ENOENT with QEMU's message
 * ("No secret with id 'ID'") when there is none.
 */
int vd_secret_lookup(const char *id, uint8_t **out, size_t *len, struct vd_error *err);

/* Wipe and free a copy from vd_secret_lookup() (NULL is fine). */
void vd_secret_free(uint8_t *data, size_t len);

/* Wipe and forget the secret @id; -ENOENT if there is none. */
int vd_secret_remove(const char *id);

/* Wipe and forget every secret (a program calls it before it exits). */
void vd_secret_remove_all(void);

/* Overwrite @len bytes at @p with zeroes in a way the compiler keeps. */
void vd_memzero_explicit(void *p, size_t len);

#ifdef __cplusplus
}
#endif

#endif
