/* SPDX-License-Identifier: MIT */
/*
 * The secrets registry (include/vdisk/secret.h): a short list under a mutex.
 * Few secrets exist in a process (one per encrypted image at most), so a
 * linked list searched by name is enough.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/secret.h>

struct secret {
	struct secret *next;
	char *id;
	uint8_t *data;
	size_t len;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct secret *secrets;

void vd_memzero_explicit(void *p, size_t len)
{
	if (p && len)
		explicit_bzero(p, len);
}

void vd_secret_free(uint8_t *data, size_t len)
{
	if (!data)
		return;
	vd_memzero_explicit(data, len + 1);
	free(data);
}

static struct secret *find(const char *id)
{
	for (struct secret *s = secrets; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

static void destroy(struct secret *s)
{
	vd_secret_free(s->data, s->len);
	free(s->id);
	free(s);
}

int vd_secret_add(const char *id, const void *data, size_t len, struct vd_error *err)
{
	struct secret *s;

	if (!id || !*id)
		return vd_error_set(err, -EINVAL, "Parameter 'id' is missing");
	if (len == SIZE_MAX)
		return vd_error_set(err, -EINVAL, "Secret '%s' is too large", id);
	s = calloc(1, sizeof(*s));
	if (!s || !(s->id = strdup(id)) || !(s->data = malloc(len + 1))) {
		if (s)
			free(s->id);
		free(s);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	if (len)
		memcpy(s->data, data, len);
	s->data[len] = 0;
	s->len = len;
	pthread_mutex_lock(&lock);
	if (find(id)) {
		pthread_mutex_unlock(&lock);
		destroy(s);
		return vd_error_set(err, -EEXIST,
				    "attempt to add duplicate property '%s' to object (type "
				    "'container')",
				    id);
	}
	s->next = secrets;
	secrets = s;
	pthread_mutex_unlock(&lock);
	return 0;
}

int vd_secret_lookup(const char *id, uint8_t **out, size_t *len, struct vd_error *err)
{
	struct secret *s;
	uint8_t *copy;

	*out = NULL;
	*len = 0;
	pthread_mutex_lock(&lock);
	s = id ? find(id) : NULL;
	if (!s) {
		pthread_mutex_unlock(&lock);
		return vd_error_set(err, -ENOENT, "No secret with id '%s'", id ? id : "");
	}
	copy = malloc(s->len + 1);
	if (copy) {
		memcpy(copy, s->data, s->len + 1);
		*len = s->len;
	}
	pthread_mutex_unlock(&lock);
	if (!copy)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	*out = copy;
	return 0;
}

int vd_secret_remove(const char *id)
{
	struct secret **p, *s;

	pthread_mutex_lock(&lock);
	for (p = &secrets; *p; p = &(*p)->next) {
		if (strcmp((*p)->id, id) == 0) {
			s = *p;
			*p = s->next;
			pthread_mutex_unlock(&lock);
			destroy(s);
			return 0;
		}
	}
	pthread_mutex_unlock(&lock);
	return -ENOENT;
}

void vd_secret_remove_all(void)
{
	struct secret *s;

	pthread_mutex_lock(&lock);
	s = secrets;
	secrets = NULL;
	pthread_mutex_unlock(&lock);
	while (s) {
		struct secret *next = s->next;
		destroy(s);
		s = next;
	}
}
