#!/usr/bin/env python3
"""Fails when a WARN the plugin can print has no entry in docs/troubleshooting.md, or an entry
names a WARN the code no longer prints.

A WARN is a call of log::Warn (or another log::Warn* function) in plugin/, gpu/ or tools/; its
format is the string literals that start its argument list, concatenated as the compiler does.
An entry is a level-2 heading of the catalogue whose text is that format in backticks:
    ## `NIC %s: %s; this NIC falls back to plain TCP`
Run from anywhere with the repository root as the argument; CI runs it as a ctest (label unit).
"""
import pathlib
import re
import sys

CALL = re.compile(r"\blog::Warn\w*\s*\(")
LITERAL = re.compile(r'\s*"((?:[^"\\]|\\.)*)"')
HEADING = re.compile(r"^## `(.+)`\s*$", re.M)


def unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\\\", "\\")


def formats_in(source: str):
    for call in CALL.finditer(source):
        at = call.end()
        parts = []
        while True:
            lit = LITERAL.match(source, at)
            if not lit:
                break
            parts.append(unescape(lit.group(1)))
            at = lit.end()
        if parts:
            yield "".join(parts), source.count("\n", 0, call.start()) + 1


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    code = {}
    for folder in ("plugin", "gpu", "tools"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".h", ".cc", ".cu"):
                continue
            for fmt, line in formats_in(path.read_text()):
                code.setdefault(fmt, []).append(f"{path.relative_to(root)}:{line}")
    catalogue = root / "docs" / "troubleshooting.md"
    documented = set(HEADING.findall(catalogue.read_text())) if catalogue.exists() else set()
    missing = sorted(set(code) - documented)
    stale = sorted(documented - set(code))
    for fmt in missing:
        print(f"no entry in docs/troubleshooting.md for WARN `{fmt}` ({', '.join(code[fmt])})")
    for fmt in stale:
        print(f"docs/troubleshooting.md has an entry for `{fmt}`, which no code prints")
    print(f"{len(code)} WARN formats, {len(documented)} entries, {len(missing)} missing, "
          f"{len(stale)} stale")
    return 1 if missing or stale else 0


if __name__ == "__main__":
    sys.exit(main())
