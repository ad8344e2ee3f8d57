#!/usr/bin/env python3
"""The env step of tests/gpu/gpu_verify.sh: GPUs and driver (nvidia-smi), the pip NCCL and its
version, torch, kernel, CPUs, glibc against the bundle's need, devmem-doctor's report. Writes
JSON_PATH and, as soon as each is known, the GPU count and NCCL directory to VARS_PATH.

    gpu_verify_env.py BUNDLE JSON_PATH VARS_PATH
"""
import ctypes, json, os, platform, re, subprocess, sys
bundle, json_path, vars_path = sys.argv[1:4]
facts, problems = {}, []

def sh(args, timeout=20):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip()
    except FileNotFoundError:
        return 127, "%s: not found" % args[0]
    except subprocess.TimeoutExpired:
        return 124, "%s: timed out after %d s" % (args[0], timeout)

def write_vars(gpus, nccl_dir):
    # Written as soon as known: a later hang (torch import) must not hide the GPU count.
    with open(vars_path, "w") as f:
        f.write("gpu_count %d\nnccl_lib_dir %s\n" % (len(gpus), nccl_dir or ""))

rc, text = sh(["nvidia-smi", "-L"], timeout=10)
gpus = [l for l in text.splitlines() if l.startswith("GPU ")] if rc == 0 else []
facts["gpus"] = gpus
if not gpus:
    problems.append("no GPU (nvidia-smi -L: %s)" % (text.splitlines()[0] if text else "rc %d" % rc))
rc, text = sh(["nvidia-smi", "--query-gpu=driver_version,memory.total,compute_mode",
               "--format=csv,noheader"], timeout=10)
facts["driver"] = text.splitlines()[0] if rc == 0 and text else None
write_vars(gpus, None)

# NCCL of the pip package nvidia-nccl-cu13: the one torch uses and the benches must use.
nccl_dir = None
try:
    import nvidia.nccl
    nccl_dir = os.path.join(list(nvidia.nccl.__path__)[0], "lib")
    lib = ctypes.CDLL(os.path.join(nccl_dir, "libnccl.so.2"))
    code = ctypes.c_int(0)
    lib.ncclGetVersion(ctypes.byref(code))
    v = code.value
    facts["nccl"] = "%d.%d.%d" % (v // 10000, v // 100 % 100, v % 100) if v >= 10000 else str(v)
    facts["nccl_lib_dir"] = nccl_dir
except Exception as e:  # any failure here is a fact to report, not a crash
    facts["nccl"] = None
    problems.append("pip NCCL (nvidia.nccl): %s" % e)
write_vars(gpus, facts.get("nccl_lib_dir"))
try:
    from importlib import metadata
    facts["nccl_pip"] = metadata.version("nvidia-nccl-cu13")
except Exception:
    facts["nccl_pip"] = None

rc, text = sh([sys.executable, "-c",
               "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"],
              timeout=45)
facts["torch"] = text.splitlines()[-1] if rc == 0 and text else None
if rc != 0:
    problems.append("torch: %s" % (text.splitlines()[-1] if text else "rc %d" % rc))

facts["kernel"] = platform.release()
facts["nproc"] = os.cpu_count()
facts["python"] = platform.python_version()
facts["glibc"] = platform.libc_ver()[1]
facts["mps_control"] = subprocess.run(["sh", "-c", "command -v nvidia-cuda-mps-control"],
                                      capture_output=True, text=True).stdout.strip() or None
try:
    manifest = open(os.path.join(bundle, "MANIFEST.txt")).read()
    facts["bundle_commit"] = re.search(r"^commit: (.*)$", manifest, re.M).group(1)
    need = re.search(r"^needs glibc >= ([\d.]+)", manifest, re.M)
    facts["bundle_needs_glibc"] = need.group(1) if need else None
    as_tuple = lambda s: tuple(int(x) for x in s.split("."))
    if need and facts["glibc"] and as_tuple(facts["glibc"]) < as_tuple(need.group(1)):
        problems.append("host glibc %s < %s needed by the bundle" % (facts["glibc"], need.group(1)))
except (OSError, AttributeError):
    problems.append("no bundle manifest at %s/MANIFEST.txt (run tests/gpu/gpu_host_bundle.sh)"
                    % bundle)

doctor = os.path.join(bundle, "bin", "devmem-doctor")
if os.access(doctor, os.X_OK):
    rc, text = sh([doctor], timeout=15)
    facts["devmem_doctor"] = {0: "ready", 1: "not ready (expected without a devmem NIC)"}.get(
        rc, "error rc %d" % rc)
    print("--- devmem-doctor (information only) ---\n" + text + "\n---")

facts["problems"] = problems
json.dump(facts, open(json_path, "w"), indent=1)
for k, v in facts.items():
    print("%-18s %s" % (k, v))
sys.exit(1 if problems else 0)
