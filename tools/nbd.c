/* SPDX-License-Identifier: MIT */
/*
 * vdisk nbd: serve one image over NBD with qemu-nbd's command line.
 *
 *   vdisk nbd [-r] [-f FMT] [-k SOCK | -p PORT -b ADDR] [-x NAME] [-D DESC]
 *             [-e SHARED] [-t] [--pid-file PATH] [--cache MODE] [--aio MODE]
 *             IMAGE
 *
 * As qemu-nbd, it serves until the last client leaves (unless -t), or until
 * SIGTERM / SIGINT; then it finishes the requests in flight, flushes and
 * closes the image.  Started by systemd or by libnbd's "[ ... ]" syntax
 * (LISTEN_FDS / LISTEN_PID), it serves the sockets it inherited.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vdisk/backend.h>
#include <vdisk/block.h>
#include <vdisk/export.h>
#include <vdisk/tls.h>

#include "tools/tools.h"

enum {
	OPT_PID_FILE = 512,
	OPT_CACHE,
	OPT_AIO,
	OPT_TLS_CREDS,
	OPT_TLS_AUTHZ,
	OPT_NBD_OBJECT,
	OPT_SOCKET_ACTIVATION,
	OPT_IMAGE_OPTS_NBD,
	OPT_DISCARD,
	OPT_DETECT_ZEROES,
	OPT_HANDSHAKE_LIMIT,
	OPT_POLL_MAX_NS,
};

/* Before the loop sleeps it polls the client sockets for up to this long
 * (adaptive, as QEMU's iothread poll-max-ns): a client at depth 1 then finds
 * the server awake, where a sleeping one costs a wake-up per request.  4 KiB
 * random reads at depth 1 over a unix socket, 2 vCPUs: 17k IOPS without,
 * 42k with (bench/RESULTS.md).  It must exceed the client's round trip, or
 * the adaptation turns it off: 32 us did nothing here, 64 us was enough. */
#define NBD_POLL_MAX_NS_DEFAULT 65536

static void nbd_usage(FILE *f)
{
	fprintf(f,
		"usage: vdisk nbd [OPTIONS] IMAGE\n"
		"Serve IMAGE over NBD, as qemu-nbd does.\n"
		"  -p, --port=PORT          TCP port to listen on (default 10809)\n"
		"  -b, --bind=ADDR          address to listen on (default 0.0.0.0)\n"
		"  -k, --socket=PATH        unix socket to listen on\n"
		"  -x, --export-name=NAME   export name (default \"\")\n"
		"  -D, --description=TEXT   export description\n"
		"  -r, --read-only          export read-only\n"
		"  -f, --format=FMT         image format (default: probed)\n"
		"  -e, --shared=NUM         clients at once (default 1, 0: no limit)\n"
		"  -t, --persistent         keep serving when the last client leaves\n"
		"  -A, --allocation-depth   accepted: qemu:allocation-depth is always offered\n"
		"  -n, --nocache            --cache=none\n"
		"      --cache=MODE         none, writeback (default), writethrough, directsync,\n"
		"                           unsafe\n"
		"      --aio=MODE           threads, io_uring (native)\n"
		"      --image-opts         IMAGE is an option string\n"
		"      --pid-file=PATH      write the process id\n"
		"      --handshake-limit=N  seconds a client may take to negotiate (default 10)\n"
		"      --poll-max-ns=NS     poll the clients' sockets up to NS before sleeping\n"
		"                           (default 65536, adaptive; 0: never poll)\n"
		"      --socket-activation  serve the sockets of LISTEN_FDS (also automatic\n"
		"                           when LISTEN_PID is our pid)\n"
		"      --object tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=off]\n"
		"      --object tls-creds-psk,id=ID,dir=DIR,endpoint=server\n"
		"      --tls-creds=ID       require TLS with those credentials\n"
		"      --object authz-simple,id=ID,identity=NAME\n"
		"      --tls-authz=ID       serve only the TLS client NAME (x509 DN or PSK user)\n"
		"Not yet: --fork, -c (kernel client).\n");
}

static struct vd_notifier term_notifier = {.fd = -1};

static void on_signal(int sig)
{
	(void)sig;
	vd_notifier_set(&term_notifier);
}

static void on_term(void *opaque)
{
	vd_notifier_test_and_clear(&term_notifier);
	vd_loop_stop(opaque);
}

static void on_idle(void *opaque)
{
	vd_loop_stop(opaque);
}

