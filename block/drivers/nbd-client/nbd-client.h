/* SPDX-License-Identifier: MIT */
/*
 * The NBD client's wire code (block/drivers/nbd-client/wire.c): handshake,
 * request encoding and the checked reply parser, over a transport that the
 * driver (block/drivers/nbd.c) backs with a non-blocking socket and
 * coroutines, and the fuzz target (tests/fuzz/fuzz-nbd-client.c) with memory.
 *
 * Everything the server sends is untrusted: each length, offset, cookie and
 * chunk is checked against what was asked before a byte lands in a caller's
 * buffer.  A reply that breaks the protocol makes nbd_wire_recv() return
 * -EPROTO; the caller then drops the connection (the stream is no longer in
 * step), and never reconnects to that server on its own.
 */
#ifndef VDISK_NBD_CLIENT_H
#define VDISK_NBD_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <vdisk/error.h>
#include <vdisk/iov.h>

struct nbd_transport {
	/* Read exactly the bytes @iov describes (it may be modified): 0, -EPIPE
	 * at end of stream, or -errno. */
	int (*readv)(void *opaque, struct iovec *iov, int niov);
	/* Write all of @iov (it may be modified): 0 or -errno. */
	int (*writev)(void *opaque, struct iovec *iov, int niov);
	/* NULL: no TLS.  Else the negotiation starts with NBD_OPT_STARTTLS
	 * and, once the server acknowledges it, calls this to run the TLS
	 * handshake; readv and writev then go through TLS.  0 or -errno with
	 * the error set. */
	int (*starttls)(void *opaque, struct vd_error *err);
	void *opaque;
};

/* What the handshake learnt about the export. */
struct nbd_export_info {
	uint64_t size;
	uint16_t flags; /* transmission flags, NBD_FLAG_* (0 without HAS_FLAGS) */
	bool structured; /* NBD_OPT_STRUCTURED_REPLY accepted */
	bool base_allocation; /* base:allocation selected, with this id: */
	uint32_t context_id;
	/* NBD_INFO_BLOCK_SIZE, checked; all 0 when the server sent none. */
	uint32_t min_block, pref_block, max_block;
};

/* Requests in flight on one connection (QEMU's MAX_NBD_REQUESTS). */
#define NBD_MAX_IN_FLIGHT 16

enum nbd_slot_state {
	NBD_SLOT_FREE,
	NBD_SLOT_SENDING, /* claimed; its owner is writing it */
	NBD_SLOT_AWAITING, /* on the wire; replies for its cookie are accepted */
	NBD_SLOT_DONE, /* final reply in (or the connection is gone) */
};

struct nbd_slot {
	enum nbd_slot_state state;
	uint64_t cookie;
	uint16_t type; /* NBD_CMD_* */
	uint64_t offset;
	uint32_t length;
	struct vd_qiov *qiov; /* NBD_CMD_READ: @length bytes of destination */
	uint64_t received; /* NBD_CMD_READ: bytes of data and holes so far */
	bool got_status; /* NBD_CMD_BLOCK_STATUS: the extent below */
	uint32_t status_length, status_flags;
	int ret; /* first error of the request, -errno; 0 */
	bool transport_error; /* failed by the connection, not the server */
	/* The owner, while it waits for the reply. */
	void *co;
	bool waiting;
};

struct nbd_wire {
	struct nbd_transport t;
	struct nbd_export_info info;
	struct nbd_slot slots[NBD_MAX_IN_FLIGHT];
	struct vd_qiov scratch; /* a slice of a read's qiov */
	char error[160]; /* what the last protocol error was */
};

void nbd_wire_init(struct nbd_wire *w);
void nbd_wire_cleanup(struct nbd_wire *w);

/*
 * Fixed newstyle negotiation (proto.md "Newstyle negotiation"):
 * NBD_OPT_STARTTLS first when @t has starttls (proto.md "TLS support": a
 * server without fixed newstyle or that refuses it fails the negotiation),
 * NBD_OPT_STRUCTURED_REPLY, NBD_OPT_SET_META_CONTEXT base:allocation and
 * NBD_OPT_GO asking for NBD_INFO_BLOCK_SIZE; NBD_OPT_EXPORT_NAME with servers
 * that lack NBD_OPT_GO, and oldstyle servers (empty export name only).
 * 0 or -errno with @err set.
 */
int nbd_wire_negotiate(struct nbd_transport *t, const char *export_name,
		       struct nbd_export_info *info, struct vd_error *err);

/* Send the request of @slot (type, offset, length, cookie set) with command
 * @flags and, for NBD_CMD_WRITE, @payload (@slot->length bytes). */
int nbd_wire_send(struct nbd_wire *w, const struct nbd_slot *slot, uint16_t flags,
		  const struct vd_qiov *payload);

/*
 * Read one reply (a simple reply, or one structured chunk) and apply it to
 * its slot, which must be NBD_SLOT_AWAITING.  When that was the request's
 * last reply, the slot is NBD_SLOT_DONE and *@done points to it.  Returns 0,
 * -EPROTO when the server broke the protocol (w->error says how), or the
 * transport's error.
 */
int nbd_wire_recv(struct nbd_wire *w, struct nbd_slot **done);

/* The host errno for an NBD error value (proto.md "Error values"). */
int nbd_errno_from_wire(uint32_t error);

#endif
