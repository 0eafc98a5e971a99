#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted luks images of tests/fuzz/corpus/luks/.

fuzz-luks.c opens each input with the secret "fuzz" = b"pw" (and without a
secret, and header-only).  The corpus holds a small valid LUKS1 image
(aes-128 cbc-essiv:sha256, sha256, 1000 iterations, slot 0 active, a 4 KiB
payload) and copies of it with one thing broken: every header field, the
slots (state, stripes, iterations, offsets, overlaps), the payload offset,
key bytes, cipher names, truncation.  Each must be refused with a message,
quickly (no huge allocation, no PBKDF2 loop of billions), or read cleanly.

Needs python3-cryptography (AES) to regenerate; the corpus is committed.
Usage: make-luks-corpus.py [OUTDIR]
"""
import hashlib
import os
import struct
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "luks")
PASSWORD = b"pw"
STRIPES = 4000
SECTOR = 512
KEY_BYTES = 16  # aes-128 cbc
HASH = "sha256"
ITERS = 1000


def diffuse(block):
    ds = hashlib.new(HASH).digest_size
    out = bytearray()
    for i in range(0, len(block), ds):
        piece = block[i:i + ds]
        out += hashlib.new(HASH, struct.pack(">I", i // ds) + piece).digest()[:len(piece)]
    return bytes(out)


def af_split(key, rnd):
    block = bytes(len(key))
    stripes = []
    for i in range(STRIPES - 1):
        s = rnd[i * len(key):(i + 1) * len(key)]
        stripes.append(s)
        block = diffuse(bytes(a ^ b for a, b in zip(block, s)))
    stripes.append(bytes(a ^ b for a, b in zip(block, key)))
    return b"".join(stripes)


def essiv_cbc(key, data, encrypt, first_sector=0):
    salt = hashlib.sha256(key).digest()
    ecb = Cipher(algorithms.AES(salt), modes.ECB()).encryptor()
    out = bytearray()
    for off in range(0, len(data), SECTOR):
        iv = ecb.update(struct.pack("<Q", first_sector + off // SECTOR) + bytes(8))
        c = Cipher(algorithms.AES(key), modes.CBC(iv))
        op = c.encryptor() if encrypt else c.decryptor()
        out += op.update(data[off:off + SECTOR]) + op.finalize()
    return bytes(out)


def split_sectors():
    sectors = (KEY_BYTES * STRIPES + SECTOR - 1) // SECTOR
    return (sectors + 7) // 8 * 8


def build(payload_bytes=4096, **kw):
    """A valid image; keyword arguments override header fields."""
    master = bytes(range(1, KEY_BYTES + 1))
    mk_salt = bytes(range(32, 64))
    slot_salt = bytes(range(64, 96))
    n = split_sectors()
    payload = 8 + 8 * n  # the layout; kw["payload"] only changes the header field
    h = bytearray(592)
    h[0:6] = kw.get("magic", b"LUKS\xba\xbe")
    struct.pack_into(">H", h, 6, kw.get("version", 1))
    h[8:40] = kw.get("cipher", b"aes").ljust(32, b"\0")[:32]
    h[40:72] = kw.get("mode", b"cbc-essiv:sha256").ljust(32, b"\0")[:32]
    h[72:104] = kw.get("hash", HASH.encode()).ljust(32, b"\0")[:32]
    struct.pack_into(">II", h, 104, kw.get("payload", payload), kw.get("key_bytes", KEY_BYTES))
    digest = hashlib.pbkdf2_hmac(HASH, master, mk_salt, ITERS, 20)
    h[112:132] = kw.get("digest", digest)
    h[132:164] = mk_salt
    struct.pack_into(">I", h, 164, kw.get("mk_iters", ITERS))
    h[168:208] = kw.get("uuid", b"00000000-1111-4222-8333-444444444444").ljust(40, b"\0")[:40]
    for i in range(8):
        active = 0x00AC71F3 if i == 0 else 0x0000DEAD
        active = kw.get("active%d" % i, active)
        iters = kw.get("iters%d" % i, ITERS if i == 0 else 0)
        off = kw.get("offset%d" % i, 8 + i * n)
        stripes = kw.get("stripes%d" % i, STRIPES)
        struct.pack_into(">II32sII", h, 208 + 48 * i, active, iters, slot_salt, off, stripes)
    if "header" in kw:
        kw["header"](h)
    img = bytearray(payload * SECTOR + payload_bytes)
    img[0:592] = h
    slot_key = hashlib.pbkdf2_hmac(HASH, PASSWORD, slot_salt, ITERS, KEY_BYTES)
    rnd = hashlib.shake_256(b"vdisk luks corpus").digest((STRIPES - 1) * KEY_BYTES)
    material = essiv_cbc(slot_key, af_split(master, rnd), True)
    img[8 * SECTOR:8 * SECTOR + len(material)] = material
    # The payload: sector i holds the byte i + 1, encrypted.
    plain = b"".join(bytes([i % 255 + 1]) * SECTOR for i in range(payload_bytes // SECTOR))
    img[payload * SECTOR:] = essiv_cbc(master, plain, True)
    return bytes(img[:kw.get("truncate", len(img))])


def header_only(**kw):
    """The 4 KiB header area of a broken image (refused before key material)."""
    return build(truncate=4096, **kw)


def cases():
    n = split_sectors()
    yield "valid", build()
    yield "valid-no-payload", build(payload_bytes=0)
    yield "wrong-digest", build(digest=bytes(20))
    yield "payload-past-eof", build(truncate=(8 + 8 * n) * SECTOR - 512)
    yield "truncated-4k", build(truncate=4096)
    yield "truncated-header", build(truncate=300)
    yield "bad-magic", header_only(magic=b"LUKS\xba\xbf")
    yield "version-2", header_only(version=2)
    yield "version-0", header_only(version=0)
    yield "cipher-unknown", header_only(cipher=b"cast5")
    yield "cipher-unterminated", header_only(cipher=b"a" * 32)
    yield "mode-unterminated", header_only(mode=b"x" * 32)
    yield "hash-unterminated", header_only(hash=b"s" * 32)
    yield "mode-no-ivgen", header_only(mode=b"cbc")
    yield "mode-ecb", header_only(mode=b"ecb-plain64")
    yield "ivgen-unknown", header_only(mode=b"cbc-benbi")
    yield "essiv-no-hash", header_only(mode=b"cbc-essiv")
    yield "essiv-sha512", header_only(mode=b"cbc-essiv:sha512")
    yield "essiv-sha1", header_only(mode=b"cbc-essiv:sha1")
    yield "plain-with-hash", header_only(mode=b"cbc-plain64:sha256")
    yield "hash-md5", header_only(hash=b"md5")
    yield "key-bytes-0", header_only(key_bytes=0)
    yield "key-bytes-17", header_only(key_bytes=17)
    yield "key-bytes-huge", header_only(key_bytes=0xFFFFFFFF)
    yield "key-bytes-64-cbc", header_only(key_bytes=64)
    yield "xts-odd-key", header_only(mode=b"xts-plain64", key_bytes=33)
    yield "uuid-unterminated", header_only(uuid=b"u" * 40)
    yield "stripes-1", header_only(stripes0=1)
    yield "stripes-huge", header_only(stripes3=0xFFFFFFFF)
    yield "slot-state-bad", header_only(active2=0x12345678)
    yield "slot-iters-zero", header_only(iters0=0)
    yield "slot-iters-huge", header_only(iters0=0xFFFFFFFF)
    yield "slot-iters-cap", header_only(iters0=(1 << 25) + 1)
    yield "mk-iters-zero", header_only(mk_iters=0)
    yield "mk-iters-huge", header_only(mk_iters=0xFFFFFFFF)
    yield "slot-in-header", header_only(offset0=1)
    yield "slot-offset-huge", header_only(offset5=0xFFFFFFF0)
    yield "slot-past-payload", header_only(offset7=8 + 8 * n - 4)
    yield "slots-overlap", header_only(offset1=8 + n // 2)
    yield "slots-same", header_only(offset4=8)
    yield "payload-zero", header_only(payload=0)
    yield "payload-huge", header_only(payload=0xFFFFFFFF)
    yield "payload-inside-slots", header_only(payload=8 + n)
    yield "all-slots-disabled", build(active0=0x0000DEAD)
    yield "slot1-active-bad-material", build(active1=0x00AC71F3, iters1=ITERS)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in cases():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
