/* SPDX-License-Identifier: MIT */
/*
 * The virtio-pci modern transport (virtio 1.2 section 4.1) for virtio-blk.
 * The layout and the register semantics follow QEMU 7.2's hw/virtio/
 * virtio-pci.c where the spec leaves a choice (tests/hw/virtio-qtest.py
 * compares the two); include/vdisk/virtio-pci.h has the map.
 *
 * Everything in BAR4 and the PCI configuration access capability is guest
 * input: offsets, sizes, queue numbers, vector numbers, ring addresses.  A
 * value the spec forbids either is ignored (as QEMU does) or puts the device
 * in NEEDS_RESET (queue_enable with a bad value or unmappable rings, as QEMU's
 * virtio_error); nothing here trusts it further.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/backend.h>
#include <vdisk/pci.h>
#include <vdisk/trace.h>
#include <vdisk/virtio-pci.h>

#include "hw/virtio/le.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BLK_MODERN 0x1042 /* 0x1040 + device id 2 (4.1.2.1) */
#define VIRTIO_PCI_DEVICE_BLK_TRANSITIONAL 0x1001 /* 4.1.2.3 */
#define VIRTIO_ID_BLOCK 2
#define QEMU_SUBDEVICE 0x1100
#define PCI_CLASS_STORAGE_SCSI 0x010000

/* Capabilities (4.1.4): vendor-specific, cfg_type. */
#define PCI_CAP_ID_VNDR 0x09
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5
#define CAP_BAR 4 /* struct virtio_pci_cap: cap_vndr, next, len, type, bar */
#define CAP_OFFSET 8
#define CAP_LENGTH 12
#define CAP_NOTIFY_MULT 16
#define CAP_PCI_CFG_DATA 16

/* Where QEMU puts them. */
#define CAP_COMMON_AT 0x40
#define CAP_ISR_AT 0x50
#define CAP_DEVICE_AT 0x60
#define CAP_NOTIFY_AT 0x70
#define CAP_PCI_CFG_AT 0x84
#define CAP_MSIX_AT 0x98

/* BAR4 layout: one 4 KiB page each (QEMU's virtio_pci_modern_regions_init). */
#define MODERN_BAR 4
#define MODERN_BAR_SIZE 0x4000
#define COMMON_OFFSET 0x0000
#define ISR_OFFSET 0x1000
#define DEVICE_OFFSET 0x2000
#define NOTIFY_OFFSET 0x3000
#define REGION_SIZE 0x1000
#define NOTIFY_MULT 4 /* notify_off_multiplier: queue q at q * 4 */
#define MSIX_BAR 1
#define MSIX_BAR_SIZE 0x1000
#define MSIX_PBA_OFFSET 0x800

/* struct virtio_pci_common_cfg (4.1.4.3). */
#define COMMON_DFSELECT 0
#define COMMON_DF 4
#define COMMON_GFSELECT 8
#define COMMON_GF 12
#define COMMON_MSIX 16
#define COMMON_NUMQ 18
#define COMMON_STATUS 20
#define COMMON_CFGGENERATION 21
#define COMMON_Q_SELECT 22
#define COMMON_Q_SIZE 24
#define COMMON_Q_MSIX 26
#define COMMON_Q_ENABLE 28
#define COMMON_Q_NOFF 30
#define COMMON_Q_DESCLO 32
#define COMMON_Q_DESCHI 36
#define COMMON_Q_AVAILLO 40
#define COMMON_Q_AVAILHI 44
#define COMMON_Q_USEDLO 48
#define COMMON_Q_USEDHI 52
#define COMMON_Q_NDATA 56
#define COMMON_Q_RESET 58

#define QUEUE_SELECT_MAX 1024 /* QEMU's VIRTIO_QUEUE_MAX: larger selects ignored */

/* The legacy interface in I/O BAR0 (4.1.4.10), transitional devices only. */
#define LEGACY_BAR 0
#define LEGACY_BAR_SIZE 128
#define LEGACY_HOST_FEATURES 0
#define LEGACY_GUEST_FEATURES 4
#define LEGACY_QUEUE_PFN 8
#define LEGACY_QUEUE_NUM 12
#define LEGACY_QUEUE_SEL 14
#define LEGACY_QUEUE_NOTIFY 16
#define LEGACY_STATUS 18
#define LEGACY_ISR 19
#define LEGACY_CONFIG_VECTOR 20 /* these two only while MSI-X is enabled */
#define LEGACY_QUEUE_VECTOR 22
#define LEGACY_PFN_SHIFT 12
#define LEGACY_VRING_ALIGN 4096
#define VIRTIO_F_BAD_FEATURE 30 /* legacy: offered, never to be acked */
#define VIRTIO_F_ANY_LAYOUT 27 /* legacy: virtio-blk parses any layout */

/* ISR bits (4.1.4.5). */
#define ISR_QUEUE 1
#define ISR_CONFIG 2

struct vpci_queue {
	uint16_t size; /* queue_size as the driver set it */
	uint16_t vector;
	bool enabled;
	bool resetting; /* queue_reset reads 1 until orphans are gone */
	uint64_t desc, driver, device;
};

