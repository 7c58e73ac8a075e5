#!/usr/bin/env python3
"""Fails when two modules of one crate import each other, directly or through others.

House rule (STYLE.md): no two modules that import each other; move the shared piece into
its own module. A module may use its parent and its children freely (that is how Rust
modules nest); every other `crate::`/`super::` reference between two modules is an edge,
and any cycle of edges is reported with the lines that make it.

Usage: .ci/module-cycles.py [CRATE_DIR ...]   (default: every crate of the workspace)
Exit status: 0 when no crate has a cycle, 1 otherwise.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CRATES = [
    ".", "core", "control", "dns", "memcached-router", "redis-router", "mysql-proxy",
    "lvs-sync", "tests",
]


def strip_comments_and_strings(text):
    """Blanks out comments, string and char literals, keeping line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append("\n" * text.count("\n", i, j + 1))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 12]):
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            i += len(m.group(0)) if m else 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_files(src):
    """Maps module path (tuple) -> file, for every .rs file under src."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if parts and parts[0] == "bin":
                continue  # binaries are crates of their own
            mods[tuple(parts)] = os.path.join(dirpath, f)
    return mods


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = tree.strip()
    m = re.match(r"^(.*?)::\{(.*)\}$", tree, re.S)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        p = p.strip()
        if p:
            out.extend(prefix + "::" + q for q in expand_use(p))
    return out


def resolve(path, here, mods):
    """The module a path (`crate::a::b::Item`, `super::x`) names, as the longest known prefix."""
    segs = [s for s in re.split(r"\s*::\s*", path) if s]
    segs = [s.split(" as ")[0].strip() for s in segs]
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = here
        rest = segs
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    best = base if base in mods else None
    for k in range(1, len(rest) + 1):
        cand = base + tuple(rest[:k])
        if cand in mods:
            best = cand
    return best


def edges_of(mod, file, mods):
    text = strip_comments_and_strings(open(file, encoding="utf-8").read())
    found = {}
    for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", text):
        line = text.count("\n", 0, m.start()) + 1
        for p in expand_use(m.group(1)):
            t = resolve(p, mod, mods)
            if t is not None:
                found.setdefault(t, line)
    for m in re.finditer(r"\b(?:crate|super)(?:\s*::\s*\w+)+", text):
        line = text.count("\n", 0, m.start()) + 1
        t = resolve(m.group(0), mod, mods)
        if t is not None:
            found.setdefault(t, line)
    return found


def related(a, b):
    """A module and its ancestors or descendants may refer to each other."""
    return a[: len(b)] == b or b[: len(a)] == a


def cycles(graph):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def name(m):
    return "::".join(m) or "crate"


def check(crate_dir):
    src = os.path.join(ROOT, crate_dir, "src")
    if not os.path.isdir(src):
        return []
    mods = module_files(src)
    graph, where = {}, {}
    for mod, file in mods.items():
        for target, line in edges_of(mod, file, mods).items():
            if target == mod or related(mod, target):
                continue
            graph.setdefault(mod, set()).add(target)
            where[(mod, target)] = (os.path.relpath(file, ROOT), line)
    problems = []
    for comp in cycles(graph):
        members = set(comp)
        lines = []
        for a in comp:
            for b in sorted(graph.get(a, ())):
                if b in members:
                    f, l = where[(a, b)]
                    lines.append(f"    {name(a)} -> {name(b)}  ({f}:{l})")
        problems.append(
            f"{crate_dir}: import cycle between {', '.join(name(m) for m in comp)}\n" + "\n".join(lines)
        )
    return problems


def main(argv):
    crates = argv[1:] or DEFAULT_CRATES
    problems = []
    for c in crates:
        problems.extend(check(c))
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} import cycle(s); move the shared piece into a module of its own")
        return 1
    print(f"no import cycles between modules ({len(crates)} crates)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
