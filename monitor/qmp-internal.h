/* SPDX-License-Identifier: MIT */
/* Private interfaces between the files of the monitor. */
#ifndef VDISK_MONITOR_QMP_INTERNAL_H
#define VDISK_MONITOR_QMP_INTERNAL_H

#include <stdlib.h>

#include <vdisk/qmp.h>

/* json_string() that survives text that is not UTF-8 (bytes >= 0x80 become
 * '?'); NULL only on ENOMEM. */
json_t *qmp_string(const char *s);

#endif
