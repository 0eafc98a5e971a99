/* SPDX-License-Identifier: MIT */
/*
 * ide-rw: a 64 KiB BIOS-style payload that reads and writes the primary IDE
 * master in PIO mode and reports through QEMU's debug devices.  It runs
 * unchanged as qemu-system-x86_64's -bios (with -device isa-debug-exit,
 * iobase=0xf4,iosize=0x04 -debugcon CHR) and under `vdisk machine --accel kvm
 * --payload`, so QEMU's own IDE proves the payload before it judges ours.
 *
 * The CPU starts at F000:FFF0 (linear 0xFFFFFFF0, the image's last 16
 * bytes); the far jump there reloads CS with 0xF000, the copy of the image
 * that ends at 1 MiB.  16-bit real mode throughout, interrupts off, no BIOS:
 *
 *   1  software reset (device control SRST), wait for BSY clear and DRDY
 *   2  the signature of an ATA device: count 01h, LBA 01h 00h 00h (ATAPI
 *      devices show 14h EBh in LBA mid/high)
 *   3  IDENTIFY DEVICE (ECh), 256 words by PIO
 *   4  word 0 bit 15 clear (ATA device), words 60-61 >= FIRST_LBA + NSECT
 *   5  WRITE SECTORS (30h): NSECT sectors at FIRST_LBA, sector k filled with
 *      the byte PATTERN_BASE + its LBA ("rep outsw" per sector)
 *   6  FLUSH CACHE (E7h)
 *   7  READ SECTORS (20h) of the same range ("rep insw")
 *   8  the data read equals the data written
 *
 * Exit: the isa-debug-exit port gets 0 on success or the number of the step
 * that failed, so QEMU exits with status 1, or 2 * step + 1.  Progress goes
 * to the debug console (port 0xE9); the last line is "ide-rw: PASS" or
 * "ide-rw: FAIL step N last read 0xXX".  Every wait is bounded, so a broken
 * device ends the run with its step rather than hanging it.
 *
 * Register and command semantics: ATA/ATAPI-6 (T13/1410D), the PIO data-in,
 * data-out and non-data protocols; device control bits SRST (2), nIEN (1).
 */

#define DEBUGCON	0xe9
#define DEBUG_EXIT	0xf4

#define ATA_DATA	0x1f0
#define ATA_NSECTOR	0x1f2
#define ATA_LBA_LOW	0x1f3
#define ATA_LBA_MID	0x1f4
#define ATA_LBA_HIGH	0x1f5
#define ATA_DEVICE	0x1f6
#define ATA_STATUS	0x1f7	/* read */
#define ATA_COMMAND	0x1f7	/* write */
#define ATA_CTRL	0x3f6	/* device control (write), alternate status (read) */

#define ST_ERR		0x01
#define ST_DRQ		0x08
#define ST_DF		0x20
#define ST_DRDY		0x40
#define ST_BSY		0x80

#define CTRL_NIEN	0x02
#define CTRL_SRST	0x04
#define DEV_LBA		0xe0	/* LBA mode, device 0 (bits 7 and 5 obsolete, set) */

#define CMD_READ_SECTORS	0x20
#define CMD_WRITE_SECTORS	0x30
#define CMD_FLUSH_CACHE		0xe7
#define CMD_IDENTIFY		0xec

#define FIRST_LBA	1
#define NSECT		8
#define PATTERN_BASE	0xa0

/* Buffers in RAM below 640 KiB; the stack below 0x7000. */
#define WBUF_SEG	0x1000
#define RBUF_SEG	0x2000
#define IDBUF_SEG	0x3000
#define STACK_TOP	0x7000

/* Polls of the status register before a wait gives up (a 32-bit count:
 * seconds under TCG, well under a second under KVM). */
#define TIMEOUT		0x01000000

	.code16
	.text
	.globl	start
