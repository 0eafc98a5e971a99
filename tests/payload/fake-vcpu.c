/* SPDX-License-Identifier: MIT */
/*
 * fake-vcpu: run a payload through vd_kvm_handle_exit() where there is no
 * /dev/kvm.  A small interpreter of the 16-bit real-mode instructions the
 * payloads in this folder use stands in for KVM's vCPU: it starts at the reset
 * vector with the memory layout vd_kvm_new() gives KVM (RAM below the PCI
 * hole, the payload read-only at 4 GiB - size and copied below 1 MiB), reads
 * and writes RAM directly as a vCPU does, and turns every port access and
 * every other memory access into a struct kvm_run exit in a mapping laid out
 * as KVM's (kvm_run page, PIO data page, ring page), string I/O included,
 * with count up to a page as KVM's emulator does.  Between exits the machine's
 * loop runs once without blocking, as in vd_kvm_run().
 *
 *	fake-vcpu PAYLOAD [-drive OPTS]...
 *
 * The board gets isa-debug-exit at 0xf4 and the debug console on stderr; an
 * if=ide drive is attached to the PIIX3 IDE (hw/ide) when the board has not
 * done so itself.  Exit status: the guest's isa-debug-exit status, 2 when
 * the run fails (an exit error, an unsupported instruction, too long).
 *
 * It is a test double for KVM, not an emulator: an instruction outside the
 * subset ends the run with its bytes named.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/ide.h>
#include <vdisk/loop.h>
#include <vdisk/machine.h>

#include <vdisk/kvm.h>

#define PAGE 4096
#define RUN_SIZE (3 * PAGE)
#define PIO_OFFSET PAGE /* KVM_PIO_PAGE_OFFSET pages */
#define MAX_INSNS 500000000ULL

enum {
	ES,
	CS,
	SS,
	DS,
	FS,
	GS
};
enum {
	AX,
	CX,
	DX,
	BX,
	SP,
	BP,
	SI,
	DI
};

struct vcpu {
	uint32_t r[8];
	uint16_t sel[6];
	uint32_t base[6];
	uint16_t ip;
	bool cf, zf, sf, of, df;
	/* the board */
	struct vd_machine *m;
	struct vd_loop *loop;
	struct vd_kvm_firmware fw;
	uint8_t *ram;
	uint64_t ram_low;
	struct kvm_run *run;
	struct vd_error err;
	bool failed, stopped;
	uint64_t exits;
};

static void vcpu_fail(struct vcpu *c, const char *what)
{
	if (!c->failed)
		fprintf(stderr, "fake-vcpu: %s at %04x:%04x\n", what, c->sel[CS], c->ip);
	c->failed = true;
}

/* One exit through the handler, then the loop, as vd_kvm_run does. */
static void vcpu_exit(struct vcpu *c)
{
	int ret;

	c->exits++;
	vd_error_clear(&c->err);
	ret = vd_kvm_handle_exit(c->m, c->run, RUN_SIZE, &c->err);
	if (ret < 0) {
		fprintf(stderr, "fake-vcpu: %s\n", c->err.msg);
		c->failed = true;
		return;
	}
	if (ret == VD_KVM_STOP)
		c->stopped = true;
	vd_loop_run_once(c->loop, false);
	if (vd_machine_guest_exit_status(c->m) >= 0)
		c->stopped = true;
}

/* ---- memory: RAM and the ROM slot directly, the rest as MMIO exits ---- */

static uint64_t mem_read(struct vcpu *c, uint32_t lin, unsigned size)
{
	uint64_t v = 0;

	if ((uint64_t)lin + size <= c->ram_low) {
		memcpy(&v, c->ram + lin, size);
	} else if (lin >= c->fw.gpa && (uint64_t)lin + size <= c->fw.gpa + c->fw.size) {
		memcpy(&v, (uint8_t *)c->fw.host + (lin - c->fw.gpa), size);
	} else {
		c->run->exit_reason = KVM_EXIT_MMIO;
		c->run->mmio.phys_addr = lin;
		c->run->mmio.len = size;
		c->run->mmio.is_write = 0;
		vcpu_exit(c);
		memcpy(&v, c->run->mmio.data, size);
	}
	return v;
}

