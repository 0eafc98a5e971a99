/* SPDX-License-Identifier: MIT */
/*
 * vdisk machine: the PC-like board with its front ends, spelled as QEMU's
 * qemu-system-x86_64 command line where the two overlap.
 *
 *   vdisk machine [-m SIZE] [-drive OPTS]... [--qtest stdio|unix:PATH[,server]]
 *                 [--qmp unix:PATH[,server[,wait=off]]] [--trace PATTERN]
 *
 * Options take one or two dashes.  -machine pc, -accel qtest|tcg, -display
 * none, -nodefaults and -bios are accepted for compatibility with QEMU test
 * command lines and change nothing; -S starts the machine paused
 * ("prelaunch") until QMP cont.  This file only parses the command line; the
 * board is machine/.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/machine.h>
#include <vdisk/trace.h>

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

int cmd_machine(int argc, char **argv)
{
	const char *qtest = NULL;
	const char **drives = NULL, **qmps = NULL;
	int nr_drives = 0, nr_qmps = 0, status = 1;
	struct vd_machine_opts mo = {0};
	struct vd_machine *m = NULL;
	struct vd_error err = {0};
	struct vd_loop *loop;

	drives = calloc((size_t)argc, sizeof(*drives));
	qmps = calloc((size_t)argc, sizeof(*qmps));
	if (!drives || !qmps) {
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
		static const char *const with_arg[] = {"m",	 "drive",   "qtest", "qmp",
						       "trace",	 "machine", "accel", "display",
						       "device", "bios",    "M",     NULL};
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
			if (strcmp(val, "qtest") && strcmp(val, "tcg")) {
				tool_error(
					"machine: accelerator '%s' is not supported (qtest only; "
					"KVM is not yet supported)",
					val);
				goto out;
			}
		} else if (!strcmp(opt, "display")) {
			if (strcmp(val, "none")) {
				tool_error("machine: there is no display (-display none only)");
				goto out;
			}
		} else if (!strcmp(opt, "device")) {
			tool_error("machine: -device %s: device models are not yet supported", val);
			goto out;
		} else if (!strcmp(opt, "bios")) {
			/* No CPU runs: firmware is never executed. */
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
		if (d->iface == VD_IF_IDE || d->iface == VD_IF_VIRTIO)
			fprintf(stderr,
				"vdisk: warning: -drive %s: if=%s devices are not yet supported; "
				"drive '%s' is opened but not attached to a controller\n",
				drives[i], d->iface == VD_IF_IDE ? "ide" : "virtio", d->id);
	}
	vd_machine_set_quit_handler(m, on_quit, loop);
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
	if (!qtest && !nr_qmps) {
		tool_error("machine: nothing to serve: give --qtest or --qmp (KVM is not yet "
			   "supported)");
		goto out_machine;
	}
	vd_loop_run(loop);
	status = 0;
out_machine:
	vd_machine_free(m);
out_loop:
	tool_loop_fini(loop);
out:
	free(drives);
	free(qmps);
	return status;
}