start:
	cli
	cld
	xorw	%ax, %ax
	movw	%ax, %ss
	movw	$STACK_TOP, %sp
	movw	%cs, %ax
	movw	%ax, %ds		/* strings live in the image */
	movw	$msg_start, %si
	call	puts

	/* A BIOS enables I/O decoding of the PIIX3 IDE function (00:01.1):
	 * PCI command register (offset 4) bit 0, through configuration
	 * mechanism #1.  QEMU decodes the legacy ports regardless. */
	movl	$0x80000904, %eax
	movw	$0xcf8, %dx
	outl	%eax, %dx
	movw	$0xcfc, %dx
	inw	%dx, %ax
	orw	$0x0001, %ax
	outw	%ax, %dx

	/* 1: software reset, interrupts off (we poll). */
	movb	$1, %bl
	movw	$ATA_CTRL, %dx
	movb	$(CTRL_SRST | CTRL_NIEN), %al
	outb	%al, %dx
	call	ata_delay
	movw	$ATA_CTRL, %dx
	movb	$CTRL_NIEN, %al
	outb	%al, %dx
	call	ata_delay
	call	wait_not_busy
	jc	fail

	/* 2: the signature the reset left (checked before the device
	 * register is written, which would not change it anyway). */
	movb	$2, %bl
	movw	$ATA_NSECTOR, %dx
	inb	%dx, %al
	cmpb	$1, %al
	jne	fail
	movw	$ATA_LBA_LOW, %dx
	inb	%dx, %al
	cmpb	$1, %al
	jne	fail
	movw	$ATA_LBA_MID, %dx
	inb	%dx, %al
	testb	%al, %al		/* 14h here would be ATAPI */
	jnz	fail
	movw	$ATA_LBA_HIGH, %dx
	inb	%dx, %al
	testb	%al, %al		/* EBh here would be ATAPI */
	jnz	fail
	movw	$msg_signature, %si
	call	puts

	/* Select the master in LBA mode and wait for DRDY. */
	movb	$1, %bl
	movw	$ATA_DEVICE, %dx
	movb	$DEV_LBA, %al
	outb	%al, %dx
	call	ata_delay
	call	wait_not_busy
	jc	fail
	testb	$ST_DRDY, %al
	jz	fail

	/* 3: IDENTIFY DEVICE, PIO data-in of one 512-byte block. */
	movb	$3, %bl
	movb	$CMD_IDENTIFY, %al
	call	command
	call	wait_drq
	jc	fail
	movw	$IDBUF_SEG, %ax
	movw	%ax, %es
	xorw	%di, %di
	movw	$256, %cx
	movw	$ATA_DATA, %dx
	rep insw
	call	wait_not_busy
	jc	fail
	testb	$(ST_ERR | ST_DF | ST_DRQ), %al
	jnz	fail

	/* 4: general configuration and capacity. */
	movb	$4, %bl
	testw	$0x8000, %es:0		/* word 0 bit 15: 0 = ATA device */
	jnz	fail
	movl	%es:120, %eax		/* words 60-61: user addressable sectors */
	cmpl	$(FIRST_LBA + NSECT), %eax
	jb	fail
	movw	$msg_identify, %si
	call	puts

	/* The pattern: sector k of the buffer holds PATTERN_BASE + LBA. */
	movw	$WBUF_SEG, %ax
	movw	%ax, %es
	xorw	%di, %di
	movb	$(PATTERN_BASE + FIRST_LBA), %al
	movw	$NSECT, %bp
1:	movw	$512, %cx
	rep stosb
	incb	%al
	decw	%bp
	jnz	1b

	/* 5: WRITE SECTORS, PIO data-out: per sector wait for DRQ, then 256
	 * words; after the last, wait until the device is no longer busy. */
	movb	$5, %bl
	call	setup_lba
	movb	$CMD_WRITE_SECTORS, %al
	call	command
	pushw	%ds
	movw	$WBUF_SEG, %ax
	movw	%ax, %ds
	xorw	%si, %si
	movw	$NSECT, %bp
2:	call	wait_drq
	jc	fail_pop_ds
	movw	$256, %cx
	movw	$ATA_DATA, %dx
	rep outsw
	call	ata_delay
	decw	%bp
	jnz	2b
	popw	%ds
	call	wait_not_busy
	jc	fail
	testb	$(ST_ERR | ST_DF | ST_DRQ), %al
	jnz	fail
	movw	$msg_write, %si
	call	puts

	/* 6: FLUSH CACHE (non-data). */
	movb	$6, %bl
	movb	$CMD_FLUSH_CACHE, %al
	call	command
	call	wait_not_busy
	jc	fail
	testb	$(ST_ERR | ST_DF), %al
	jnz	fail

	/* 7: READ SECTORS, PIO data-in. */
	movb	$7, %bl
	call	setup_lba
	movb	$CMD_READ_SECTORS, %al
	call	command
	movw	$RBUF_SEG, %ax
	movw	%ax, %es
	xorw	%di, %di
	movw	$NSECT, %bp
3:	call	wait_drq
	jc	fail
	movw	$256, %cx
	movw	$ATA_DATA, %dx
	rep insw
	call	ata_delay
	decw	%bp
	jnz	3b
	call	wait_not_busy
	jc	fail
	testb	$(ST_ERR | ST_DF | ST_DRQ), %al
	jnz	fail
	movw	$msg_read, %si
	call	puts

	/* 8: compare what was read with what was written. */
	movb	$8, %bl
	pushw	%ds
	movw	$WBUF_SEG, %ax
	movw	%ax, %ds
	xorw	%si, %si
	movw	$RBUF_SEG, %ax
	movw	%ax, %es
	xorw	%di, %di
	movw	$(NSECT * 256), %cx
	repe cmpsw
	popw	%ds
	jne	fail

	movw	$msg_pass, %si
	call	puts
	xorb	%al, %al
	outb	%al, $DEBUG_EXIT
	jmp	halt