static void mem_write(struct vcpu *c, uint32_t lin, uint64_t v, unsigned size)
{
	if ((uint64_t)lin + size <= c->ram_low) {
		memcpy(c->ram + lin, &v, size);
		return;
	}
	/* Also the read-only slot: "writes ... posted as KVM_EXIT_MMIO". */
	c->run->exit_reason = KVM_EXIT_MMIO;
	c->run->mmio.phys_addr = lin;
	c->run->mmio.len = size;
	c->run->mmio.is_write = 1;
	memcpy(c->run->mmio.data, &v, size);
	vcpu_exit(c);
}

static uint32_t lin(struct vcpu *c, int seg, uint16_t off)
{
	return c->base[seg] + off;
}

static uint8_t fetch8(struct vcpu *c)
{
	return (uint8_t)mem_read(c, lin(c, CS, c->ip++), 1);
}

static uint16_t fetch16(struct vcpu *c)
{
	uint16_t v = (uint16_t)mem_read(c, lin(c, CS, c->ip), 2);

	c->ip += 2;
	return v;
}

static uint32_t fetch32(struct vcpu *c)
{
	uint32_t v = (uint32_t)mem_read(c, lin(c, CS, c->ip), 4);

	c->ip += 4;
	return v;
}

static void load_seg(struct vcpu *c, int seg, uint16_t sel)
{
	c->sel[seg] = sel;
	c->base[seg] = (uint32_t)sel << 4;
}

/* ---- registers ---- */

static uint32_t reg_get(struct vcpu *c, int i, unsigned size)
{
	if (size == 1)
		return i < 4 ? c->r[i] & 0xff : (c->r[i - 4] >> 8) & 0xff;
	if (size == 2)
		return c->r[i] & 0xffff;
	return c->r[i];
}

static void reg_set(struct vcpu *c, int i, unsigned size, uint32_t v)
{
	if (size == 1) {
		if (i < 4)
			c->r[i] = (c->r[i] & ~0xffu) | (v & 0xff);
		else
			c->r[i - 4] = (c->r[i - 4] & ~0xff00u) | ((v & 0xff) << 8);
	} else if (size == 2) {
		c->r[i] = (c->r[i] & ~0xffffu) | (v & 0xffff);
	} else {
		c->r[i] = v;
	}
}

static void push(struct vcpu *c, uint32_t v, unsigned size)
{
	reg_set(c, SP, 2, reg_get(c, SP, 2) - size);
	mem_write(c, lin(c, SS, (uint16_t)reg_get(c, SP, 2)), v, size);
}

static uint32_t pop(struct vcpu *c, unsigned size)
{
	uint32_t v = (uint32_t)mem_read(c, lin(c, SS, (uint16_t)reg_get(c, SP, 2)), size);

	reg_set(c, SP, 2, reg_get(c, SP, 2) + size);
	return v;
}

/* ---- flags ---- */

static uint32_t mask(unsigned size)
{
	return size == 4 ? UINT32_MAX : (1u << (size * 8)) - 1;
}

static bool sign(uint32_t v, unsigned size)
{
	return (v >> (size * 8 - 1)) & 1;
}

static void flags_logic(struct vcpu *c, uint32_t res, unsigned size)
{
	res &= mask(size);
	c->cf = c->of = false;
	c->zf = res == 0;
	c->sf = sign(res, size);
}

enum alu {
	ALU_ADD,
	ALU_OR,
	ALU_ADC,
	ALU_SBB,
	ALU_AND,
	ALU_SUB,
	ALU_XOR,
	ALU_CMP
};

/* Returns the result; CMP's is for the flags only. */
static uint32_t alu(struct vcpu *c, int op, uint32_t a, uint32_t b, unsigned size)
{
	uint32_t mk = mask(size), res;

	a &= mk;
	b &= mk;
	switch (op) {
	case ALU_ADD:
		res = (a + b) & mk;
		c->cf = res < a;
		c->of = sign(~(a ^ b) & (a ^ res), size);
		break;
	case ALU_SUB:
	case ALU_CMP:
		res = (a - b) & mk;
		c->cf = a < b;
		c->of = sign((a ^ b) & (a ^ res), size);
		break;
	case ALU_OR:
		res = a | b;
		flags_logic(c, res, size);
		return res;
	case ALU_AND:
		res = a & b;
		flags_logic(c, res, size);
		return res;
	case ALU_XOR:
		res = a ^ b;
		flags_logic(c, res, size);
		return res;
	default:
		return a; /* ADC/SBB: not in the subset, refused by the caller */
	}
	c->zf = res == 0;
	c->sf = sign(res, size);
	return res;
}

