#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# A hostile NBD server for tests/interop/nbd-client.sh: a correct fixed
# newstyle handshake (structured replies, base:allocation, NBD_OPT_GO), then
# for the first request one broken reply chosen by MODE, and it keeps the
# connection open (a client that waits for more would hang).
#
#   nbd-bad-server.py SOCKET MODE
#
# MODE: magic (garbage magic), cookie (unknown cookie), past (a data chunk
# past the request), long (a data chunk longer than the request), huge (a
# chunk claiming 4 GiB), errzero (an error chunk with error 0).
import os
import socket
import struct
import sys
import time

NBD_MAGIC = 0x4E42444D41474943
OPTS_MAGIC = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
SIZE = 1 << 20


def recv_all(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b


def rep(c, opt, typ, data=b""):
    c.sendall(struct.pack(">QIII", REP_MAGIC, opt, typ, len(data)) + data)


def handshake(c):
    c.sendall(struct.pack(">QQH", NBD_MAGIC, OPTS_MAGIC, 3))
    recv_all(c, 4)
    while True:
        _, opt, ln = struct.unpack(">QII", recv_all(c, 16))
        recv_all(c, ln)
        if opt == 8:  # STRUCTURED_REPLY
            rep(c, opt, 1)
        elif opt == 10:  # SET_META_CONTEXT
            name = b"base:allocation"
            rep(c, opt, 4, struct.pack(">I", 7) + name)
            rep(c, opt, 1)
        elif opt == 7:  # GO
            rep(c, opt, 3, struct.pack(">HQH", 0, SIZE, 1 | 4 | 32 | 64))
            rep(c, opt, 1)
            return
        else:
            rep(c, opt, (1 << 31) | 1)


def serve(c, mode):
    handshake(c)
    _, _, typ, cookie, off, ln = struct.unpack(">IHHQQI", recv_all(c, 28))
    if typ == 1:
        recv_all(c, ln)
    chunk = lambda flags, t, data, length=None: struct.pack(
        ">IHHQI", 0x668E33EF, flags, t, cookie, len(data) if length is None else length) + data
    if mode == "magic":
        c.sendall(b"\xde\xad\xbe\xef" * 8)
    elif mode == "cookie":
        c.sendall(struct.pack(">IHHQI", 0x668E33EF, 1, 0, cookie ^ 0x5555, 0))
    elif mode == "past":
        c.sendall(chunk(1, 1, struct.pack(">Q", off + ln) + b"x" * 512))
    elif mode == "long":
        c.sendall(chunk(1, 1, struct.pack(">Q", off) + b"x" * (ln + 512)))
    elif mode == "huge":
        c.sendall(chunk(1, 1, struct.pack(">Q", off), 0xFFFFFFFF))
    elif mode == "errzero":
        c.sendall(chunk(1, (1 << 15) | 1, struct.pack(">IH", 0, 0)))
    # Keep the connection open: the client must drop it by itself.
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass


def main():
    path, mode = sys.argv[1], sys.argv[2]
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Listen before the socket appears under its name (tests wait for it).
    s.bind(path + ".tmp")
    s.listen(4)
    os.rename(path + ".tmp", path)
    s.settimeout(30)
    while True:
        try:
            c, _ = s.accept()
        except socket.timeout:
            return
        try:
            serve(c, mode)
        except (EOFError, OSError):
            pass
        c.close()


if __name__ == "__main__":
    main()
