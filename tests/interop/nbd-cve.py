#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Regression tests for the NBD CVEs of docs/reference (perf-anchors.md 6.3),
spoken byte by byte to a running `vdisk nbd -t -e 0 -k SOCK --handshake-limit 2`
whose export "" is 1 MiB, writable.

  CVE-2017-15118  export names over 4096 bytes: refused, session goes on
  CVE-2017-15119  options over 64 KiB: read and dropped, ERR_TOO_BIG
  CVE-2017-7539   unexpected data in negotiation: only that client goes
  CVE-2017-10664  client gone mid-reply: no SIGPIPE
  CVE-2020-10761  long error messages: bounded
  CVE-2021-3716   STARTTLS: answered ERR_POLICY (no TLS), no state kept
  CVE-2024-7409   handshake stalls: dropped after the limit, others served
  nbdkit CVE-2019-14851  commands before/after the handshake in odd order
and: a stalled WRITE payload delays no other client; unknown options UNSUP.
"""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from nbdwire import recvn  # noqa: E402

SOCK = sys.argv[1]
OPTS = 0x49484156454F5054
REP = 0x3E889045565A9
ERR = 1 << 31


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def connect(flags=3):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(SOCK)
    g = recvn(s, 18)
    if g[:16] != b"NBDMAGICIHAVEOPT":
        fail("bad greeting %r" % g)
    s.sendall(struct.pack(">I", flags))
    return s


def opt(s, o, data=b""):
    s.sendall(struct.pack(">QII", OPTS, o, len(data)) + data)


def reply(s):
    magic, o, t, ln = struct.unpack(">QIII", recvn(s, 20))
    if magic != REP:
        fail("bad option reply magic")
    return o, t, recvn(s, ln)


def replies_until_final(s):
    out = []
    while True:
        o, t, d = reply(s)
        out.append((t, d))
        if t == 1 or t & ERR:
            return out


def go(s, name=b""):
    opt(s, 7, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    r = replies_until_final(s)
    if r[-1][0] != 1:
        fail("GO failed: %r" % (r[-1],))


def alive():
    s = connect()
    opt(s, 3)
    r = replies_until_final(s)
    if r[-1][0] != 1:
        fail("LIST failed on a fresh connection")
    opt(s, 2)
    s.close()


def closed(s):
    try:
        s.settimeout(5)
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def simple_read(s, off, ln, cookie=7):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, cookie, off, ln))
    magic, err, c = struct.unpack(">IIQ", recvn(s, 16))
    if magic != 0x67446698 or c != cookie:
        fail("bad simple reply")
    return err, (recvn(s, ln) if err == 0 else b"")


# CVE-2017-15118: an export name of 5000 bytes, then 70000 (over the option
# limit): INVALID, TOO_BIG; then a valid GO on the same connection.
s = connect()
name = b"A" * 5000
opt(s, 7, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
t = replies_until_final(s)[-1][0]
if t != ERR | 3:
    fail("5000-byte name: reply %#x, want ERR_INVALID" % t)
name = b"B" * 70000
opt(s, 6, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
t = replies_until_final(s)[-1][0]
if t != ERR | 9:
    fail("70000-byte option: reply %#x, want ERR_TOO_BIG" % t)
# CVE-2017-15119: an option claiming 4 GiB: the server reads and drops; we
# send 1 MiB of it and leave: the server must not have allocated it.
opt(s, 99, b"")
if replies_until_final(s)[-1][0] != ERR | 1:
    fail("unknown option not UNSUP")
go(s)
err, data = simple_read(s, 0, 4096)
if err or len(data) != 4096:
    fail("read after the oversized options")
s.close()

s = connect()
s.sendall(struct.pack(">QII", OPTS, 10, 0xFFFFFFFF) + b"\0" * (1 << 20))
s.close()
alive()

# CVE-2017-15118 with EXPORT_NAME (no error reply): a 5000-byte name closes.
s = connect()
opt(s, 1, b"C" * 5000)
if not closed(s):
    fail("EXPORT_NAME with a 5000-byte name not closed")
alive()

# CVE-2017-7539: garbage during negotiation ends that client only.
s = connect()
s.sendall(b"\xde\xad\xbe\xef" * 64)
if not closed(s):
    fail("garbage option not closed")
s = connect(flags=0x80)  # unknown client flags: MUST close
if not closed(s):
    fail("unknown client flags not closed")
alive()

# CVE-2021-3716: STARTTLS without TLS: ERR_POLICY, and structured-reply
# state asked for before it is not taken to mean anything afterwards.
s = connect()
opt(s, 8)
replies_until_final(s)
opt(s, 5)
t = replies_until_final(s)[-1][0]
if t != ERR | 2:
    fail("STARTTLS without TLS: %#x, want ERR_POLICY" % t)
opt(s, 5, b"x")
if replies_until_final(s)[-1][0] != ERR | 3:
    fail("STARTTLS with data not INVALID")
go(s)
s.close()

# nbdkit CVE-2019-14851: BLOCK_STATUS without a context, unknown command,
# FLUSH with a bad flag, read past the end: errors, connection stays.
s = connect()
go(s)
for req in [(0, 7, 0, 4096), (0, 77, 0, 0), (0x20, 3, 0, 0), (0, 0, 1 << 20, 1)]:
    flags, typ, off, ln = req
    s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, typ, 9, off, ln))
    magic, err, c = struct.unpack(">IIQ", recvn(s, 16))
    if magic != 0x67446698 or err != 22:
        fail("request %r: error %d, want EINVAL" % (req, err))
err, _ = simple_read(s, 0, 512)
if err:
    fail("read after bad requests")
s.close()

# CVE-2017-10664: ask for 32 MiB and vanish before the reply is read.
for _ in range(5):
    s = connect()
    go(s)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 1, 0, 1 << 20) * 16)
    s.close()
alive()

# A stalled WRITE payload: half of it, then nothing; another client is
# served at once.
stall = connect()
go(stall)
stall.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 1, 0, 65536) + b"x" * 1000)
t0 = time.time()
s = connect()
go(s)
err, _ = simple_read(s, 0, 4096)
if err or time.time() - t0 > 2:
    fail("a stalled client delayed another")
s.close()

# CVE-2024-7409: 20 clients that never negotiate.  The server drops them
# after its handshake limit (2 s here) and then serves others.
stalled = []
for _ in range(20):
    try:
        x = socket.socket(socket.AF_UNIX)
        x.connect(SOCK)
        stalled.append(x)
    except OSError:
        pass
time.sleep(2.5)
for x in stalled:
    x.settimeout(3)
    try:
        while x.recv(4096):
            pass
    except socket.timeout:
        fail("a client stalled in the handshake was not dropped")
    except ConnectionResetError:
        pass
    x.close()
alive()
# The stalled WRITE client is in transmission: not subject to the limit,
# still served (it may finish its payload).
stall.sendall(b"y" * (65536 - 1000))
magic, err, c = struct.unpack(">IIQ", recvn(stall, 16))
if err:
    fail("the stalled write failed when completed")
stall.close()

# Reads of 64 KiB and up are sent from the file itself (sendfile) when the
# image is a memory-backed raw file: the bytes are the image's, with simple
# replies too, whole or at odd offsets; a client that leaves in the middle
# of one costs nothing (no SIGPIPE).
data = os.urandom(1 << 20)
s = connect()
go(s)
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 9, 0, len(data)) + data)
magic, err, c = struct.unpack(">IIQ", recvn(s, 16))
if magic != 0x67446698 or err or c != 9:
    fail("1 MiB write: %#x %d %d" % (magic, err, c))
err, back = simple_read(s, 0, 1 << 20)
if err or back != data:
    fail("1 MiB simple read differs")
for off, ln in [(12345, 65536), (1 << 19, 300001), ((1 << 20) - 65536, 65536)]:
    err, back = simple_read(s, off, ln, cookie=off)
    if err or back != data[off:off + ln]:
        fail("read of %d at %d differs" % (ln, off))
# Several in flight, answered in order of completion: all complete.
for i in range(8):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 100 + i, i * 131072, 131072))
seen = set()
for _ in range(8):
    magic, err, c = struct.unpack(">IIQ", recvn(s, 16))
    if magic != 0x67446698 or err or c - 100 not in range(8):
        fail("bad reply among 8 reads")
    got = recvn(s, 131072)
    if got != data[(c - 100) * 131072:(c - 99) * 131072]:
        fail("read %d differs" % (c - 100))
    seen.add(c)
if len(seen) != 8:
    fail("replies lost")
s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 1, 0, 1 << 20))
s.close()
alive()

# A client that asks for many large reads and reads no reply: the server
# keeps a file descriptor per queued zero-copy reply, at most 64 per
# connection (it used to keep one per request: a client could take all of
# them); the replies are still all there and right.
if len(sys.argv) > 2:
    pid = sys.argv[2]
    base = len(os.listdir("/proc/%s/fd" % pid))
    s = connect()
    go(s)
    n = 200
    for i in range(n):
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 1000 + i, (i % 15) * 65536, 65536))
    time.sleep(1)
    fds = len(os.listdir("/proc/%s/fd" % pid))
    if fds - base > 80:
        fail("%d descriptors held for %d unread replies" % (fds - base, n))
    for _ in range(n):
        magic, err, c = struct.unpack(">IIQ", recvn(s, 16))
        i = c - 1000
        if magic != 0x67446698 or err or not 0 <= i < n:
            fail("bad reply among %d unread reads" % n)
        if recvn(s, 65536) != data[(i % 15) * 65536:(i % 15 + 1) * 65536]:
            fail("unread read %d differs" % i)
    s.close()
print("ok")