struct vd_virtio_pci {
	struct vd_pci_device *pci;
	struct vd_virtio_blk *blk;
	struct vd_blk *backend;
	struct vd_virtio_mem mem;
	struct vd_mem_region *bar4, *bar1, *bar0;
	struct vd_mem_region *common_mr, *isr_mr, *device_mr, *notify_mr;
	uint16_t num_queues, queue_max, nvectors;
	bool transitional;
	uint64_t host_features;
	uint32_t dfselect, gfselect;
	uint32_t guest_features[2];
	uint16_t config_vector;
	uint16_t queue_sel;
	uint8_t status;
	uint8_t generation;
	uint8_t isr;
	/* A reset waits for orphaned requests: device_status reads
	 * status_before_reset (never 0) until they are gone. */
	bool resetting;
	uint8_t status_before_reset;
	/* The VM is stopped: kicks wait in deferred_kicks until it runs. */
	bool stopped;
	uint64_t deferred_kicks;
	struct vpci_queue *queues;
};

static bool bus_master(struct vd_virtio_pci *vp);

/* ---- interrupts ---- */

/* QEMU's virtio_pci_notify: the vector with MSI-X on, else INTx at the
 * level of ISR bit 0. */
static void send_vector(struct vd_virtio_pci *vp, uint16_t vector)
{
	if (vd_msix_enabled(vp->pci)) {
		if (vector != VIRTIO_MSI_NO_VECTOR)
			vd_msix_notify(vp->pci, vector);
	} else {
		vd_pci_set_irq(vp->pci, vp->isr & ISR_QUEUE);
	}
}

static void blk_notify(void *opaque, unsigned q)
{
	struct vd_virtio_pci *vp = opaque;

	vd_trace(virtio_pci_notify, "queue=%u vector=%u", q, vp->queues[q].vector);
	vp->isr |= ISR_QUEUE;
	send_vector(vp, vp->queues[q].vector);
}

/* 4.1.4.5: a configuration change sets ISR bit 1.  QEMU's
 * virtio_notify_config sets bits 0 and 1, so that INTx (level = bit 0)
 * fires; we do the same. */
static void notify_config(struct vd_virtio_pci *vp)
{
	if (!(vp->status & VIRTIO_STATUS_DRIVER_OK))
		return;
	vp->isr |= ISR_QUEUE | ISR_CONFIG;
	vp->generation++;
	vd_trace(virtio_pci_config_notify, "vector=%u generation=%u", vp->config_vector,
		 vp->generation);
	send_vector(vp, vp->config_vector);
}

void vd_virtio_pci_config_changed(struct vd_virtio_pci *vp)
{
	notify_config(vp);
}

/* 2.1.2: NEEDS_RESET, and a configuration change notification once
 * DRIVER_OK is set. */
