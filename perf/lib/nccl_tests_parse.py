#!/usr/bin/env python3
"""nccl-tests' text output (all_reduce_perf and the other *_perf binaries) as run records, and
the report of perf/scripts/compare_nccl_tests.sh. Standard library only (the GPU host has no
package registry).

    nccl_tests_parse.py records FILE LABEL ROUND OP MODE
        one JSON line per message size of FILE (a *_perf stdout), fields of perfkit's run
        records: op, label, round, mode, bytes, busbw (out-of-place), busbw_inplace, time_us,
        algbw, wrong (out-of-place + in-place, null where the binary printed N/A); then one
        summary line {"summary": true, ...} with avg_busbw, out_of_bounds and the row count
    nccl_tests_parse.py report OUT_DIR   (also perf/scripts/compare_torch.sh's, whose records
                                          tests/gpu/torch_collectives.py writes in this form)
        reads OUT_DIR/runs.tsv and OUT_DIR/records.jsonl, prints the run verdicts and the
        busbw table ours/Socket per collective and size (median over rounds), writes
        OUT_DIR/compare.json and OUT_DIR/busbw_median.jsonl (plot_busbw.py's input); runs.tsv
        holds label, op, round, verdict, rc, milliseconds and an optional reason; exit 0
        every run PASS, 3 any #wrong or out-of-bounds value non-zero, 1 a run failed or
        timed out

The format is nccl-tests' (NVIDIA/nccl-tests a0b82b2, version 2.19.6, src/util.cu; older
releases print the same lines from src/common.cu):
  - a result row starts with writeBenchmarkLinePreamble, util.cu:457
        "%12li  %12li  %8s  %6s  %6s"   size (B), count (elements), type, redop, root
    then writeBenchmarkLineBody twice (out-of-place, then in-place), util.cu:508 / :510
        "  %7s  %6s  %6s  %6g"          time (us), algbw, busbw (GB/s), #wrong
        "  %7s  %6s  %6s    N/A"        the same without a data check (-c 0)
    (time and bandwidths from getFloatStr, util.cu:487: %.2f, %.1f, %.0f or %e to fit); an
    optional timestamp column follows (-Z, util.cu:513); the per-iteration
    columns of -I (util.cu:568) are not parsed: compare_nccl_tests.sh never passes -I;
  - the footer, writeResultFooter, util.cu:777-778
        "# %-20s : %d %s"  "Out of bounds values", count, OK|FAILED
        "# %-20s : %g %s"  "Avg bus bandwidth", GB/s, "" | OK | FAILED (NCCL_TESTS_MIN_BW)
Each row's bytes are max(sendBytes, expectedBytes) (common.cu:938); busbw is the binary's own
bus bandwidth (nccl-tests' doc/PERFORMANCE.md).
"""
import collections
import json
import os
import re
import statistics
import sys

sys.dont_write_bytecode = True

NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|inf|nan)"
# One body: time, algbw, busbw, #wrong (a %g number or N/A).
BODY = r"\s+(%s)\s+(%s)\s+(%s)\s+(%s|N/A)" % (NUMBER, NUMBER, NUMBER, NUMBER)
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(-?\d+)" + BODY + "(?:" + BODY + ")?")
OUT_OF_BOUNDS = re.compile(r"^#\s*Out of bounds values\s*:\s*(\d+)\s*(OK|FAILED)?")
AVG_BUSBW = re.compile(r"^#\s*Avg bus bandwidth\s*:\s*(%s)\s*(OK|FAILED)?" % NUMBER)
# nccl-tests 2.14+ print it last (util.cu:780): a missing line means the binary did not finish.
CONCLUDED = re.compile(r"^#\s*Collective test concluded:\s*(\S+)")


def _wrong(text):
    return None if text == "N/A" else int(float(text))


def _body(groups):
    time_us, algbw, busbw, wrong = groups
    return {"time_us": float(time_us), "algbw": float(algbw), "busbw": float(busbw),
            "wrong": _wrong(wrong)}


