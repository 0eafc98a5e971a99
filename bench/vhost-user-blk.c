/* SPDX-License-Identifier: MIT */
/*
 * A vhost-user-blk front end for benchmarks: maps memfd "guest" memory,
 * sets up QUEUES split virtqueues (virtio 1.2 section 2.7) over the
 * vhost-user protocol (QEMU docs/interop/vhost-user.rst), keeps DEPTH 4 KiB
 * requests in flight on each for SECONDS and prints IOPS.  Drives `vdisk serve` and
 * qemu-storage-daemon alike, so the two can be compared without a VM.
 *
 *   vhost-user-blk SOCKET [-d DEPTH] [-q QUEUES] [-t SECONDS] [-w] [-s DISK_BYTES]
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define QSIZE 256
#define MEM (64u << 20)
#define GPA 0x100000ull
#define UVA 0x7f0000000000ull
#define DESC 0x0
#define AVAIL 0x1000
#define USED 0x2000
#define REQS 0x10000 /* per slot: 16 header + status at +16 */
#define DATA 0x100000 /* per slot: 4096 */
#define MAX_QUEUES 4

static int sock;
static int stopping; /* measurement done: server errors are only reported */

static void die(const char *m)
{
	fprintf(stderr, "vhost-user-blk bench: %s\n", m);
	exit(1);
}

static void msg(uint32_t req, const void *p, uint32_t size, int fd)
{
	uint8_t buf[64];
	uint32_t flags = 1;
	struct iovec iov = {.iov_base = buf, .iov_len = 12 + size};
	union {
		char c[CMSG_SPACE(sizeof(int))];
		struct cmsghdr a;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	memcpy(buf, &req, 4);
	memcpy(buf + 4, &flags, 4);
	memcpy(buf + 8, &size, 4);
	if (size)
		memcpy(buf + 12, p, size);
	if (fd >= 0) {
		struct cmsghdr *cm;
		mh.msg_control = u.c;
		mh.msg_controllen = sizeof(u.c);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) != (ssize_t)(12 + size) && !stopping)
		die("send failed");
}

static uint64_t get_u64(uint32_t req)
{
	uint8_t b[20];
	uint64_t v;

	msg(req, NULL, 0, -1);
	if (recv(sock, b, 20, MSG_WAITALL) != 20)
		die("no reply");
	memcpy(&v, b + 12, 8);
	return v;
}

static void vring_state(uint32_t req, uint32_t idx, uint32_t num)
{
	uint32_t s[2] = {idx, num};
	msg(req, s, 8, -1);
}

struct ring {
	unsigned q;
	uint8_t *desc, *avail_ring, *used, *reqs;
	uint64_t reqs_gpa, data_gpa;
	uint16_t avail, used_seen;
	int callfd, kickfd;
};

static uint8_t *m;
static uint64_t disk = 1ull << 30, rnd = 88172645463325252ull;
static int write_;

/* Slot s of a ring uses descriptors 3s..3s+2. */
static void submit(struct ring *r, unsigned s)
{
	uint32_t type = write_ ? 1 : 0;
	uint64_t sector;
	uint16_t head = (uint16_t)(3 * s);

	rnd ^= rnd << 13;
	rnd ^= rnd >> 7;
	rnd ^= rnd << 17;
	sector = (rnd % (disk / 4096)) * 8;
	memcpy(r->reqs + 32 * (size_t)s, &type, 4);
	memcpy(r->reqs + 32 * (size_t)s + 8, &sector, 8);
	memcpy(r->avail_ring + 4 + 2 * (r->avail % QSIZE), &head, 2);
	r->avail++;
	__atomic_store_n((uint16_t *)(r->avail_ring + 2), r->avail, __ATOMIC_RELEASE);
}

static void setup_ring(struct ring *r, unsigned q, int depth)
{
	uint64_t off = (uint64_t)q * 0x4000;
	uint64_t a[4] = {UVA + DESC + off, UVA + USED + off, UVA + AVAIL + off, 0};
	uint32_t h[2] = {q, 0};
	uint8_t b[40];
	uint64_t z = q;

	r->q = q;
	/* The rings start at index 0 (VHOST_USER_SET_VRING_BASE below). */
	r->avail = 0;
	r->used_seen = 0;
	r->desc = m + DESC + off;
	r->avail_ring = m + AVAIL + off;
	r->used = m + USED + off;
	r->reqs = m + REQS + (size_t)q * 0x8000;
	r->reqs_gpa = GPA + REQS + (uint64_t)q * 0x8000;
	r->data_gpa = GPA + DATA + (uint64_t)q * 0x100000;
	vring_state(8, q, QSIZE);
	vring_state(10, q, 0);
	memcpy(b, h, 8);
	memcpy(b + 8, a, 32);
	msg(9, b, 40, -1);
	r->callfd = eventfd(0, EFD_NONBLOCK);
	r->kickfd = eventfd(0, EFD_NONBLOCK);
	msg(13, &z, 8, r->callfd);
	msg(12, &z, 8, r->kickfd);
	vring_state(18, q, 1);
	for (int s = 0; s < depth; s++) {
		uint8_t *d = r->desc + 48 * (size_t)s;
		uint64_t ad[3] = {r->reqs_gpa + 32 * (uint64_t)s, r->data_gpa + 4096 * (uint64_t)s,
				  r->reqs_gpa + 32 * (uint64_t)s + 16};
		uint32_t l[3] = {16, 4096, 1};
		uint16_t f[3] = {1, (uint16_t)(1 | (write_ ? 0 : 2)), 2};

		for (int k = 0; k < 3; k++) {
			uint16_t next = (uint16_t)(3 * s + k + 1);
			memcpy(d + 16 * k, &ad[k], 8);
			memcpy(d + 16 * k + 8, &l[k], 4);
			memcpy(d + 16 * k + 12, &f[k], 2);
			memcpy(d + 16 * k + 14, &next, 2);
		}
	}
}

