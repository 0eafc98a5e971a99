/* SPDX-License-Identifier: MIT */
/*
 * The KVM front end (machine/kvm.h).  The part every build tests is
 * vd_kvm_handle_exit(): it only translates an exit into address-space
 * accesses, like qtest.c translates a protocol line.  The rest (VM, memory
 * slots, vCPU, KVM_RUN loop) needs /dev/kvm.
 *
 * Citations are to Documentation/virt/kvm/api.rst.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vdisk/trace.h>

#include <vdisk/kvm.h>
#include "machine/machine-internal.h"

#define FIRMWARE_ALIGN (UINT64_C(64) << 10) /* QEMU: bios size % 65536 == 0 */
#define FIRMWARE_MAX (UINT64_C(16) << 20)
#define ISA_BIOS_MAX (UINT64_C(128) << 10)
#define ONE_MIB (UINT64_C(1) << 20)
#define FOUR_GIB (UINT64_C(1) << 32)
/* Where QEMU puts the pages that Intel hosts need for real mode (target/i386
 * kvm.c kvm_arch_init): the identity map page and, above it, three TSS
 * pages, just below the largest firmware image. */
#define KVM_IDENTITY_MAP_ADDR UINT64_C(0xfeffc000)
#define KVM_TSS_ADDR UINT64_C(0xfeffd000)

enum {
	SLOT_RAM_LOW,
	SLOT_RAM_HIGH,
	SLOT_FIRMWARE,
};

struct vd_kvm {
	struct vd_machine *m;
	int kvm_fd, vm_fd, vcpu_fd;
	struct kvm_run *run;
	size_t run_size;
	struct vd_kvm_firmware fw;
	bool stop;
};

/* ---- exits (api.rst 5. "The kvm_run structure") ---- */

static const char *exit_reason_name(uint32_t reason)
{
	static const char *const names[] = {
		[KVM_EXIT_UNKNOWN] = "UNKNOWN",
		[KVM_EXIT_EXCEPTION] = "EXCEPTION",
		[KVM_EXIT_IO] = "IO",
		[KVM_EXIT_HYPERCALL] = "HYPERCALL",
		[KVM_EXIT_DEBUG] = "DEBUG",
		[KVM_EXIT_HLT] = "HLT",
		[KVM_EXIT_MMIO] = "MMIO",
		[KVM_EXIT_IRQ_WINDOW_OPEN] = "IRQ_WINDOW_OPEN",
		[KVM_EXIT_SHUTDOWN] = "SHUTDOWN",
		[KVM_EXIT_FAIL_ENTRY] = "FAIL_ENTRY",
		[KVM_EXIT_INTR] = "INTR",
		[KVM_EXIT_SET_TPR] = "SET_TPR",
		[KVM_EXIT_TPR_ACCESS] = "TPR_ACCESS",
		[KVM_EXIT_NMI] = "NMI",
		[KVM_EXIT_INTERNAL_ERROR] = "INTERNAL_ERROR",
		[KVM_EXIT_SYSTEM_EVENT] = "SYSTEM_EVENT",
	};

	if (reason < sizeof(names) / sizeof(names[0]) && names[reason])
		return names[reason];
	return "?";
}

static int guest_stop_result(struct vd_machine *m)
{
	return vd_machine_guest_exit_status(m) >= 0 ? VD_KVM_STOP : VD_KVM_CONTINUE;
}

/*
 * KVM_EXIT_IO: "data_offset describes where the data is located
 * (KVM_EXIT_IO_OUT) or where kvm expects application code to place the data
 * for the next KVM_RUN invocation (KVM_EXIT_IO_IN).  Data format is a packed
 * array."  For INS/OUTS, count is the number of elements; every element goes
 * to the same port (as QEMU's kvm_handle_io).
 */
static int handle_io(struct vd_machine *m, struct kvm_run *run, size_t run_size,
		     struct vd_error *err)
{
	/* Each field read once: checks and use see the same values. */
	const uint8_t direction = run->io.direction;
	const uint8_t size = run->io.size;
	const uint16_t port = run->io.port;
	const uint32_t count = run->io.count;
	const uint64_t offset = run->io.data_offset;
	uint64_t total;
	uint8_t *data;

