#!/usr/bin/env python3
"""Fails when an #include runs from a lower layer of the plugin up to a higher one.

The layers, lowest first, are the folders of plugin/ (plus gpu/): each may include its own layer
and the ones below it. Run from the repository root; CI runs it as a ctest (label unit).
"""
import pathlib
import re
import sys

LAYERS = ["plugin/core", "plugin/observe", "plugin/cuda", "plugin/devmem", "gpu", "plugin/consumers",
          "plugin/setup", "plugin/transport", "plugin/abi"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(path: str) -> int:
    for rank, prefix in enumerate(LAYERS):
        if path.startswith(prefix + "/"):
            return rank
    return -1


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    bad = []
    for source in sorted(root.glob("plugin/**/*")) + sorted(root.glob("gpu/*")):
        if source.suffix not in (".h", ".cc", ".cu"):
            continue
        rel = source.relative_to(root).as_posix()
        own = layer_of(rel)
        for target in INCLUDE.findall(source.read_text()):
            if layer_of(target) > own:
                bad.append(f"{rel} includes {target} ({LAYERS[own]} -> {LAYERS[layer_of(target)]})")
    for line in bad:
        print(line)
    print(f"{len(bad)} upward includes across {len(LAYERS)} layers")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