static bool cond(struct vcpu *c, int cc)
{
	bool r;

	switch (cc >> 1) {
	case 0:
		r = c->of;
		break;
	case 1:
		r = c->cf;
		break;
	case 2:
		r = c->zf;
		break;
	case 3:
		r = c->cf || c->zf;
		break;
	case 4:
		r = c->sf;
		break;
	case 6:
		r = c->sf != c->of;
		break;
	case 7:
		r = c->zf || c->sf != c->of;
		break;
	default:
		r = false;
		break; /* parity: not tracked */
	}
	return (cc & 1) ? !r : r;
}

/* ---- ModRM, 16-bit addressing ---- */

struct modrm {
	int mod, reg, rm;
	uint32_t addr; /* linear, when mod != 3 */
};

static void decode_modrm(struct vcpu *c, struct modrm *mr, int seg_override)
{
	uint8_t b = fetch8(c);
	uint16_t off = 0;
	int seg = DS;

	mr->mod = b >> 6;
	mr->reg = (b >> 3) & 7;
	mr->rm = b & 7;
	if (mr->mod == 3)
		return;
	if (mr->mod == 0 && mr->rm == 6) {
		off = fetch16(c);
	} else {
		static const int base_reg[8][2] = {{BX, SI}, {BX, DI}, {BP, SI}, {BP, DI},
						   {SI, -1}, {DI, -1}, {BP, -1}, {BX, -1}};

		off = (uint16_t)reg_get(c, base_reg[mr->rm][0], 2);
		if (base_reg[mr->rm][1] >= 0)
			off += (uint16_t)reg_get(c, base_reg[mr->rm][1], 2);
		if (mr->rm == 2 || mr->rm == 3 || mr->rm == 6)
			seg = SS;
		if (mr->mod == 1)
			off += (uint16_t)(int8_t)fetch8(c);
		else if (mr->mod == 2)
			off += fetch16(c);
	}
	if (seg_override >= 0)
		seg = seg_override;
	mr->addr = lin(c, seg, off);
}

static uint32_t rm_get(struct vcpu *c, const struct modrm *mr, unsigned size)
{
	return mr->mod == 3 ? reg_get(c, mr->rm, size) : (uint32_t)mem_read(c, mr->addr, size);
}

static void rm_set(struct vcpu *c, const struct modrm *mr, unsigned size, uint32_t v)
{
	if (mr->mod == 3)
		reg_set(c, mr->rm, size, v);
	else
		mem_write(c, mr->addr, v, size);
}

/* ---- port I/O exits ---- */

static uint32_t port_in(struct vcpu *c, uint16_t port, unsigned size)
{
	uint32_t v = 0;

	c->run->exit_reason = KVM_EXIT_IO;
	c->run->io.direction = KVM_EXIT_IO_IN;
	c->run->io.size = (uint8_t)size;
	c->run->io.port = port;
	c->run->io.count = 1;
	c->run->io.data_offset = PIO_OFFSET;
	vcpu_exit(c);
	memcpy(&v, (uint8_t *)c->run + PIO_OFFSET, size);
	return v;
}

static void port_out(struct vcpu *c, uint16_t port, unsigned size, uint32_t v)
{
	c->run->exit_reason = KVM_EXIT_IO;
	c->run->io.direction = KVM_EXIT_IO_OUT;
	c->run->io.size = (uint8_t)size;
	c->run->io.port = port;
	c->run->io.count = 1;
	c->run->io.data_offset = PIO_OFFSET;
	memcpy((uint8_t *)c->run + PIO_OFFSET, &v, size);
	vcpu_exit(c);
}

/* INS/OUTS with or without REP: KVM's emulator hands over up to a page of
 * elements per exit. */