def parse(text):
    """{rows, out_of_bounds, out_of_bounds_ok, avg_busbw, avg_busbw_verdict, concluded} of one
    *_perf output. A row has bytes, count, type, redop, root and out_of_place / in_place
    ({time_us, algbw, busbw, wrong}; in_place None when the row has one body only). Lines of
    other programs (NCCL's INFO log, mpirun) are skipped; a `N: ` rank prefix that some
    launchers add is allowed."""
    result = {"rows": [], "out_of_bounds": None, "out_of_bounds_ok": None, "avg_busbw": None,
              "avg_busbw_verdict": None, "concluded": None}
    for line in text.splitlines():
        line = re.sub(r"^\s*\d+:\s", "", line)  # mpirun --tag-output / srun -l prefixes
        m = ROW.match(line)
        if m:
            g = m.groups()
            row = {"bytes": int(g[0]), "count": int(g[1]), "type": g[2], "redop": g[3],
                   "root": int(g[4]), "out_of_place": _body(g[5:9]), "in_place": None}
            if g[9] is not None:
                row["in_place"] = _body(g[9:13])
            result["rows"].append(row)
            continue
        m = OUT_OF_BOUNDS.match(line)
        if m:
            result["out_of_bounds"] = int(m.group(1))
            result["out_of_bounds_ok"] = m.group(2) != "FAILED" and int(m.group(1)) == 0
            continue
        m = AVG_BUSBW.match(line)
        if m:
            result["avg_busbw"] = float(m.group(1))
            result["avg_busbw_verdict"] = m.group(2)
            continue
        m = CONCLUDED.match(line)
        if m:
            result["concluded"] = m.group(1)
    return result


def total_wrong(row):
    """#wrong of both bodies; None when neither was checked (N/A)."""
    values = [b["wrong"] for b in (row["out_of_place"], row["in_place"])
              if b is not None and b["wrong"] is not None]
    return sum(values) if values else None


def records(path, label, rnd, op, mode):
    with open(path, errors="replace") as f:
        parsed = parse(f.read())
    for row in parsed["rows"]:
        oop, ip = row["out_of_place"], row["in_place"]
        print(json.dumps({"op": op, "label": label, "round": int(rnd), "mode": mode,
                          "bytes": row["bytes"], "type": row["type"], "busbw": oop["busbw"],
                          "busbw_inplace": ip["busbw"] if ip else None,
                          "time_us": oop["time_us"], "algbw": oop["algbw"],
                          "wrong": total_wrong(row)}))
    print(json.dumps({"summary": True, "op": op, "label": label, "round": int(rnd),
                      "mode": mode, "rows": len(parsed["rows"]),
                      "avg_busbw": parsed["avg_busbw"],
                      "out_of_bounds": parsed["out_of_bounds"],
                      "out_of_bounds_ok": parsed["out_of_bounds_ok"],
                      "concluded": parsed["concluded"]}))