	if (direction != KVM_EXIT_IO_IN && direction != KVM_EXIT_IO_OUT)
		return vd_error_set(err, -EINVAL, "KVM_EXIT_IO: bad direction %u", direction);
	if (size != 1 && size != 2 && size != 4)
		return vd_error_set(err, -EINVAL, "KVM_EXIT_IO: bad access size %u at port 0x%x",
				    size, port);
	if (count == 0)
		return vd_error_set(err, -EINVAL, "KVM_EXIT_IO: count 0 at port 0x%x", port);
	total = (uint64_t)size * count; /* <= 4 * (2^32 - 1): no overflow */
	/* The data lies in the mapping, after the kvm_run header (KVM puts it
	 * at page KVM_PIO_PAGE_OFFSET); compared without overflow. */
	if (offset < sizeof(*run) || offset > run_size || total > run_size - offset)
		return vd_error_set(err, -EINVAL,
				    "KVM_EXIT_IO: data at offset %" PRIu64 ", %" PRIu64
				    " bytes, outside the %zu-byte kvm_run mapping",
				    offset, total, run_size);
	data = (uint8_t *)run + offset;
	vd_trace(kvm_exit_io, "port=0x%x size=%u count=%u dir=%s", port, size, count,
		 direction == KVM_EXIT_IO_OUT ? "out" : "in");
	for (uint32_t i = 0; i < count; i++) {
		/* Unassigned ports read all ones and drop writes (traced by
		 * the dispatcher): not an error. */
		vd_address_space_rw(m->io, port, data + (uint64_t)i * size, size,
				    direction == KVM_EXIT_IO_OUT);
		/* A string OUT to isa-debug-exit ends the guest at once. */
		if (direction == KVM_EXIT_IO_OUT && vd_machine_guest_exit_status(m) >= 0)
			break;
	}
	return guest_stop_result(m);
}

/* KVM_EXIT_MMIO: "The 'data' member contains the written data if 'is_write'
 * is true, and should be filled by application code otherwise"; len is at
 * most sizeof(data), 8. */
static int handle_mmio(struct vd_machine *m, struct kvm_run *run, struct vd_error *err)
{
	const uint64_t addr = run->mmio.phys_addr;
	const uint32_t len = run->mmio.len;
	const uint8_t is_write = run->mmio.is_write;

	if (len == 0 || len > sizeof(run->mmio.data))
		return vd_error_set(err, -EINVAL,
				    "KVM_EXIT_MMIO: bad length %" PRIu32 " at 0x%" PRIx64, len,
				    addr);
	if (is_write > 1)
		return vd_error_set(err, -EINVAL, "KVM_EXIT_MMIO: bad is_write %u", is_write);
	vd_trace(kvm_exit_mmio, "addr=0x%" PRIx64 " len=%" PRIu32 " write=%u", addr, len, is_write);
	/* A wrap past 2^64 is the dispatcher's (it wraps, as addresses do). */
	vd_address_space_rw(m->mem, addr, run->mmio.data, len, is_write);
	return guest_stop_result(m);
}

static int handle_internal_error(struct kvm_run *run, struct vd_error *err)
{
	const uint32_t suberror = run->internal.suberror;
	uint32_t ndata = run->internal.ndata;
	const char *what;

	switch (suberror) {
	case KVM_INTERNAL_ERROR_EMULATION:
		what = "emulation failure";
		break;
	case KVM_INTERNAL_ERROR_SIMUL_EX:
		what = "exception while delivering an exception";
		break;
	case KVM_INTERNAL_ERROR_DELIVERY_EV:
		what = "event delivery failure";
		break;
	case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON:
		what = "unexpected exit reason";
		break;
	default:
		what = "unknown suberror";
		break;
	}
	/* ndata is the kernel's to set, but never index past data[16]. */
	if (ndata > sizeof(run->internal.data) / sizeof(run->internal.data[0]))
		ndata = sizeof(run->internal.data) / sizeof(run->internal.data[0]);
	return vd_error_set(err, -EIO,
			    "KVM_EXIT_INTERNAL_ERROR: %s (suberror %" PRIu32 ", %" PRIu32
			    " data words%s0x%llx)",
			    what, suberror, ndata, ndata ? ", first " : ", ",
			    ndata ? (unsigned long long)run->internal.data[0] : 0ULL);
}

