#!/usr/bin/env python3
"""Markdown tables of perf/scripts/compare_scale.sh, from its runs.jsonl.

    report_scale.py RUNS.jsonl

RUNS.jsonl: nccl-net-devmem-scale-bench --json lines, each with "who" (ours, nccl default,
nccl 1x4, ...) and "round". Medians over rounds per (pairs, who). Prints one table of what each
setting costs per comm pair, then the ratios of ours to NCCL's socket transport: setup time
against NCCL at 1x4 (as many data sockets as ours; below 1 means ours sets up faster) and
aggregate throughput against the best NCCL setting at that N (above 1 means ours is faster).
Last line: `min throughput ratio R`. Standard library only.
"""
import os
import statistics
import sys

sys.dont_write_bytecode = True  # no perf/lib/__pycache__ from importing perfkit
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfkit import load_runs  # noqa: E402  (the one reader of a runs.jsonl)

OURS = "ours"
SAME_SOCKETS = "nccl 1x4"


def load(path):
    """{(pairs, who): [runs]}, failed runs dropped with a note on stderr."""
    runs = {}
    for r in load_runs(path):
        if "error" in r:
            print(f"note: {r['who']} at {r['pairs']} pairs failed: {r['error']}", file=sys.stderr)
            continue
        runs.setdefault((r["pairs"], r["who"]), []).append(r)
    return runs


def summary(runs):
    """Medians of one (pairs, who): per pair where the cost grows with the comms."""
    n = runs[0]["pairs"]
    med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
    out = {
        "setup_us": med(lambda r: r["setup_us_per_pair"]),
        "threads_open": med(lambda r: r["open"]["threads"]),
        "threads_after": med(lambda r: r["after"]["threads"]),
        "fds": med(lambda r: r["after"]["fds"] / n),
        "rss_open": med(lambda r: r["open"]["rss_kib"] / n),
        "rss_after": med(lambda r: r["after"]["rss_kib"] / n),
        "idle_cpu": med(lambda r: 100 * max(r["idle_cpu_open_s"], r["idle_cpu_after_s"]) /
                        max(r["idle_s"], 1e-9)),
        "gbps": {},
    }
    for t in runs[0]["throughput"]:
        size = t["size"]
        out["gbps"][size] = med(lambda r: next(x["gbps"] for x in r["throughput"]
                                              if x["size"] == size))
    return out


def size_label(size):
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def main():
    runs = load(sys.argv[1])
    if not runs:
        sys.exit("report_scale.py: no successful runs")
    table = {key: summary(value) for key, value in runs.items()}
    pairs = sorted({n for n, _ in table})
    sizes = sorted({s for v in table.values() for s in v["gbps"]})
    whos = sorted({w for _, w in table}, key=lambda w: (not w.startswith(OURS), w))
    rounds = max(len(v) for v in runs.values())
    print(f"Per comm pair (send + recv comm), medians of {rounds} round(s); threads are the "
          "process's total added, open / after traffic; idle CPU the larger of before and after "
          "traffic, % of one CPU.\n")
    head = ["pairs", "setting", "setup us/pair", "threads", "fds/pair", "RSS KiB/pair open",
            "RSS KiB/pair after", "idle CPU %"] + [f"GB/s {size_label(s)}" for s in sizes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in pairs:
        for who in whos:
            v = table.get((n, who))
            if v is None:
                continue
            cells = [str(n), who, f"{v['setup_us']:.1f}",
                     f"+{v['threads_open']:.0f} / +{v['threads_after']:.0f}", f"{v['fds']:.1f}",
                     f"{v['rss_open']:.0f}", f"{v['rss_after']:.0f}", f"{v['idle_cpu']:.1f}"]
            cells += [f"{v['gbps'].get(s, float('nan')):.3f}" for s in sizes]
            print("| " + " | ".join(cells) + " |")

    print("\nOurs / NCCL: setup as NCCL 1x4's time over ours (above 1: ours sets up faster), "
          "throughput over the best NCCL setting (above 1: ours is faster).\n")
    head = ["pairs", f"setup vs {SAME_SOCKETS}"] + [f"GB/s {size_label(s)} vs best NCCL"
                                                    for s in sizes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    ratios = []
    for n in pairs:
        ours = table.get((n, OURS))
        if ours is None:
            continue
        ref = table.get((n, SAME_SOCKETS))
        cells = [str(n), f"{ref['setup_us'] / ours['setup_us']:.2f}" if ref else "-"]
        for s in sizes:
            ncc = [(v["gbps"][s], w) for (m, w), v in table.items()
                   if m == n and w.startswith("nccl") and s in v["gbps"]]
            if not ncc or s not in ours["gbps"]:
                cells.append("-")
                continue
            best, label = max(ncc)
            ratio = ours["gbps"][s] / best
            ratios.append(ratio)
            cells.append(f"**{ratio:.2f}** ({label})")
        print("| " + " | ".join(cells) + " |")
    if ratios:
        print(f"\nmin throughput ratio {min(ratios):.2f}")


if __name__ == "__main__":
    main()
