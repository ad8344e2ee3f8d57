#!/usr/bin/env python3
"""Ratio table and plots of perf/scripts/compare_nccl_socket.sh, from its runs.jsonl.

    report_nccl_socket.py RUNS.jsonl OUT_DIR

RUNS.jsonl: the bench's --json lines, each with "label" (ours, nccl default, nccl 1x4, ...) and
"round" added. For every size and test the median over rounds is taken per label; the ratio is
ours / the best NCCL setting at that size, as a rate, so above 1 means ours is faster:
stream GB/s(ours) / GB/s(best NCCL), ping-pong RTT(best NCCL) / RTT(ours). Prints a Markdown
table and, last, `min ratio R` over every size of both tests; writes stream_gbps.png and
pingpong_rtt.png (log-log, one curve per label) into OUT_DIR. Standard library only.
"""
import math
import os
import statistics
import sys

sys.dont_write_bytecode = True  # no perf/lib/__pycache__ from importing the plot writer
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfkit import load_runs  # noqa: E402  (the one reader of a runs.jsonl)
from plot_busbw import size_chart, size_label  # noqa: E402  (its PNG writer)

OURS = "ours"


def load(path):
    """{test: {label: {size: [values over rounds]}}}; stream in GB/s, ping-pong RTT in us."""
    runs = {}
    for r in load_runs(path):
        value = r["gbps"] if r["test"] == "stream" else r["usec"]
        runs.setdefault(r["test"], {}).setdefault(r["label"], {}).setdefault(
            r["size"], []).append(value)
    return runs


def medians(runs):
    return {test: {label: {size: statistics.median(v) for size, v in by_size.items()}
                   for label, by_size in by_label.items()}
            for test, by_label in runs.items()}


def best_nccl(by_label, size, higher_is_better):
    """(label, value) of the best NCCL setting measured at `size`."""
    candidates = [(label, values[size]) for label, values in by_label.items()
                  if label.startswith("nccl") and size in values]
    if not candidates:
        return None, None
    pick = max if higher_is_better else min
    return pick(candidates, key=lambda c: c[1])


def table(med, ours_label=OURS):
    """Markdown rows and the list of every ratio, for one setting of ours."""
    stream = med.get("stream", {})
    pingpong = med.get("pingpong", {})
    OURS = ours_label  # noqa: N806 (the column's label)
    sizes = sorted(set(stream.get(OURS, {})) | set(pingpong.get(OURS, {})))
    rows = ["| size | stream ours GB/s | best NCCL GB/s | ratio | "
            "ping-pong ours RTT us | best NCCL RTT us | ratio |",
            "|---|---|---|---|---|---|---|"]
    ratios = []
    for size in sizes:
        cells = [size_label(size) + ("B" if size < 1024 else "iB")]
        ours = stream.get(OURS, {}).get(size)
        label, best = best_nccl(stream, size, True)
        if ours is not None and best:
            ratios.append(ours / best)
            cells += ["%.3f" % ours, "%.3f (%s)" % (best, label), "**%.2f**" % (ours / best)]
        else:
            cells += ["-", "-", "-"]
        ours = pingpong.get(OURS, {}).get(size)
        label, best = best_nccl(pingpong, size, False)
        if ours:
            ratios.append(best / ours)
            cells += ["%.1f" % ours, "%.1f (%s)" % (best, label), "**%.2f**" % (best / ours)]
        else:
            cells += ["-", "-", "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows, ratios


def decades(lo, hi):
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if last == first:
        last += 1
    return first, last


def plot(by_label, title, out):
    """Log-log curves of value vs size, one per label (ours first)."""
    points = {label: sorted((s, v) for s, v in values.items() if v > 0)
              for label, values in by_label.items()}
    points = {label: pts for label, pts in points.items() if pts}
    if not points:
        return False
    ys = [v for pts in points.values() for _, v in pts]
    ly0, ly1 = decades(min(ys), max(ys))
    grid = [(10.0 ** k, ("%d" % 10.0 ** k) if k >= 0 else ("%." + str(-k) + "f") % 10.0 ** k)
            for k in range(ly0, ly1 + 1)]
    labels = sorted(points, key=lambda label: (label != OURS, label))
    size_chart([(label, points[label]) for label in labels], title, out,
               lambda v: (math.log10(v) - ly0) / (ly1 - ly0), grid, 110, 50)
    return True

def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, out_dir = sys.argv[1:]
    med = medians(load(path))
    rows, ratios = table(med)
    print("\n".join(rows))
    # Extra settings of ours (compare_nccl_socket.sh OURS_ENVS): the same table each, after the
    # main one, so the default's table (and `min ratio`) stays what it was.
    labels = set()
    for by_label in med.values():
        labels |= {label for label in by_label if label.startswith(OURS + " ")}
    for label in sorted(labels):
        extra_rows, extra_ratios = table(med, label)
        print("\n%s: min ratio %.2f" % (label, min(extra_ratios) if extra_ratios else float("nan")))
        print("\n".join(extra_rows))
    for test, title, name in (("stream", "STREAM (WINDOW 8) GB/S VS SIZE", "stream_gbps.png"),
                              ("pingpong", "PING-PONG RTT (US) VS SIZE", "pingpong_rtt.png")):
        if test in med and plot(med[test], title, os.path.join(out_dir, name)):
            print("wrote %s" % os.path.join(out_dir, name))
    if not ratios:
        sys.exit("no size has both ours and an NCCL setting in %s" % path)
    print("min ratio %.2f" % min(ratios))


if __name__ == "__main__":
    main()