int vd_kvm_handle_exit(struct vd_machine *m, struct kvm_run *run, size_t run_size,
		       struct vd_error *err)
{
	uint32_t reason;

	if (!m || !run || run_size < sizeof(*run))
		return vd_error_set(err, -EINVAL, "kvm_run mapping of %zu bytes is too small",
				    run_size);
	reason = run->exit_reason;
	switch (reason) {
	case KVM_EXIT_IO:
		return handle_io(m, run, run_size, err);
	case KVM_EXIT_MMIO:
		return handle_mmio(m, run, err);
	case KVM_EXIT_INTR:
		/* A signal interrupted KVM_RUN: just run again. */
		return guest_stop_result(m);
	case KVM_EXIT_HLT:
		/* Without an in-kernel irqchip HLT comes to user space
		 * ("KVM_EXIT_HLT"); we inject no interrupts, so nothing would
		 * ever wake the vCPU (QEMU/TCG would wait forever). */
		return vd_error_set(err, -ECANCELED,
				    "KVM_EXIT_HLT: the guest halted without exiting through "
				    "isa-debug-exit (no interrupt can wake it)");
	case KVM_EXIT_SHUTDOWN:
		/* "KVM_EXIT_SHUTDOWN": a triple fault on x86. */
		return vd_error_set(err, -ESHUTDOWN, "KVM_EXIT_SHUTDOWN: the guest triple-faulted");
	case KVM_EXIT_SYSTEM_EVENT:
		return vd_error_set(err, -ESHUTDOWN, "KVM_EXIT_SYSTEM_EVENT: type %" PRIu32,
				    run->system_event.type);
	case KVM_EXIT_FAIL_ENTRY:
		/* "hardware_entry_failure_reason": VMX/SVM specific. */
		return vd_error_set(
			err, -ENOEXEC,
			"KVM_EXIT_FAIL_ENTRY: the vCPU could not enter the guest (reason 0x%llx)",
			(unsigned long long)run->fail_entry.hardware_entry_failure_reason);
	case KVM_EXIT_INTERNAL_ERROR:
		return handle_internal_error(run, err);
	case KVM_EXIT_EXCEPTION:
		return vd_error_set(err, -EIO, "KVM_EXIT_EXCEPTION: exception %" PRIu32,
				    run->ex.exception);
	default:
		return vd_error_set(err, -ENOSYS, "KVM exit reason %" PRIu32 " (%s) not handled",
				    reason, exit_reason_name(reason));
	}
}

/* ---- the payload ---- */

int vd_kvm_firmware_load(struct vd_machine *m, const char *path, struct vd_kvm_firmware *fw,
			 struct vd_error *err)
{
	const struct vd_guest_ram *ram = vd_machine_ram(m);
	uint64_t isa_size, done = 0;
	struct stat st;
	int fd, ret;

	memset(fw, 0, sizeof(*fw));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vd_error_setg_errno(err, -errno, "Could not open payload '%s'", path);
	if (fstat(fd, &st) < 0) {
		ret = vd_error_setg_errno(err, -errno, "Could not stat payload '%s'", path);
		goto out;
	}
	/* QEMU's x86_bios_rom_init: "qemu: could not load PC BIOS" unless the
	 * size is a positive multiple of 64 KiB. */
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size % FIRMWARE_ALIGN ||
	    (uint64_t)st.st_size > FIRMWARE_MAX) {
		ret = vd_error_set(err, -EINVAL,
				   "Payload '%s' must be a file of a multiple of 64 KiB, at most "
				   "16 MiB",
				   path);
		goto out;
	}
	if (!ram->host || ram->size < ONE_MIB || vd_mem_region_size(m->ram_low) < ONE_MIB) {
		ret = vd_error_set(err, -EINVAL, "The payload needs at least 1 MiB of guest RAM");
		goto out;
	}
	fw->size = (uint64_t)st.st_size;
	fw->host = mmap(NULL, fw->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fw->host == MAP_FAILED) {
		fw->host = NULL;
		ret = vd_error_setg_errno(err, -errno, "Could not allocate the payload");
		goto out;
	}
	while (done < fw->size) {
		ssize_t n = pread(fd, (uint8_t *)fw->host + done, fw->size - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = vd_error_setg_errno(err, n < 0 ? -errno : -EIO,
						  "Could not read payload '%s'", path);
			goto out;
		}
		done += (uint64_t)n;
	}
	fw->gpa = FOUR_GIB - fw->size;
	/* isa-bios: the last 128 KiB (or all) end at 1 MiB. */
	isa_size = fw->size < ISA_BIOS_MAX ? fw->size : ISA_BIOS_MAX;
	memcpy((uint8_t *)ram->host + ONE_MIB - isa_size, (uint8_t *)fw->host + fw->size - isa_size,
	       isa_size);
	ret = 0;