fail_pop_ds:
	popw	%ds
/* %bl: the step; %al: the last register value read (for the log). */
fail:
	movb	%al, %bh
	movw	$msg_fail, %si
	call	puts
	movb	%bl, %al
	addb	$'0', %al
	outb	%al, $DEBUGCON
	movw	$msg_status, %si
	call	puts
	movb	%bh, %al
	call	puthex8
	movb	$'\n', %al
	outb	%al, $DEBUGCON
	movb	%bl, %al
	outb	%al, $DEBUG_EXIT
halt:
	/* Without isa-debug-exit there is nowhere to go. */
	cli
	hlt
	jmp	halt

/* ---- helpers (preserve everything but %ax, %dx and flags) ---- */

/* Write command %al. */
command:
	movw	$ATA_COMMAND, %dx
	outb	%al, %dx
	/* fall through: the status is valid 400 ns after a command */

/* Four reads of the alternate status: at least 400 ns on hardware. */
ata_delay:
	pushw	%cx
	movw	$ATA_CTRL, %dx
	movw	$4, %cx
1:	inb	%dx, %al
	loop	1b
	popw	%cx
	ret

/* Sector count NSECT, LBA FIRST_LBA (28-bit), master, LBA mode. */
setup_lba:
	movw	$ATA_NSECTOR, %dx
	movb	$NSECT, %al
	outb	%al, %dx
	movw	$ATA_LBA_LOW, %dx
	movb	$(FIRST_LBA & 0xff), %al
	outb	%al, %dx
	movw	$ATA_LBA_MID, %dx
	movb	$((FIRST_LBA >> 8) & 0xff), %al
	outb	%al, %dx
	movw	$ATA_LBA_HIGH, %dx
	movb	$((FIRST_LBA >> 16) & 0xff), %al
	outb	%al, %dx
	movw	$ATA_DEVICE, %dx
	movb	$(DEV_LBA | ((FIRST_LBA >> 24) & 0x0f)), %al
	outb	%al, %dx
	ret

/* Poll the status register until BSY is clear: %al = status, CF set on
 * timeout. */
wait_not_busy:
	pushl	%ecx
	movl	$TIMEOUT, %ecx
	movw	$ATA_STATUS, %dx
1:	inb	%dx, %al
	testb	$ST_BSY, %al
	jz	2f
	decl	%ecx
	jnz	1b
	popl	%ecx
	stc
	ret
2:	popl	%ecx
	clc
	ret

/* Wait for a data block: BSY clear, then DRQ set without ERR or DF.
 * %al = status, CF set otherwise. */
wait_drq:
	call	wait_not_busy
	jc	1f
	testb	$(ST_ERR | ST_DF), %al
	jnz	2f
	testb	$ST_DRQ, %al
	jz	2f
	clc
1:	ret
2:	stc
	ret

/* Print the NUL-terminated string at %ds:%si on the debug console. */
puts:
	pushw	%ax
	pushw	%dx
	movw	$DEBUGCON, %dx
1:	lodsb
	testb	%al, %al
	jz	2f
	outb	%al, %dx
	jmp	1b
2:	popw	%dx
	popw	%ax
	ret

/* Print %al as two hex digits. */
puthex8:
	pushw	%ax
	shrb	$4, %al
	call	puthex4
	popw	%ax
	/* fall through for the low nibble */
puthex4:
	pushw	%ax
	andb	$0x0f, %al
	addb	$'0', %al
	cmpb	$'9', %al
	jbe	1f
	addb	$('a' - '0' - 10), %al
1:	outb	%al, $DEBUGCON
	popw	%ax
	ret

msg_start:	.asciz	"ide-rw: start\n"
msg_signature:	.asciz	"ide-rw: reset, ATA signature ok\n"
msg_identify:	.asciz	"ide-rw: IDENTIFY DEVICE ok\n"
msg_write:	.asciz	"ide-rw: WRITE SECTORS ok\n"
msg_read:	.asciz	"ide-rw: READ SECTORS ok\n"
msg_pass:	.asciz	"ide-rw: PASS\n"
msg_fail:	.asciz	"ide-rw: FAIL step "
msg_status:	.asciz	" last read 0x"

/* The reset vector: the image's last 16 bytes, at 0xFFFFFFF0. */
	.org	0xfff0, 0xff
reset_vector:
	ljmp	$0xf000, $start
	.org	0x10000, 0xff
