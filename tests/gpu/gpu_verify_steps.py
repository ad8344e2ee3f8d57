#!/usr/bin/env python3
"""The verdicts of tests/gpu/gpu_verify.sh's steps and its summary: one function per kind of
step, called as `gpu_verify_steps.py KIND ARGS...` (python3 is on the GPU host; JSON parsing in
bash would be guesswork). Each classifier prints "VERDICT<TAB>note" and writes the step's
details JSON; `summary` writes summary.json and prints the table; `combine` joins the NCCL
steps' busbw lines for the plots.
"""
import json, os, re, sys
# perf/lib/ beside tests/ in the repository and in the GPU-host bundle alike
# (tests/gpu/gpu_host_bundle.sh carries both at their repository paths).
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "perf",
                                "lib"))
from perfkit import read_text as read  # noqa: E402  (a missing log reads as "")

def emit(verdict, note, details, details_path):
    with open(details_path, "w") as f:
        json.dump(details, f, indent=1)
    print("%s\t%s" % (verdict, note.replace("\t", " ").replace("\n", " ")))

def gtest(rc, log_path, json_path, details_path):
    """PASS: some test ran and none failed; SKIP: every test skipped itself (no GPU...)."""
    rc = int(rc)
    try:
        report = json.load(open(json_path))
    except (OSError, ValueError):
        report = None
    if report is None:
        tail = " | ".join(read(log_path).strip().splitlines()[-3:])
        return emit("FAIL", "exit %d, no gtest report (crashed or did not start): %s" % (rc, tail),
                    {"rc": rc}, details_path)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failed = []
    for suite in report.get("testsuites", []):
        for t in suite.get("testsuite", []):
            if t.get("status") != "RUN":
                continue
            if t.get("failures"):
                counts["failed"] += 1
                failed.append("%s.%s" % (suite["name"], t["name"]))
            elif t.get("result") == "SKIPPED":
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    details = dict(counts, rc=rc, failed_tests=failed)
    reasons = re.findall(r": Skipped\n(.*)", read(log_path))
    if counts["failed"] or rc != 0:
        note = "%d failed (%s), %d passed, %d skipped, exit %d" % (
            counts["failed"], ", ".join(failed[:4]), counts["passed"], counts["skipped"], rc)
        return emit("FAIL", note, details, details_path)
    if counts["passed"] == 0:
        reason = reasons[0] if reasons else "no test ran"
        return emit("SKIP", "all %d tests skipped: %s" % (counts["skipped"], reason), details,
                    details_path)
    note = "%d passed, %d skipped" % (counts["passed"], counts["skipped"])
    if reasons:
        note += " (%s)" % reasons[0]
    return emit("PASS", note, details, details_path)

def scatter(rc, log_path, details_path):
    rc = int(rc)
    text = read(log_path)
    rows = [{"frag_bytes": int(f), "kernel_gbps": float(k), "memcpy_gbps": float(m),
             "ratio": round(float(k) / float(m), 4) if float(m) > 0 else None}
            for f, k, m in re.findall(
                r"frag\s+(\d+) B: scatter kernel\s+([\d.]+) GB/s\s+cudaMemcpy D2D\s+([\d.]+) GB/s", text)]
    details = {"rc": rc, "rows": rows}
    if rc == 0 and "no CUDA device" in text:
        return emit("SKIP", "no CUDA device: nothing measured", details, details_path)
    if rc != 0 or not rows:
        tail = " | ".join(text.strip().splitlines()[-2:])
        return emit("FAIL", "exit %d, %d ratio line(s): %s" % (rc, len(rows), tail), details,
                    details_path)
    return emit("PASS", ", ".join("frag %d B: kernel/memcpy %.2f" % (r["frag_bytes"], r["ratio"] or 0)
                                  for r in rows), details, details_path)

def nccl(rc, out_dir, details_path):
    rc = int(rc)
    try:
        compare = json.load(open(os.path.join(out_dir, "compare.json")))
    except (OSError, ValueError):
        compare = None
    if compare is None:
        verdict = "TIMEOUT" if rc in (124, 137) else "FAIL"
        return emit(verdict, "exit %d, no compare.json (see the step log)" % rc, {"rc": rc},
                    details_path)
    verdict = compare.get("verdict", "FAIL")
    if rc in (124, 137):
        verdict = "TIMEOUT"  # the whole comparison ran out of time, whatever the runs said
    runs = ", ".join("%s %s" % (r["label"], r["verdict"]) for r in compare.get("runs", []))
    ratios = {}
    for r in compare.get("ratios", []):
        if r.get("ratio") is not None:
            ratios.setdefault(r["op"], {})[str(r["bytes"])] = r["ratio"]
    parts = [runs or "no run"]
    for op, by_size in sorted(ratios.items()):
        largest = max(by_size, key=int)
        parts.append("%s ours/Socket %.2f at %s" % (op, by_size[largest], size_label(int(largest))))
    failed = [r for r in compare.get("runs", []) if r["verdict"] != "PASS"]
    if failed:
        # The root cause, not its consequences (a run that failed leaves no evidence either).
        parts.append("first error (%s): %s" % (failed[0]["label"], failed[0].get("reason", "?")))
    else:
        parts += ["evidence missing: " + p for p in compare.get("problems", [])]
    if compare.get("mps") in ("unavailable", "off"):
        parts.append("no MPS")
    # The NCCL each bench actually loaded (its table header): the pip one, as torch uses.
    loaded = sorted(set(re.findall(r"^# devmem-nccl-bench \[[^]]*\]: NCCL (\d+)", "".join(
        read(os.path.join(out_dir, f)) for f in sorted(os.listdir(out_dir)) if f.endswith(".txt")),
        re.M)))
    if loaded:
        parts.append("NCCL " + "/".join(loaded))
    compare["nccl_loaded"] = loaded
    compare["ratio_by_op_and_bytes"] = ratios
    compare["rc"] = rc
    return emit(verdict, "; ".join(parts), compare, details_path)

