#!/usr/bin/env bash
# The GPU verification in one command, for a GPU host that has no package registry and runs a
# command for at most 10 minutes. Everything it runs comes from the bundle that
# tests/gpu/gpu_host_bundle.sh built on a development machine.
#
#   timeout 590 tests/gpu/gpu_verify.sh [BUNDLE_DIR]   (from the repository root; default .carry)
#
# The bundle holds a copy of this script at the same place (.carry/tests/gpu/gpu_verify.sh):
# both find perf/scripts/nccl_compare.sh and perf/lib/ at ../../perf/ from here.
#
# Steps, each under its own `timeout`, each ending in a verdict line (PASS, FAIL, WRONG, SKIP or
# TIMEOUT); a failing step never stops the ones after it:
#   env                   GPUs and driver (nvidia-smi), the pip nvidia-nccl-cu13 NCCL and its
#                         version, torch, kernel, CPUs, glibc against the bundle's need; also
#                         devmem-doctor's report (information only: loopback is never devmem)
#   gtest.<executable>    each GPU test executable of the bundle (devmem_gpu_*)
#   scatter               devmem-scatter-bench: scatter kernel vs cudaMemcpy D2D
#   nccl.emulated-plugin  nccl_compare.sh: all_reduce, all_gather, sendrecv, 8 B .. 64 MiB, two
#   nccl.emulated-nccl      ranks on one GPU (distinct NCCL_HOSTID) under MPS, ours vs
#   nccl.host               NCCL_NET=Socket in the same run; ours as emulated devmem RX with
#   nccl.emulated-tx        NCCL_DEVMEM_UNPACK=plugin, with =nccl, the plain host path, and
#                           emulated devmem TX (NCCL_DEVMEM_EMULATE_TX=1) with NCCL's send
#                           buffers in GPU memory (NCCL_NET_GDR_READ=1);
#                           results verified, the NCCL log must show "via NET/devmem" (and
#                           "EMULATED devmem RX" for the emulated runs)
#   nccl.emulated-nomps   all_reduce 8 B .. 1 MiB as emulated devmem RX (plugin unpack) with no
#                         MPS, before MPS starts: tells an MPS-only problem from a plugin one
#   torch                 tests/gpu/torch_allreduce.py through the plugin (emulated), 2 ranks, MPS
#
# Under MPS every rank runs with CUDA_DEVICE_MAX_CONNECTIONS=32 (or the caller's value): with
# the default, MPS clients share one small pool of hardware work queues and the plugin's GPU
# work can sit behind NCCL's spinning kernel forever (perf/RESULTS.md, 2026-11-26; the plugin
# then fails the receive after NCCL_DEVMEM_GPU_CONSUMER_TIMEOUT_MS and WARNs at start).
#
# Output under ${OUT:-./gpu_verify_out}: meta.json, STEP.log per step, summary.json (verdict,
# seconds, key numbers per step: test counts, scatter ratios, busbw ours/Socket per op and size),
# busbw_OP.png (Socket and the three modes of ours), nccl-MODE/ (every run's table and log).
# Exit status 0 only when every step passed.
#
# Environment knobs: GPU_VERIFY_BUDGET (seconds for the whole script, default 510: the step
# limits shrink to fit it), GPU_VERIFY_STEPS (comma list of gtest,scatter,nccl,torch; env
# always runs), GPU_VERIFY_ITERS / GPU_VERIFY_WARMUP (bench iterations, default 10 / 3),
# GPU_VERIFY_MAX_BYTES (default 64M), GPU_VERIFY_MPS=off (two ranks time-slice the GPU instead:
# for a rerun when MPS itself is the suspect), GPU_VERIFY_FORCE=1 (run the GPU steps even when
# nvidia-smi lists no GPU: exercises their failure paths on a machine without one),
# GPU_VERIFY_NCCL_MODES (which full NCCL comparisons run, default
# host,emulated-plugin,emulated-nccl,emulated-tx).
#
# Plain `set -u` on purpose: with `set -e` the first failing step would end the run before the
# verdicts are printed.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bundle=${1:-.carry}
out=${OUT:-./gpu_verify_out}
budget=${GPU_VERIFY_BUDGET:-510}
steps_wanted=${GPU_VERIFY_STEPS:-gtest,scatter,nccl,torch}
iters=${GPU_VERIFY_ITERS:-10}
warmup=${GPU_VERIFY_WARMUP:-3}
max_bytes=${GPU_VERIFY_MAX_BYTES:-64M}
force=${GPU_VERIFY_FORCE:-0}
use_mps=${GPU_VERIFY_MPS:-auto}
reserve=20  # seconds kept back for plots, summary and stopping MPS