/* Take the ring's completions and submit as many new requests. */
static int reap(struct ring *r, uint64_t *ops)
{
	uint16_t ui = __atomic_load_n((uint16_t *)(r->used + 2), __ATOMIC_ACQUIRE);
	int n = 0;

	while (r->used_seen != ui) {
		uint32_t id;

		memcpy(&id, r->used + 4 + 8 * (r->used_seen % QSIZE), 4);
		if (r->reqs[32 * (id / 3) + 16] != 0)
			die("request failed");
		r->used_seen++;
		(*ops)++;
		submit(r, id / 3);
		n++;
	}
	if (n)
		eventfd_write(r->kickfd, 1);
	return n;
}

int main(int argc, char **argv)
{
	int depth = 32, secs = 5, queues = 1, opt, memfd;
	uint64_t feats, ops = 0;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct ring rings[MAX_QUEUES];
	struct timespec t0, t1;
	double el;

	if (argc < 2)
		die("usage: vhost-user-blk SOCKET [-d DEPTH] [-q QUEUES] [-t SECONDS] [-w] "
		    "[-s BYTES]");
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[1]);
	optind = 2;
	while ((opt = getopt(argc, argv, "d:q:t:ws:")) != -1) {
		if (opt == 'd')
			depth = atoi(optarg);
		else if (opt == 'q')
			queues = atoi(optarg);
		else if (opt == 't')
			secs = atoi(optarg);
		else if (opt == 'w')
			write_ = 1;
		else if (opt == 's')
			disk = strtoull(optarg, NULL, 0);
	}
	if (depth < 1 || depth > QSIZE / 3)
		die("depth must be 1..85");
	if (queues < 1 || queues > MAX_QUEUES)
		die("queues must be 1..4");
	sock = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("cannot connect");
	memfd = memfd_create("guest", 0);
	if (memfd < 0 || ftruncate(memfd, MEM) < 0)
		die("memfd");
	m = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (m == MAP_FAILED)
		die("mmap");
	memset(m, 0, MEM);

	feats = get_u64(1);
	{
		/* CONFIG and MQ. */
		uint64_t pf = get_u64(15) & ((1ull << 9) | 1ull), f;
		msg(16, &pf, 8, -1);
		msg(3, NULL, 0, -1);
		f = feats & ((1ull << 32) | (1ull << 30));
		msg(2, &f, 8, -1);
	}
	if (queues > 1 && get_u64(17) < (uint64_t)queues)
		die("the server has fewer queues");
	{
		uint64_t mt[5] = {0, GPA, MEM, UVA, 0};
		uint32_t n[2] = {1, 0};
		uint8_t b[40];
		memcpy(b, n, 8);
		memcpy(b + 8, &mt[1], 32);
		msg(5, b, 40, memfd);
	}
	for (int q = 0; q < queues; q++)
		setup_ring(&rings[q], (unsigned)q, depth);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int q = 0; q < queues; q++) {
		for (int s = 0; s < depth; s++)
			submit(&rings[q], (unsigned)s);
		eventfd_write(rings[q].kickfd, 1);
	}
	for (;;) {
		struct pollfd p[MAX_QUEUES];
		int n = 0;

		for (int q = 0; q < queues; q++)
			n += reap(&rings[q], &ops);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		if (el >= secs)
			break;
		if (!n) {
			for (int q = 0; q < queues; q++)
				p[q] = (struct pollfd){.fd = rings[q].callfd, .events = POLLIN};
			poll(p, (nfds_t)queues, 100);
			for (int q = 0; q < queues; q++) {
				eventfd_t v;
				eventfd_read(rings[q].callfd, &v);
			}
		}
	}
	printf("%s depth=%d queues=%d iops=%.0f\n", write_ ? "randwrite" : "randread", depth,
	       queues, (double)ops / el);
	/* Printed even if the server fails while the rings stop. */
	fflush(stdout);
	/* Stop the rings politely (waits for the requests in flight). */
	stopping = 1;
	for (int q = 0; q < queues; q++) {
		uint8_t b[20];

		/* The measurement is done: a server that fails here
		 * (libvhost-user sometimes panics) is only reported. */
		vring_state(11, (uint32_t)q, 0);
		if (recv(sock, b, 20, MSG_WAITALL) != 20) {
			fprintf(stderr, "vhost-user-blk bench: no GET_VRING_BASE reply\n");
			break;
		}
	}
	close(sock);
	return 0;
}
