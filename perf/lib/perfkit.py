#!/usr/bin/env python3
"""What the perf/scripts/ share: where a run's results go and its meta.json, parsing the benches'
JSON output into run records, medians and ratios. Standard library only (the GPU host has no
package registry). Used as a command by the scripts and as a module by the report writers.

    perfkit.py begin TOPIC KNOBS SCRIPT [ARG...]   make the results folder, write its meta.json,
                                                   print the folder (see results_dir)
    perfkit.py finish DIR STATUS                   add the exit status, end time and file list
    perfkit.py field FILE KEY [KEY...]             KEYs of FILE's last JSON line, space-separated
    perfkit.py record LABEL ROUND [--from FILE] [KEY=VALUE...]
                                                   one run record per JSON line of FILE (or one
                                                   from the KEY=VALUEs alone), label and round
                                                   added: the lines of a runs.jsonl
    perfkit.py iperf3-gbps FILE                    received GB/s of an `iperf3 -J` report
    perfkit.py rate-bytes RATE                     a tc rate ("1gbit", "250mbit") in bytes/s
    perfkit.py ratio RUNS METRIC A B UNIT [PREFIX] medians of A and B, last line `ratio R`
    perfkit.py versus RUNS METRIC BASE [HEADING]   every label's median and its ratio to BASE
    perfkit.py against RUNS METRIC LABEL TEXT RATE [RATE...]
                                                   LABEL's median GB/s against the sum of tc
                                                   rates ("1gbit"), printed as TEXT

A run record is one JSON object per line: the bench's own fields (gbps, usec, size, ...) plus
"label" (which setting ran) and "round" (interleaved round, from 1). Medians are over rounds.
"""
import datetime
import inspect
import json
import os
import platform
import re
import shlex
import socket
import statistics
import subprocess
import sys

sys.dont_write_bytecode = True  # importers live in perf/lib/: no __pycache__ in the tree

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNKNOWN = "unknown (not recorded)"
# Variables that change what a run measures, recorded in meta.json whenever they are set:
# every NCCL_* (ours and NCCL's), the CUDA ones a GPU run depends on, the loader path.
ALWAYS_RECORDED = re.compile(r"^(NCCL_.*|CUDA_VISIBLE_DEVICES|CUDA_DEVICE_MAX_CONNECTIONS|"
                             r"CUDA_MPS_.*|LD_LIBRARY_PATH|GPU_VERIFY_.*)$")


# --- where results go, and what describes them ----------------------------------------------
def _run(args):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=20)
        return p.returncode, p.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return 127, ""


def gpus():
    """[{name, driver, memory}] from nvidia-smi; [] without a GPU or a driver."""
    rc, text = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                     "--format=csv,noheader"])
    if rc != 0:
        return []
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return rows


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or UNKNOWN


def machine_label(gpu_rows):
    """Short name of this machine for folder names: MACHINE, else CPUs and GPU ("2cpu",
    "16cpu-h200"); hostnames of lent machines say nothing a reader can use."""
    if os.environ.get("MACHINE"):
        return re.sub(r"[^A-Za-z0-9.-]+", "-", os.environ["MACHINE"])
    label = "%dcpu" % os.cpu_count()
    if gpu_rows:
        words = [w for w in gpu_rows[0]["name"].split() if w.upper() != "NVIDIA"]
        if words:
            label += "-" + re.sub(r"[^a-z0-9]+", "", words[0].lower())
    return label


def commit():
    """{hash, dirty}: the repository's HEAD, else the commit a GPU-host bundle recorded in its
    MANIFEST.txt (BUILD=.carry), else unknown."""
    rc, head = _run(["git", "-C", REPO, "rev-parse", "HEAD"])
    if rc == 0 and head:
        rc, _ = _run(["git", "-C", REPO, "diff", "--quiet", "HEAD", "--"])
        return {"hash": head, "dirty": rc != 0, "source": "git"}
    manifest = os.path.join(os.environ.get("BUILD", "build"), "MANIFEST.txt")
    try:
        with open(manifest) as f:
            m = re.search(r"^commit: (\S+)(.*)$", f.read(), re.M)
        if m:
            return {"hash": m.group(1), "dirty": "uncommitted" in m.group(2),
                    "source": manifest}
    except OSError:
        pass
    return {"hash": UNKNOWN, "dirty": None, "source": None}


def results_dir(topic, now):
    """OUT when set (told where), else $BUILD/results/<date>_<machine>_<topic>, with -2, -3...
    when that folder already has files. Never perf/results/ unless OUT says so."""
    if os.environ.get("OUT"):
        return os.environ["OUT"]
    base = os.path.join(os.environ.get("BUILD", "build"), "results",
                        "%s_%s_%s" % (now.strftime("%Y-%m-%d"), machine_label(gpus()), topic))
    path, n = base, 1
    while os.path.isdir(path) and os.listdir(path):
        n += 1
        path = "%s-%d" % (base, n)
    return path


