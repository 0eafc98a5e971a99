# SPDX-License-Identifier: MIT
"""soak.py VDISK SECONDS CLIENTS RSS_SLACK_KB: see tests/soak/soak.sh."""
import os, random, signal, subprocess, sys, threading, time

vdisk, seconds, nclients, slack = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
REGION = 16 << 20
SIZE = REGION * nclients
EXT = 64 << 10            # extents: 64 KiB slots, writes of 512 B .. 64 KiB inside
sock = os.path.abspath("nbd.sock")
uri = "nbd+unix:///disk?socket=" + sock
subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
                "img.qcow2", str(SIZE)], check=True)
srv = subprocess.Popen([vdisk, "serve",
                        "--blockdev", "driver=file,node-name=f,filename=img.qcow2",
                        "--blockdev", "driver=qcow2,node-name=q,file=f",
                        "--nbd-server", "addr.type=unix,addr.path=" + sock,
                        "--export", "type=nbd,id=e,node-name=q,name=disk,writable=on"],
                       stdout=open("serve.log", "w"), stderr=subprocess.STDOUT)
for _ in range(200):
    if os.path.exists(sock):
        break
    time.sleep(0.05)
else:
    print("FAIL: vdisk serve did not listen"); srv.kill(); sys.exit(1)

def rss_kb():
    with open("/proc/%d/status" % srv.pid) as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0

t0 = time.time()
deadline = t0 + seconds
errors = []
stats = {"conn": 0, "writes": 0, "reads": 0, "bytes": 0}
lock = threading.Lock()
samples = []

def client(c):
    r = random.Random(c)
    base = c * REGION
    last = {}          # slot -> (offset, length, pattern)
    pat = 0
    while time.time() < deadline and not errors:
        cmds, checks = [], []
        for _ in range(r.randrange(4, 24)):
            slot = r.randrange(REGION // EXT)
            ln = r.randrange(1, EXT // 512 + 1) * 512
            off = base + slot * EXT + r.randrange(0, (EXT - ln) // 512 + 1) * 512
            pat = pat % 250 + 1
            cmds += ["-c", "write -q -P %d %d %d" % (pat, off, ln)]
            cmds += ["-c", "read -q -P %d %d %d" % (pat, off, ln)]
            last[slot] = (off, ln, pat)
        for slot in r.sample(sorted(last), min(4, len(last))):
            off, ln, p = last[slot]
            cmds += ["-c", "read -q -P %d %d %d" % (p, off, ln)]
        if r.random() < 0.2:
            cmds += ["-c", "flush"]
        p = subprocess.run(["qemu-io", "-f", "raw"] + cmds + [uri], capture_output=True,
                           text=True, timeout=120)
        out = p.stdout + p.stderr
        with lock:
            stats["conn"] += 1
            stats["writes"] += sum(1 for x in cmds if x.startswith("write"))
            stats["reads"] += sum(1 for x in cmds if x.startswith("read"))
        if p.returncode or "fail" in out.lower() or "mismatch" in out.lower():
            errors.append("client %d: qemu-io exit %d: %s" % (c, p.returncode, out[-400:]))
    final.append((c, last))

final = []
threads = [threading.Thread(target=client, args=(c,)) for c in range(nclients)]
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    if srv.poll() is not None:
        errors.append("vdisk serve died (exit %s)" % srv.returncode)
        break
    samples.append((time.time() - t0, rss_kb()))
    time.sleep(1)
for t in threads:
    t.join()
elapsed = time.time() - t0

# Every extent's last pattern, over one more connection per client.
for c, last in final:
    cmds = []
    for off, ln, p in last.values():
        cmds += ["-c", "read -q -P %d %d %d" % (p, off, ln)]
    if cmds:
        p = subprocess.run(["qemu-io", "-r", "-f", "raw"] + cmds + [uri], capture_output=True,
                           text=True, timeout=300)
        if p.returncode or "fail" in (p.stdout + p.stderr).lower():
            errors.append("final read-back of client %d: %s" % (c, (p.stdout + p.stderr)[-400:]))
alive = srv.poll() is None
srv.send_signal(signal.SIGTERM)
try:
    rc = srv.wait(timeout=60)
except subprocess.TimeoutExpired:
    srv.kill()
    rc = "killed after 60 s"
if alive and rc != 0:
    errors.append("vdisk serve exit %s on SIGTERM: %s" % (rc, open("serve.log").read()[-400:]))
q = subprocess.run(["qemu-img", "check", "img.qcow2"], capture_output=True, text=True)
if q.returncode:
    errors.append("qemu-img check exit %d: %s" % (q.returncode, (q.stdout + q.stderr)[-400:]))

rs = [kb for t, kb in samples if kb]
n = len(rs)
if n >= 8:
    first = max(rs[: n // 4])
    last_q = max(rs[-(n // 4):])
    growth = last_q - first
    print("RSS: start %d KiB, first-quarter peak %d KiB, last-quarter peak %d KiB, "
          "max %d KiB, growth %d KiB (bound %d KiB), %d samples" %
          (rs[0], first, last_q, max(rs), growth, slack, n))
    if growth > slack:
        errors.append("server RSS grew by %d KiB (bound %d KiB)" % (growth, slack))
else:
    print("RSS: too few samples (%d) to judge growth" % n)
print("%d clients, %.0f s: %d connections, %d writes, %d reads verified, server exit %s" %
      (nclients, elapsed, stats["conn"], stats["writes"], stats["reads"], rc))
if errors:
    for e in errors[:10]:
        print("FAIL: " + e)
    sys.exit(1)
print("PASS")
