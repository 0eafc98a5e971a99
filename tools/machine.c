/* SPDX-License-Identifier: MIT */
/*
 * vdisk machine: the PC-like board with its front ends, spelled as QEMU's
 * qemu-system-x86_64 command line where the two overlap.
 *
 *   vdisk machine [-m SIZE] [-drive OPTS]... [--qtest stdio|unix:PATH[,server]]
 *                 [--qmp unix:PATH[,server[,wait=off]]] [--trace PATTERN]
 *   vdisk machine --accel kvm --payload FILE [-drive OPTS]... [-debugcon CHR]
 *
 * Options take one or two dashes.  -machine pc, -accel qtest, -display
 * none, -nodefaults and -bios are accepted for compatibility with QEMU test
 * command lines and change nothing (under --accel kvm, -bios names the
 * payload); -S starts the machine paused ("prelaunch") until QMP cont.
 * -device isa-debug-exit and -debugcon are QEMU's; a guest's write to
 * isa-debug-exit ends vdisk with QEMU's status (v << 1) | 1.  -device
 * virtio-blk-pci (machine/pc.c) is added after all -drive options, so it
 * may name any of them.  This file only
 * parses the command line; the board is machine/.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vdisk/machine.h>
#include <vdisk/trace.h>

#include <vdisk/kvm.h>
#include "tools/tools.h"

static void machine_usage(FILE *f)
{
	fprintf(f,
		"usage: vdisk machine [-m SIZE] [-drive OPTS]... [--qtest "
		"stdio|unix:PATH[,server]]\n"
		"                     [--qmp unix:PATH[,server[,wait=off]]] [--trace PATTERN]\n"
		"\n"
		"  -m SIZE        guest RAM (suffixes k, M, G; a plain number is MiB; default "
		"128M)\n"
		"  -drive OPTS    file=F,format=raw|qcow2,if=ide|virtio,media=disk|cdrom,index=N,\n"
		"                 readonly=on,cache=MODE,serial=S,model=M,rerror=A,werror=A and "
		"any\n"
		"                 block-layer option (file.aio=io_uring, ...)\n"
		"  --qtest CHR    serve QEMU's qtest protocol (virtual clock: "
		"clock_step/clock_set)\n"
		"  --qmp CHR      serve QMP (QEMU -qmp syntax; may be repeated)\n"
		"  -S             start paused (run state prelaunch) until QMP cont\n"
		"  --accel A      qtest (default: devices driven by --qtest) or kvm "
		"(experimental)\n"
		"  --payload F    with --accel kvm: a BIOS-style image (64 KiB multiple) run from "
		"the\n"
		"                 reset vector; isa-debug-exit at 0xf4 and -debugcon stderr are "
		"added\n"
		"  -device isa-debug-exit[,iobase=N,iosize=N]   QEMU's exit device\n"
		"  -device virtio-blk-pci,drive=ID[,num-queues=N,queue-size=N,addr=S[.F],\n"
		"          id=X,serial=S,disable-legacy=on|off]   virtio block device on a\n"
		"                 -drive if=none,id=ID (if=virtio adds one by itself)\n"
		"  -debugcon CHR  port 0xe9 console: file:PATH, stdio, stderr or none\n"
		"  --trace PAT    enable trace points matching PAT (comma-separated globs)\n");
}

/* QEMU's -m: a number without suffix is MiB. */
static int parse_ram_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (*s && *end == '\0' && errno == 0) {
		if (v > (UINT64_MAX >> 20))
			return -ERANGE;
		*out = (uint64_t)v << 20;
		return 0;
	}
	if (s[0] == 's' && s[1] == 'i' && s[2] == 'z' && s[3] == 'e' && s[4] == '=')
		s += 5;
	return vd_parse_size(s, out);
}

static void on_quit(void *opaque)
{
	vd_loop_stop(opaque);
}

static void on_quit_kvm(void *opaque)
{
	vd_kvm_request_stop(opaque);
}

/* -device isa-debug-exit[,iobase=N][,iosize=N] (QEMU's defaults 0x501, 2). */
static int parse_debug_exit(const char *val, uint32_t *iobase, uint32_t *iosize)
{
	const char *p = val + strlen("isa-debug-exit");

	*iobase = 0x501;
	*iosize = 0x02;
	while (*p == ',') {
		uint32_t *dst;
		char *end;
		unsigned long v;

		p++;
		if (!strncmp(p, "iobase=", 7))
			dst = iobase, p += 7;
		else if (!strncmp(p, "iosize=", 7))
			dst = iosize, p += 7;
		else
			return -EINVAL;
		errno = 0;
		v = strtoul(p, &end, 0);
		if (end == p || errno || v > 0x10000 || (*end && *end != ','))
			return -EINVAL;
		*dst = (uint32_t)v;
		p = end;
	}
	return *p ? -EINVAL : 0;
}