out:
	close(fd);
	if (ret < 0)
		vd_kvm_firmware_free(fw);
	return ret;
}

void vd_kvm_firmware_free(struct vd_kvm_firmware *fw)
{
	if (fw->host)
		munmap(fw->host, fw->size);
	memset(fw, 0, sizeof(*fw));
}

/* ---- VM and vCPU ---- */

/* The VM setup is x86's (real-mode reset vector, TSS, CPUID); exit
 * handling above is built everywhere. */
#if defined(__x86_64__) || defined(__i386__)
#define VD_KVM_X86 1

static int kvm_ioctl_retry(int fd, unsigned long req, unsigned long arg)
{
	int r;

	do {
		r = ioctl(fd, req, arg);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

/* 4.35 KVM_SET_USER_MEMORY_REGION: "memory_size" and "userspace_addr" page
 * aligned; slots must not overlap in guest physical space. */
static int set_slot(struct vd_kvm *k, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size,
		    void *host, struct vd_error *err)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot,
		.flags = flags,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uintptr_t)host,
	};
	long page = sysconf(_SC_PAGESIZE);
	int ret;

	if (page <= 0 || size % (uint64_t)page || (uintptr_t)host % (uint64_t)page)
		return vd_error_set(err, -EINVAL,
				    "Guest memory at 0x%" PRIx64 " (%" PRIu64
				    " bytes) is not page aligned, as KVM requires",
				    gpa, size);
	ret = kvm_ioctl_retry(k->vm_fd, KVM_SET_USER_MEMORY_REGION, (unsigned long)&r);
	if (ret < 0)
		return vd_error_setg_errno(err, ret,
					   "KVM_SET_USER_MEMORY_REGION (slot %" PRIu32
					   " at 0x%" PRIx64 ") failed",
					   slot, gpa);
	return 0;
}

/* KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2: give the vCPU what the
 * host supports, as kvmtool and QEMU's -cpu host do.  Best effort: a
 * real-mode payload does not need CPUID. */
static void setup_cpuid(struct vd_kvm *k)
{
	for (uint32_t nent = 64; nent <= 4096; nent *= 2) {
		struct kvm_cpuid2 *c =
			calloc(1, sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));
		int ret;

		if (!c)
			return;
		c->nent = nent;
		ret = kvm_ioctl_retry(k->kvm_fd, KVM_GET_SUPPORTED_CPUID, (unsigned long)c);
		if (ret == 0) {
			ret = kvm_ioctl_retry(k->vcpu_fd, KVM_SET_CPUID2, (unsigned long)c);
			if (ret < 0)
				vd_trace(kvm_set_cpuid_failed, "errno=%d", -ret);
		}
		free(c);
		if (ret != -E2BIG)
			return;
	}
}

/* The architectural reset state (Intel SDM vol. 3A, "Processor State After
 * Reset"): CS selector 0xF000 with base 0xFFFF0000, IP 0xFFF0, RFLAGS 2.
 * KVM resets a new vCPU to it; we set it anyway, as QEMU does, so that
 * nothing depends on that. */
