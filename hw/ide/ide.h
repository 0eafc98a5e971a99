/* SPDX-License-Identifier: MIT */
/*
 * Private to hw/ide.  A command's path, file by file:
 *
 *   regs.c   the register file and the command decoder: task-file ports,
 *            device control, the PIO data port, the interrupt line, SRST;
 *            ide_exec_cmd() runs a handler of ide_cmd_table
 *   ata.c    the ATA commands (ide_cmd_table): IDENTIFY, PIO and DMA
 *            read/write, DATA SET MANAGEMENT, FLUSH CACHE, SET FEATURES...
 *   atapi.c  the PACKET protocol of a CD-ROM: packet in, replies out by PIO
 *            bursts or DMA, sense, medium events; dispatch to mmc.c
 *   mmc.c    the MMC commands (atapi_cmd_table)
 *   bmdma.c  the SFF-8038i bus master (BAR4 registers, PRD table walk) and
 *            the DMA transfer state machine of a command
 *   block.c  the drive on its block backend: attach, size and geometry,
 *            requests (struct ide_aio), the error policy and the retry
 *   piix.c   the PIIX3 PCI function that holds the two channels
 *
 * Register and bit names follow ATA/ATAPI-8 ACS (T13/1699-D) section 6
 * (status, error), the ATA-8 AT Attachment Parallel Transport (ATA8-APT)
 * section 5 (task-file ports, device control) and SFF-8038i revision 1.0
 * (bus master IDE).  The behaviour a guest observes is QEMU 7.2's
 * (hw/ide/core.c, atapi.c, pci.c), which tests/hw/ide-* compare against.
 *
 * Asynchronous I/O and cancellation: see block.c.
 */
#ifndef HW_IDE_IDE_H
#define HW_IDE_IDE_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/backend.h>
#include <vdisk/ide.h>
#include <vdisk/iov.h>
#include <vdisk/irq.h>
#include <vdisk/memory.h>
#include <vdisk/pci.h>

/* Status register (ACS-2 6.5): */
#define IDE_ST_BSY 0x80
#define IDE_ST_DRDY 0x40
#define IDE_ST_DF 0x20
#define IDE_ST_DSC 0x10
#define IDE_ST_DRQ 0x08
#define IDE_ST_CORR 0x04
#define IDE_ST_IDX 0x02
#define IDE_ST_ERR 0x01

/* Error register (ACS-2 6.2): */
#define IDE_ER_ICRC 0x80
#define IDE_ER_UNC 0x40
#define IDE_ER_MC 0x20
#define IDE_ER_IDNF 0x10
#define IDE_ER_MCR 0x08
#define IDE_ER_ABRT 0x04

/* Device register (ATA8-APT 5.2.4) and device control (5.2.5): */
#define IDE_DEV_LBA 0x40
#define IDE_DEV_DEV 0x10
#define IDE_DEV_HS 0x0f
#define IDE_DEV_ALWAYS_ON 0xa0
#define IDE_CTRL_NIEN 0x02
#define IDE_CTRL_SRST 0x04
#define IDE_CTRL_HOB 0x80

/* ATAPI interrupt reason in the sector count register (ACS-2 7.18.4). */
#define ATAPI_INT_REASON_CD 0x01
#define ATAPI_INT_REASON_IO 0x02

/* Sense keys and additional sense codes (SPC-3 4.5.6, MMC-5 annex F). */
#define SENSE_NONE 0
#define SENSE_NOT_READY 2
#define SENSE_ILLEGAL_REQUEST 5
#define SENSE_UNIT_ATTENTION 6
#define ASC_ILLEGAL_OPCODE 0x20
#define ASC_LOGICAL_BLOCK_OOR 0x21
#define ASC_INV_FIELD_IN_CMD_PACKET 0x24
#define ASC_MEDIUM_MAY_HAVE_CHANGED 0x28
#define ASC_INCOMPATIBLE_FORMAT 0x30
#define ASC_SAVING_PARAMETERS_NOT_SUPPORTED 0x39
#define ASC_MEDIUM_NOT_PRESENT 0x3a
#define ASC_MEDIA_REMOVAL_PREVENTED 0x53

