/* SPDX-License-Identifier: MIT */
/*
 * MSI-X (PCI Local Bus 3.0 section 6.8.2).  The capability is 12 bytes:
 *   +2 Message Control: bits 10:0 table size - 1, bit 14 Function Mask,
 *      bit 15 MSI-X Enable (the only writable bits);
 *   +4 Table Offset | BIR, +8 PBA Offset | BIR.
 * Each table entry is 16 bytes: Message Address (low, high), Message Data,
 * Vector Control (bit 0 Mask, set at reset).  A message is a DWORD write of the
 * data to the address, here into the memory address space, so a test can aim
 * it at RAM and poll as QEMU's libqos does.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/pci.h>
#include <vdisk/trace.h>

#include "hw/pci/pci-internal.h"

#define MSIX_CONTROL 2
#define MSIX_TABLE 4
#define MSIX_PBA 8
#define MSIX_CAP_SIZE 12
#define MSIX_ENABLE 0x8000
#define MSIX_MASKALL 0x4000
#define MSIX_ENTRY_SIZE 16
#define MSIX_VECTOR_CTRL 12

static inline uint32_t le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t msix_control(struct vd_pci_device *d)
{
	uint8_t *c = d->config + d->msix->cap + MSIX_CONTROL;

	return c[0] | c[1] << 8;
}

bool vd_msix_enabled(struct vd_pci_device *d)
{
	return d->msix && (msix_control(d) & MSIX_ENABLE);
}

static bool vector_masked(struct vd_pci_device *d, unsigned v)
{
	uint16_t ctl = msix_control(d);

	return !(ctl & MSIX_ENABLE) || (ctl & MSIX_MASKALL) ||
	       (d->msix->table[v * MSIX_ENTRY_SIZE + MSIX_VECTOR_CTRL] & 1);
}

static void msix_send(struct vd_pci_device *d, unsigned v)
{
	const uint8_t *e = d->msix->table + v * MSIX_ENTRY_SIZE;
	uint64_t addr = le32(e) | (uint64_t)le32(e + 4) << 32;
	uint8_t data[4];

	memcpy(data, e + 8, 4);
	vd_trace(msix_notify, "dev=%s vector=%u addr=0x%" PRIx64 " data=0x%x", d->name, v, addr,
		 le32(data));
	vd_address_space_write(d->bus->mem, addr, data, 4);
}

static void pending_set(struct msix_state *m, unsigned v, bool on)
{
	if (on)
		m->pba[v / 8] |= (uint8_t)(1u << (v % 8));
	else
		m->pba[v / 8] &= (uint8_t) ~(1u << (v % 8));
}

static bool pending(struct msix_state *m, unsigned v)
{
	return m->pba[v / 8] & (1u << (v % 8));
}

void vd_msix_notify(struct vd_pci_device *d, unsigned vector)
{
	struct msix_state *m = d->msix;

	if (!m || vector >= m->nr)
		return;
	if (vector_masked(d, vector)) {
		pending_set(m, vector, true);
		return;
	}
	msix_send(d, vector);
}

/* A vector just became unmasked: deliver what is pending (6.8.3.5). */
static void unmask_check(struct vd_pci_device *d, unsigned v)
{
	if (!vector_masked(d, v) && pending(d->msix, v)) {
		pending_set(d->msix, v, false);
		msix_send(d, v);
	}
}

void pci_msix_config_written(struct vd_pci_device *d, uint32_t addr, unsigned len)
{
	uint32_t ctl = d->msix->cap + MSIX_CONTROL;

	if (addr + len <= ctl || addr > ctl + 1)
		return;
	for (unsigned v = 0; v < d->msix->nr; v++)
		unmask_check(d, v);
}

static uint64_t table_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_pci_device *d = opaque;

	if (addr + 4 > (uint64_t)d->msix->nr * MSIX_ENTRY_SIZE)
		return 0;
	return le32(d->msix->table + addr);
}

static void table_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_pci_device *d = opaque;
	unsigned v = (unsigned)(addr / MSIX_ENTRY_SIZE);
	uint8_t *p;

	if (addr + 4 > (uint64_t)d->msix->nr * MSIX_ENTRY_SIZE)
		return;
	p = d->msix->table + addr;
	p[0] = (uint8_t)val;
	p[1] = (uint8_t)(val >> 8);
	p[2] = (uint8_t)(val >> 16);
	p[3] = (uint8_t)(val >> 24);
	if (addr % MSIX_ENTRY_SIZE == MSIX_VECTOR_CTRL)
		unmask_check(d, v);
}

/* 6.8.2: table and PBA accesses are DWORD or QWORD, naturally aligned. */
static const struct vd_mem_ops table_ops = {
	.read = table_read,
	.write = table_write,
	.valid_min = 4,
	.valid_max = 8,
	.impl_min = 4,
	.impl_max = 4,
};

static uint64_t pba_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_pci_device *d = opaque;
	uint64_t pba_len = (d->msix->nr + 63) / 64 * 8;

	if (addr + 4 > pba_len)
		return 0;
	return le32(d->msix->pba + addr);
}