static int set_reset_state(struct vd_kvm *k, struct vd_error *err)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	int ret;

	ret = kvm_ioctl_retry(k->vcpu_fd, KVM_GET_SREGS, (unsigned long)&sregs);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "KVM_GET_SREGS failed");
	sregs.cs.selector = 0xf000;
	sregs.cs.base = 0xffff0000;
	ret = kvm_ioctl_retry(k->vcpu_fd, KVM_SET_SREGS, (unsigned long)&sregs);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "KVM_SET_SREGS failed");
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0xfff0;
	regs.rflags = 0x2; /* bit 1 is reserved, always 1 */
	ret = kvm_ioctl_retry(k->vcpu_fd, KVM_SET_REGS, (unsigned long)&regs);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "KVM_SET_REGS failed");
	return 0;
}

#endif /* VD_KVM_X86 */

int vd_kvm_new(struct vd_machine *m, const struct vd_kvm_opts *opts, struct vd_kvm **out,
	       struct vd_error *err)
{
#ifndef VD_KVM_X86
	*out = NULL;
	return vd_error_set(err, -ENOTSUP, "The KVM front end runs on x86 hosts only");
#else
	const char *dev = opts->device ? opts->device : "/dev/kvm";
	struct vd_kvm *k;
	int ret, mmap_size;
	uint32_t fw_flags = 0;

	*out = NULL;
	if (!opts->payload)
		return vd_error_set(err, -EINVAL, "KVM needs a payload (--payload FILE)");
	k = calloc(1, sizeof(*k));
	if (!k)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	k->m = m;
	k->kvm_fd = k->vm_fd = k->vcpu_fd = -1;
	k->run = MAP_FAILED;

	k->kvm_fd = open(dev, O_RDWR | O_CLOEXEC);
	if (k->kvm_fd < 0) {
		ret = vd_error_setg_errno(err, -errno, "Could not open %s", dev);
		goto fail;
	}
	/* 4.1 KVM_GET_API_VERSION: "Applications should refuse to run if
	 * KVM_GET_API_VERSION returns a value other than 12." */
	ret = kvm_ioctl_retry(k->kvm_fd, KVM_GET_API_VERSION, 0);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "%s is not a KVM device (KVM_GET_API_VERSION)", dev);
		goto fail;
	}
	if (ret != KVM_API_VERSION) {
		ret = vd_error_set(err, -ENOTSUP, "%s: KVM API version %d, expected %d", dev, ret,
				   KVM_API_VERSION);
		goto fail;
	}
	/* KVM_CAP_USER_MEMORY: KVM_SET_USER_MEMORY_REGION exists. */
	if (kvm_ioctl_retry(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0) {
		ret = vd_error_set(err, -ENOTSUP, "%s lacks KVM_CAP_USER_MEMORY", dev);
		goto fail;
	}
	/* 4.2 KVM_CREATE_VM with machine type 0. */
	ret = kvm_ioctl_retry(k->kvm_fd, KVM_CREATE_VM, 0);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "KVM_CREATE_VM failed");
		goto fail;
	}
	k->vm_fd = ret;
	/* KVM_SET_TSS_ADDR: "This ioctl is required on Intel-based hosts"
	 * (real mode without unrestricted guest); three pages outside any
	 * memory slot.  KVM_SET_IDENTITY_MAP_ADDR: one page, before the
	 * vCPU is created. */
	if (kvm_ioctl_retry(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
		uint64_t addr = KVM_IDENTITY_MAP_ADDR;

		ret = kvm_ioctl_retry(k->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, (unsigned long)&addr);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "KVM_SET_IDENTITY_MAP_ADDR failed");
			goto fail;
		}
	}
	if (kvm_ioctl_retry(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_TSS_ADDR) > 0) {
		ret = kvm_ioctl_retry(k->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "KVM_SET_TSS_ADDR failed");
			goto fail;
		}
	}

	/* Guest RAM: the same host pages the address space and DMA use. */
	ret = vd_kvm_firmware_load(m, opts->payload, &k->fw, err);
	if (ret < 0)
		goto fail;
	ret = set_slot(k, SLOT_RAM_LOW, 0, 0, vd_mem_region_size(m->ram_low),
		       vd_mem_region_ram_ptr(m->ram_low), err);
	if (ret == 0 && m->ram_high)
		ret = set_slot(k, SLOT_RAM_HIGH, 0, FOUR_GIB, vd_mem_region_size(m->ram_high),
			       vd_mem_region_ram_ptr(m->ram_high), err);
	/* The payload as ROM (KVM_MEM_READONLY with KVM_CAP_READONLY_MEM:
	 * "writes to this memory will be posted to userspace as KVM_EXIT_MMIO
	 * exits", which the dispatcher drops: nothing else is mapped there).  Without the capability it stays
	 * writable, which a payload must not rely on. */
	if (kvm_ioctl_retry(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0)
		fw_flags = KVM_MEM_READONLY;
	if (ret == 0)
		ret = set_slot(k, SLOT_FIRMWARE, fw_flags, k->fw.gpa, k->fw.size, k->fw.host, err);
	if (ret < 0)
		goto fail;

	/* 4.7 KVM_CREATE_VCPU, then KVM_GET_VCPU_MMAP_SIZE: "The
	 * KVM_RUN ioctl communicates with userspace via a shared memory
	 * region.  This ioctl returns the size of that region." */
	ret = kvm_ioctl_retry(k->vm_fd, KVM_CREATE_VCPU, 0);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "KVM_CREATE_VCPU failed");
		goto fail;
	}
	k->vcpu_fd = ret;
	mmap_size = kvm_ioctl_retry(k->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < 0 || (size_t)mmap_size < sizeof(struct kvm_run)) {
		ret = vd_error_set(err, mmap_size < 0 ? mmap_size : -EINVAL,
				   "KVM_GET_VCPU_MMAP_SIZE returned %d", mmap_size);
		goto fail;
	}
	k->run_size = (size_t)mmap_size;
	k->run = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->vcpu_fd, 0);
	if (k->run == MAP_FAILED) {
		ret = vd_error_setg_errno(err, -errno, "Could not map the vCPU's kvm_run");
		goto fail;
	}
	setup_cpuid(k);
	ret = set_reset_state(k, err);
	if (ret < 0)
		goto fail;
	*out = k;
	return 0;