/* Bus master registers (SFF-8038i section 2). */
#define BM_CMD_START 0x01
#define BM_CMD_READ 0x08 /* "read" from the bus master's view: to memory */
#define BM_ST_ACTIVE 0x01
#define BM_ST_ERROR 0x02
#define BM_ST_INT 0x04
#define BM_ST_CAP_MASK 0x60
/* A PRD table walk stops after one page of table (QEMU's BMDMA_PAGE_SIZE). */
#define BM_PRD_TABLE_MAX 4096
#define BM_MAX_SG (BM_PRD_TABLE_MAX / 8)

#define IDE_MAX_MULT_SECTORS 16
#define IDE_SECTOR 512
#define ATAPI_PACKET_SIZE 12
#define CD_SECTOR 2048
#define CD_RAW_SECTOR 2352
/* Largest BCL-limited PIO burst (0xfffe) plus a sector on each side. */
#define IDE_IO_BUFFER_SIZE (0x10000 + 2 * CD_RAW_SECTOR)
/* DMA moves data through a bounce buffer of at most this many bytes. */
#define IDE_DMA_CHUNK (256 * 1024)

enum ide_kind {
	IDE_NONE,
	IDE_HD,
	IDE_CD,
};

/* What runs when the guest has moved the last byte of a PIO block
 * (the end_transfer_func of the seed's ide_data_readw). */
enum ide_end {
	IDE_END_NONE, /* idle: dummy transfer */
	IDE_END_SECTOR_READ, /* next block of READ SECTORS/MULTIPLE */
	IDE_END_SECTOR_WRITE, /* write the block just received */
	IDE_END_STOP, /* single block (IDENTIFY): stop */
	IDE_END_ATAPI_CMD, /* the 12-byte packet arrived */
	IDE_END_ATAPI_REPLY, /* next ATAPI data burst */
};

enum ide_dma_cmd {
	IDE_DMA_NONE,
	IDE_DMA_READ,
	IDE_DMA_WRITE,
	IDE_DMA_TRIM,
	IDE_DMA_ATAPI,
};

enum ide_aio_op {
	IDE_AIO_READ,
	IDE_AIO_WRITE,
	IDE_AIO_FLUSH,
	IDE_AIO_DISCARD,
};

struct ide_state;
struct ide_bus;

/* One request of the drive to its backend (see block.c). */
struct ide_aio {
	struct ide_state *s; /* NULL once cancelled */
	struct vd_blk_retry retry; /* on the backend's list while kept */
	enum ide_aio_op op;
	int64_t offset, bytes;
	uint8_t *buf;
	struct vd_qiov qiov;
	void (*done)(struct ide_state *s, struct ide_aio *aio, int ret);
};

struct ide_sg {
	uint32_t addr, len;
};

/* The SFF-8038i bus master of one channel. */
struct ide_bmdma {
	struct ide_bus *bus;
	struct vd_pci_device *pci; /* NULL: no bus master (tests of the core) */
	uint8_t cmd, status;
	uint32_t addr; /* PRD table pointer */
	bool pending; /* the drive issued a DMA command, waiting for START */
};

struct ide_state {
	struct ide_bus *bus;
	int unit;
	enum ide_kind kind;
	struct vd_blk *blk;
	char serial[21], model[41], version[9];

	/* geometry */
	uint64_t nb_sectors; /* 512-byte sectors of the medium */
	unsigned cylinders, heads, sectors;
	unsigned native_heads, native_sectors;

	/* task file (ATA8-APT 5.2) with the previous ("HOB") values */
	uint8_t feature, error, sector, lcyl, hcyl, select, status;
	uint8_t hob_feature, hob_nsector, hob_sector, hob_lcyl, hob_hcyl;
	uint32_t nsector; /* up to 65536 after the LBA48 transform */
	bool lba48;
	unsigned mult_sectors;
	unsigned req_nb_sectors; /* sectors per DRQ block */