for n in "$budget" "$iters" "$warmup"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "gpu_verify.sh: GPU_VERIFY_BUDGET/ITERS/WARMUP must be integers" >&2; exit 2; }
done
nccl_compare=$here/../../perf/scripts/nccl_compare.sh
if [[ ! -f "$nccl_compare" ]]; then
  echo "gpu_verify.sh: $nccl_compare missing (run tests/gpu/gpu_verify.sh from the repository" \
    "or from a bundle of tests/gpu/gpu_host_bundle.sh)" >&2
  exit 2
fi
# mps_start, mps_stop, now_us and perf_lib (sourcing runs nothing else).
# shellcheck source=perf/scripts/nccl_compare.sh
source "$nccl_compare"

bundle=$(cd "$bundle" 2>/dev/null && pwd) || bundle=${1:-.carry}  # absolute when it exists
mkdir -p "$out" || { echo "gpu_verify.sh: cannot create $out" >&2; exit 2; }
out=$(cd "$out" && pwd)
# Only what an earlier run of this script wrote: OUT may be a directory with other files.
rm -rf "$out"/*.log "$out"/*.details.json "$out"/*.gtest.json "$out"/busbw_*.png \
  "$out/busbw_all.jsonl" "$out/summary.json" "$out/env.json" "$out/torch.json" "$out"/nccl-*/
: >"$out/steps.tsv"
# meta.json: commit (the bundle's MANIFEST.txt where no git checkout is), date, machine, GPU,
# this command and the GPU_VERIFY_*, NCCL_* and CUDA_* variables set (perf/lib/perfkit.py).
BUILD=$bundle OUT=$out python3 "$perf_lib/perfkit.py" begin gpu-verify "OUT" "$0" "$@" \
  >/dev/null || echo "[gpu_verify] could not write $out/meta.json" >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_verify.XXXXXX") || exit 2
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  mps_stop
  rm -rf "$work"
}
trap cleanup EXIT

t_start=$(now_us)
deadline_us=$((t_start + budget * 1000000))
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# --- helpers ---------------------------------------------------------------------------------
# The verdict classifiers and the summary: tests/gpu/gpu_verify_steps.py.
py() { python3 "$here/gpu_verify_steps.py" "$@"; }

# Seconds a step may take: its own limit, cut to what the budget has left (less the reserve).
step_limit() {
  local want=$1 left
  left=$(((deadline_us - $(now_us)) / 1000000 - reserve))
  ((left < want)) && want=$left
  echo "$want"
}

# verdict NAME VERDICT MILLISECONDS NOTE: the line a reader looks for, and a row for the summary.
verdict() {
  local name=$1 v=$2 ms=$3 note=$4
  printf '%s\t%s\t%s\t%s\n' "$name" "$v" "$ms" "$note" >>"$out/steps.tsv"
  printf '[gpu_verify] %-8s %-32s %5d.%01d s  %s\n' "$v" "$name" $((ms / 1000)) \
    $((ms % 1000 / 100)) "$note"
}

# run_step NAME LIMIT CMD...: CMD under `timeout` with its output in NAME.log. Sets STEP_RC,
# STEP_MS and STEP_LIMIT; returns 1 (after a SKIP verdict) when the budget has no time left.
# The step runs in the background and is waited for: bash runs a trap during `wait`, not
# during a foreground command, so a SIGTERM to this script is handled at once (on_signal).
STEP_NAME=""
STEP_PID=""
run_step() {
  local name=$1 t0
  STEP_LIMIT=$(step_limit "$2")
  shift 2
  if ((STEP_LIMIT < 10)); then
    verdict "$name" SKIP 0 "no time left in GPU_VERIFY_BUDGET=${budget}s"
    return 1
  fi
  echo "[gpu_verify] running  $name (limit ${STEP_LIMIT}s): $*"
  t0=$(now_us)
  STEP_NAME=$name
  timeout -k 10 "$STEP_LIMIT" "$@" </dev/null >"$out/$name.log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID"
  STEP_RC=$?
  STEP_PID=""
  STEP_NAME=""
  STEP_MS=$((($(now_us) - t0) / 1000))
  return 0
}