/* QEMU's -debugcon chardevs that make sense here; *fd -1 for none. */
static int open_debugcon(const char *spec, int *fd, bool *owned)
{
	*owned = false;
	if (!strcmp(spec, "none")) {
		*fd = -1;
	} else if (!strcmp(spec, "stdio")) {
		*fd = 1;
	} else if (!strcmp(spec, "stderr")) {
		*fd = 2;
	} else if (!strncmp(spec, "file:", 5)) {
		*fd = open(spec + 5, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (*fd < 0)
			return -errno;
		*owned = true;
	} else {
		return -EINVAL;
	}
	return 0;
}

int cmd_machine(int argc, char **argv)
{
	const char *qtest = NULL, *payload = NULL, *bios = NULL, *debugcon = NULL;
	bool kvm = false, debug_exit = false, debugcon_owned = false;
	uint32_t exit_iobase = 0xf4, exit_iosize = 0x04;
	int debugcon_fd = -1;
	struct vd_kvm *kvm_fe = NULL;
	const char **drives = NULL, **qmps = NULL, **devices = NULL;
	int nr_drives = 0, nr_qmps = 0, nr_devices = 0, status = 1;
	struct vd_machine_opts mo = {0};
	struct vd_machine *m = NULL;
	struct vd_error err = {0};
	struct vd_loop *loop;

	drives = calloc((size_t)argc, sizeof(*drives));
	qmps = calloc((size_t)argc, sizeof(*qmps));
	devices = calloc((size_t)argc, sizeof(*devices));
	if (!drives || !qmps || !devices) {
		tool_error("Out of memory");
		goto out;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *opt = a[0] == '-' && a[1] == '-' ? a + 2 : a[0] == '-' ? a + 1 : NULL;
		const char *val = NULL;
		const char *eq;
		char name[32];

		if (!opt) {
			tool_error("machine: unexpected argument '%s'", a);
			goto out;
		}
		/* --opt=value as well as --opt value */
		eq = strchr(opt, '=');
		if (eq && (size_t)(eq - opt) < sizeof(name) && a[1] == '-') {
			memcpy(name, opt, (size_t)(eq - opt));
			name[eq - opt] = '\0';
			opt = name;
			val = eq + 1;
		}
		if (!strcmp(opt, "h") || !strcmp(opt, "help")) {
			machine_usage(stdout);
			status = 0;
			goto out;
		}
		if (!strcmp(opt, "nodefaults")) {
			continue;
		}
		if (!strcmp(opt, "S")) {
			mo.start_paused = true;
			continue;
		}
		static const char *const with_arg[] = {
			"m",	   "drive",  "qtest", "qmp", "trace",	"machine",  "accel",
			"display", "device", "bios",  "M",   "payload", "debugcon", NULL};
		bool known = false;

		for (int k = 0; with_arg[k]; k++)
			known |= !strcmp(opt, with_arg[k]);
		if (!known) {
			tool_error("machine: unknown option '%s'", a);
			machine_usage(stderr);
			goto out;
		}
		if (!val) {
			if (i + 1 >= argc) {
				tool_error("machine: option '%s' needs an argument", a);
				goto out;
			}
			val = argv[++i];
		}
		if (!strcmp(opt, "m")) {
			if (parse_ram_size(val, &mo.ram_size) < 0 || mo.ram_size == 0) {
				tool_error("machine: invalid RAM size '%s'", val);
				goto out;
			}
		} else if (!strcmp(opt, "drive")) {
			drives[nr_drives++] = val;
		} else if (!strcmp(opt, "qtest")) {
			qtest = val;
		} else if (!strcmp(opt, "qmp")) {
			qmps[nr_qmps++] = val;
		} else if (!strcmp(opt, "trace")) {
			/* QEMU's -trace takes enable=PATTERN or PATTERN. */
			if (!strncmp(val, "enable=", 7))
				val += 7;
			if (vd_trace_enable(val) < 0) {
				tool_error("machine: out of memory");
				goto out;
			}
		} else if (!strcmp(opt, "machine") || !strcmp(opt, "M")) {
			if (strcmp(val, "pc") && strncmp(val, "pc,", 3) && strcmp(val, "type=pc")) {
				tool_error("machine: only the 'pc' machine exists");
				goto out;
			}
		} else if (!strcmp(opt, "accel")) {
			if (!strcmp(val, "tcg")) {
				tool_error("machine: -accel tcg: not supported: vdisk has no CPU "
					   "emulator; use --qtest or --accel kvm");
				goto out;
			}
			if (strcmp(val, "qtest") && strcmp(val, "kvm")) {
				tool_error("machine: accelerator '%s' is not supported (qtest or "
					   "kvm)",
					   val);
				goto out;
			}
			kvm = !strcmp(val, "kvm");
		} else if (!strcmp(opt, "payload")) {
			payload = val;
		} else if (!strcmp(opt, "debugcon")) {
			debugcon = val;
		} else if (!strcmp(opt, "display")) {
			if (strcmp(val, "none")) {
				tool_error("machine: there is no display (-display none only)");
				goto out;
			}
		} else if (!strcmp(opt, "device") && !strncmp(val, "isa-debug-exit", 14) &&
			   (val[14] == '\0' || val[14] == ',')) {
			if (debug_exit || parse_debug_exit(val, &exit_iobase, &exit_iosize) < 0) {
				tool_error("machine: -device %s: expected "
					   "isa-debug-exit[,iobase=N][,iosize=N], once",
					   val);
				goto out;
			}
			debug_exit = true;
		} else if (!strcmp(opt, "device")) {
			/* Device models: after the drives they name. */
			devices[nr_devices++] = val;
		} else if (!strcmp(opt, "bios")) {
			/* Under qtest no CPU runs: firmware is never executed. */
			bios = val;
		}
	}
	if (kvm && !payload)
		payload = bios;
	if (kvm && !payload) {
		tool_error("machine: --accel kvm needs --payload FILE");
		goto out;
	}
	if (payload && !kvm) {
		tool_error("machine: --payload runs under --accel kvm only (vdisk has no CPU "
			   "emulator)");
		goto out;
	}
	if (kvm && qtest) {
		tool_error("machine: --qtest and --accel kvm exclude each other");
		goto out;
	}
	/* A payload reports through isa-debug-exit at 0xf4 and prints on
	 * port 0xe9, as under qemu-system-x86_64 -device isa-debug-exit,
	 * iobase=0xf4,iosize=0x04 -debugcon CHR. */
	if (payload) {
		debug_exit = true;
		if (!debugcon)
			debugcon = "stderr";
	}
	if (debugcon) {
		int r = open_debugcon(debugcon, &debugcon_fd, &debugcon_owned);

		if (r < 0) {
			tool_error("machine: -debugcon %s: %s", debugcon,
				   r == -EINVAL ? "expected file:PATH, stdio, stderr or none"
						: strerror(-r));
			goto out;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	loop = tool_loop_init();
	mo.qtest_clock = qtest != NULL;
	mo.loop = loop;
	if (vd_machine_new(&mo, &m, &err) < 0) {
		tool_error("%s", err.msg);
		goto out_loop;
	}
	for (int i = 0; i < nr_drives; i++) {
		struct vd_drive *d;

		if (vd_machine_add_drive(m, drives[i], &d, &err) < 0) {
			tool_error("-drive %s: %s", drives[i], err.msg);
			goto out_machine;
		}
		/* As qemu-system's -drive without format=. */
		if (d->node && vd_node_was_probed(d->node) &&
		    !strcmp(vd_node_format(d->node), "raw") && !vd_node_is_read_only(d->node))
			tool_warn_raw_probe(vd_node_filename(d->node));
	}
	for (int i = 0; i < nr_devices; i++) {
		if (vd_machine_add_device(m, devices[i], &err) < 0) {
			tool_error("-device %s: %s", devices[i], err.msg);
			goto out_machine;
		}
	}
	if (debug_exit && vd_machine_add_debug_exit(m, exit_iobase, exit_iosize, &err) < 0) {
		tool_error("-device isa-debug-exit: %s", err.msg);
		goto out_machine;
	}
	if (debugcon_fd >= 0 && vd_machine_add_debugcon(m, 0xe9, debugcon_fd, &err) < 0) {
		tool_error("-debugcon %s: %s", debugcon, err.msg);
		goto out_machine;
	}
	if (kvm) {
		struct vd_kvm_opts ko = {.payload = payload};

		if (vd_kvm_new(m, &ko, &kvm_fe, &err) < 0) {
			tool_error("--accel kvm: %s", err.msg);
			goto out_machine;
		}
		vd_machine_set_quit_handler(m, on_quit_kvm, kvm_fe);
	} else {
		vd_machine_set_quit_handler(m, on_quit, loop);
	}
	if (qtest && vd_qtest_chardev_open(m, qtest, &err) < 0) {
		tool_error("%s", err.msg);
		goto out_machine;
	}
	for (int i = 0; i < nr_qmps; i++) {
		if (vd_machine_qmp_open(m, qmps[i], &err) < 0) {
			tool_error("-qmp %s: %s", qmps[i], err.msg);
			goto out_machine;
		}
	}
	if (kvm) {
		if (vd_kvm_run(kvm_fe, &err) < 0) {
			tool_error("--accel kvm: %s", err.msg);
			goto out_machine;
		}
	} else if (!qtest && !nr_qmps) {
		tool_error("machine: nothing to serve: give --qtest, --qmp or --accel kvm");
		goto out_machine;
	} else {
		vd_loop_run(loop);
	}
	/* The guest asked to end through isa-debug-exit: QEMU's status. */
	status = vd_machine_guest_exit_status(m) >= 0 ? vd_machine_guest_exit_status(m) : 0;
out_machine:
	vd_kvm_free(kvm_fe);
	vd_machine_free(m);
out_loop:
	tool_loop_fini(loop);
out:
	if (debugcon_owned)
		close(debugcon_fd);
	free(drives);
	free(qmps);
	free(devices);
	return status;
}