static void string_io(struct vcpu *c, bool is_in, unsigned size, bool rep, int seg_override)
{
	uint32_t left = rep ? reg_get(c, CX, 2) : 1;
	uint16_t port = (uint16_t)reg_get(c, DX, 2);
	int step = c->df ? -(int)size : (int)size;
	uint8_t *page = (uint8_t *)c->run + PIO_OFFSET;

	while (left && !c->failed && !c->stopped) {
		uint32_t n = left < PAGE / size ? left : PAGE / size;

		c->run->exit_reason = KVM_EXIT_IO;
		c->run->io.direction = is_in ? KVM_EXIT_IO_IN : KVM_EXIT_IO_OUT;
		c->run->io.size = (uint8_t)size;
		c->run->io.port = port;
		c->run->io.count = n;
		c->run->io.data_offset = PIO_OFFSET;
		if (!is_in) {
			uint16_t si = (uint16_t)reg_get(c, SI, 2);
			int seg = seg_override >= 0 ? seg_override : DS;

			for (uint32_t i = 0; i < n; i++, si += step)
				memcpy(page + i * size,
				       &(uint32_t){(uint32_t)mem_read(c, lin(c, seg, si), size)},
				       size);
			reg_set(c, SI, 2, si);
		}
		vcpu_exit(c);
		if (is_in) {
			uint16_t di = (uint16_t)reg_get(c, DI, 2);

			for (uint32_t i = 0; i < n; i++, di += step) {
				uint32_t v = 0;

				memcpy(&v, page + i * size, size);
				mem_write(c, lin(c, ES, di), v, size);
			}
			reg_set(c, DI, 2, di);
		}
		left -= n;
		if (rep)
			reg_set(c, CX, 2, left);
	}
}

/* ---- the interpreter ---- */