# classify NAME KIND ARGS...: the helper's verdict for a finished step, and a TIMEOUT verdict
# whenever `timeout` ended it (the helper may not know).
classify() {
  local name=$1 kind=$2 line v note
  shift 2
  line=$(py "$kind" "$STEP_RC" "$@" "$out/$name.details.json" 2>"$work/helper.err") ||
    line=$'FAIL\tverdict helper failed: '"$(tail -n 1 "$work/helper.err")"
  v=${line%%$'\t'*}
  note=${line#*$'\t'}
  if ((STEP_RC == 124 || STEP_RC == 137)) && [[ "$v" != TIMEOUT ]]; then
    v=TIMEOUT
    note="killed at the ${STEP_LIMIT}s limit; $note"
  fi
  verdict "$name" "$v" "$STEP_MS" "$note"
}

wanted() { [[ ",$steps_wanted," == *",$1,"* ]]; }

# --- f. plots, summary and the exit status (also on SIGTERM: the verdicts so far still count).
# The host path first: a hang in an emulated mode must not cost the baseline.
nccl_modes=${GPU_VERIFY_NCCL_MODES:-host,emulated-plugin,emulated-nccl,emulated-tx}
finish() {
  trap - INT TERM
  mps_stop
  local ops op v status=0
  if [[ -z "${interrupted:-}" ]] && ls "$out"/nccl-*/nccl_busbw.jsonl >/dev/null 2>&1; then
    ops=$(py combine "$out" "$nccl_modes" 2>>"$out/plots.log")
    for op in $ops; do
      timeout 30 python3 "$perf_lib/plot_busbw.py" "$out/busbw_all.jsonl" "$op" "$out/busbw_$op.png" \
        >>"$out/plots.log" 2>&1 || echo "[gpu_verify] plot of $op failed (see plots.log)"
    done
  fi
  py summary "$out" "$t_start" "$(now_us)" "$budget" "$bundle" ||
    echo "[gpu_verify] writing summary.json failed; the verdict lines above stand" >&2
  # Exit 0 only when every step recorded PASS (also when the summary helper failed).
  while IFS=$'\t' read -r _ v _; do
    [[ "$v" == PASS ]] || status=1
  done <"$out/steps.tsv"
  [[ -s "$out/steps.tsv" && -z "${interrupted:-}" ]] || status=1
  python3 "$perf_lib/perfkit.py" finish "$out" "$status" || true
  exit "$status"
}

# Interrupted (the device's own limit, ^C): the running step is stopped, no further step runs,
# and the summary is still written.
# shellcheck disable=SC2317  # called by the INT/TERM trap
on_signal() {
  interrupted=1
  echo "[gpu_verify] interrupted: writing the summary of the steps so far" >&2
  if [[ -n "$STEP_PID" ]]; then
    # `timeout` leads the step's own process group and passes the signal on to all of it.
    kill -TERM "$STEP_PID" 2>/dev/null
    verdict "$STEP_NAME" FAIL 0 "interrupted by a signal while running"
  fi
  verdict interrupted FAIL 0 "signal received; later steps did not run"
  finish
}
trap on_signal INT TERM

# --- a. environment ---------------------------------------------------------------------------
echo "[gpu_verify] bundle $bundle, output $out, budget ${budget}s, steps env,$steps_wanted"
gpu_count=0
nccl_lib_dir=""
if run_step env 90 python3 "$here/gpu_verify_env.py" "$bundle" "$out/env.json" "$work/env.vars"; then
  if [[ -f "$work/env.vars" ]]; then
    while read -r key value; do
      case "$key" in
        gpu_count) [[ "$value" =~ ^[0-9]+$ ]] && gpu_count=$value ;;
        nccl_lib_dir) nccl_lib_dir=$value ;;
      esac
    done <"$work/env.vars"
  fi
  env_note=$(python3 -c '
import json, sys
f = json.load(open(sys.argv[1]))
parts = ["%d GPU(s)%s" % (len(f["gpus"]), (": " + f["gpus"][0].split(" (UUID")[0]) if f["gpus"] else ""),
         "driver %s" % (f["driver"] or "?").split(",")[0], "NCCL %s" % f["nccl"],
         "torch %s" % f["torch"], "kernel %s" % f["kernel"], "%s CPUs" % f["nproc"]]
print(", ".join(parts) + "".join("; " + p for p in f["problems"]))' "$out/env.json" 2>/dev/null) ||
    env_note="no env.json: $(tail -n 1 "$out/env.log")"
  if ((STEP_RC == 0)); then
    verdict env PASS "$STEP_MS" "$env_note"
  elif ((STEP_RC == 124 || STEP_RC == 137)); then
    verdict env TIMEOUT "$STEP_MS" "killed at the ${STEP_LIMIT}s limit; $env_note"
  else
    verdict env FAIL "$STEP_MS" "$env_note"
  fi
fi
cat "$out/env.log"

# GPU steps without a GPU would only fail for that one reason: say it once per step instead.
no_gpu_reason=""
if ((gpu_count == 0)) && [[ "$force" != 1 ]]; then
  no_gpu_reason="no GPU (nvidia-smi -L lists none; GPU_VERIFY_FORCE=1 runs the step anyway)"
fi

nccl_ld_path="$LD_LIBRARY_PATH${nccl_lib_dir:+:$nccl_lib_dir}"
# run_nccl_mode NAME MODE(emulated|host) UNPACK MPS(auto|off) OP MAX_BYTES WANT_SECONDS [VAR=VALUE...]
# (the VAR=VALUE settings reach both bench runs of the step, Socket's and ours)
run_nccl_mode() {
  local name=$1 mode=$2 unpack=$3 mps=$4 op=$5 max=$6 want=$7 limit per_run
  shift 7
  local extra_env=("$@")
  if [[ -n "$no_gpu_reason" ]]; then
    verdict "nccl.$name" SKIP 0 "$no_gpu_reason"
    return
  fi
  limit=$(step_limit "$want")
  # Two bench runs (Socket, ours) share the step's time; 15 s for the summary and plots.
  per_run=$(((limit - 15) / 2))
  ((per_run < 10)) && per_run=10
  rm -rf "$out/nccl-$name"
  run_step "nccl.$name" "$limit" env LD_LIBRARY_PATH="$nccl_ld_path" NCCL_DEVMEM_UNPACK="$unpack" \
      ${extra_env[@]+"${extra_env[@]}"} \
      bash "$nccl_compare" --mode "$mode" --label "$name" --op "$op" --rounds 1 \
      -b 8 -e "$max" -f 2 -w "$warmup" -n "$iters" --timeout "$per_run" \
      --mps "$mps" "$out/nccl-$name" "$bundle/lib/libnccl-net-devmem.so" \
      "$bundle/bin/devmem-nccl-bench" &&
    classify "nccl.$name" nccl "$out/nccl-$name"
  # A run that hung or failed may leave our MPS daemon refusing clients: start it afresh.
  if [[ "$MPS_STATE" == started ]] && [[ "$(tail -n 1 "$out/steps.tsv" | cut -f2)" != PASS ]]; then
    mps_stop
    mps_start >>"$out/mps.log" 2>&1
    echo "[gpu_verify] MPS restarted after nccl.$name: $MPS_STATE"
  fi
}

# --- a2. emulated devmem RX without MPS (before MPS starts) ------------------------------------
if wanted nccl; then
  run_nccl_mode emulated-nomps emulated plugin off all_reduce 1M 60
fi

# --- MPS, before any GPU work: the GPU tests then run as MPS clients too, the way the NCCL and
# torch steps' ranks do (a plugin copy deadlocked only under MPS, 2026-11-26).
if { wanted gtest || wanted nccl || wanted torch; } && [[ -z "$no_gpu_reason" ]]; then
  if [[ "$use_mps" == off ]]; then
    echo "# MPS: off (GPU_VERIFY_MPS=off): the two ranks time-slice the GPU" >"$out/mps.log"
  else
    mps_start >"$out/mps.log" 2>&1
  fi
  cat "$out/mps.log"
fi

# --- b. GPU test executables ------------------------------------------------------------------
if wanted gtest; then
  found=0
  for test in "$bundle"/tests/devmem_gpu_*; do
    [[ -f "$test" && "$test" != *.cmake ]] || continue
    found=1
    name="gtest.$(basename "$test")"
    [[ -x "$test" ]] || chmod u+x "$test" 2>/dev/null
    # Run even without a GPU: each test skips with its reason, and the run proves the
    # executable loads with the carried libraries.
    run_step "$name" 90 "$test" --gtest_brief=1 --gtest_output="json:$out/$name.gtest.json" &&
      classify "$name" gtest "$out/$name.log" "$out/$name.gtest.json"
  done
  ((found)) || verdict gtest FAIL 0 "no test executables at $bundle/tests/devmem_gpu_* (run tests/gpu/gpu_host_bundle.sh)"
fi

# --- c. scatter kernel benchmark --------------------------------------------------------------
if wanted scatter; then
  scatter_bin="$bundle/bin/devmem-scatter-bench"
  if [[ -n "$no_gpu_reason" ]]; then
    verdict scatter SKIP 0 "$no_gpu_reason"
  elif [[ ! -f "$scatter_bin" ]]; then
    verdict scatter FAIL 0 "$scatter_bin not in the bundle"
  else
    # 64 MiB per copy, 10 iterations: a few seconds, enough for a stable ratio.
    run_step scatter 60 "$scatter_bin" --bytes $((64 << 20)) --iters 10 &&
      classify scatter scatter "$out/scatter.log"
  fi
fi

# --- d, e. NCCL and PyTorch through the plugin, two ranks on one GPU under MPS -----------------
compare_mps=auto
[[ "$MPS_STATE" == started || "$MPS_STATE" == running ]] || compare_mps=off

# The operator setting for ranks under MPS (see the header); the caller's value wins.
if [[ "$compare_mps" == auto ]]; then
  export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-32}
  echo "[gpu_verify] ranks under MPS run with CUDA_DEVICE_MAX_CONNECTIONS=$CUDA_DEVICE_MAX_CONNECTIONS"
