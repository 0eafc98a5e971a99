/* SPDX-License-Identifier: MIT */
/* Interrupt lines and the IOAPIC-numbered pin view (include/vdisk/irq.h). */
#include <string.h>

#include <vdisk/irq.h>
#include <vdisk/trace.h>

void vd_irq_init(struct vd_irq *irq, vd_irq_handler *handler, void *opaque, int n)
{
	irq->handler = handler;
	irq->opaque = opaque;
	irq->n = n;
	irq->level = 0;
}

void vd_irq_set(struct vd_irq *irq, int level)
{
	level = level != 0;
	if (irq->level != level)
		vd_trace(irq_set, "n=%d level=%d", irq->n, level);
	irq->level = level;
	if (irq->handler)
		irq->handler(irq->opaque, irq->n, level);
}

static void pins_handler(void *opaque, int n, int level)
{
	struct vd_irq_pins *pins = opaque;

	if (n < 0 || n >= VD_IRQ_PINS || pins->level[n] == level)
		return;
	pins->level[n] = level;
	vd_trace(irq_pin_change, "pin=%d level=%d", n, level);
	if (pins->listener)
		pins->listener(pins->listener_opaque, n, level);
}

void vd_irq_pins_init(struct vd_irq_pins *pins)
{
	memset(pins, 0, sizeof(*pins));
	for (int i = 0; i < VD_IRQ_PINS; i++)
		vd_irq_init(&pins->in[i], pins_handler, pins, i);
}

void vd_irq_pins_set_listener(struct vd_irq_pins *pins, vd_irq_listener *fn, void *opaque)
{
	pins->listener = fn;
	pins->listener_opaque = opaque;
}
