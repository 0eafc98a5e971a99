/* SPDX-License-Identifier: MIT */
/*
 * The driver registry: a static table.  Drivers are listed here rather than
 * registered by constructors so that linking libvdisk.a statically keeps them.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "block/drivers.h"
#include "block/internal.h"

static const struct vd_block_driver *const drivers[] = {
	&vd_driver_raw,	     &vd_driver_file,	   &vd_driver_null_co,	 &vd_driver_null_aio,
	&vd_driver_blkdebug, &vd_driver_crash_sim, &vd_driver_qcow2,	 &vd_driver_nbd,
	&vd_driver_vpc,	     &vd_driver_vdi,	   &vd_driver_luks,	 &vd_driver_vmdk,
	&vd_driver_qed,	     &vd_driver_qcow,	   &vd_driver_parallels, &vd_driver_bochs,
	&vd_driver_cloop,    &vd_driver_dmg,	   &vd_driver_vhdx,
#ifdef VD_HAVE_RBD
	&vd_driver_rbd,
#endif
};

#define N_DRIVERS (sizeof(drivers) / sizeof(drivers[0]))

/* Other spellings users bring from QEMU. */
static const struct {
	const char *alias, *name;
} aliases[] = {
	{"null", "null-co"},
	{"host_device", "file"},
};

/* Drivers added at run time by embedders and tests. */
#define MAX_EXTRA 16
static const struct vd_block_driver *extra[MAX_EXTRA];
static size_t n_extra;
static const char *names[N_DRIVERS + MAX_EXTRA + 1];

int vd_driver_register(const struct vd_block_driver *drv)
{
	if (vd_driver_find(drv->name))
		return -EEXIST;
	if (n_extra == MAX_EXTRA)
		return -ENOSPC;
	extra[n_extra++] = drv;
	names[0] = NULL; /* rebuild the name list */
	return 0;
}

const struct vd_block_driver *vd_driver_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (strcmp(name, aliases[i].alias) == 0)
			name = aliases[i].name;
	for (size_t i = 0; i < N_DRIVERS; i++)
		if (strcmp(drivers[i]->name, name) == 0)
			return drivers[i];
	for (size_t i = 0; i < n_extra; i++)
		if (strcmp(extra[i]->name, name) == 0)
			return extra[i];
	return NULL;
}

size_t vd_driver_count(void)
{
	return N_DRIVERS + n_extra;
}

const struct vd_block_driver *vd_driver_at(size_t i)
{
	if (i < N_DRIVERS)
		return drivers[i];
	i -= N_DRIVERS;
	return i < n_extra ? extra[i] : NULL;
}

/*
 * QEMU's bdrv_find_protocol: a filename whose part before the first ':'
 * (with no '/' before it) is a protocol's name opens that protocol, not
 * "file".  Only names that cannot be mistaken for a relative path with a
 * colon in it are listed.
 */
static const struct {
	const char *prefix, *driver;
} protocols[] = {
	{"nbd:", "nbd"},
	{"nbd+tcp:", "nbd"},
	{"nbd+unix:", "nbd"},
#ifdef VD_HAVE_RBD
	{"rbd:", "rbd"},
#endif
};

const char *vd_protocol_for_filename(const char *filename)
{
	for (size_t i = 0; filename && i < sizeof(protocols) / sizeof(protocols[0]); i++)
		if (strncmp(filename, protocols[i].prefix, strlen(protocols[i].prefix)) == 0)
			return protocols[i].driver;
	return "file";
}

const char *const *vd_driver_names(void)
{
	if (!names[0]) {
		for (size_t i = 0; i < vd_driver_count(); i++)
			names[i] = vd_driver_at(i)->name;
		names[vd_driver_count()] = NULL;
	}
	return names;
}
