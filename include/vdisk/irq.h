/* SPDX-License-Identifier: MIT */
/*
 * Interrupt lines.  A struct vd_irq is one wire from a device to whatever
 * consumes it (a PCI INTx router, an interrupt controller's pin).  Setting a
 * line calls its handler every time (as QEMU's qemu_set_irq does); handlers
 * that care about edges compare with the previous level themselves.
 *
 * struct vd_irq_pins is the machine's interrupt-controller view, numbered as
 * the IOAPIC numbers its pins on a PC (ISA IRQ n is pin n; PCI INTx reach
 * pins through the PIIX3 PIRQ routing).  A listener (the test protocol's
 * irq_intercept_in) sees each level change of each pin.
 */
#ifndef VDISK_IRQ_H
#define VDISK_IRQ_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void vd_irq_handler(void *opaque, int n, int level);

struct vd_irq {
	vd_irq_handler *handler;
	void *opaque;
	int n;
	int level; /* last level set */
};

void vd_irq_init(struct vd_irq *irq, vd_irq_handler *handler, void *opaque, int n);
/* Set the level (0 or 1; other values are 1).  Traced as irq_set. */
void vd_irq_set(struct vd_irq *irq, int level);
static inline void vd_irq_raise(struct vd_irq *irq)
{
	vd_irq_set(irq, 1);
}
static inline void vd_irq_lower(struct vd_irq *irq)
{
	vd_irq_set(irq, 0);
}

#define VD_IRQ_PINS 24 /* the PC's IOAPIC */

typedef void vd_irq_listener(void *opaque, int pin, int level);

struct vd_irq_pins {
	int level[VD_IRQ_PINS];
	struct vd_irq in[VD_IRQ_PINS]; /* lines that drive the pins */
	vd_irq_listener *listener;
	void *listener_opaque;
};

void vd_irq_pins_init(struct vd_irq_pins *pins);
/* Install (or with NULL remove) the one listener. */
void vd_irq_pins_set_listener(struct vd_irq_pins *pins, vd_irq_listener *fn, void *opaque);

#ifdef __cplusplus
}
#endif

#endif