static void set_needs_reset(struct vd_virtio_pci *vp, const char *why)
{
	vd_trace(virtio_pci_needs_reset, "why=%s", why);
	if (vp->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	vp->status |= VIRTIO_STATUS_NEEDS_RESET;
	notify_config(vp);
}

static void blk_broken(void *opaque, const char *why)
{
	set_needs_reset(opaque, why);
}

static void blk_config_changed(void *opaque)
{
	notify_config(opaque);
}

static const struct vd_virtio_blk_ops blk_ops = {
	.notify = blk_notify,
	.broken = blk_broken,
	.config_changed = blk_config_changed,
};

static void backend_resize(void *opaque)
{
	struct vd_virtio_pci *vp = opaque;

	vd_virtio_blk_resized(vp->blk);
}

static const struct vd_blk_dev_ops backend_ops = {
	.resize = backend_resize,
};

/* ---- queues ---- */

static void queue_forget(struct vd_virtio_pci *vp, unsigned q)
{
	struct vpci_queue *s = &vp->queues[q];

	s->size = vp->queue_max;
	s->vector = VIRTIO_MSI_NO_VECTOR;
	s->enabled = false;
	s->desc = s->driver = s->device = 0;
}

/* queue_enable = 1 (4.1.4.3.2): set the queue up on the rings the driver
 * gave.  Rings that are not guest RAM are a driver error. */
static void queue_enable(struct vd_virtio_pci *vp, unsigned q)
{
	struct vpci_queue *s = &vp->queues[q];
	struct vd_vq *vq = vd_virtio_blk_queue(vp->blk, q);
	uint64_t features = vp->guest_features[0] | (uint64_t)vp->guest_features[1] << 32;
	bool packed = features & (1ULL << VIRTIO_F_RING_PACKED);
	void *desc, *avail, *used;

	vd_trace(virtio_pci_queue_enable,
		 "queue=%u size=%u desc=0x%llx driver=0x%llx device=0x%llx", q, s->size,
		 (unsigned long long)s->desc, (unsigned long long)s->driver,
		 (unsigned long long)s->device);
	if (vd_vq_init(vq, s->size, &vp->mem) < 0) {
		set_needs_reset(vp, "queue_size is not a power of two");
		return;
	}
	vd_vq_set_features(vq, features & vd_virtio_blk_features(vp->blk));
	vd_trace(virtio_pci_queue_features, "queue=%u features=0x%llx", q,
		 (unsigned long long)features);
	desc = vd_virtio_mem_map_all(&vp->mem, s->desc, vd_vring_desc_size(s->size));
	avail = vd_virtio_mem_map_all(&vp->mem, s->driver,
				      packed ? VD_VRING_PACKED_EVENT_SIZE
					     : vd_vring_avail_size(s->size));
	used = vd_virtio_mem_map_all(&vp->mem, s->device,
				     packed ? VD_VRING_PACKED_EVENT_SIZE
					    : vd_vring_used_size(s->size));
	if (!desc || !avail || !used) {
		vd_vq_set_broken(vq, "virtqueue rings are not in guest RAM");
		set_needs_reset(vp, "virtqueue rings are not in guest RAM");
		return;
	}
	vd_vq_set_rings(vq, desc, avail, used);
	/* A new queue starts at index 0 (2.7.6), whatever the memory holds. */
	vq->used_idx = 0;
	vq->last_avail_idx = 0;
	s->enabled = true;
}

/* ---- reset ---- */

/* The transport's half of a reset. */
static void reset_registers(struct vd_virtio_pci *vp)
{
	for (unsigned q = 0; q < vp->num_queues; q++)
		queue_forget(vp, q);
	vp->deferred_kicks = 0;
	vp->status = 0;
	vp->guest_features[0] = vp->guest_features[1] = 0;
	vp->dfselect = vp->gfselect = 0;
	vp->queue_sel = 0;
	vp->config_vector = VIRTIO_MSI_NO_VECTOR;
	vp->isr = 0;
	vd_pci_set_irq(vp->pci, 0);
}

/*
 * Every reset (a driver's write of 0 to device_status, legacy or modern, a
 * legacy queue PFN of 0, a system reset) comes from a register access or
 * the machine's reset: nothing here may run the loop (it would dispatch QMP
 * or qtest input in the middle of the access).  In-flight requests are
 * orphaned: they write neither status byte nor used ring nor, their data
 * being bounced (virtio-blk's bounce_reads), read data; kept and parked
 * requests are dropped.  Nothing of theirs reaches guest memory after this
 * returns.
 *
 * @wait_visible (the modern driver's write of 0): device_status also reads
 * non-zero until the block layer has finished the orphans (4.1.4.3.2:
 * "After writing 0 to device_status, the driver MUST wait for a read of
 * device_status to return 0 before reinitializing the device").  A legacy
 * driver does not wait, and Linux's reads the status back to OR in
 * ACKNOWLEDGE: the legacy interface, like a system reset, reads 0 at once,
 * as after QEMU's synchronous drain.
 */
static void device_reset(struct vd_virtio_pci *vp, bool wait_visible)
{
	uint8_t before = vp->resetting ? vp->status_before_reset : vp->status;

	vd_trace(virtio_pci_reset, "status=0x%x inflight=%u", vp->status,
		 vd_virtio_blk_inflight(vp->blk, ~0u));
	vd_virtio_blk_reset_nowait(vp->blk);
	reset_registers(vp);
	vp->resetting = false;
	if (wait_visible && vd_virtio_blk_inflight(vp->blk, ~0u)) {
		vp->resetting = true;
		vp->status_before_reset = before ? before : VIRTIO_STATUS_ACKNOWLEDGE;
	}
}

void vd_virtio_pci_reset(struct vd_virtio_pci *vp)
{
	device_reset(vp, false);
}

void vd_virtio_pci_drain(struct vd_virtio_pci *vp)
{
	vd_virtio_blk_drain(vp->blk);
}

static uint8_t read_status(struct vd_virtio_pci *vp)
{
	if (vp->resetting && vd_virtio_blk_inflight(vp->blk, ~0u) == 0)
		vp->resetting = false;
	return vp->resetting ? vp->status_before_reset : vp->status;
}

/* The machine stopped or continues (QMP stop / cont, an I/O error with
 * the stop policy).  While stopped no kick is processed: it is remembered
 * and handled on cont, as QEMU stops ioeventfd handling while the VM does
 * not run.  On cont, the requests the error policy kept are reissued first
 * (QEMU's virtio_blk_dma_restart_cb). */
void vd_virtio_pci_set_running(struct vd_virtio_pci *vp, bool running)
{
	uint64_t kicks;

	vd_trace(virtio_pci_run_state, "running=%d kept=%u deferred=0x%llx", running,
		 vd_virtio_blk_kept(vp->blk), (unsigned long long)vp->deferred_kicks);
	vp->stopped = !running;
	if (!running)
		return;
	if (!bus_master(vp))
		return; /* kept and deferred until bus mastering is back */
	vd_virtio_blk_restart(vp->blk);
	kicks = vp->deferred_kicks;
	vp->deferred_kicks = 0;
	for (unsigned q = 0; q < vp->num_queues && !vp->stopped; q++)
		if ((kicks & (1ULL << q)) && vp->queues[q].enabled)
			vd_virtio_blk_handle_queue(vp->blk, q);
}

/* ---- common configuration ---- */

static struct vpci_queue *selected(struct vd_virtio_pci *vp)
{
	return vp->queue_sel < vp->num_queues ? &vp->queues[vp->queue_sel] : NULL;
}

static uint64_t common_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_virtio_pci *vp = opaque;
	struct vpci_queue *s = selected(vp);

	switch (addr) {
	case COMMON_DFSELECT:
		return vp->dfselect;
	case COMMON_DF:
		return vp->dfselect <= 1 ? (uint32_t)(vp->host_features >> (32 * vp->dfselect)) : 0;
	case COMMON_GFSELECT:
		return vp->gfselect;
	case COMMON_GF:
		return vp->gfselect <= 1 ? vp->guest_features[vp->gfselect] : 0;
	case COMMON_MSIX:
		return vp->config_vector;
	case COMMON_NUMQ:
		return vp->num_queues;
	case COMMON_STATUS:
		return read_status(vp);
	case COMMON_CFGGENERATION:
		return vp->generation;
	case COMMON_Q_SELECT:
		return vp->queue_sel;
	case COMMON_Q_SIZE:
		/* A queue that does not exist has size 0 (4.1.4.3.2). */
		return s ? s->size : 0;
	case COMMON_Q_MSIX:
		return s ? s->vector : VIRTIO_MSI_NO_VECTOR;
	case COMMON_Q_ENABLE:
		return s ? s->enabled : 0;
	case COMMON_Q_NOFF:
		return vp->queue_sel; /* notify at queue_sel * multiplier */
	case COMMON_Q_DESCLO:
		return s ? (uint32_t)s->desc : 0;
	case COMMON_Q_DESCHI:
		return s ? (uint32_t)(s->desc >> 32) : 0;
	case COMMON_Q_AVAILLO:
		return s ? (uint32_t)s->driver : 0;
	case COMMON_Q_AVAILHI:
		return s ? (uint32_t)(s->driver >> 32) : 0;
	case COMMON_Q_USEDLO:
		return s ? (uint32_t)s->device : 0;
	case COMMON_Q_USEDHI:
		return s ? (uint32_t)(s->device >> 32) : 0;
	case COMMON_Q_RESET:
		/* 1 while requests orphaned by the reset are still in the
		 * block layer (see below). */
		if (s && s->resetting && !vd_virtio_blk_inflight(vp->blk, vp->queue_sel))
			s->resetting = false;
		return s ? s->resetting : 0;
	default:
		return 0;
	}
}

