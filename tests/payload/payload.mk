# SPDX-License-Identifier: MIT
#
# Test payloads: 16-bit real-mode BIOS images assembled from tests/payload/*.S
# into $(BUILD)/tests/payload/NAME.bin (64 KiB each, reset vector at the end),
# and fake-vcpu, which runs one through the KVM front end's exit handler where
# there is no /dev/kvm (it links $(BUILD)/libvdisk.a: build `all` first).
# From the top of the tree:
#
#	make -f tests/payload/payload.mk BUILD=build payloads
#
# or include it from the top Makefile.  The images need a compiler driver that
# assembles 32-bit x86 (-m32 -c on a .S runs only cpp and as --32) and GNU ld.

BUILD ?= build
PAYLOAD_CC ?= $(CC)
PAYLOAD_LD ?= ld
PAYLOAD_SRCS := $(wildcard tests/payload/*.S)
PAYLOADS := $(PAYLOAD_SRCS:%.S=$(BUILD)/%.bin)
FAKE_VCPU := $(BUILD)/tests/payload/fake-vcpu
# The libraries libvdisk.a needs, as the build recorded them in vdisk.pc.
FAKE_VCPU_LIBS = $(shell sed -n 's/^Libs.private: //p' $(BUILD)/vdisk.pc 2>/dev/null)

.PHONY: payloads
payloads: $(PAYLOADS) $(FAKE_VCPU)

$(BUILD)/tests/payload/%.bin: tests/payload/%.S tests/payload/payload.mk
	@mkdir -p $(dir $@)
	$(PAYLOAD_CC) -m32 -nostdlib -c -o $(@:.bin=.o) $<
	$(PAYLOAD_LD) -m elf_i386 -Ttext 0 -e start --oformat binary -o $@.tmp $(@:.bin=.o)
	@test "$$(wc -c < $@.tmp)" -eq 65536 || { echo "$@: not 64 KiB" >&2; exit 1; }
	mv $@.tmp $@

$(FAKE_VCPU): tests/payload/fake-vcpu.c include/vdisk/kvm.h $(BUILD)/libvdisk.a $(BUILD)/vdisk.pc
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -Iinclude -I. -Wall -Wextra -Werror -Wno-unused-parameter \
		-Wmissing-prototypes -Wstrict-prototypes -Wshadow -Wno-missing-field-initializers \
		-O2 -g -o $@ $< $(BUILD)/libvdisk.a $(FAKE_VCPU_LIBS)
