# vdisk: GNU make build.  `make` builds libvdisk (static and shared), vdisk.pc
# and the vdisk command into $(BUILD)/.  See README.md for the targets.

VERSION := 0.1.0
PREFIX ?= /usr/local
BUILD ?= build
CC ?= cc
SANITIZE ?=

PKG_CONFIG ?= pkg-config
HAVE_URING := $(shell $(PKG_CONFIG) --exists liburing 2>/dev/null && echo 1)
HAVE_ZSTD := $(shell $(PKG_CONFIG) --exists libzstd 2>/dev/null && echo 1)
HAVE_DEFLATE := $(shell $(PKG_CONFIG) --exists libdeflate 2>/dev/null && echo 1)
# librbd (the rbd driver): Debian's librbd-dev ships no .pc file, so fall back
# to finding the header.  RBD=0 builds without it.
ifneq ($(RBD),0)
HAVE_RBD := $(shell $(PKG_CONFIG) --exists librbd 2>/dev/null && echo 1 || \
	(echo '\#include <rbd/librbd.h>' | $(CC) -E -x c - >/dev/null 2>&1 && echo 1))
endif

CFLAGS ?= -O2 -g
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wmissing-prototypes -Wstrict-prototypes \
	-Wshadow -Wno-missing-field-initializers
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -fPIC -Iinclude -I. $(WARN) -pthread \
	-DVDISK_VERSION='"$(VERSION)"' -MMD -MP
LIBS := -pthread -lz $(shell $(PKG_CONFIG) --libs jansson 2>/dev/null || echo -ljansson)
# bzip2 chunks of dmg images; Debian's libbz2-dev has no .pc file.
LIBS += $(shell $(PKG_CONFIG) --libs bzip2 2>/dev/null || echo -lbz2)
BASE_CFLAGS += $(shell $(PKG_CONFIG) --cflags jansson 2>/dev/null)
ifeq ($(HAVE_URING),1)
BASE_CFLAGS += -DVD_HAVE_URING $(shell $(PKG_CONFIG) --cflags liburing)
LIBS += $(shell $(PKG_CONFIG) --libs liburing)
endif
# libdeflate compresses qcow2 zlib clusters (zlib still decompresses them).
ifeq ($(HAVE_DEFLATE),1)
BASE_CFLAGS += -DVD_HAVE_LIBDEFLATE $(shell $(PKG_CONFIG) --cflags libdeflate)
LIBS += $(shell $(PKG_CONFIG) --libs libdeflate)
endif
ifeq ($(HAVE_ZSTD),1)
BASE_CFLAGS += -DVD_HAVE_ZSTD $(shell $(PKG_CONFIG) --cflags libzstd)
LIBS += $(shell $(PKG_CONFIG) --libs libzstd)
endif
# librbd and librados are loaded with dlopen() on first use
# (block/drivers/rbd-lib.h): only their headers are needed to build.
ifeq ($(HAVE_RBD),1)
BASE_CFLAGS += -DVD_HAVE_RBD
LIBS += -ldl
endif
# TLS for the NBD server.
BASE_CFLAGS += $(shell $(PKG_CONFIG) --cflags gnutls 2>/dev/null)
LIBS += $(shell $(PKG_CONFIG) --libs gnutls 2>/dev/null || echo -lgnutls)
# Ciphers, hashes and PBKDF2 for luks (nettle is GnuTLS's crypto library).
BASE_CFLAGS += $(shell $(PKG_CONFIG) --cflags nettle 2>/dev/null)
LIBS += $(shell $(PKG_CONFIG) --libs nettle 2>/dev/null || echo -lnettle)
ifneq ($(SANITIZE),)
BASE_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LIBS += -fsanitize=address,undefined
CFLAGS := -O1 -g
endif
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS)

# The compiler flags (the libraries found) in a file that changes only when
# they do: every object depends on it, so that a build after installing a
# library (scripts/install-deps) recompiles with it instead of keeping
# objects built without it (io_uring silently missing).
FLAGS_FILE := $(BUILD)/.cflags
FLAGS_NOW := $(CC) $(ALL_CFLAGS) | $(LIBS)
ifneq ($(file <$(FLAGS_FILE)),$(FLAGS_NOW))
$(shell mkdir -p $(BUILD))
$(file >$(FLAGS_FILE),$(FLAGS_NOW))
endif

LIB_DIRS := util block block/drivers block/drivers/qcow2 block/drivers/nbd-client block/drivers/vmdk block/drivers/vhdx memory hw hw/pci hw/ide hw/virtio \
	machine monitor export export/nbd export/vhost-user-blk