/* A vector number the driver wrote: out of range reads back as NO_VECTOR
 * (4.1.5.1.2; QEMU's virtio_pci_common_write). */
static uint16_t check_vector(struct vd_virtio_pci *vp, uint64_t val)
{
	return val < vp->nvectors ? (uint16_t)val : VIRTIO_MSI_NO_VECTOR;
}

static void set_lo(uint64_t *v, uint64_t val)
{
	*v = (*v & ~UINT64_C(0xffffffff)) | (uint32_t)val;
}

static void set_hi(uint64_t *v, uint64_t val)
{
	*v = (*v & UINT64_C(0xffffffff)) | (uint64_t)(uint32_t)val << 32;
}

static void write_status(struct vd_virtio_pci *vp, uint8_t val)
{
	vd_trace(virtio_pci_status, "old=0x%x new=0x%x", vp->status, val);
	if (val == 0) {
		device_reset(vp, true);
		return;
	}
	vp->resetting = false; /* the driver did not wait: its business */
	/* 2.1.2: NEEDS_RESET is the device's to set. */
	val = (uint8_t)((val & ~VIRTIO_STATUS_NEEDS_RESET) |
			(vp->status & VIRTIO_STATUS_NEEDS_RESET));
	if ((val & VIRTIO_STATUS_FEATURES_OK) && !(vp->status & VIRTIO_STATUS_FEATURES_OK))
		vd_virtio_blk_set_features(vp->blk, vp->guest_features[0] |
							    (uint64_t)vp->guest_features[1] << 32);
	vp->status = val;
}

static void common_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_virtio_pci *vp = opaque;
	struct vpci_queue *s = selected(vp);

	switch (addr) {
	case COMMON_DFSELECT:
		vp->dfselect = (uint32_t)val;
		break;
	case COMMON_GFSELECT:
		vp->gfselect = (uint32_t)val;
		break;
	case COMMON_GF:
		/* 3.1.1: features are fixed once FEATURES_OK is set; only
		 * offered bits stick (QEMU's virtio_set_features). */
		if (vp->gfselect <= 1 && !(vp->status & VIRTIO_STATUS_FEATURES_OK))
			vp->guest_features[vp->gfselect] =
				(uint32_t)val &
				(uint32_t)(vp->host_features >> (32 * vp->gfselect));
		break;
	case COMMON_MSIX:
		vp->config_vector = check_vector(vp, val);
		break;
	case COMMON_STATUS:
		write_status(vp, (uint8_t)val);
		break;
	case COMMON_Q_SELECT:
		if (val < QUEUE_SELECT_MAX)
			vp->queue_sel = (uint16_t)val;
		break;
	case COMMON_Q_SIZE:
		/* QEMU's virtio_queue_set_num: 1..max, and not on a queue that
		 * does not exist. */
		if (s && !s->enabled && val >= 1 && val <= vp->queue_max)
			s->size = (uint16_t)val;
		break;
	case COMMON_Q_MSIX:
		if (s)
			s->vector = check_vector(vp, val);
		break;
	case COMMON_Q_ENABLE:
		/* 4.1.4.3.2: the driver writes 1 only. */
		if (val != 1) {
			set_needs_reset(vp, "queue_enable: the driver wrote a value other than 1");
			break;
		}
		if (s && !s->enabled)
			queue_enable(vp, vp->queue_sel);
		break;
	case COMMON_Q_DESCLO:
		if (s)
			set_lo(&s->desc, val);
		break;
	case COMMON_Q_DESCHI:
		if (s)
			set_hi(&s->desc, val);
		break;
	case COMMON_Q_AVAILLO:
		if (s)
			set_lo(&s->driver, val);
		break;
	case COMMON_Q_AVAILHI:
		if (s)
			set_hi(&s->driver, val);
		break;
	case COMMON_Q_USEDLO:
		if (s)
			set_lo(&s->device, val);
		break;
	case COMMON_Q_USEDHI:
		if (s)
			set_hi(&s->device, val);
		break;
	case COMMON_Q_RESET:
		/* 4.1.4.3.2 with VIRTIO_F_RING_RESET: forget the queue.
		 * The driver polls queue_reset until it reads 0 (the polarity
		 * of virtio-spec issue 139, which Linux and QEMU 7.2 follow).
		 * Requests in flight are orphaned, and queue_reset reads 1
		 * until the block layer has finished them. */
		if (val == 1 && s && (vp->guest_features[1] & (1u << (VIRTIO_F_RING_RESET - 32)))) {
			vd_virtio_blk_reset_queue_nowait(vp->blk, vp->queue_sel);
			queue_forget(vp, vp->queue_sel);
			vp->deferred_kicks &= ~(1ULL << vp->queue_sel);
			s->resetting = vd_virtio_blk_inflight(vp->blk, vp->queue_sel) != 0;
			if (!vd_virtio_blk_needs_reset(vp->blk))
				vp->status &= (uint8_t)~VIRTIO_STATUS_NEEDS_RESET;
		}
		break;
	default:
		break;
	}
}

