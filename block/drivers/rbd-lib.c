/* SPDX-License-Identifier: MIT */
/*
 * Loading librbd and librados on first use (see rbd-lib.h).
 */
#ifdef VD_HAVE_RBD

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "block/drivers/rbd-lib.h"

struct rbd_lib rbd_lib;
static char load_error[256];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void *open_lib(const char *name)
{
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);

	if (!h)
		snprintf(load_error, sizeof(load_error), "%s", dlerror());
	return h;
}

static void load(void)
{
	void *rados, *rbd;

	rados = open_lib("librados.so.2");
	rbd = rados ? open_lib("librbd.so.1") : NULL;
	if (!rbd)
		return;
#define LOAD_FROM(handle, fn)                                                      \
	if (!load_error[0]) {                                                      \
		*(void **)&rbd_lib.fn = dlsym(handle, #fn);                        \
		if (!rbd_lib.fn)                                                   \
			snprintf(load_error, sizeof(load_error), "%s", dlerror()); \
	}
#define LOAD_RADOS(fn) LOAD_FROM(rados, fn)
#define LOAD_RBD(fn) LOAD_FROM(rbd, fn)
	RBD_LIB_RADOS_FUNCS(LOAD_RADOS)
	RBD_LIB_RBD_FUNCS(LOAD_RBD)
#undef LOAD_RADOS
#undef LOAD_RBD
#undef LOAD_FROM
}

const struct rbd_lib *rbd_lib_load(struct vd_error *err)
{
	pthread_once(&load_once, load);
	if (load_error[0]) {
		vd_error_set(err, -ENOTSUP, "Could not load librbd: %s", load_error);
		return NULL;
	}
	return &rbd_lib;
}

#else
typedef int rbd_lib_unused; /* ISO C: no empty translation unit */
#endif /* VD_HAVE_RBD */
