/* SPDX-License-Identifier: MIT */
/*
 * QEMU's ISA debug devices, so that a test payload behaves the same under
 * qemu-system-x86_64 and under vdisk's own front ends:
 *
 *  - isa-debug-exit (QEMU hw/misc/debugexit.c): a write of value v to any
 *    port of [iobase, iobase + iosize) ends the machine with exit status
 *    (v << 1) | 1.  QEMU calls exit() there; a library must not, so the
 *    device reports the status through a callback and the board decides.
 *    Reads return 0.
 *  - isa-debugcon (QEMU hw/char/debugcon.c, -debugcon): bytes written to
 *    the port go to a file descriptor; reads return the readback value
 *    0xe9 (so a guest can probe for the port, as Bochs does).
 *
 * Both are legacy port devices on an I/O address space; neither knows who
 * traps the access (KVM, the test protocol).
 */
#ifndef VDISK_HW_DEBUG_EXIT_H
#define VDISK_HW_DEBUG_EXIT_H

#include <stdint.h>

#include <vdisk/memory.h>

#define VD_DEBUG_EXIT_IOBASE 0x501 /* QEMU's defaults (iobase, iosize) */
#define VD_DEBUG_EXIT_IOSIZE 0x02
#define VD_DEBUGCON_IOBASE 0xe9
#define VD_DEBUGCON_READBACK 0xe9

struct vd_debug_exit;
struct vd_debugcon;

/* Called on the dispatching thread with the value the guest wrote (the low
 * @size bytes of the access); QEMU would exit((value << 1) | 1). */
typedef void vd_debug_exit_fn(void *opaque, uint64_t value);

/* Map at @iobase (@iosize ports, 1..0x10000 and inside the 64 KiB port
 * space) in @io.  NULL on a bad range or ENOMEM. */
struct vd_debug_exit *vd_debug_exit_new(struct vd_address_space *io, uint32_t iobase,
					uint32_t iosize, vd_debug_exit_fn *fn, void *opaque);
void vd_debug_exit_free(struct vd_debug_exit *d);

/* Map a one-port console at @iobase in @io writing to @fd (borrowed: the
 * caller closes it after vd_debugcon_free).  NULL on a bad port or ENOMEM. */
struct vd_debugcon *vd_debugcon_new(struct vd_address_space *io, uint32_t iobase, int fd);
void vd_debugcon_free(struct vd_debugcon *c);

#endif
