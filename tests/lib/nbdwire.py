# SPDX-License-Identifier: MIT
"""NBD spoken byte by byte (the NBD project's doc/proto.md), for tests that
need what no client library sends: requests in the packet of the last
option, clients that vanish mid-handshake, hostile lengths."""
import struct

OPTS = 0x49484156454F5054  # "IHAVEOPT"
REP = 0x3E889045565A9  # option reply magic
REQUEST = 0x25609513
SIMPLE_REPLY = 0x67446698
OPT_STARTTLS, OPT_GO = 5, 7
REP_ACK, REP_INFO = 1, 3
CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2


def recvn(s, n):
    """Exactly @n bytes from socket @s (EOFError if it closes first)."""
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b


def greet(s, flags=3):
    """Read the fixed-newstyle greeting and answer with client @flags
    (FIXED_NEWSTYLE | NO_ZEROES)."""
    hello = recvn(s, 18)
    assert hello[:16] == b"NBDMAGICIHAVEOPT", hello
    s.sendall(struct.pack(">I", flags))


def option(o, data=b""):
    return struct.pack(">QII", OPTS, o, len(data)) + data


def go_option(name):
    return option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))


def request(typ, cookie, off, length, payload=b"", flags=0):
    return struct.pack(">IHHQQI", REQUEST, flags, typ, cookie, off, length) + payload


def option_reply(s):
    """(option, type, data) of one option reply."""
    magic, o, t, ln = struct.unpack(">QIII", recvn(s, 20))
    assert magic == REP, "bad option reply magic %#x" % magic
    return o, t, recvn(s, ln)


def go_replies(s):
    """The replies to NBD_OPT_GO up to its ACK (INFO before it)."""
    while True:
        o, t, _ = option_reply(s)
        assert o == OPT_GO, o
        if t == REP_ACK:
            return
        assert t == REP_INFO, "GO answered %#x" % t


def simple_reply(s):
    """(error, cookie) of a simple reply; the data of a READ follows."""
    magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == SIMPLE_REPLY, "bad reply magic %#x" % magic
    return err, cookie
