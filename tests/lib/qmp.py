# SPDX-License-Identifier: MIT
"""A small QMP client for tests: connect (retrying while the server starts),
read the greeting, run commands, collect events.

    qmp = QMP("/tmp/q.sock")
    qmp.cmd("qmp_capabilities")
    print(qmp.cmd("query-block")["return"])

Events are kept by name, or whole (with their data) with whole_events=True.
"""

import json
import socket
import time


class QMP:
    def __init__(self, path, whole_events=False):
        self.whole_events = whole_events
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(10)
        # One reader and one writer: a text file opened "rw" drops what it
        # has read ahead (an event after a reply) on every write.
        self.rf = self.sock.makefile("r")
        self.wf = self.sock.makefile("w")
        self.events = []
        self.greeting = json.loads(self.rf.readline())

    def cmd(self, _execute, **args):
        # (_execute: so that an argument may be called "name")
        msg = {"execute": _execute}
        if args:
            msg["arguments"] = args
        self.wf.write(json.dumps(msg) + "\n")
        self.wf.flush()
        while True:
            line = self.rf.readline()
            if not line:
                raise EOFError("QMP connection closed")
            r = json.loads(line)
            if "event" in r:
                self.events.append(r if self.whole_events else r["event"])
                continue
            return r

    def take_events(self):
        e, self.events = self.events, []
        return e
