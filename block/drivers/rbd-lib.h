/* SPDX-License-Identifier: MIT */
/*
 * librbd and librados, loaded when the first rbd image is opened or created
 * (as QEMU loads its block-rbd module).  Linking them into every vdisk
 * process cost about 8 ms of start-up (the C++ constructors of ceph-common
 * and boost) for commands that never touch Ceph.
 *
 * The driver calls the libraries only through the table rbd_lib_load()
 * returns; the prototypes still come from the libraries' headers.
 */
#ifndef VD_BLOCK_DRIVERS_RBD_LIB_H
#define VD_BLOCK_DRIVERS_RBD_LIB_H

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <vdisk/error.h>

#define RBD_LIB_RADOS_FUNCS(X)       \
	X(rados_create)              \
	X(rados_conf_read_file)      \
	X(rados_conf_set)            \
	X(rados_connect)             \
	X(rados_ioctx_create)        \
	X(rados_ioctx_destroy)       \
	X(rados_ioctx_set_namespace) \
	X(rados_shutdown)

#define RBD_LIB_RBD_FUNCS(X)         \
	X(rbd_aio_create_completion) \
	X(rbd_aio_discard)           \
	X(rbd_aio_flush)             \
	X(rbd_aio_get_return_value)  \
	X(rbd_aio_readv)             \
	X(rbd_aio_release)           \
	X(rbd_aio_write_zeroes)      \
	X(rbd_aio_writev)            \
	X(rbd_close)                 \
	X(rbd_create)                \
	X(rbd_diff_iterate2)         \
	X(rbd_get_features)          \
	X(rbd_get_flags)             \
	X(rbd_get_size)              \
	X(rbd_open)                  \
	X(rbd_open_read_only)        \
	X(rbd_resize)                \
	X(rbd_snap_create)           \
	X(rbd_snap_list)             \
	X(rbd_snap_list_end)         \
	X(rbd_snap_remove)           \
	X(rbd_snap_rollback)         \
	X(rbd_stat)

#define RBD_LIB_MEMBER(fn) __typeof__(fn) *fn;

struct rbd_lib {
	RBD_LIB_RADOS_FUNCS(RBD_LIB_MEMBER)
	RBD_LIB_RBD_FUNCS(RBD_LIB_MEMBER)
};

/* Filled by rbd_lib_load(); the driver calls through it once a load
 * succeeded (every call follows an open or a create that loaded it). */
extern struct rbd_lib rbd_lib;

/* The loaded libraries (loaded once, never unloaded), or NULL with @err
 * set: "Could not load librbd: ..." naming the missing library or symbol. */
const struct rbd_lib *rbd_lib_load(struct vd_error *err);

#endif