static const struct vd_mem_ops common_ops = {
	.read = common_read,
	.write = common_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
};

/* ---- ISR, device configuration, notifications ---- */

/* 4.1.4.5.1: reading clears the ISR and deasserts INTx. */
static uint64_t isr_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_virtio_pci *vp = opaque;
	uint8_t v = vp->isr;

	vp->isr = 0;
	vd_pci_set_irq(vp->pci, 0);
	return v;
}

static const struct vd_mem_ops isr_ops = {
	.read = isr_read,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
};

/* QEMU's virtio_config_modern_read*: beyond the structure reads all ones. */
static uint64_t device_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_virtio_pci *vp = opaque;
	uint8_t buf[4] = {0};

	if (addr + size > VD_VIRTIO_BLK_CONFIG_SIZE)
		return UINT32_MAX;
	vd_virtio_blk_get_config(vp->blk, (uint32_t)addr, buf, size);
	return ld32(buf);
}

static void device_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_virtio_pci *vp = opaque;
	uint8_t buf[4];

	if (addr + size > VD_VIRTIO_BLK_CONFIG_SIZE)
		return;
	st32(buf, (uint32_t)val);
	vd_virtio_blk_set_config(vp->blk, (uint32_t)addr, buf, size);
}

static const struct vd_mem_ops device_ops = {
	.read = device_read,
	.write = device_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
};

static bool bus_master(struct vd_virtio_pci *vp)
{
	return vd_pci_config(vp->pci)[VD_PCI_COMMAND] & VD_PCI_COMMAND_MASTER;
}

/* 4.1.4.4: a write at queue_notify_off * multiplier kicks that queue.
 * Without bus mastering the device may not touch guest memory: the kick
 * waits until the driver turns it back on and kicks again. */
static void notify_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_virtio_pci *vp = opaque;
	uint64_t q = addr / NOTIFY_MULT;

	vd_trace(virtio_pci_kick, "queue=%llu stopped=%d", (unsigned long long)q, vp->stopped);
	if (q >= vp->num_queues || !vp->queues[q].enabled || !bus_master(vp))
		return;
	if (vp->stopped) {
		vp->deferred_kicks |= 1ULL << q;
		return;
	}
	vd_virtio_blk_handle_queue(vp->blk, (unsigned)q);
}

static const struct vd_mem_ops notify_ops = {
	.write = notify_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
};

/* ---- the legacy interface (4.1.4.10), transitional devices ---- */

/* The device configuration follows the registers: at 24 while MSI-X is
 * enabled, else at 20. */
static uint32_t legacy_config_offset(struct vd_virtio_pci *vp)
{
	return vd_msix_enabled(vp->pci) ? 24 : 20;
}

static uint32_t legacy_host_features(struct vd_virtio_pci *vp)
{
	return (uint32_t)vp->host_features | (1u << VIRTIO_F_BAD_FEATURE) |
	       (1u << VIRTIO_F_ANY_LAYOUT);
}

/* Legacy register reads as QEMU's virtio_ioport_read: unknown offsets read
 * all ones. */
static uint64_t legacy_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_virtio_pci *vp = opaque;
	struct vpci_queue *s = selected(vp);
	uint32_t cfg = legacy_config_offset(vp);

	if (addr >= cfg)
		return device_read(vp, addr - cfg, size);
	switch (addr) {
	case LEGACY_HOST_FEATURES:
		return legacy_host_features(vp);
	case LEGACY_GUEST_FEATURES:
		return vp->guest_features[0];
	case LEGACY_QUEUE_PFN:
		return s && s->enabled ? (uint32_t)(s->desc >> LEGACY_PFN_SHIFT) : 0;
	case LEGACY_QUEUE_NUM:
		return s ? vp->queue_max : 0;
	case LEGACY_QUEUE_SEL:
		return vp->queue_sel;
	case LEGACY_STATUS:
		return read_status(vp);
	case LEGACY_ISR:
		return isr_read(vp, 0, size);
	case LEGACY_CONFIG_VECTOR:
		return vp->config_vector;
	case LEGACY_QUEUE_VECTOR:
		return s ? s->vector : VIRTIO_MSI_NO_VECTOR;
	default:
		return UINT32_MAX;
	}
}

/* A legacy queue (2.7.2 "Legacy Interfaces"): size fixed at the maximum,
 * the three areas one after the other from the page frame, the used ring
 * on the next 4 KiB boundary. */
static void legacy_set_pfn(struct vd_virtio_pci *vp, uint32_t pfn)
{
	unsigned q = vp->queue_sel;
	struct vpci_queue *s = selected(vp);
	uint64_t pa = (uint64_t)pfn << LEGACY_PFN_SHIFT;

	if (pa == 0) {
		/* QEMU's virtio_ioport_write: PFN 0 resets the device. */
		device_reset(vp, false);
		return;
	}
	if (!s)
		return;
	if (s->enabled) {
		/* A new ring under a live queue: what was in flight on the old
		 * one is orphaned (QEMU would complete it into the new one). */
		vd_virtio_blk_reset_queue_nowait(vp->blk, q);
		vp->deferred_kicks &= ~(1ULL << q);
		s->enabled = false;
	}
	s->size = vp->queue_max;
	s->desc = pa;
	s->driver = pa + vd_vring_desc_size(s->size);
	s->device = (s->driver + vd_vring_avail_size(s->size) + LEGACY_VRING_ALIGN - 1) &
		    ~(uint64_t)(LEGACY_VRING_ALIGN - 1);
	queue_enable(vp, q);
}