	uint16_t identify[256];
	bool identify_set;

	/* PIO */
	uint8_t *io_buffer;
	uint32_t data_ptr, data_end;
	enum ide_end end;

	/* DMA */
	enum ide_dma_cmd dma_cmd;
	int64_t dma_sector;
	uint64_t dma_total, dma_done;
	uint32_t dma_nsg;
	bool dma_stay_active;
	struct ide_sg sg[BM_MAX_SG];
	uint8_t *trim_buf;
	uint32_t trim_index, trim_count;

	/* ATAPI (atapi.c) */
	bool atapi_dma;
	uint8_t sense_key, asc;
	int cdrom_changed; /* 1: report NOT READY next, 2: UNIT ATTENTION */
	bool new_media_event, eject_request_event;
	int64_t lba; /* next CD sector to read, -1 for a reply buffer */
	uint32_t cd_sector_size;
	uint64_t packet_transfer_size; /* bytes still to send */
	uint32_t buffered; /* reply bytes ready in io_buffer from data_end */
	uint32_t buf_off; /* where they start */

	/* the request in flight, and the one the "stop" policy kept: it waits
	 * on the backend's retry list (vd_blk_retry_keep) until "cont" */
	struct ide_aio *aio;
	struct ide_aio *retry;
};

struct ide_bus {
	struct vd_piix_ide *ctrl;
	int index;
	struct ide_state ifs[2];
	int unit; /* selected drive */
	uint8_t cmd; /* device control register */
	struct vd_irq *irq;
	struct ide_bmdma bm;
	struct vd_mem_region *port_mr, *ctl_mr;
};

struct vd_piix_ide {
	struct vd_pci_device *pci;
	struct vd_address_space *io;
	struct vd_mem_region *bar4;
	struct ide_bus bus[2];
};

/* regs.c */
struct ide_state *ide_bus_active(struct ide_bus *bus);
int ide_bus_init(struct ide_bus *bus, struct vd_piix_ide *ctrl, int index,
		 struct vd_address_space *io, uint32_t base, uint32_t ctl, struct vd_irq *irq);
void ide_bus_fini(struct ide_bus *bus);
void ide_bus_reset(struct ide_bus *bus);
void ide_reset_drive(struct ide_state *s);
void ide_set_irq(struct ide_bus *bus);
void ide_lower_irq(struct ide_bus *bus);
void ide_abort_command(struct ide_state *s);
void ide_set_signature(struct ide_state *s);
void ide_transfer_start(struct ide_state *s, uint32_t off, uint32_t size, enum ide_end end);
void ide_transfer_stop(struct ide_state *s);
int64_t ide_get_sector(struct ide_state *s);
void ide_set_sector(struct ide_state *s, int64_t sector);
bool ide_sect_range_ok(struct ide_state *s, int64_t sector, uint64_t n);

/* ata.c: the command table the decoder reads.  Flags say which drive kinds
 * may issue the command; a handler returns true when the command is
 * complete (the decoder then clears BSY, sets DSC for CMD_DSC and
 * interrupts), false when it finishes later or has done so itself. */
enum {
	CMD_HD = 1 << 0,
	CMD_CD = 1 << 1,
	CMD_ALL = CMD_HD | CMD_CD,
	CMD_DSC = 1 << 2, /* set DSC on successful completion */
};

typedef bool ide_cmd_fn(struct ide_state *s, uint8_t cmd);

struct ide_cmd {
	ide_cmd_fn *fn;
	uint8_t flags;
};
extern const struct ide_cmd ide_cmd_table[256];
bool ide_cmd_exec_dev_diagnostic(struct ide_state *s, uint8_t cmd);
void ide_sector_read(struct ide_state *s);
void ide_sector_write(struct ide_state *s);
void ide_identify_size(struct ide_state *s);

