#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the crafted RBD names of tests/fuzz/corpus/rbd-name/.

Good names in every spelling QEMU accepts, and bad ones: no pool, an empty
image, a key with no value, a backslash at the very end, escapes of every
separator, too many librados keys, long names, NUL-free binary noise.  The
fuzz target adds the "rbd:" prefix itself as well.  Usage:
make-rbd-name-corpus.py [OUTDIR]
"""
import os
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "rbd-name")

CASES = {
    "plain": "rbd:pool/image",
    "namespace": "rbd:pool/ns/image",
    "snapshot": "rbd:pool/image@snap",
    "ns-snap-conf": "rbd:pool/ns/image@snap:conf=/etc/ceph/ceph.conf:id=admin",
    "options": "rbd:p/i:rados_osd_op_timeout=5:rados_mon_op_timeout=5:mon_host=127.0.0.1",
    "escaped-colon": "rbd:p/we\\:ird:conf=/x\\:y",
    "escaped-slash": "rbd:p\\/q/i",
    "escaped-at": "rbd:p/i\\@j@s",
    "escape-at-end": "rbd:p/i\\",
    "escape-in-key": "rbd:p/i:a\\=b=c",
    "no-pool": "rbd:image",
    "empty": "rbd:",
    "empty-image": "rbd:p/",
    "empty-image-snap": "rbd:p/@s",
    "key-no-value": "rbd:p/i:conf",
    "empty-key": "rbd:p/i:=v",
    "many-keys": "rbd:p/i" + "".join(":k%d=v" % i for i in range(40)),
    "at-in-options": "rbd:p/i:conf=/a@b",
    "double-slash": "rbd:p//i",
    "long": "rbd:" + "p" * 5000 + "/" + "i" * 5000,
    "not-rbd": "nbd:localhost:10809",
    # Found by libFuzzer: the only '@' is escaped (a NULL dereference).
    "escaped-at-only": "rbd:nbd:p/i\\@:ps",
    "escaped-slash-only": "rbd:p/\\/i@s",
    "noise": "rbd:\x01\x02/\xff\xfe@\x7f:=:=\\",
}

os.makedirs(OUT, exist_ok=True)
for name, text in CASES.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(text.encode("latin-1"))
