/* SPDX-License-Identifier: MIT */
/*
 * CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected), the checksum of
 * VHDX headers, region tables, metadata and log entries ([MS-VHDX] 2.2.2
 * and iSCSI's RFC 3720 B.4).  zlib has only the IEEE CRC-32.
 */
#ifndef VDISK_CRC32C_H
#define VDISK_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Continue a CRC-32C over @len bytes of @buf.  Start with @crc = 0; the
 * result of one call is the @crc of the next for data split in pieces:
 * vd_crc32c(vd_crc32c(0, a, n), b, m) == vd_crc32c(0, ab, n + m).
 * The standard check value: vd_crc32c(0, "123456789", 9) == 0xe3069283.
 */
uint32_t vd_crc32c(uint32_t crc, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