static void legacy_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_virtio_pci *vp = opaque;
	struct vpci_queue *s = selected(vp);
	uint32_t cfg = legacy_config_offset(vp);

	if (addr >= cfg) {
		device_write(vp, addr - cfg, val, size);
		return;
	}
	switch (addr) {
	case LEGACY_GUEST_FEATURES:
		/* A driver that acks BAD_FEATURE did not negotiate: assume
		 * nothing (QEMU). */
		if (val & (1u << VIRTIO_F_BAD_FEATURE))
			val = 0;
		vp->guest_features[0] = (uint32_t)val & legacy_host_features(vp);
		vp->guest_features[1] = 0;
		vd_virtio_blk_set_features(vp->blk, vp->guest_features[0]);
		break;
	case LEGACY_QUEUE_PFN:
		legacy_set_pfn(vp, (uint32_t)val);
		break;
	case LEGACY_QUEUE_SEL:
		if (val < QUEUE_SELECT_MAX)
			vp->queue_sel = (uint16_t)val;
		break;
	case LEGACY_QUEUE_NOTIFY:
		notify_write(vp, (val & 0xffff) * NOTIFY_MULT, 0, 2);
		break;
	case LEGACY_STATUS:
		/* No FEATURES_OK step in the legacy interface. */
		if ((uint8_t)val == 0) {
			device_reset(vp, false);
			break;
		}
		vp->resetting = false;
		vp->status = (uint8_t)((val & ~VIRTIO_STATUS_NEEDS_RESET) |
				       (vp->status & VIRTIO_STATUS_NEEDS_RESET));
		/* QEMU: Linux before 2.6.34 drove the device without setting
		 * bus mastering; ACKNOWLEDGE | DRIVER sets it for them. */
		if ((uint8_t)val == (VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER)) {
			uint8_t *c = vd_pci_config(vp->pci);

			vd_pci_default_config_write(vp->pci, VD_PCI_COMMAND,
						    c[VD_PCI_COMMAND] | VD_PCI_COMMAND_MASTER, 1);
			vd_virtio_blk_set_dma(vp->blk, true);
		}
		break;
	case LEGACY_CONFIG_VECTOR:
		vp->config_vector = check_vector(vp, val);
		break;
	case LEGACY_QUEUE_VECTOR:
		if (s)
			s->vector = check_vector(vp, val);
		break;
	default:
		break;
	}
}

static const struct vd_mem_ops legacy_ops = {
	.read = legacy_read,
	.write = legacy_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
};

/* ---- PCI configuration access capability (4.1.4.8) ---- */

/* An access through the window: BAR4 only, 1, 2 or 4 bytes, aligned, inside
 * the BAR (QEMU's virtio_write_config); anything else does nothing. */
static bool window_target(struct vd_virtio_pci *vp, unsigned *len, uint32_t *off)
{
	uint8_t *c = vd_pci_config(vp->pci) + CAP_PCI_CFG_AT;
	uint32_t l = ld32(c + CAP_LENGTH);

	*off = ld32(c + CAP_OFFSET);
	if (c[CAP_BAR] != MODERN_BAR || (l != 1 && l != 2 && l != 4) || *off % l ||
	    *off >= MODERN_BAR_SIZE || MODERN_BAR_SIZE - *off < l)
		return false;
	*len = l;
	return true;
}

static uint64_t bar4_read(struct vd_virtio_pci *vp, uint32_t off, unsigned len)
{
	uint32_t in = off % REGION_SIZE;

	switch (off / REGION_SIZE) {
	case COMMON_OFFSET / REGION_SIZE:
		return common_read(vp, in, len);
	case ISR_OFFSET / REGION_SIZE:
		return isr_read(vp, in, len);
	case DEVICE_OFFSET / REGION_SIZE:
		return device_read(vp, in, len);
	default:
		return 0; /* notify: write-only */
	}
}

static void bar4_write(struct vd_virtio_pci *vp, uint32_t off, uint64_t val, unsigned len)
{
	uint32_t in = off % REGION_SIZE;

	switch (off / REGION_SIZE) {
	case COMMON_OFFSET / REGION_SIZE:
		common_write(vp, in, val, len);
		break;
	case DEVICE_OFFSET / REGION_SIZE:
		device_write(vp, in, val, len);
		break;
	case NOTIFY_OFFSET / REGION_SIZE:
		notify_write(vp, in, val, len);
		break;
	default:
		break; /* ISR: read-only */
	}
}

static bool touches_data(uint32_t addr, unsigned len)
{
	uint32_t data = CAP_PCI_CFG_AT + CAP_PCI_CFG_DATA;

	return addr < data + 4 && addr + len > data;
}

static uint32_t vp_config_read(struct vd_pci_device *d, uint32_t addr, unsigned len)
{
	struct vd_virtio_pci *vp = vd_pci_device_opaque(d);
	unsigned l;
	uint32_t off;

	if (touches_data(addr, len) && window_target(vp, &l, &off)) {
		uint32_t v = (uint32_t)bar4_read(vp, off, l);

		st32(vd_pci_config(d) + CAP_PCI_CFG_AT + CAP_PCI_CFG_DATA, v);
	}
	return vd_pci_default_config_read(d, addr, len);
}