static void step(struct vcpu *c)
{
	int seg_override = -1;
	unsigned osize = 2;
	int rep = 0; /* 0xf3 or 0xf2 */
	uint16_t start_ip = c->ip;
	uint8_t op;
	struct modrm mr;
	uint32_t v;

	for (;;) {
		op = fetch8(c);
		if (op == 0x26 || op == 0x2e || op == 0x36 || op == 0x3e)
			seg_override = (op >> 3) & 3; /* ES CS SS DS */
		else if (op == 0x64 || op == 0x65)
			seg_override = op - 0x64 + FS;
		else if (op == 0x66)
			osize = 4;
		else if (op == 0xf2 || op == 0xf3)
			rep = op;
		else
			break;
	}
	switch (op) {
	case 0x04: /* add al, imm8 */
	case 0x0c: /* or al, imm8 */
	case 0x24: /* and al, imm8 */
	case 0x2c: /* sub al, imm8 */
	case 0x34: /* xor al, imm8 */
	case 0x3c: /* cmp al, imm8 */
		v = alu(c, op >> 3, reg_get(c, AX, 1), fetch8(c), 1);
		if (op != 0x3c)
			reg_set(c, AX, 1, v);
		break;
	case 0x05:
	case 0x0d:
	case 0x25:
	case 0x2d:
	case 0x35:
	case 0x3d: /* op (e)ax, imm16/32 */
		v = alu(c, op >> 3, reg_get(c, AX, osize), osize == 4 ? fetch32(c) : fetch16(c),
			osize);
		if (op != 0x3d)
			reg_set(c, AX, osize, v);
		break;
	case 0x00:
	case 0x08:
	case 0x20:
	case 0x28:
	case 0x30:
	case 0x38: /* op r/m8, r8 */
	case 0x01:
	case 0x09:
	case 0x21:
	case 0x29:
	case 0x31:
	case 0x39: { /* op r/m16/32, r16/32 */
		unsigned size = (op & 1) ? osize : 1;

		decode_modrm(c, &mr, seg_override);
		v = alu(c, op >> 3, rm_get(c, &mr, size), reg_get(c, mr.reg, size), size);
		if ((op >> 3) != ALU_CMP)
			rm_set(c, &mr, size, v);
		break;
	}
	case 0x06: /* push es */
	case 0x1e: /* push ds */
		push(c, c->sel[op >> 3], 2);
		break;
	case 0x07: /* pop es */
	case 0x1f: /* pop ds */
		load_seg(c, op >> 3, (uint16_t)pop(c, 2));
		break;
	case 0x0f: /* jcc rel16 */
		op = fetch8(c);
		if (op < 0x80 || op > 0x8f) {
			vcpu_fail(c, "unsupported 0F opcode");
			return;
		}
		v = fetch16(c);
		if (cond(c, op & 0xf))
			c->ip += (uint16_t)v;
		break;
	case 0x40 ... 0x47: { /* inc r16/32: CF kept */
		bool cf = c->cf;

		reg_set(c, op & 7, osize, alu(c, ALU_ADD, reg_get(c, op & 7, osize), 1, osize));
		c->cf = cf;
		break;
	}
	case 0x48 ... 0x4f: { /* dec r16/32 */
		bool cf = c->cf;

		reg_set(c, op & 7, osize, alu(c, ALU_SUB, reg_get(c, op & 7, osize), 1, osize));
		c->cf = cf;
		break;
	}
	case 0x50 ... 0x57:
		push(c, reg_get(c, op & 7, osize), osize);
		break;
	case 0x58 ... 0x5f:
		v = pop(c, osize);
		reg_set(c, op & 7, osize, v);
		break;
	case 0x70 ... 0x7f: /* jcc rel8 */
		v = (uint32_t)(int8_t)fetch8(c);
		if (cond(c, op & 0xf))
			c->ip += (uint16_t)v;
		break;
	case 0x83: /* group 1, r/m16/32, imm8 sign-extended */
		decode_modrm(c, &mr, seg_override);
		if (mr.reg == ALU_ADC || mr.reg == ALU_SBB) {
			vcpu_fail(c, "unsupported adc/sbb");
			return;
		}
		v = alu(c, mr.reg, rm_get(c, &mr, osize), (uint32_t)(int32_t)(int8_t)fetch8(c),
			osize);
		if (mr.reg != ALU_CMP)
			rm_set(c, &mr, osize, v);
		break;
	case 0x84: /* test r/m8, r8 */
	case 0x85:
		decode_modrm(c, &mr, seg_override);
		flags_logic(c,
			    rm_get(c, &mr, op == 0x84 ? 1 : osize) &
				    reg_get(c, mr.reg, op == 0x84 ? 1 : osize),
			    op == 0x84 ? 1 : osize);
		break;
	case 0x88: /* mov r/m8, r8 */
	case 0x89:
		decode_modrm(c, &mr, seg_override);
		rm_set(c, &mr, op == 0x88 ? 1 : osize, reg_get(c, mr.reg, op == 0x88 ? 1 : osize));
		break;
	case 0x8a: /* mov r8, r/m8 */
	case 0x8b:
		decode_modrm(c, &mr, seg_override);
		reg_set(c, mr.reg, op == 0x8a ? 1 : osize, rm_get(c, &mr, op == 0x8a ? 1 : osize));
		break;
	case 0x8c: /* mov r/m16, sreg */
		decode_modrm(c, &mr, seg_override);
		rm_set(c, &mr, 2, c->sel[mr.reg]);
		break;
	case 0x8e: /* mov sreg, r/m16 */
		decode_modrm(c, &mr, seg_override);
		if (mr.reg == CS || mr.reg > GS) {
			vcpu_fail(c, "mov to cs");
			return;
		}
		load_seg(c, mr.reg, (uint16_t)rm_get(c, &mr, 2));
		break;
	case 0xa1: /* mov (e)ax, moffs16 */
		reg_set(c, AX, osize,
			(uint32_t)mem_read(
				c, lin(c, seg_override >= 0 ? seg_override : DS, fetch16(c)),
				osize));
		break;
	case 0xa8: /* test al, imm8 */
		flags_logic(c, reg_get(c, AX, 1) & fetch8(c), 1);
		break;
	case 0xa7: { /* cmpsw / repe cmpsw */
		int seg = seg_override >= 0 ? seg_override : DS;
		int stepb = c->df ? -(int)osize : (int)osize;

		while (!rep || reg_get(c, CX, 2)) {
			uint16_t si = (uint16_t)reg_get(c, SI, 2), di = (uint16_t)reg_get(c, DI, 2);

			alu(c, ALU_CMP, (uint32_t)mem_read(c, lin(c, seg, si), osize),
			    (uint32_t)mem_read(c, lin(c, ES, di), osize), osize);
			reg_set(c, SI, 2, (uint16_t)(si + stepb));
			reg_set(c, DI, 2, (uint16_t)(di + stepb));
			if (!rep)
				break;
			reg_set(c, CX, 2, reg_get(c, CX, 2) - 1);
			if ((rep == 0xf3 && !c->zf) || (rep == 0xf2 && c->zf))
				break;
		}
		break;
	}
	case 0xaa: /* stosb */
		while (!rep || reg_get(c, CX, 2)) {
			uint16_t di = (uint16_t)reg_get(c, DI, 2);

			mem_write(c, lin(c, ES, di), reg_get(c, AX, 1), 1);
			reg_set(c, DI, 2, (uint16_t)(di + (c->df ? -1 : 1)));
			if (!rep)
				break;
			reg_set(c, CX, 2, reg_get(c, CX, 2) - 1);
		}
		break;
	case 0xac: { /* lodsb */
		uint16_t si = (uint16_t)reg_get(c, SI, 2);

		if (rep) {
			vcpu_fail(c, "rep lodsb");
			return;
		}
		reg_set(c, AX, 1,
			(uint32_t)mem_read(c, lin(c, seg_override >= 0 ? seg_override : DS, si),
					   1));
		reg_set(c, SI, 2, (uint16_t)(si + (c->df ? -1 : 1)));
		break;
	}
	case 0x6c: /* insb */
	case 0x6d: /* insw/insd */
		string_io(c, true, op == 0x6c ? 1 : osize, rep != 0, seg_override);
		break;
	case 0x6e: /* outsb */
	case 0x6f:
		string_io(c, false, op == 0x6e ? 1 : osize, rep != 0, seg_override);
		break;
	case 0xb0 ... 0xb7:
		reg_set(c, op & 7, 1, fetch8(c));
		break;
	case 0xb8 ... 0xbf:
		reg_set(c, op & 7, osize, osize == 4 ? fetch32(c) : fetch16(c));
		break;
	case 0xc0: /* shift r/m8, imm8 */
		decode_modrm(c, &mr, seg_override);
		{
			uint32_t x = rm_get(c, &mr, 1), n = fetch8(c) & 31;

			if (mr.reg != 4 && mr.reg != 5) {
				vcpu_fail(c, "unsupported shift");
				return;
			}
			if (n) {
				if (mr.reg == 5) {
					c->cf = (x >> (n - 1)) & 1;
					x >>= n;
				} else {
					c->cf = ((x << (n - 1)) >> 7) & 1;
					x = (x << n) & 0xff;
				}
				c->zf = x == 0;
				c->sf = sign(x, 1);
				rm_set(c, &mr, 1, x);
			}
		}
		break;
	case 0xc3:
		c->ip = (uint16_t)pop(c, 2);
		break;
	case 0xe2: /* loop */
		v = (uint32_t)(int8_t)fetch8(c);
		reg_set(c, CX, 2, reg_get(c, CX, 2) - 1);
		if (reg_get(c, CX, 2))
			c->ip += (uint16_t)v;
		break;
	case 0xe4:
		reg_set(c, AX, 1, port_in(c, fetch8(c), 1));
		break;
	case 0xe5:
		reg_set(c, AX, osize, port_in(c, fetch8(c), osize));
		break;
	case 0xe6:
		port_out(c, fetch8(c), 1, reg_get(c, AX, 1));
		break;
	case 0xe7:
		port_out(c, fetch8(c), osize, reg_get(c, AX, osize));
		break;
	case 0xe8: /* call rel16 */
		v = fetch16(c);
		push(c, c->ip, 2);
		c->ip += (uint16_t)v;
		break;
	case 0xe9:
		v = fetch16(c);
		c->ip += (uint16_t)v;
		break;
	case 0xea: { /* jmp ptr16:16 */
		uint16_t ip = fetch16(c), cs = fetch16(c);

		load_seg(c, CS, cs);
		c->ip = ip;
		break;
	}
	case 0xeb:
		v = (uint32_t)(int8_t)fetch8(c);
		c->ip += (uint16_t)v;
		break;
	case 0xec:
		reg_set(c, AX, 1, port_in(c, (uint16_t)reg_get(c, DX, 2), 1));
		break;
	case 0xed:
		reg_set(c, AX, osize, port_in(c, (uint16_t)reg_get(c, DX, 2), osize));
		break;
	case 0xee:
		port_out(c, (uint16_t)reg_get(c, DX, 2), 1, reg_get(c, AX, 1));
		break;
	case 0xef:
		port_out(c, (uint16_t)reg_get(c, DX, 2), osize, reg_get(c, AX, osize));
		break;
	case 0xf4: /* hlt: with interrupts off, KVM_EXIT_HLT */
		c->run->exit_reason = KVM_EXIT_HLT;
		vcpu_exit(c);
		break;
	case 0xf7: /* group 3: test r/m16, imm16 only */
		decode_modrm(c, &mr, seg_override);
		if (mr.reg != 0) {
			vcpu_fail(c, "unsupported group 3 op");
			return;
		}
		v = rm_get(c, &mr, osize);
		flags_logic(c, v & (osize == 4 ? fetch32(c) : fetch16(c)), osize);
		break;
	case 0xf8:
		c->cf = false;
		break;
	case 0xf9:
		c->cf = true;
		break;
	case 0xfa: /* cli */
	case 0xfb: /* sti: no interrupts are ever delivered */
		break;
	case 0xfc:
		c->df = false;
		break;
	case 0xfd:
		c->df = true;
		break;
	case 0xfe: /* inc/dec r/m8 */
		decode_modrm(c, &mr, seg_override);
		if (mr.reg > 1) {
			vcpu_fail(c, "unsupported group 4 op");
			return;
		}
		{
			bool cf = c->cf;

			rm_set(c, &mr, 1,
			       alu(c, mr.reg ? ALU_SUB : ALU_ADD, rm_get(c, &mr, 1), 1, 1));
			c->cf = cf;
		}
		break;
	default: {
		char what[64];

		c->ip = start_ip;
		snprintf(what, sizeof(what), "unsupported opcode %02x", op);
		vcpu_fail(c, what);
		return;
	}
	}
}

