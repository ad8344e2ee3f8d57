#!/usr/bin/env python3
"""busbw vs message size as a PNG, from devmem-nccl-bench --json lines. Standard library only
(zlib + struct; no matplotlib on the GPU host), so the plot is produced where the numbers are.

usage: plot_busbw.py RESULTS.jsonl OP OUT.png   (OP: all_reduce, all_gather or sendrecv)
"""
import json
import math
import struct
import sys
import zlib

# 5x7 glyphs, one string of 7 rows of 5 bits each.
FONT = {
    '0': "01110 10001 10011 10101 11001 10001 01110", '1': "00100 01100 00100 00100 00100 00100 01110",
    '2': "01110 10001 00001 00010 00100 01000 11111", '3': "11111 00010 00100 00010 00001 10001 01110",
    '4': "00010 00110 01010 10010 11111 00010 00010", '5': "11111 10000 11110 00001 00001 10001 01110",
    '6': "00110 01000 10000 11110 10001 10001 01110", '7': "11111 00001 00010 00100 01000 01000 01000",
    '8': "01110 10001 10001 01110 10001 10001 01110", '9': "01110 10001 10001 01111 00001 00010 01100",
    'A': "01110 10001 10001 11111 10001 10001 10001", 'B': "11110 10001 10001 11110 10001 10001 11110",
    'C': "01110 10001 10000 10000 10000 10001 01110", 'D': "11100 10010 10001 10001 10001 10010 11100",
    'E': "11111 10000 10000 11110 10000 10000 11111", 'F': "11111 10000 10000 11110 10000 10000 10000",
    'G': "01110 10001 10000 10111 10001 10001 01111", 'H': "10001 10001 10001 11111 10001 10001 10001",
    'I': "01110 00100 00100 00100 00100 00100 01110", 'J': "00111 00010 00010 00010 00010 10010 01100",
    'K': "10001 10010 10100 11000 10100 10010 10001", 'L': "10000 10000 10000 10000 10000 10000 11111",
    'M': "10001 11011 10101 10101 10001 10001 10001", 'N': "10001 10001 11001 10101 10011 10001 10001",
    'O': "01110 10001 10001 10001 10001 10001 01110", 'P': "11110 10001 10001 11110 10000 10000 10000",
    'Q': "01110 10001 10001 10001 10101 10010 01101", 'R': "11110 10001 10001 11110 10100 10010 10001",
    'S': "01111 10000 10000 01110 00001 00001 11110", 'T': "11111 00100 00100 00100 00100 00100 00100",
    'U': "10001 10001 10001 10001 10001 10001 01110", 'V': "10001 10001 10001 10001 10001 01010 00100",
    'W': "10001 10001 10001 10101 10101 10101 01010", 'X': "10001 10001 01010 00100 01010 10001 10001",
    'Y': "10001 10001 10001 01010 00100 00100 00100", 'Z': "11111 00001 00010 00100 01000 10000 11111",
    '.': "00000 00000 00000 00000 00000 01100 01100", '/': "00000 00001 00010 00100 01000 10000 00000",
    '(': "00010 00100 01000 01000 01000 00100 00010", ')': "01000 00100 00010 00010 00010 00100 01000",
    '_': "00000 00000 00000 00000 00000 00000 11111", '-': "00000 00000 00000 11111 00000 00000 00000",
    ' ': "00000 00000 00000 00000 00000 00000 00000", ':': "00000 01100 01100 00000 01100 01100 00000",
    '=': "00000 00000 11111 00000 11111 00000 00000", ',': "00000 00000 00000 00000 01100 00100 01000",
}
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def set(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            self.px[i:i + 3] = bytes(c)

    def line(self, x0, y0, x1, y1, c, width=1):
        x0, y0, x1, y1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            for ox in range(-(width // 2), width - width // 2):
                for oy in range(-(width // 2), width - width // 2):
                    self.set(x0 + ox, y0 + oy, c)
            if x0 == x1 and y0 == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def box(self, x, y, w, h, c):
        for yy in range(int(y), int(y + h)):
            for xx in range(int(x), int(x + w)):
                self.set(xx, yy, c)

    def text(self, x, y, s, c=(0, 0, 0), scale=2):
        for ch in s.upper():
            rows = FONT.get(ch, FONT[' ']).split()
            for r, bits in enumerate(rows):
                for col, bit in enumerate(bits):
                    if bit == '1':
                        self.box(x + col * scale, y + r * scale, scale, scale, c)
            x += 6 * scale

    def png(self, path):
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3])
                       for y in range(self.h))

        def chunk(tag, data):
            return (struct.pack(">I", len(data)) + tag + data +
                    struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff))
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")
            f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)))
            f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
            f.write(chunk(b"IEND", b""))


def size_label(n):
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= div:
            return "%d%s" % (n // div, unit)
    return str(n)


def size_chart(series, title, out, y_fraction, y_grid, left, right):
    """Writes OUT: one curve per (label, points) of `series`, in that order and colour, over a
    log2 size axis. points: (size, value) pairs sorted by size; y_fraction(value): the height in
    the plot area, 0 at the bottom to 1 at the top; y_grid: (value, text) of each grid line;
    left, right: the margins in pixels (room for the y labels)."""
    W, H, L, R, T, B = 900, 560, left, right, 60, 80
    cv = Canvas(W, H)
    xs = [s for _, pts in series for s, _ in pts]
    lx0, lx1 = math.log2(min(xs)), math.log2(max(xs))
    if lx1 == lx0:
        lx1 += 1

    def X(s):
        return L + (math.log2(s) - lx0) / (lx1 - lx0) * (W - L - R)

    def Y(v):
        return H - B - y_fraction(v) * (H - T - B)
    cv.line(L, H - B, W - R, H - B, (0, 0, 0), 2)
    cv.line(L, T, L, H - B, (0, 0, 0), 2)
    for v, text in y_grid:
        cv.line(L - 5, Y(v), W - R, Y(v), (225, 225, 225))
        cv.text(8, Y(v) - 7, text)
    ticks = sorted(set(xs))
    stride = max(1, (len(ticks) + 7) // 8)
    for s in ticks[::-1][::stride]:
        cv.line(X(s), H - B, X(s), H - B + 6, (0, 0, 0))
        cv.text(X(s) - 12, H - B + 12, size_label(s))
    cv.text(L, 15, title)
    cv.text(W // 2 - 60, H - 30, "SIZE (BYTES)")
    for idx, (label, pts) in enumerate(series):
        c = COLORS[idx % len(COLORS)]
        for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
            cv.line(X(s0), Y(v0), X(s1), Y(v1), c, 3)
        for s, v in pts:
            cv.box(X(s) - 3, Y(v) - 3, 7, 7, c)
        cv.box(L + 20, T + 10 + idx * 24, 14, 14, c)
        cv.text(L + 42, T + 10 + idx * 24, label)
    cv.png(out)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, op, out = sys.argv[1:]
    series = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r["op"] == op:
                series.setdefault(r["label"], []).append((r["bytes"], r["busbw"]))
    if not series:
        sys.exit("no %s results in %s" % (op, path))
    ymax = max(v for pts in series.values() for _, v in pts) * 1.1 or 1.0
    grid = [(ymax * i / 5, "%.1f" % (ymax * i / 5)) for i in range(6)]
    size_chart([(label, sorted(pts)) for label, pts in sorted(series.items())],
               "%s BUSBW (GB/S) VS MESSAGE SIZE" % op, out, lambda v: v / ymax, grid, 90, 30)
    print("wrote %s (%s: %s)" % (out, op, ", ".join(sorted(series))))


if __name__ == "__main__":
    main()