def _read_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def report(out):
    runs = []
    for line in _read_lines(os.path.join(out, "runs.tsv")):
        fields = line.split("\t")  # label op round verdict rc ms [reason]
        label, op, rnd, verdict, rc, ms = fields[:6]
        runs.append({"label": label, "op": op, "round": int(rnd), "verdict": verdict,
                     "rc": int(rc), "seconds": int(ms) / 1000.0})
        if len(fields) > 6 and fields[6]:
            runs[-1]["reason"] = fields[6]
    rows, summaries = [], {}
    for line in _read_lines(os.path.join(out, "records.jsonl")):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("summary"):
            summaries[(r["label"], r["op"], r["round"])] = r
        else:
            rows.append(r)

    wrong = []
    for r in rows:
        if r["wrong"]:
            wrong.append("%s %s round %d, %d B: %d wrong" % (r["label"], r["op"], r["round"],
                                                             r["bytes"], r["wrong"]))
    for run in runs:
        s = summaries.get((run["label"], run["op"], run["round"]))
        if run["verdict"] == "PASS":
            # A zero exit with a cut-off table (no footer) is not a pass.
            if s is None or s["rows"] == 0 or s["out_of_bounds"] is None:
                run["verdict"], run["reason"] = "FAIL", "no result table or no footer in its output"
            elif not s["out_of_bounds_ok"]:
                run["verdict"] = "WRONG"
        elif run["verdict"] == "FAIL" and s and s["out_of_bounds"]:
            run["verdict"] = "WRONG"  # nccl-tests exits EXIT_FAILURE on them (common.cu:1853)
        if run["verdict"] == "WRONG" and s and s["out_of_bounds"]:
            run["reason"] = "out of bounds values: %d" % s["out_of_bounds"]
        if s:
            run["avg_busbw"] = s["avg_busbw"]

    by = collections.defaultdict(list)
    for r in rows:
        by[(r["op"], r["bytes"], r["label"])].append(r["busbw"])
    labels = []
    for r in rows:
        if r["label"] != "socket" and r["label"] not in labels:
            labels.append(r["label"])
    table = []
    for op, size in sorted({(r["op"], r["bytes"]) for r in rows}):
        socket = by.get((op, size, "socket"))
        entry = {"op": op, "bytes": size,
                 "socket_busbw": statistics.median(socket) if socket else None}
        for label in labels:
            mine = by.get((op, size, label))
            value = statistics.median(mine) if mine else None
            entry[label + "_busbw"] = value
            entry[label + "_ratio"] = (round(value / entry["socket_busbw"], 4)
                                       if value is not None and entry["socket_busbw"] else None)
        table.append(entry)

    verdicts = [r["verdict"] for r in runs]
    if wrong or "WRONG" in verdicts:
        verdict = "WRONG"
    elif not runs or any(v != "PASS" for v in verdicts):
        verdict = "FAIL"
    else:
        verdict = "PASS"

    print("# run summary")
    print("%-18s %-15s %5s %-8s %4s %9s %9s" % ("label", "op", "round", "verdict", "rc",
                                                  "seconds", "avg busbw"))
    for r in runs:
        avg = r.get("avg_busbw")
        print("%-18s %-15s %5d %-8s %4d %9.1f %9s  %s" % (
            r["label"], r["op"], r["round"], r["verdict"], r["rc"], r["seconds"],
            "%.3f" % avg if avg is not None else "-", r.get("reason", "")))
    for w in wrong[:20]:
        print("# WRONG: " + w)
    print("# busbw (GB/s, out-of-place, median over rounds) and ratio to NCCL_NET=Socket")
    print("%-15s %12s %9s" % ("op", "bytes", "socket") +
          "".join(" %12s %6s" % (label[:12], "ratio") for label in labels))
    for e in table:
        line = "%-15s %12d %9s" % (e["op"], e["bytes"], _num(e["socket_busbw"]))
        for label in labels:
            line += " %12s %6s" % (_num(e[label + "_busbw"]), _num(e[label + "_ratio"]))
        print(line)
    print("# compare verdict: %s" % verdict)
    # The medians as plot_busbw.py reads them (one point per label and size).
    with open(os.path.join(out, "busbw_median.jsonl"), "w") as f:
        for e in table:
            for label in ["socket"] + labels:
                value = e["socket_busbw"] if label == "socket" else e[label + "_busbw"]
                if value is not None:
                    f.write(json.dumps({"op": e["op"], "label": label, "bytes": e["bytes"],
                                        "busbw": value}) + "\n")
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump({"verdict": verdict, "labels": ["socket"] + labels, "runs": runs,
                   "wrong": wrong, "busbw": table}, f, indent=1)
        f.write("\n")
    return {"PASS": 0, "WRONG": 3}.get(verdict, 1)


def _num(value):
    return "-" if value is None else "%.2f" % value


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "records":
        records(*sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        sys.exit(report(sys.argv[2]))
    else:
        sys.exit(__doc__)