fail:
	vd_kvm_free(k);
	return ret < 0 ? ret : -EIO;
#endif
}

void vd_kvm_free(struct vd_kvm *k)
{
	if (!k)
		return;
	if (k->run != MAP_FAILED)
		munmap(k->run, k->run_size);
	if (k->vcpu_fd >= 0)
		close(k->vcpu_fd);
	if (k->vm_fd >= 0)
		close(k->vm_fd);
	if (k->kvm_fd >= 0)
		close(k->kvm_fd);
	vd_kvm_firmware_free(&k->fw);
	free(k);
}

void vd_kvm_request_stop(struct vd_kvm *k)
{
	k->stop = true;
}

int vd_kvm_run(struct vd_kvm *k, struct vd_error *err)
{
	struct vd_machine *m = k->m;
	struct vd_loop *loop = vd_machine_loop(m);
	int ret;

	for (;;) {
		/* Device work that completes on the loop (block I/O the guest
		 * polls for, timers, QMP) runs between exits; the guest's next
		 * status read sees it. */
		vd_loop_run_once(loop, false);
		if (k->stop || vd_machine_guest_exit_status(m) >= 0)
			return 0;
		if (!vd_machine_is_running(m)) {
			/* Stopped: wait for cont (QMP) without running the
			 * vCPU.  Nothing registered that could wake us means
			 * nothing ever will. */
			if (!vd_loop_run_once(loop, true) && !vd_machine_is_running(m) && !k->stop)
				return vd_error_set(err, -EDEADLK,
						    "The machine is stopped (%s) and nothing can "
						    "resume it",
						    vd_machine_run_state(m));
			continue;
		}
		/* 4.10 KVM_RUN: "-EINTR: an unmasked signal is pending". */
		if (ioctl(k->vcpu_fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return vd_error_setg_errno(err, -errno, "KVM_RUN failed");
		}
		vd_trace(kvm_exit, "reason=%u (%s)", k->run->exit_reason,
			 exit_reason_name(k->run->exit_reason));
		ret = vd_kvm_handle_exit(m, k->run, k->run_size, err);
		if (ret < 0)
			return ret;
		if (ret == VD_KVM_STOP)
			return 0;
	}
}