static const struct vd_mem_ops pba_ops = {
	.read = pba_read,
	.valid_min = 4,
	.valid_max = 8,
	.impl_min = 4,
	.impl_max = 4,
};

int vd_msix_init(struct vd_pci_device *d, unsigned nr_vectors, struct vd_mem_region *container,
		 uint8_t bar, uint32_t table_offset, uint32_t pba_offset, uint8_t cap_offset)
{
	struct msix_state *m;
	uint64_t table_len = (uint64_t)nr_vectors * MSIX_ENTRY_SIZE;
	uint64_t pba_len = (nr_vectors + 63) / 64 * 8;
	int cap, ret = -ENOMEM;

	if (d->msix || nr_vectors == 0 || nr_vectors > 2048 || bar > 5 || (table_offset & 7) ||
	    (pba_offset & 7))
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->nr = nr_vectors;
	m->table = calloc(1, table_len);
	m->pba = calloc(1, pba_len);
	if (!m->table || !m->pba)
		goto fail;
	for (unsigned v = 0; v < nr_vectors; v++)
		m->table[v * MSIX_ENTRY_SIZE + MSIX_VECTOR_CTRL] = 1;
	m->table_mr = vd_mem_region_new_io("msix-table", table_len, &table_ops, d);
	m->pba_mr = vd_mem_region_new_io("msix-pba", pba_len, &pba_ops, d);
	if (!m->table_mr || !m->pba_mr)
		goto fail;
	ret = vd_mem_region_add_subregion(container, table_offset, m->table_mr, 0);
	if (ret < 0)
		goto fail;
	ret = vd_mem_region_add_subregion(container, pba_offset, m->pba_mr, 0);
	if (ret < 0)
		goto fail_table;
	cap = vd_pci_add_capability(d, VD_PCI_CAP_ID_MSIX, cap_offset, MSIX_CAP_SIZE);
	if (cap < 0) {
		ret = cap;
		goto fail_pba;
	}
	m->cap = (uint8_t)cap;
	d->config[cap + MSIX_CONTROL] = (uint8_t)(nr_vectors - 1);
	d->config[cap + MSIX_CONTROL + 1] = (uint8_t)((nr_vectors - 1) >> 8);
	d->wmask[cap + MSIX_CONTROL + 1] = (MSIX_ENABLE | MSIX_MASKALL) >> 8;
	d->config[cap + MSIX_TABLE] = (uint8_t)(table_offset | bar);
	d->config[cap + MSIX_TABLE + 1] = (uint8_t)(table_offset >> 8);
	d->config[cap + MSIX_TABLE + 2] = (uint8_t)(table_offset >> 16);
	d->config[cap + MSIX_TABLE + 3] = (uint8_t)(table_offset >> 24);
	d->config[cap + MSIX_PBA] = (uint8_t)(pba_offset | bar);
	d->config[cap + MSIX_PBA + 1] = (uint8_t)(pba_offset >> 8);
	d->config[cap + MSIX_PBA + 2] = (uint8_t)(pba_offset >> 16);
	d->config[cap + MSIX_PBA + 3] = (uint8_t)(pba_offset >> 24);
	d->msix = m;
	return 0;

fail_pba:
	vd_mem_region_del_subregion(m->pba_mr);
fail_table:
	vd_mem_region_del_subregion(m->table_mr);
fail:
	vd_mem_region_unref(m->table_mr);
	vd_mem_region_unref(m->pba_mr);
	free(m->table);
	free(m->pba);
	free(m);
	return ret;
}

/* QEMU's msix_reset: MSI-X disabled and unmasked in the capability, every
 * vector masked with a zero message, nothing pending (PCI 3.0 6.8.2.3,
 * 6.8.2.9: the state after reset). */
void pci_msix_reset(struct vd_pci_device *d)
{
	struct msix_state *m = d->msix;

	if (!m)
		return;
	d->config[m->cap + MSIX_CONTROL + 1] &= (uint8_t) ~((MSIX_ENABLE | MSIX_MASKALL) >> 8);
	memset(m->table, 0, (size_t)m->nr * MSIX_ENTRY_SIZE);
	for (unsigned v = 0; v < m->nr; v++)
		m->table[v * MSIX_ENTRY_SIZE + MSIX_VECTOR_CTRL] = 1;
	memset(m->pba, 0, (m->nr + 63) / 64 * 8);
}

void pci_msix_free(struct vd_pci_device *d)
{
	struct msix_state *m = d->msix;

	if (!m)
		return;
	vd_mem_region_del_subregion(m->table_mr);
	vd_mem_region_del_subregion(m->pba_mr);
	/* Regions still referenced by a dispatch in progress keep pointing at
	 * @d: callers free devices only outside dispatch of their own BARs. */
	vd_mem_region_unref(m->table_mr);
	vd_mem_region_unref(m->pba_mr);
	free(m->table);
	free(m->pba);
	free(m);
	d->msix = NULL;
}
