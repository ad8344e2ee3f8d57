#!/usr/bin/env python3
"""Verdicts, evidence and busbw ratios of one perf/scripts/nccl_compare.sh run, from what it left
in OUT_DIR (runs.tsv, nccl_busbw.jsonl, each run's table and NCCL log); writes compare.json and
prints the summary. Exit status: 0 PASS, 3 WRONG, 1 otherwise (the script's own).

    nccl_compare_report.py OUT_DIR LABEL MODE MPS_STATE ROUNDS
"""
import collections, json, os, re, sys
sys.dont_write_bytecode = True  # no perf/lib/__pycache__ from importing perfkit
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfkit import read_text as read  # noqa: E402  (a missing log reads as "")
out, label, mode, mps, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])

def reason(log):
    """The first error a failed run printed: the bench's own lines name the failing call."""
    lines = log.splitlines()
    for pattern in (r"^rank \d+: ", r"error while loading shared libraries|NCCL WARN",
                    r"[Ee]rror|failed"):
        hits = [l.strip() for l in lines if re.search(pattern, l)]
        if hits:
            return hits[0][:300]
    return lines[-1].strip()[:300] if lines else "no output"

runs = []
for line in read(os.path.join(out, "runs.tsv")).splitlines():
    who, rnd, verdict, rc, ms = line.split("\t")
    run = {"label": who, "round": int(rnd), "verdict": verdict, "rc": int(rc),
           "seconds": int(ms) / 1000.0}
    if verdict == "WRONG":
        # Where: the bench's #wrong column, as JSON lines (rounds share the file; any round).
        bad = []
        for line in read(os.path.join(out, "nccl_busbw.jsonl")).splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r["label"] == who and r.get("wrong", 0) > 0:
                bad.append("%s %d B: %d wrong" % (r["op"], r["bytes"], r["wrong"]))
        run["reason"] = "wrong results: " + ("; ".join(bad[:6]) or "see the #wrong column")
    elif verdict == "TIMEOUT":
        run["reason"] = "no exit within the --timeout limit; last log line: " + reason(
            read(os.path.join(out, "%s.%s.log" % (who, rnd))))
    elif verdict != "PASS":
        run["reason"] = reason(read(os.path.join(out, "%s.%s.log" % (who, rnd))))
    runs.append(run)

# What the NCCL logs prove: the baseline used NCCL's Socket net, ours went through NET/devmem,
# and the plugin ran the requested mode (an EMULATED RX line only in emulated mode).
# NCCL writes its log to stdout unless NCCL_DEBUG_FILE is set: the table (.txt) holds it too.
def nccl_log(who, rnd):
    return "".join(read(os.path.join(out, "%s.%s.%s" % (who, rnd, ext))) for ext in ("log", "txt"))
ours_log = nccl_log(label, rounds)
socket_log = nccl_log("socket", rounds)
evidence = {
    "ours_via_net_devmem": "via NET/devmem" in ours_log,
    "ours_emulated_rx_line": "EMULATED devmem RX" in ours_log,
    "ours_emulated_tx_line": "EMULATED devmem TX" in ours_log,
    "socket_via_net_socket": "via NET/Socket" in socket_log,
}
m = re.search(r"frags consumed by ([^\n;(]*)", ours_log)
evidence["ours_consumer"] = m.group(1).strip() if m else None
problems = []
if not evidence["ours_via_net_devmem"]:
    problems.append("no 'via NET/devmem' in %s.%d.{log,txt}" % (label, rounds))
if mode == "emulated" and not evidence["ours_emulated_rx_line"]:
    problems.append("no 'EMULATED devmem RX' line in %s.%d.{log,txt}" % (label, rounds))
if mode == "host" and evidence["ours_emulated_rx_line"]:
    problems.append("host mode but the plugin logged EMULATED devmem RX")
# NCCL_DEVMEM_EMULATE_TX=1 reaches ours through the environment (gpu_verify's emulated-tx step).
if os.environ.get("NCCL_DEVMEM_EMULATE_TX") == "1" and not evidence["ours_emulated_tx_line"]:
    problems.append("NCCL_DEVMEM_EMULATE_TX=1 but no 'EMULATED devmem TX' line in %s.%d.{log,txt}"
                    % (label, rounds))
if not evidence["socket_via_net_socket"]:
    problems.append("no 'via NET/Socket' in socket.%d.{log,txt}" % rounds)

best = collections.defaultdict(dict)
for line in read(os.path.join(out, "nccl_busbw.jsonl")).splitlines():
    try:
        r = json.loads(line)
    except ValueError:
        continue
    key = (r["op"], r["bytes"])
    best[key][r["label"]] = max(best[key].get(r["label"], 0.0), r["busbw"])
ratios = []
for (op, size), v in sorted(best.items()):
    if "socket" in v and label in v:
        ratios.append({"op": op, "bytes": size, "socket_busbw": v["socket"],
                       "ours_busbw": v[label],
                       "ratio": round(v[label] / v["socket"], 4) if v["socket"] > 0 else None})

verdicts = [r["verdict"] for r in runs]
if any(v in ("FAIL", "TIMEOUT") for v in verdicts):
    verdict = "TIMEOUT" if "TIMEOUT" in verdicts and "FAIL" not in verdicts else "FAIL"
elif "WRONG" in verdicts:
    verdict = "WRONG"
elif problems:
    verdict = "FAIL"
else:
    verdict = "PASS"

print("# run summary")
print("%-24s %5s %-8s %4s %9s" % ("label", "round", "verdict", "rc", "seconds"))
for r in runs:
    print("%-24s %5d %-8s %4d %9.1f  %s" % (r["label"], r["round"], r["verdict"], r["rc"],
                                             r["seconds"], r.get("reason", "")))
for p in problems:
    print("# evidence missing: " + p)
print("# busbw ratio %s/socket (best of %d interleaved round(s))" % (label, rounds))
print("%-11s %12s %10s %10s %7s" % ("op", "bytes", "socket", label[:10], "ratio"))
for r in ratios:
    print("%-11s %12d %10.2f %10.2f %7s" % (r["op"], r["bytes"], r["socket_busbw"], r["ours_busbw"],
                                           "%.2f" % r["ratio"] if r["ratio"] is not None else "-"))
if not ratios:
    print("# (no size measured by both)")
print("# compare verdict: %s" % verdict)
with open(os.path.join(out, "compare.json"), "w") as f:
    json.dump({"verdict": verdict, "label": label, "mode": mode, "mps": mps,
               "unpack": os.environ.get("NCCL_DEVMEM_UNPACK", "default"), "runs": runs,
               "evidence": evidence, "problems": problems, "ratios": ratios}, f, indent=1)
sys.exit({"PASS": 0, "WRONG": 3}.get(verdict, 1))