LIB_SRCS := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
TOOL_SRCS := $(wildcard tools/*.c)
UNIT_SRCS := $(wildcard tests/unit/test-*.c)
TESTLIB_SRCS := $(wildcard tests/lib/*.c)
BENCH_SRCS := $(wildcard bench/*.c)

LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
TOOL_OBJS := $(TOOL_SRCS:%.c=$(BUILD)/%.o)
TESTLIB_OBJS := $(TESTLIB_SRCS:%.c=$(BUILD)/%.o)
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)
BENCH_BINS := $(BENCH_SRCS:%.c=$(BUILD)/%)

STATIC_LIB := $(BUILD)/libvdisk.a
SHARED_LIB := $(BUILD)/libvdisk.so.0
VDISK := $(BUILD)/vdisk

.PHONY: all lib tools tests benches run check check-unit check-interop check-fault \
	check-format check-layering check-fuzz check-crash check-crash-sim check-guest check-guest-qsd \
	check-guest-rbd bench-vhost-user bench-ide check-asan format install clean deps bench fuzz soak \
	abi-map

# Keep intermediate objects of tests and benchmarks (incremental builds).
.SECONDARY:

all: $(STATIC_LIB) $(SHARED_LIB) $(BUILD)/vdisk.pc $(VDISK)

$(BUILD)/%.o: %.c $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(STATIC_LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# libvdisk.map exports exactly what include/vdisk/*.h declares; every other
# symbol (the vd_ helpers of block/internal.h and the like) is local.
$(SHARED_LIB): $(LIB_OBJS) libvdisk.map
	$(CC) -shared -Wl,-soname,libvdisk.so.0 -Wl,--version-script=libvdisk.map -o $@ \
		$(LIB_OBJS) $(LIBS)
	ln -sf libvdisk.so.0 $(BUILD)/libvdisk.so

$(BUILD)/vdisk.pc: vdisk.pc.in Makefile
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS@|$(LIBS)|' $< > $@

$(VDISK): $(TOOL_OBJS) $(STATIC_LIB)
	$(CC) -o $@ $(TOOL_OBJS) $(STATIC_LIB) $(LIBS)

$(BUILD)/tests/unit/%: $(BUILD)/tests/unit/%.o $(TESTLIB_OBJS) $(STATIC_LIB)
	$(CC) -o $@ $< $(TESTLIB_OBJS) $(STATIC_LIB) $(LIBS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(STATIC_LIB)
	$(CC) -o $@ $< $(STATIC_LIB) $(LIBS)

tests: $(UNIT_BINS) $(VDISK)
benches: $(BENCH_BINS)

# Dependencies: install them when missing and root, else say how.
deps:
	@scripts/install-deps --ensure

# A sub-make, so that the build sees what deps just installed (HAVE_URING and
# the pkg-config flags are computed when the Makefile is read).
run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-main.sh $(VDISK)

# The fast suites; the summary line is the runner's last line.
check: deps
	@$(MAKE) --no-print-directory all tests benches
	@BUILD=$(BUILD) tests/run.sh format layering unit interop image hw fault fuzz-corpus

check-unit: tests
	@BUILD=$(BUILD) tests/run.sh unit
check-interop: tests
	@BUILD=$(BUILD) tests/run.sh interop
check-fault: tests
	@BUILD=$(BUILD) tests/run.sh fault
check-format:
	@BUILD=$(BUILD) tests/run.sh format
check-layering:
	@BUILD=$(BUILD) tests/run.sh layering
# A real Linux guest (TCG) on the vhost-user-blk export; also run by the
# interop suite.  check-guest-qsd runs the same guest on qemu-storage-daemon.
check-guest: all
	@BUILD=$(BUILD) tests/guest/run.sh
check-guest-qsd:
	@tests/guest/run.sh --server qsd
# The same guest on an RBD image (a throw-away ceph cluster, docs/rbd.md).
check-guest-rbd: all
	@BUILD=$(BUILD) tests/guest/run.sh --rbd

# Long runs, not part of make check: 1000 SIGKILLs per format.
check-crash: all
	@BUILD=$(BUILD) CRASH_ITERATIONS=$${CRASH_ITERATIONS:-1000} TEST_TIMEOUT=7200 \
		tests/run.sh image
# Long run, not part of make check: 100,000 power cuts of the crash-sim
# campaign (tests/image/crash-sim.sh; about 40 s per 1,000 points here).
check-crash-sim: all
	@BUILD=$(BUILD) CRASH_SIM_POINTS=$${CRASH_SIM_POINTS:-100000} \
		bash tests/image/crash-sim.sh
check-fuzz: $(STATIC_LIB)
	@BUILD=$(BUILD) tests/run.sh fuzz-corpus
# Long runs, not part of make check: every fuzz target under libFuzzer for
# FUZZ_SECONDS each (crashes in build-fuzz/crashes/NAME/), and `vdisk serve`
# under 8 verifying clients for SOAK_SECONDS (docs/reliability.md).
fuzz:
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-60} bash tests/fuzz/run-all.sh
soak: all
	@BUILD=$(BUILD) SOAK_SECONDS=$${SOAK_SECONDS:-600} bash tests/soak/soak.sh

# Unit suites and a reduced interop set under ASan + UBSan, in their own tree.
check-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan SANITIZE=1 all tests benches
	@BUILD=build-asan VDISK_QUICK=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 tests/run.sh unit interop image hw fault \
		fuzz-corpus

# Regenerate the export list after changing a public header; commit the
# result with the header (tests/interop/abi-exports.sh says when it is due).
abi-map:
	@scripts/public-symbols.py --map > libvdisk.map.tmp && mv libvdisk.map.tmp libvdisk.map

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

bench: all benches
	@bench/raw.sh

# The IDE device against QEMU 7.2 over qtest, and the in-process DMA cost
# (build/bench/ide-dma, built with the other benches).
bench-ide: all benches
	@BUILD=$(BUILD) bench/ide.sh

bench-vhost-user: all benches
	@BUILD=$(BUILD) bench/vhost-user.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
		$(DESTDIR)$(PREFIX)/include/vdisk $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(VDISK) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libvdisk.so.0 $(DESTDIR)$(PREFIX)/lib/libvdisk.so
	install -m 644 include/vdisk/*.h $(DESTDIR)$(PREFIX)/include/vdisk/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS@|$(LIBS)|' \
		vdisk.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/vdisk.pc
	install -m 644 docs/vdisk.1 $(DESTDIR)$(PREFIX)/share/man/man1/

clean:
	rm -rf build build-asan

-include $(LIB_OBJS:.o=.d) $(TOOL_OBJS:.o=.d) $(TESTLIB_OBJS:.o=.d) $(UNIT_BINS:=.d) \
	$(BENCH_BINS:=.d)