int main(int argc, char **argv)
{
	struct vd_machine_opts mo = {0};
	struct vd_piix_ide *ide = NULL;
	struct vcpu c = {0};
	uint64_t n;
	int status = 2;

	if (argc < 2) {
		fprintf(stderr, "usage: fake-vcpu PAYLOAD [-drive OPTS]...\n");
		return 2;
	}
	if (vd_loop_new(&c.loop) < 0)
		return 2;
	vd_loop_set_current(c.loop);
	mo.loop = c.loop;
	if (vd_machine_new(&mo, &c.m, &c.err) < 0)
		goto out;
	for (int i = 2; i < argc; i++) {
		struct vd_drive *d;

		if (strcmp(argv[i], "-drive") || i + 1 >= argc) {
			fprintf(stderr, "fake-vcpu: unexpected argument '%s'\n", argv[i]);
			goto out;
		}
		if (vd_machine_add_drive(c.m, argv[++i], &d, &c.err) < 0)
			goto out;
		if (d->iface == VD_IF_IDE && !d->device) {
			struct vd_irq *irqs[2] = {vd_machine_isa_irq(c.m, 14),
						  vd_machine_isa_irq(c.m, 15)};
			struct vd_ide_drive_conf conf = {.blk = d->blk,
							 .cdrom = d->media == VD_MEDIA_CDROM};

			if (!ide && vd_piix3_ide_new(vd_machine_pci_bus(c.m), VD_PCI_DEVFN(1, 1),
						     vd_machine_io(c.m), irqs, &ide) < 0) {
				fprintf(stderr, "fake-vcpu: could not create the PIIX3 IDE\n");
				goto out;
			}
			if (vd_ide_attach(ide, d->bus, d->unit, &conf) < 0) {
				fprintf(stderr, "fake-vcpu: could not attach %s\n", d->id);
				goto out;
			}
		}
	}
	if (vd_machine_add_debug_exit(c.m, 0xf4, 4, &c.err) < 0 ||
	    vd_machine_add_debugcon(c.m, 0xe9, 2, &c.err) < 0 ||
	    vd_kvm_firmware_load(c.m, argv[1], &c.fw, &c.err) < 0)
		goto out;
	c.run = calloc(1, RUN_SIZE);
	if (!c.run)
		goto out;
	c.ram = vd_machine_ram(c.m)->host;
	c.ram_low = vd_machine_ram(c.m)->size < 0xe0000000 ? vd_machine_ram(c.m)->size : 0xc0000000;
	/* The reset state vd_kvm_new sets. */
	c.sel[CS] = 0xf000;
	c.base[CS] = 0xffff0000;
	c.ip = 0xfff0;
	for (n = 0; n < MAX_INSNS && !c.failed && !c.stopped; n++)
		step(&c);
	if (c.stopped) {
		fprintf(stderr, "fake-vcpu: guest exit after %llu instructions, %llu exits\n",
			(unsigned long long)n, (unsigned long long)c.exits);
		status = vd_machine_guest_exit_status(c.m);
	} else if (!c.failed) {
		fprintf(stderr, "fake-vcpu: no exit after %llu instructions\n",
			(unsigned long long)n);
	}
out:
	if (c.err.msg[0] && status == 2)
		fprintf(stderr, "fake-vcpu: %s\n", c.err.msg);
	free(c.run);
	vd_kvm_firmware_free(&c.fw);
	vd_piix3_ide_free(ide);
	vd_machine_free(c.m);
	vd_loop_set_current(NULL);
	vd_loop_free(c.loop);
	return status;
}