def write_meta(out_dir, topic, knobs, argv, now):
    gpu_rows = gpus()
    names = set(knobs) | {k for k in os.environ if ALWAYS_RECORDED.match(k)}
    meta = {
        "topic": topic,
        "command": " ".join(shlex.quote(a) for a in argv),
        "cwd": os.getcwd(),
        "environment": {k: os.environ[k] for k in sorted(names) if k in os.environ},
        "commit": commit(),
        "date_utc": now.strftime("%Y-%m-%d"),
        "started_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"hostname": socket.gethostname(), "cpus": os.cpu_count(),
                    "cpu_model": cpu_model(), "kernel": platform.release(),
                    "label": machine_label(gpu_rows)},
        "gpu": gpu_rows or None,
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


def begin(topic, knobs, *argv):
    now = datetime.datetime.now(datetime.timezone.utc)
    out = results_dir(topic, now)
    os.makedirs(out, exist_ok=True)
    write_meta(out, topic, knobs.split(), list(argv), now)
    print(out)


def finish(out_dir, status):
    path = os.path.join(out_dir, "meta.json")
    with open(path) as f:
        meta = json.load(f)
    meta["finished_utc"] = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    meta["exit_status"] = int(status)
    meta["files"] = sorted(os.path.relpath(os.path.join(d, n), out_dir)
                           for d, _, names in os.walk(out_dir) for n in names
                           if n != "meta.json")
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


# --- bench output and run records -----------------------------------------------------------
def json_lines(path):
    """The JSON objects of a bench's --json output (its other lines are comments)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def field(path, *keys):
    rows = json_lines(path)
    if not rows:
        sys.exit("perfkit.py field: no JSON line in %s" % path)
    print(" ".join(str(rows[-1][k]) for k in keys))


def _value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def record(label, rnd, *args):
    args = list(args)
    rows = [{}]
    if args[:1] == ["--from"]:
        rows = json_lines(args[1])
        args = args[2:]
    extra = dict(a.split("=", 1) for a in args)
    for r in rows:
        r.update({k: _value(v) for k, v in extra.items()}, label=label, round=int(rnd))
        print(json.dumps(r))


def iperf3_gbps(path):
    with open(path) as f:
        print(json.load(f)["end"]["sum_received"]["bits_per_second"] / 8e9)


def bytes_per_second(rate):
    """A tc rate ("1gbit", "250mbit") in bytes per second."""
    m = re.fullmatch(r"([0-9.]+)([kmg]?)bit", rate.lower())
    if not m:
        sys.exit("perfkit.py: bad rate %s (e.g. 1gbit, 250mbit)" % rate)
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8


def rate_bytes(rate):
    print(bytes_per_second(rate))


def load_runs(path):
    """The records of a runs.jsonl (or any file of JSON lines; blank lines are skipped)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_text(path):
    """A file's text, undecodable bytes replaced; "" where there is none (a run that died before
    writing its log leaves a report with a reason, not a traceback)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def medians(runs, metric):
    """{label: median of metric over its records}, labels in first-run order."""
    by_label = {}
    for r in runs:
        if metric in r:
            by_label.setdefault(r["label"], []).append(float(r[metric]))
    return {label: statistics.median(v) for label, v in by_label.items()}


def ratio(runs_path, metric, a, b, unit, prefix=""):
    med = medians(load_runs(runs_path), metric)
    lead = prefix + " " if prefix else ""
    print(f"{lead}median: {a} {med[a]:.3f} {unit}  {b} {med[b]:.3f} {unit}")
    print(f"{lead}ratio {med[a] / med[b]:.2f}")


UNITS = {"gbps": "GB/s", "usec": "us", "send_cpu_s_per_gb": "CPU s/GB"}


def versus(runs_path, metric, base, heading="setting"):
    med = medians(load_runs(runs_path), metric)
    print("%24s %14s %10s" % (heading, UNITS.get(metric, metric) + " (median)", "vs " + base))
    for label, value in med.items():
        print(f"{label:>24} {value:14.3f} {value / med[base]:10.2f}")


def against(runs_path, metric, label, text, *rates):
    value = medians(load_runs(runs_path), metric)[label]
    limit = sum(bytes_per_second(r) for r in rates)
    print("%-22s median %.4f GB/s, limit sum %.4f GB/s, ratio %.2f" %
          (text, value, limit / 1e9, value * 1e9 / limit))


COMMANDS = {"begin": begin, "finish": finish, "field": field, "record": record,
            "iperf3-gbps": iperf3_gbps, "rate-bytes": rate_bytes, "ratio": ratio,
            "versus": versus, "against": against}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    command = COMMANDS[sys.argv[1]]
    try:
        inspect.signature(command).bind(*sys.argv[2:])
    except TypeError as e:  # wrong argument count: the usage, not a traceback
        sys.exit("perfkit.py %s: %s\n%s" % (sys.argv[1], e, __doc__))
    command(*sys.argv[2:])
