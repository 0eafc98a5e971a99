#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Regression tests for the NBD CVEs (nbd-cve.py speaks the protocol byte by
# byte to `vdisk nbd`): oversized names and options, garbage and odd command
# order, clients vanishing mid-reply, STARTTLS state, handshake stalls and a
# stalled payload that must delay no other client.
set -eu
. "$(dirname "$0")/../lib/common.sh"
vd_setup python3 qemu-img
# Twice: on a disk file, and on a memory-backed one (tmpfs), where reads of
# 64 KiB and up leave by sendfile() from the file.
SHM=
[ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm)" = tmpfs ] && SHM=$(mktemp -d /dev/shm/nbd-cve.XXXXXX)
pid=
trap 'if [ -n "$pid" ]; then kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; fi; rm -rf "$T" ${SHM:+"$SHM"}' EXIT
for dir in "$T" $SHM; do
	rm -f "$T/s.sock"
	qemu-img create -q -f raw "$dir/img.raw" 1M
	"$VDISK" nbd -f raw -t -e 0 --handshake-limit 2 -k "$T/s.sock" "$dir/img.raw" &
	pid=$!
	wait_socket "$T/s.sock"
	python3 "$SRCDIR/tests/interop/nbd-cve.py" "$T/s.sock" $pid || fail "nbd-cve.py ($dir)"
	kill -0 $pid || fail "vdisk nbd died ($dir)"
	kill $pid
	wait $pid || fail "vdisk nbd exit status after SIGTERM ($dir)"
	pid=
done
[ -n "$SHM" ] || echo "note: no tmpfs /dev/shm: the sendfile path was not tried"

# Out of file descriptors: accept() fails with EMFILE while the connection
# stays queued; the server rests instead of spinning on the readable
# listener (it used to burn a CPU), and serves again once descriptors free.
rm -f "$T/s.sock"
(ulimit -n 24 && exec "$VDISK" nbd -f raw -t -e 0 -k "$T/s.sock" "$T/img.raw") &
pid=$!
wait_socket "$T/s.sock"
python3 - "$T/s.sock" $pid <<'PY' || fail "EMFILE"
import os, socket, sys, time
path, pid = sys.argv[1], sys.argv[2]
def cpu():
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
hold = []
for _ in range(40):
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    hold.append(c)
time.sleep(0.5)
t0 = cpu()
time.sleep(2)
ticks = cpu() - t0
if ticks > os.sysconf("SC_CLK_TCK") // 2:
    sys.exit("the server used %d ticks in 2 s while out of descriptors" % ticks)
for c in hold:
    c.close()
time.sleep(0.5)
c = socket.socket(socket.AF_UNIX)
c.settimeout(5)
c.connect(path)
if c.recv(8) != b"NBDMAGIC":
    sys.exit("no greeting after descriptors came back")
print("ok: %d ticks while out of descriptors" % ticks)
PY
kill $pid
wait $pid || fail "vdisk nbd exit status after SIGTERM (EMFILE)"
pid=
echo PASS
