#!/usr/bin/env python3
"""The size limits a newcomer reads by: no file in mirror/src over 400 lines, no function
there over 60 lines, none in the library's src/ over 80. Prints what is over and exits 1.

usage: python3 scripts/sizes.py   (from anywhere in the checkout; .ci/run runs it)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIMITS = [  # (folder, most lines in a file, most lines in a function)
    ("mirror/src", 400, 60),
    ("src", None, 80),
]


def blank(src):
    """`src` with comments, strings and chars blanked out (newlines kept)."""
    out, i, n = [], 0, len(src)
    while i < n:
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
        elif src.startswith("/*", i):
            depth, j = 0, i
            while j < n:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                    if depth == 0:
                        break
                else:
                    j += 1
        elif (m := re.match(r'b?r(#*)"', src[i:i + 10])) and not (i and (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
        elif src[i] == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
        elif src[i] == "'" and (m := re.match(r"'(\\.[^']*|[^\\'\n])'", src[i:i + 12])):
            j = i + m.end()
        else:
            out.append(src[i])
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", src[i:j]))
        i = j
    return "".join(out)


def functions(src):
    """(line, name, lines from `fn` to its closing brace) of every function with a body."""
    s = blank(src)
    for m in re.finditer(r"\bfn\s+([A-Za-z_]\w*)", s):
        j, depth = m.end(), 0
        while j < len(s) and not (s[j] in "{;" and depth == 0):
            depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(s[j], 0)
            j += 1
        if j >= len(s) or s[j] == ";":
            continue
        k, depth = j, 0
        while k < len(s):
            depth += {"{": 1, "}": -1}.get(s[k], 0)
            if depth == 0:
                break
            k += 1
        first = s.count("\n", 0, m.start()) + 1
        yield first, m.group(1), s.count("\n", 0, k) + 2 - first


over = []
for folder, file_limit, fn_limit in LIMITS:
    for path in sorted((ROOT / folder).rglob("*.rs")):
        text = path.read_text()
        name = path.relative_to(ROOT)
        if file_limit and text.count("\n") > file_limit:
            over.append(f"{name}: {text.count(chr(10))} lines (at most {file_limit})")
        for line, fn, length in functions(text):
            if length > fn_limit:
                over.append(f"{name}:{line} fn {fn}: {length} lines (at most {fn_limit})")
print("\n".join(over) or "sizes: every file and function within its limit")
sys.exit(1 if over else 0)