fi

if wanted nccl; then
  for mode in ${nccl_modes//,/ }; do
    case "$mode" in
      emulated-plugin) run_nccl_mode "$mode" emulated plugin "$compare_mps" all "$max_bytes" 150 ;;
      emulated-nccl) run_nccl_mode "$mode" emulated nccl "$compare_mps" all "$max_bytes" 150 ;;
      host) run_nccl_mode "$mode" host plugin "$compare_mps" all "$max_bytes" 150 ;;
      # Emulated devmem TX with NCCL's send buffers in GPU memory: NCCL_NET_GDR_READ=1 overrides
      # the plugin's guard (it sets 0 while no device has real devmem TX), so every send is a
      # CUDA buffer staged to the host and sent with MSG_ZEROCOPY; receives emulated devmem RX.
      emulated-tx) run_nccl_mode "$mode" emulated plugin "$compare_mps" all "$max_bytes" 150 \
                       NCCL_DEVMEM_EMULATE_TX=1 NCCL_NET_GDR_READ=1 ;;
      *) verdict "nccl.$mode" FAIL 0 "unknown GPU_VERIFY_NCCL_MODES entry $mode (host, emulated-plugin, emulated-nccl, emulated-tx)" ;;
    esac
  done
fi

if wanted torch; then
  if [[ -n "$no_gpu_reason" ]]; then
    verdict torch SKIP 0 "$no_gpu_reason"
  else
    # torch loads the pip NCCL itself; the plugin comes from the bundle.
    run_step torch 120 env NCCL_NET_PLUGIN="$bundle/lib/libnccl-net-devmem.so" NCCL_NET=devmem \
        NCCL_DEVMEM_EMULATE=1 NCCL_SOCKET_IFNAME=lo NCCL_NET_GDR_LEVEL=SYS NCCL_P2P_DISABLE=1 \
        NCCL_SHM_DISABLE=1 NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET \
        python3 "$here/torch_allreduce.py" --max-bytes "$max_bytes" --iters "$iters" \
        --warmup "$warmup" --json "$out/torch.json" &&
      classify torch torch_step "$out/torch.log" "$out/torch.json"
  fi
fi
finish