/* block.c */
int ide_drive_attach(struct ide_state *s, const struct vd_ide_drive_conf *conf);
void ide_drive_detach(struct ide_state *s);
void ide_bus_restart(struct ide_bus *bus);
void ide_update_nb_sectors(struct ide_state *s);
void ide_cancel_io(struct ide_state *s);
void ide_aio_submit(struct ide_state *s, enum ide_aio_op op, int64_t offset, int64_t bytes,
		    void (*done)(struct ide_state *, struct ide_aio *, int));
int ide_error_action(struct ide_state *s, struct ide_aio *aio, int ret);
struct ide_aio *ide_aio_new(enum ide_aio_op op, int64_t offset, int64_t bytes,
			    void (*done)(struct ide_state *, struct ide_aio *, int));
void ide_aio_issue(struct ide_state *s, struct ide_aio *aio);
extern const struct vd_blk_dev_ops ide_hd_dev_ops;

/* atapi.c: the PACKET protocol */
void ide_atapi_identify(struct ide_state *s);
void ide_atapi_cmd(struct ide_state *s);
void ide_atapi_reply_end(struct ide_state *s);
void ide_atapi_reset(struct ide_state *s);
void ide_atapi_dma_begin(struct ide_state *s);
extern const struct vd_blk_dev_ops ide_cd_dev_ops;
/* ... and what the MMC commands answer with */
bool atapi_tray_open(struct ide_state *s);
bool atapi_media_present(struct ide_state *s);
bool atapi_validate_bcl(struct ide_state *s);
void atapi_cmd_ok(struct ide_state *s);
/* CHECK CONDITION with sense @key / @asc (ACS 7.18.5). */
void atapi_cmd_error(struct ide_state *s, uint8_t key, uint8_t asc);
/* Send @size bytes of reply from io_buffer (at most @max, the allocation
 * length), by PIO or DMA as the packet asked. */
void atapi_reply(struct ide_state *s, uint32_t size, uint32_t max);
/* Send @nb CD sectors from @lba, @secsize (2048, or 2352 raw) each. */
void atapi_read(struct ide_state *s, int64_t lba, uint64_t nb, uint32_t secsize);

/* mmc.c: the command table the dispatcher in atapi.c reads.  A handler
 * gets the packet and io_buffer for its reply. */
enum {
	ALLOW_UA = 1 << 0, /* runs with a unit attention pending */
	CHECK_READY = 1 << 1, /* needs a medium */
	NONDATA = 1 << 2, /* no data phase: BCL may be 0 */
	CONDDATA = 1 << 3, /* checks the BCL itself */
};

typedef void atapi_fn(struct ide_state *s, const uint8_t *cdb, uint8_t *buf);

struct atapi_cmd {
	atapi_fn *fn;
	uint8_t flags;
};
extern const struct atapi_cmd atapi_cmd_table[256];

/* bmdma.c: the bus master */
extern const struct vd_mem_ops ide_bmdma_ops;
void bmdma_reset(struct ide_bmdma *bm);
/* Walk the PRD table for @limit bytes: fills s->sg, returns the bytes the
 * sg list covers (at most @limit) and in *prd_bytes all the bytes the table
 * described. */
uint64_t bmdma_prepare(struct ide_bmdma *bm, struct ide_state *s, uint64_t limit,
		       uint64_t *prd_bytes);
/* Copy between the sg list (from byte @pos) and @buf; guest memory errors
 * are ignored as a real bus master's master aborts would be. */
void bmdma_rw(struct ide_bmdma *bm, struct ide_state *s, uint64_t pos, void *buf, uint64_t len,
	      bool to_memory);
void bmdma_set_inactive(struct ide_bmdma *bm, bool stay_active);

/* bmdma.c: the DMA transfer of a command */
void ide_sector_start_dma(struct ide_state *s, enum ide_dma_cmd cmd);
void ide_dma_error(struct ide_state *s);
void ide_start_dma(struct ide_state *s, enum ide_dma_cmd cmd, uint64_t total);
void ide_dma_begin(struct ide_state *s);
void ide_dma_cancel(struct ide_state *s);

#endif