/* systemd's protocol: LISTEN_PID is ours, LISTEN_FDS sockets from fd 3. */
static int listen_fds_from_env(int *fds, int max)
{
	const char *pid = getenv("LISTEN_PID"), *n = getenv("LISTEN_FDS");
	char *end;
	long count;

	if (!pid || !n || strtol(pid, &end, 10) != (long)getpid() || *end)
		return 0;
	count = strtol(n, &end, 10);
	if (*end || count < 1 || count > max)
		return -EINVAL;
	for (int i = 0; i < count; i++) {
		int fd = 3 + i;

		fcntl(fd, F_SETFD, FD_CLOEXEC);
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		fds[i] = fd;
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return (int)count;
}

int cmd_nbd(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"port", required_argument, NULL, 'p'},
		{"bind", required_argument, NULL, 'b'},
		{"socket", required_argument, NULL, 'k'},
		{"export-name", required_argument, NULL, 'x'},
		{"description", required_argument, NULL, 'D'},
		{"read-only", no_argument, NULL, 'r'},
		{"format", required_argument, NULL, 'f'},
		{"shared", required_argument, NULL, 'e'},
		{"persistent", no_argument, NULL, 't'},
		{"allocation-depth", no_argument, NULL, 'A'},
		{"nocache", no_argument, NULL, 'n'},
		{"verbose", no_argument, NULL, 'v'},
		{"cache", required_argument, NULL, OPT_CACHE},
		{"aio", required_argument, NULL, OPT_AIO},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS_NBD},
		{"pid-file", required_argument, NULL, OPT_PID_FILE},
		{"tls-creds", required_argument, NULL, OPT_TLS_CREDS},
		{"tls-authz", required_argument, NULL, OPT_TLS_AUTHZ},
		{"object", required_argument, NULL, OPT_NBD_OBJECT},
		{"socket-activation", no_argument, NULL, OPT_SOCKET_ACTIVATION},
		{"discard", required_argument, NULL, OPT_DISCARD},
		{"detect-zeroes", required_argument, NULL, OPT_DETECT_ZEROES},
		{"handshake-limit", required_argument, NULL, OPT_HANDSHAKE_LIMIT},
		{"poll-max-ns", required_argument, NULL, OPT_POLL_MAX_NS},
		{NULL, 0, NULL, 0},
	};
	struct tool_open_args a = {.probe = true, .default_cache = "writeback"};
	struct vd_nbd_server_opts so = {0};
	struct vd_nbd_export_opts eo = {.name = ""};
	const char *pid_file = NULL, *port = NULL, *bind_addr = NULL, *sock = NULL;
	bool ro = false, persistent = false, activation = false;
	long shared = 1;
	long long poll_max_ns = NBD_POLL_MAX_NS_DEFAULT;
	int fds[8], nfds, c, status = 1;
	struct vd_loop *loop;
	struct vd_node *node = NULL;
	struct vd_nbd_server *srv = NULL;
	struct vd_nbd_export *exp = NULL;
	struct vd_error err = {0};
	const char *tls_creds = NULL, *tls_authz = NULL, *objects[8];
	char *identity = NULL;
	int n_objects = 0;
	char *end;

	while ((c = getopt_long(argc, argv, "hp:b:k:x:D:rf:e:tAnv", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			nbd_usage(stdout);
			return 0;
		case 'p':
			port = optarg;
			break;
		case 'b':
			bind_addr = optarg;
			break;
		case 'k':
			sock = optarg;
			break;
		case 'x':
			eo.name = optarg;
			break;
		case 'D':
			eo.description = optarg;
			break;
		case 'r':
			ro = true;
			break;
		case 'f':
			a.format = optarg;
			break;
		case 'e':
			shared = strtol(optarg, &end, 10);
			if (*end || shared < 0 || shared > 65536) {
				tool_error("Invalid shared device number '%s'", optarg);
				return 1;
			}
			break;
		case 't':
			persistent = true;
			break;
		case 'A':
		case 'v':
			break;
		case 'n':
			a.cache = "none";
			break;
		case OPT_CACHE:
			a.cache = optarg;
			break;
		case OPT_AIO:
			a.aio = optarg;
			break;
		case OPT_IMAGE_OPTS_NBD:
			a.image_opts = true;
			break;
		case OPT_PID_FILE:
			pid_file = optarg;
			break;
		case OPT_SOCKET_ACTIVATION:
			activation = true;
			break;
		case OPT_HANDSHAKE_LIMIT: {
			long s = strtol(optarg, &end, 10);

			if (*end || s < 0 || s > 86400) {
				tool_error("Invalid handshake limit '%s'", optarg);
				return 1;
			}
			so.handshake_timeout_ns = s ? s * 1000000000LL : -1;
			break;
		}
		case OPT_POLL_MAX_NS:
			poll_max_ns = strtoll(optarg, &end, 10);
			if (*end || !*optarg || poll_max_ns < 0 || poll_max_ns > 1000000000LL) {
				tool_error("Invalid poll-max-ns '%s'", optarg);
				return 1;
			}
			break;
		case OPT_DISCARD:
		case OPT_DETECT_ZEROES:
			break;
		case OPT_TLS_CREDS:
			tls_creds = optarg;
			break;
		case OPT_TLS_AUTHZ:
			tls_authz = optarg;
			break;
		case OPT_NBD_OBJECT:
			if (n_objects < 8)
				objects[n_objects++] = optarg;
			break;
		default:
			return tool_usage_hint();
		}
	}
	a.filename = tool_one_filename(argc, argv);
	if (!a.filename)
		return 1;
	if (sock && (port || bind_addr)) {
		tool_error("-k and -p/-b are mutually exclusive");
		return 1;
	}
	a.writable = !ro;
	a.probe = !a.format;
	/* The credentials were taken out of argv and registered by main()
	 * (tool_take_secret_objects); other object types are not ours. */
	if (n_objects > 0) {
		tool_error("--object %s: Invalid object type", objects[0]);
		return 1;
	}
	nfds = listen_fds_from_env(fds, 8);
	if (nfds < 0) {
		tool_error("Invalid LISTEN_FDS");
		return 1;
	}
	if (activation && nfds == 0) {
		tool_error("--socket-activation: LISTEN_FDS/LISTEN_PID not set for this process");
		return 1;
	}
	if (nfds > 0 && (sock || port || bind_addr)) {
		tool_error("Cannot use -k, -p or -b with socket activation");
		return 1;
	}
	if (tls_creds &&
	    vd_tls_creds_lookup(tls_creds, VD_TLS_ENDPOINT_SERVER, &so.tls_creds, &err) < 0) {
		tool_error("%s", err.msg);
		return 1;
	}
	if (tls_authz && !tls_creds) {
		tool_error("--tls-authz is not permitted without --tls-creds");
		goto out_creds;
	}
	if (tls_authz && vd_tls_authz_lookup(tls_authz, &identity, &err) < 0) {
		tool_error("%s", err.msg);
		goto out_creds;
	}
	so.tls_authz_identity = identity;

	signal(SIGPIPE, SIG_IGN);
	tool_raise_nofile();
	loop = tool_loop_init();
	vd_loop_set_poll_params(loop, (int64_t)poll_max_ns, 0, 0);
	if (tool_open_image(&a, &node, &err) < 0) {
		tool_error("Failed to blk_new_open '%s': %s", a.filename, err.msg);
		goto out;
	}
	so.path = sock;
	so.host = bind_addr ? bind_addr : "0.0.0.0";
	so.port = port;
	so.listen_fds = fds;
	so.n_listen_fds = nfds;
	so.max_connections = (int)shared;
	if (vd_nbd_server_new(&so, &srv, &err) < 0) {
		tool_error("%s", err.msg);
		goto out;
	}
	eo.node = node;
	eo.writable = !ro;
	/* As qemu-nbd: multi-conn when more than one client may connect. */
	eo.multi_conn = shared != 1;
	if (vd_nbd_export_new(srv, &eo, &exp, &err) < 0) {
		tool_error("%s", err.msg);
		goto out;
	}
	if (!persistent)
		vd_nbd_server_set_idle_handler(srv, on_idle, loop);
	if (pid_file) {
		FILE *f = fopen(pid_file, "w");

		if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
			tool_error("Cannot write pid file '%s'", pid_file);
			goto out;
		}
	}
	if (vd_notifier_init(&term_notifier) < 0 ||
	    vd_loop_set_fd_handler(loop, term_notifier.fd, on_term, NULL, loop) < 0) {
		tool_error("Cannot set up signal handling");
		goto out;
	}
	{
		struct sigaction sa = {.sa_handler = on_signal};
		sigemptyset(&sa.sa_mask);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGHUP, &sa, NULL);
	}
	vd_loop_run(loop);
	status = 0;
out:
	vd_nbd_server_free(srv);
	if (node) {
		if (vd_node_flush(node) < 0)
			status = 1;
		vd_node_unref(node);
	}
	if (term_notifier.fd >= 0) {
		vd_loop_set_fd_handler(loop, term_notifier.fd, NULL, NULL, NULL);
		vd_notifier_cleanup(&term_notifier);
	}
	if (pid_file && status == 0)
		unlink(pid_file);
	tool_loop_fini(loop);
out_creds:
	vd_tls_creds_unref(so.tls_creds);
	free(identity);
	return status;
}
