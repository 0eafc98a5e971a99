#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# scripts/public-symbols.py [--map] [HEADER...]
#
# Print the names that the public headers (include/vdisk/*.h by default)
# declare with external linkage: functions and extern variables, one a line,
# sorted.  These, and only these, are libvdisk's ABI.  Not listed: static
# inline functions, typedef'd function types, macros, struct members.
#
# --referenced prints every identifier the headers use outside comments
# (inline bodies and macros included): a library symbol among them must be
# exported, or a program using that inline function or macro cannot link.
#
# --map prints the linker version script instead (libvdisk.map is this
# output; `make abi-map` regenerates it, tests/interop/abi-exports.sh checks
# that it is current and that build/libvdisk.so.0 exports exactly these).
#
# A small declaration parser, not a regular expression over lines: comments,
# preprocessor lines, string literals and brace bodies are removed first, then
# every top-level declaration (text up to ';' at brace depth 0) is read.  It
# relies on the headers being plain C that the build compiles, nothing more.
import glob
import os
import re
import sys

VERSION_NODE = "VDISK_0.1"

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def strip(text):
    """Remove comments, string and character literals and preprocessor lines."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    text = re.sub(r"'(\\.|[^'\\])*'", "''", text)
    text = re.sub(r"\\\n", " ", text)  # continuation lines (macros)
    return re.sub(r"^[ \t]*#[^\n]*", " ", text, flags=re.M)


def drop_attributes(decl):
    """Remove __attribute__((...)) and __asm__(...) with balanced parentheses."""
    out = decl
    while True:
        m = re.search(r"\b(__attribute__|__asm__|asm)\s*\(", out)
        if not m:
            return out
        depth, i = 0, m.end() - 1
        while i < len(out):
            if out[i] == "(":
                depth += 1
            elif out[i] == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        out = out[: m.start()] + " " + out[i + 1 :]


def top_level_declarations(text):
    """Yield each declaration at file scope with brace bodies cut out.

    'struct s { ... } ;' yields 'struct s  ;'; a function definition
    'static inline int f(void) { ... }' yields 'static inline int f(void) '.
    An extern "C" { ... } block (C++ guards) is transparent.
    """
    depth, cur = 0, []
    tokens = re.split(r"([{};])", text)
    for t in tokens:
        if t == "{":
            head = "".join(cur) if depth == 0 else ""
            if depth == 0 and re.fullmatch(r'\s*extern\s*""\s*', head):
                cur = []  # extern "C" {: its contents are file scope
                continue
            depth += 1
        elif t == "}":
            if depth == 0:
                continue  # the end of extern "C" {
            depth -= 1
            if depth == 0:
                decl = "".join(cur)
                # A function body ends the declaration; a struct body does not.
                if re.search(r"\)\s*$", decl):
                    yield decl
                    cur = []
        elif t == ";":
            if depth == 0:
                yield "".join(cur)
                cur = []
        elif depth == 0:
            cur.append(t)


def declared_name(decl):
    """The name with linkage that a file-scope declaration declares, or None."""
    decl = drop_attributes(decl).strip()
    words = IDENT.findall(decl)
    if not words or words[0] == "typedef" or "static" in words:
        return None
    # Up to the first '(' at paren depth 0 that is not a declarator group
    # (a function) or the first '[' / '=' (a variable).
    m = re.search(r"[(\[=]", decl)
    head = decl[: m.start()] if m else decl
    if m and decl[m.start()] == "(":
        # "int (*vd_x)(void)" is a variable of pointer type: take the name
        # inside the group.
        if not IDENT.findall(head) or head.rstrip().endswith("*"):
            inner = re.match(r"\(\s*\*\s*([A-Za-z_]\w*)", decl[m.start() :])
            return inner.group(1) if inner else None
    names = IDENT.findall(head)
    if not names:
        return None
    name = names[-1]
    # A declaration of a tag only: "struct vd_node;", "enum x { ... };",
    # "enum { ... };".
    if name in ("struct", "union", "enum") or (len(names) >= 2 and names[-2] in ("struct", "union", "enum")):
        return None
    return name


def public_names(headers):
    names = set()
    for h in headers:
        with open(h, encoding="utf-8") as f:
            text = strip(f.read())
        for decl in top_level_declarations(text):
            name = declared_name(decl)
            if name:
                names.add(name)
    return sorted(names)


def referenced_names(headers):
    names = set()
    for h in headers:
        with open(h, encoding="utf-8") as f:
            text = f.read()
        # Keep #define bodies: a macro can call a library function.
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        text = re.sub(r"//[^\n]*", " ", text)
        text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
        names.update(IDENT.findall(text))
    return sorted(names)


def main(argv):
    mode = None
    args = argv[1:]
    if args and args[0] in ("--map", "--referenced"):
        mode = args[0]
        args = args[1:]
    if not args:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        args = sorted(glob.glob(os.path.join(root, "include", "vdisk", "*.h")))
    if mode == "--referenced":
        for n in referenced_names(args):
            print(n)
        return 0
    names = public_names(args)
    if mode is None:
        for n in names:
            print(n)
        return 0
    print("/* SPDX-License-Identifier: MIT */")
    print("/*")
    print(" * libvdisk's exported symbols: every function and variable that")
    print(" * include/vdisk/*.h declares, nothing else.  Generated by")
    print(" * `make abi-map` (scripts/public-symbols.py --map); do not edit.")
    print(" * tests/interop/abi-exports.sh fails when it is out of date.")
    print(" */")
    print(VERSION_NODE + " {")
    print("global:")
    for n in names:
        print("\t%s;" % n)
    print("local:")
    print("\t*;")
    print("};")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