static void vp_config_write(struct vd_pci_device *d, uint32_t addr, uint32_t val, unsigned len)
{
	struct vd_virtio_pci *vp = vd_pci_device_opaque(d);
	unsigned l;
	uint32_t off;

	vd_pci_default_config_write(d, addr, val, len);
	/* Bus mastering turned off: drop DRIVER_OK, as QEMU's
	 * virtio_write_config.  Nothing reaches guest memory until the driver
	 * turns it on again: kicks are ignored, and what is in flight (also
	 * before DRIVER_OK: a queue kicked once it was enabled) completes into
	 * virtio-blk's parking, without running the loop here.  Turned on
	 * again: the parked requests complete (PCI 3.0 6.2.2: the function
	 * only stops mastering the bus meanwhile). */
	if (addr <= VD_PCI_COMMAND && addr + len > VD_PCI_COMMAND) {
		if (!bus_master(vp)) {
			vd_virtio_blk_set_dma(vp->blk, false);
			vp->status &= (uint8_t)~VIRTIO_STATUS_DRIVER_OK;
		} else {
			vd_virtio_blk_set_dma(vp->blk, true);
		}
	}
	if (touches_data(addr, len) && window_target(vp, &l, &off))
		bar4_write(vp, off, ld32(vd_pci_config(d) + CAP_PCI_CFG_AT + CAP_PCI_CFG_DATA), l);
}

/* ---- construction ---- */

static int add_vendor_cap(struct vd_pci_device *d, uint8_t at, uint8_t len, uint8_t type,
			  uint32_t offset, uint32_t length)
{
	int cap = vd_pci_add_capability(d, PCI_CAP_ID_VNDR, at, len);
	uint8_t *c;

	if (cap < 0)
		return cap;
	c = vd_pci_config(d) + cap;
	c[2] = len; /* cap_len */
	c[3] = type; /* cfg_type */
	c[CAP_BAR] = type == VIRTIO_PCI_CAP_PCI_CFG ? 0 : MODERN_BAR;
	st32(c + CAP_OFFSET, offset);
	st32(c + CAP_LENGTH, length);
	if (type == VIRTIO_PCI_CAP_NOTIFY_CFG)
		st32(c + CAP_NOTIFY_MULT, NOTIFY_MULT);
	if (type == VIRTIO_PCI_CAP_PCI_CFG) {
		/* bar, offset, length and the data window are the driver's. */
		uint8_t *w = vd_pci_wmask(d) + cap;

		w[CAP_BAR] = 0xff;
		memset(w + CAP_OFFSET, 0xff, 12);
	}
	return 0;
}

static struct vd_mem_region *sub(struct vd_mem_region *bar, uint64_t at, const char *name,
				 const struct vd_mem_ops *ops, void *opaque)
{
	struct vd_mem_region *mr = vd_mem_region_new_io(name, REGION_SIZE, ops, opaque);

	if (mr && vd_mem_region_add_subregion(bar, at, mr, 0) < 0) {
		vd_mem_region_unref(mr);
		return NULL;
	}
	return mr;
}

static void del_sub(struct vd_mem_region *mr)
{
	if (mr) {
		vd_mem_region_del_subregion(mr);
		vd_mem_region_unref(mr);
	}
}

int vd_virtio_blk_pci_new(struct vd_pci_bus *bus, int devfn, struct vd_address_space *mem,
			  const struct vd_virtio_blk_pci_conf *conf, struct vd_virtio_pci **out,
			  struct vd_error *err)
{
	struct vd_virtio_pci *vp;
	struct vd_virtio_blk_conf bc = {0};
	struct vd_pci_device_info info = {
		.name = "virtio-blk-pci",
		.vendor_id = VIRTIO_PCI_VENDOR,
		.device_id = VIRTIO_PCI_DEVICE_BLK_MODERN,
		.revision = 1, /* 4.1.2.1: modern-only devices */
		.class_code = PCI_CLASS_STORAGE_SCSI,
		.subsystem_vendor_id = VIRTIO_PCI_VENDOR,
		.subsystem_id = QEMU_SUBDEVICE,
		.interrupt_pin = 1,
		.config_read = vp_config_read,
		.config_write = vp_config_write,
	};
	uint16_t nq = conf->num_queues ? conf->num_queues : 1;
	uint16_t qmax = conf->queue_size ? conf->queue_size : 256;
	int ret;

	*out = NULL;
	if (!conf->blk || !vd_blk_is_inserted(conf->blk))
		return vd_error_set(err, -EINVAL, "virtio-blk-pci needs a drive with a medium");
	if (nq > 64)
		return vd_error_set(err, -EINVAL, "num-queues must be 1..64");
	if (qmax < 2 || qmax > VD_VQ_MAX_SIZE || (qmax & (qmax - 1)))
		return vd_error_set(err, -EINVAL,
				    "queue-size must be a power of two from 2 to 1024");
	vp = calloc(1, sizeof(*vp));
	if (!vp)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	vp->num_queues = nq;
	vp->queue_max = qmax;
	vp->transitional = conf->transitional;
	if (conf->transitional) {
		/* 4.1.2.3: the legacy device id and the subsystem device id
		 * naming the device type; revision 0 (QEMU). */
		info.device_id = VIRTIO_PCI_DEVICE_BLK_TRANSITIONAL;
		info.revision = 0;
		info.subsystem_id = VIRTIO_ID_BLOCK;
	}
	vp->nvectors = (uint16_t)(nq + 1); /* QEMU: one per queue plus config */
	vp->queues = calloc(nq, sizeof(*vp->queues));
	if (!vp->queues) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	vd_virtio_mem_init_as(&vp->mem, mem);

