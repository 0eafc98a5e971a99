/* SPDX-License-Identifier: MIT */
/*
 * The KVM front end (experimental; private to machine/ and tools/): one vCPU
 * in a VM whose RAM is the machine's memfd RAM, started at the reset vector
 * of a BIOS-style payload, every port and MMIO exit turned into
 * vd_address_space_rw on the machine's io / memory address spaces.
 *
 * References are to the KVM API document, Documentation/virt/kvm/api.rst
 * (sections 4.x for ioctls, 5 for struct kvm_run).
 *
 *	struct vd_kvm *k;
 *	vd_kvm_new(m, &(struct vd_kvm_opts){.payload = "ide-rw.bin"}, &k, &err);
 *	vd_kvm_run(k, &err);          // until the guest exits or quit
 *	vd_kvm_free(k);
 *
 * Everything runs on the machine's thread: the vCPU is run from it, and the
 * machine's loop (block completions, QMP) is polled between exits.
 */
#ifndef VDISK_MACHINE_KVM_H
#define VDISK_MACHINE_KVM_H

#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

#include <vdisk/error.h>
#include <vdisk/machine.h>

/* Results of vd_kvm_handle_exit() besides -errno. */
enum {
	VD_KVM_CONTINUE = 0, /* complete the exit with the next KVM_RUN */
	VD_KVM_STOP = 1, /* the guest asked to end (isa-debug-exit) */
};

/*
 * Handle the exit that KVM_RUN left in @run, the vCPU's mmapped kvm_run area
 * of @run_size bytes (KVM_GET_VCPU_MMAP_SIZE).  The exit's fields are input
 * the guest steers, so they are read once and checked before use:
 *
 *  - KVM_EXIT_IO: direction IN/OUT, size 1, 2 or 4, count >= 1 (string I/O:
 *    count elements packed at data_offset, all at the same port), and
 *    [data_offset, data_offset + size * count) inside the mapping and past
 *    the struct kvm_run header; each element is one vd_address_space_rw on
 *    the io space.
 *  - KVM_EXIT_MMIO: len 1..8, is_write 0 or 1; one vd_address_space_rw on
 *    the memory space with mmio.data as the buffer.
 *  - KVM_EXIT_INTR: nothing to do (a signal interrupted KVM_RUN).
 *
 * Unassigned ports and addresses are not errors: reads give all ones, writes
 * are dropped, as on hardware.  Returns VD_KVM_CONTINUE, VD_KVM_STOP once the
 * guest has written isa-debug-exit, or -errno with @err set: -EINVAL for
 * malformed exit data, -ECANCELED for KVM_EXIT_HLT (there is no interrupt
 * controller to wake the vCPU), -ESHUTDOWN for KVM_EXIT_SHUTDOWN (triple
 * fault) and KVM_EXIT_SYSTEM_EVENT, -ENOEXEC for KVM_EXIT_FAIL_ENTRY, -EIO for
 * KVM_EXIT_INTERNAL_ERROR and KVM_EXIT_EXCEPTION, -ENOSYS for other reasons.
 * Never aborts.
 */
int vd_kvm_handle_exit(struct vd_machine *m, struct kvm_run *run, size_t run_size,
		       struct vd_error *err);

/*
 * A BIOS-style payload as QEMU's -bios loads one (hw/i386/x86.c
 * x86_bios_rom_init): the image (a multiple of 64 KiB, at most 16 MiB) sits
 * at 4 GiB - size, so the reset vector F000:FFF0 (linear 0xFFFFFFF0) is its
 * last 16 bytes, and its last 128 KiB (all of a smaller image) are also at the
 * top of the first MiB, ending at 0x100000.  QEMU maps the low copy as ROM
 * over RAM; we copy it into guest RAM (there are no PAM registers), which the
 * guest must not rely on either way.
 *
 * vd_kvm_firmware_load reads @path into page-aligned memory of its own and
 * copies the low part into the machine's RAM (which must reach 1 MiB).
 * 0 or -errno with @err set.  No /dev/kvm needed.
 */
struct vd_kvm_firmware {
	void *host; /* the whole image, for a read-only memory slot */
	uint64_t size;
	uint64_t gpa; /* 4 GiB - size */
};
int vd_kvm_firmware_load(struct vd_machine *m, const char *path, struct vd_kvm_firmware *fw,
			 struct vd_error *err);
void vd_kvm_firmware_free(struct vd_kvm_firmware *fw);

struct vd_kvm_opts {
	const char *device; /* NULL: "/dev/kvm" */
	const char *payload; /* required */
};

struct vd_kvm;

/*
 * Open the KVM device, check the API version (12, api.rst 4.1), create the
 * VM with the machine's RAM and the payload as memory slots, one vCPU at the
 * reset vector, and map its kvm_run area.  0 or -errno with @err set (-ENOENT
 * when there is no /dev/kvm).
 */
int vd_kvm_new(struct vd_machine *m, const struct vd_kvm_opts *opts, struct vd_kvm **out,
	       struct vd_error *err);
void vd_kvm_free(struct vd_kvm *k);

/*
 * Run the vCPU until the guest exits through isa-debug-exit (0; its status is
 * vd_machine_guest_exit_status), vd_kvm_request_stop() (0), or an error
 * (-errno with @err set).  While the machine is stopped (QMP stop, -S, an I/O
 * error with werror=stop) the vCPU does not run and the loop waits.
 */
int vd_kvm_run(struct vd_kvm *k, struct vd_error *err);
/* Make vd_kvm_run return after the current exit (a quit handler). */
void vd_kvm_request_stop(struct vd_kvm *k);

#endif