def torch_step(rc, log_path, json_path, details_path):
    rc = int(rc)
    text = read(log_path)
    try:
        report = json.load(open(json_path))
    except (OSError, ValueError):
        report = {}
    evidence = {"via_net_devmem": "via NET/devmem" in text,
                "emulated_rx_line": "EMULATED devmem RX" in text}
    details = dict(report, rc=rc, evidence=evidence)
    rows = report.get("rows", [])
    if rc in (124, 137):
        return emit("TIMEOUT", "timed out after %d size(s)" % len(rows), details, details_path)
    if rc == 3:
        bad = [r["bytes"] for r in rows if not r["correct"]]
        return emit("WRONG", "wrong sums at %s B" % bad, details, details_path)
    if rc != 0:
        tail = " | ".join(l for l in text.strip().splitlines()
                          if re.search(r"Error|error|failed|WARN", l))[-300:]
        return emit("FAIL", "exit %d: %s" % (rc, tail or "see torch.log"), details, details_path)
    missing = [k for k, v in evidence.items() if not v]
    if missing:
        return emit("FAIL", "sums correct but the NCCL log lacks %s" % ", ".join(missing), details,
                    details_path)
    best = max(rows, key=lambda r: r["bytes"]) if rows else None
    note = "%d sizes correct (torch %s, NCCL %s)" % (len(rows), report.get("torch"), report.get("nccl"))
    if best:
        note += ", busbw %.2f GB/s at %d B" % (best["busbw"], best["bytes"])
    return emit("PASS", note, details, details_path)

def summary(out_dir, started_us, now_us, budget, bundle):
    steps = []
    for line in read(os.path.join(out_dir, "steps.tsv")).splitlines():
        name, verdict, ms, note = line.split("\t", 3)
        step = {"name": name, "verdict": verdict, "seconds": int(ms) / 1000.0, "note": note,
                "log": name + ".log"}
        details = read(os.path.join(out_dir, name + ".details.json"))
        if details:
            step["details"] = json.loads(details)
        steps.append(step)
    ratios = {}
    for s in steps:
        by_op = s.get("details", {}).get("ratio_by_op_and_bytes")
        if by_op:
            ratios[s["name"].split(".", 1)[1]] = by_op
    env = read(os.path.join(out_dir, "env.json"))
    mps = read(os.path.join(out_dir, "mps.log")).strip().splitlines()
    verdict = "PASS" if steps and all(s["verdict"] == "PASS" for s in steps) else "FAIL"
    result = {"verdict": verdict, "bundle": bundle, "budget_seconds": int(budget),
              "seconds": round((int(now_us) - int(started_us)) / 1e6, 1),
              "environment": json.loads(env) if env else None,
              "mps": mps[0].lstrip("# ") if mps else "not used",
              "busbw_ratio_ours_over_socket": ratios, "steps": steps}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("# summary (%s, %.0f s)" % (verdict, result["seconds"]))
    print("%-32s %-8s %8s  %s" % ("step", "verdict", "seconds", "note"))
    for s in steps:
        note = s["note"] if len(s["note"]) <= 150 else s["note"][:147] + "..."
        print("%-32s %-8s %8.1f  %s" % (s["name"], s["verdict"], s["seconds"], note))
    for mode, by_op in sorted(ratios.items()):
        for op, by_size in sorted(by_op.items()):
            sizes = sorted(by_size, key=int)
            print("# busbw ours/Socket, %s, %s: %s" % (mode, op, " ".join(
                "%s:%.2f" % (size_label(int(b)), by_size[b]) for b in sizes)))
    print("# OVERALL: %s  (details: %s)" % (verdict, os.path.join(out_dir, "summary.json")))

def size_label(n):
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= div and n % div == 0:
            return "%d%s" % (n // div, unit)
    return str(n)

def combine(out_dir, modes):
    """One JSON-lines file for the plots: the first Socket baseline and every mode of ours."""
    lines, socket_done = [], False
    for mode in modes.split(","):
        rows = [json.loads(l) for l in read(os.path.join(out_dir, "nccl-" + mode,
                                                         "nccl_busbw.jsonl")).splitlines() if l.strip()]
        has_socket = any(r["label"] == "socket" for r in rows)
        for r in rows:
            if r["label"] == "socket" and socket_done:
                continue
            lines.append(json.dumps(r))
        socket_done = socket_done or has_socket
    with open(os.path.join(out_dir, "busbw_all.jsonl"), "w") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
    ops = sorted({json.loads(l)["op"] for l in lines})
    print(" ".join(ops))

if __name__ == "__main__":
    globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