	bc.blk = conf->blk;
	bc.num_queues = nq;
	bc.queue_size = qmax;
	bc.read_only = conf->read_only || vd_blk_is_read_only(conf->blk);
	bc.serial = conf->serial;
	bc.logical_block_size = conf->logical_block_size;
	bc.bounce_reads = true; /* our resets never wait: see device_reset() */
	bc.no_merge = conf->no_merge;
	ret = vd_virtio_blk_new(&bc, &blk_ops, vp, &vp->blk);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not create the virtio-blk device");
		goto fail;
	}
	vp->host_features = vd_virtio_blk_features(vp->blk) | (1ULL << VIRTIO_F_RING_RESET);
	if (conf->no_packed)
		vp->host_features &= ~(1ULL << VIRTIO_F_RING_PACKED);

	info.opaque = vp;
	ret = vd_pci_device_new(bus, devfn, &info, &vp->pci);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not add the PCI function");
		goto fail;
	}
	ret = -ENOMEM;
	vp->bar4 = vd_mem_region_new_container("virtio-pci", MODERN_BAR_SIZE);
	vp->bar1 = vd_mem_region_new_container("virtio-pci-msix", MSIX_BAR_SIZE);
	if (!vp->bar4 || !vp->bar1)
		goto fail_msg;
	vp->common_mr = sub(vp->bar4, COMMON_OFFSET, "virtio-pci-common", &common_ops, vp);
	vp->isr_mr = sub(vp->bar4, ISR_OFFSET, "virtio-pci-isr", &isr_ops, vp);
	vp->device_mr = sub(vp->bar4, DEVICE_OFFSET, "virtio-pci-device", &device_ops, vp);
	vp->notify_mr = sub(vp->bar4, NOTIFY_OFFSET, "virtio-pci-notify", &notify_ops, vp);
	if (!vp->common_mr || !vp->isr_mr || !vp->device_mr || !vp->notify_mr)
		goto fail_msg;
	if (vp->transitional) {
		vp->bar0 =
			vd_mem_region_new_io("virtio-pci-legacy", LEGACY_BAR_SIZE, &legacy_ops, vp);
		if (!vp->bar0)
			goto fail_msg;
		ret = vd_pci_register_bar(vp->pci, LEGACY_BAR, VD_PCI_BAR_IO, vp->bar0);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not set up the legacy BAR");
			goto fail;
		}
	}
	ret = vd_pci_register_bar(vp->pci, MSIX_BAR, VD_PCI_BAR_MEM32, vp->bar1);
	if (ret == 0)
		ret = vd_pci_register_bar(vp->pci, MODERN_BAR,
					  VD_PCI_BAR_MEM64 | VD_PCI_BAR_PREFETCH, vp->bar4);
	if (ret == 0)
		ret = add_vendor_cap(vp->pci, CAP_COMMON_AT, 16, VIRTIO_PCI_CAP_COMMON_CFG,
				     COMMON_OFFSET, REGION_SIZE);
	if (ret == 0)
		ret = add_vendor_cap(vp->pci, CAP_ISR_AT, 16, VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET,
				     REGION_SIZE);
	if (ret == 0)
		ret = add_vendor_cap(vp->pci, CAP_DEVICE_AT, 16, VIRTIO_PCI_CAP_DEVICE_CFG,
				     DEVICE_OFFSET, REGION_SIZE);
	if (ret == 0)
		ret = add_vendor_cap(vp->pci, CAP_NOTIFY_AT, 20, VIRTIO_PCI_CAP_NOTIFY_CFG,
				     NOTIFY_OFFSET, REGION_SIZE);
	if (ret == 0)
		ret = add_vendor_cap(vp->pci, CAP_PCI_CFG_AT, 20, VIRTIO_PCI_CAP_PCI_CFG, 0, 0);
	if (ret == 0)
		ret = vd_msix_init(vp->pci, vp->nvectors, vp->bar1, MSIX_BAR, 0, MSIX_PBA_OFFSET,
				   CAP_MSIX_AT);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not set up the virtio-pci function");
		goto fail;
	}
	ret = vd_blk_attach_dev(conf->blk, conf->qdev_id, &backend_ops, vp);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not attach to drive '%s'",
				    vd_blk_name(conf->blk));
		goto fail;
	}
	vd_blk_ref(conf->blk);
	vp->backend = conf->blk;
	vd_virtio_pci_reset(vp);
	*out = vp;
	return 0;

fail_msg:
	vd_error_set(err, ret, "Out of memory");
fail:
	vd_virtio_pci_free(vp);
	return ret;
}

void vd_virtio_pci_free(struct vd_virtio_pci *vp)
{
	if (!vp)
		return;
	if (vp->backend) {
		vd_blk_detach_dev(vp->backend);
		vd_blk_unref(vp->backend);
	}
	/* Drains in-flight requests while guest memory is still there. */
	vd_virtio_blk_free(vp->blk);
	if (vp->pci)
		vd_pci_device_free(vp->pci);
	del_sub(vp->common_mr);
	del_sub(vp->isr_mr);
	del_sub(vp->device_mr);
	del_sub(vp->notify_mr);
	if (vp->bar4)
		vd_mem_region_unref(vp->bar4);
	if (vp->bar1)
		vd_mem_region_unref(vp->bar1);
	if (vp->bar0)
		vd_mem_region_unref(vp->bar0);
	free(vp->queues);
	free(vp);
}

struct vd_pci_device *vd_virtio_pci_device(struct vd_virtio_pci *vp)
{
	return vp->pci;
}
