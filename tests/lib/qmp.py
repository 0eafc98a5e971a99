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
        self.f = self.sock.makefile("rw")
        self.events = []
        self.greeting = json.loads(self.f.readline())

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
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
