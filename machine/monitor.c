/* SPDX-License-Identifier: MIT */
/*
 * The machine's QMP commands and events, on the monitor library
 * (include/vdisk/qmp.h), with QEMU 7.2's shapes (qapi/run-state.json):
 *   query-status -> {"status": RunState, "singlestep": false, "running": B}
 *   stop, cont   -> {}; events STOP and RESUME (no data); stop replies once
 *                   the block requests in flight are complete (QEMU's
 *                   do_vm_stop drains them)
 *   event RESET {"guest": true, "reason": "guest-reset"} after a system
 *                   reset the guest asked for (port 0xCF9)
 *   quit         -> {}; event SHUTDOWN {"guest": false, "reason": "host-qmp-quit"}
 * plus the block commands over the machine's backends (monitor/block-cmds.c).
 */
#include <errno.h>

#include <vdisk/qmp.h>

#include "machine/machine-internal.h"

static const struct vd_qmp_arg no_args[] = {{NULL}};

static json_t *qmp_query_status(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	struct vd_machine *m = opaque;

	if (vd_qmp_check_args(args, no_args, err) < 0)
		return NULL;
	return json_pack("{s:s,s:b,s:b}", "status", m->run_state, "singlestep", 0, "running",
			 m->running);
}

static json_t *qmp_stop(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	if (vd_qmp_check_args(args, no_args, err) < 0)
		return NULL;
	/* In the command's coroutine: the drain yields, the loop goes on. */
	vd_machine_stop(opaque);
	return NULL;
}

static json_t *qmp_cont(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	if (vd_qmp_check_args(args, no_args, err) < 0)
		return NULL;
	vd_machine_cont(opaque);
	return NULL;
}

static void quit_bh(void *opaque)
{
	struct vd_machine *m = opaque;

	/* QEMU sends quit's reply first, then SHUTDOWN, then closes. */
	vd_qmp_emit_event(m->qmp, "SHUTDOWN",
			  json_pack("{s:b,s:s}", "guest", 0, "reason", "host-qmp-quit"));
	vd_machine_request_quit(m);
}

static json_t *qmp_quit(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	struct vd_machine *m = opaque;

	if (vd_qmp_check_args(args, no_args, err) < 0)
		return NULL;
	/* The event and the quit come after the reply has gone out. */
	vd_loop_oneshot(m->loop, quit_bh, m);
	return NULL;
}

void machine_qmp_state_changed(struct vd_machine *m, bool running)
{
	if (m->qmp)
		vd_qmp_emit_event(m->qmp, running ? "RESUME" : "STOP", NULL);
}

void machine_qmp_reset_event(struct vd_machine *m)
{
	if (m->qmp)
		vd_qmp_emit_event(m->qmp, "RESET",
				  json_pack("{s:b,s:s}", "guest", 1, "reason", "guest-reset"));
}

void machine_qmp_close(struct vd_machine *m)
{
	if (m->qmp_block) {
		vd_qmp_block_free(m->qmp_block);
		m->qmp_block = NULL;
	}
	if (m->qmp) {
		vd_qmp_server_free(m->qmp);
		m->qmp = NULL;
	}
}

int vd_machine_qmp_open(struct vd_machine *m, const char *spec, struct vd_error *err)
{
	static const struct {
		const char *name;
		vd_qmp_handler *fn;
	} cmds[] = {
		{"query-status", qmp_query_status},
		{"stop", qmp_stop},
		{"cont", qmp_cont},
		{"quit", qmp_quit},
	};
	int ret;

	if (!m->qmp) {
		ret = vd_qmp_server_new(m->loop, &m->qmp);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Could not create the QMP server");
		for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
			ret = vd_qmp_register(m->qmp, cmds[i].name, cmds[i].fn, m);
			if (ret < 0)
				goto fail;
		}
		ret = vd_qmp_block_init(m->qmp, m->blk_reg, &m->qmp_block);
		if (ret < 0)
			goto fail;
	}
	return vd_qmp_server_open(m->qmp, spec, err);

fail:
	machine_qmp_close(m);
	return vd_error_setg_errno(err, ret, "Could not set up the QMP commands");
}
