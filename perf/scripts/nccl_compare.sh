#!/usr/bin/env bash
# NCCL busbw through our plugin vs NCCL's built-in Socket transport, in the same run, on one
# GPU host: two ranks (processes) on one GPU with different NCCL_HOSTID, so every byte crosses
# the network layer (loopback). The two ranks share the GPU under MPS (started here when it is
# not running): without it they time-slice the GPU and busbw measures context switches more
# than the network path (review F15). Prints both nccl-tests tables, a per-run verdict table,
# the busbw ratio per op and size, and writes busbw PNGs.
#
#   perf/scripts/nccl_compare.sh [options] OUT_DIR [PLUGIN_SO] [BENCH] [-- extra bench args]
#
#   --op OP           all_reduce (default), all_gather, sendrecv or all
#   -b SIZE -e SIZE   message sizes, default 8 .. 64M (factor -f, default 2)
#   -w N -n N         warmup and timed iterations per size (default 5 and 20)
#   --rounds N        interleaved Socket/ours rounds, best busbw kept (default 2)
#   --mode MODE       ours as `emulated` devmem RX (NCCL_DEVMEM_EMULATE=1, default) or `host`
#                     (the plugin's plain-TCP path, NCCL_DEVMEM_EMULATE unset)
#   --label NAME      label of our runs in the tables, JSON and plots (default devmem)
#   --timeout SECS    limit per bench run (default $NCCL_COMPARE_TIMEOUT or 240)
#   --mps auto|off    auto (default, or $NCCL_COMPARE_MPS): use a running MPS or start one
#
# PLUGIN_SO defaults to $BUILD/libnccl-net-devmem.so (or $BUILD/lib/ in a GPU-host bundle,
# BUILD=.carry), BENCH to $BUILD/bin/devmem-nccl-bench; BUILD defaults to build.
# Environment: NCCL_DEVMEM_UNPACK (plugin|nccl) reaches our runs; the NCCL library comes from
# LD_LIBRARY_PATH (on the GPU host: the pip nvidia-nccl-cu13 lib directory).
#
# OUT_DIR gets, per run, LABEL.ROUND.txt (the table) and LABEL.ROUND.log (NCCL's log); also
# nccl_busbw.jsonl (every measured size), compare.json (runs, verdicts, evidence, ratios) and
# busbw_OP.png, and meta.json (commit, date, machine, GPU, the command and the NCCL_* variables;
# perf/lib/perfkit.py). A failed, timed-out or wrong run is recorded and the summary still
# printed.
# Exit status: 0 every run PASS with the evidence found; 3 some run WRONG and none failed;
# 1 otherwise; 2 bad usage.
#
# tests/gpu/gpu_verify.sh sources this file for the MPS helpers (mps_start, mps_stop) only;
# perf/scripts/compare_nccl_tests.sh, compare_torch.sh and run_nccl_v12.sh also for the settings
# every comparison runs with (NCCL_COMPARE_COMMON_ENV, NCCL_COMPARE_SOCKET_ENV) and the steps
# every GPU comparison takes before its runs (their options, our plugin, the results folder).
set -u
# perf_lib and perf_parse_options (sourcing runs nothing).
# shellcheck source=perf/scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# --- what both sides of a comparison run with ------------------------------------------------
# Two ranks on one host: loopback only, no P2P or shared memory (every byte crosses the network
# layer), GPU buffers allowed at any distance, and the log that proves which net ran.
# shellcheck disable=SC2034,SC2054  # used by the scripts that source this file; INIT,NET is one value
NCCL_COMPARE_COMMON_ENV=(NCCL_SOCKET_IFNAME=lo NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1
                         NCCL_NET_GDR_LEVEL=SYS NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET)
# The baseline: NCCL's built-in socket transport with 4 sockets per thread (its best on loopback).
# shellcheck disable=SC2034
NCCL_COMPARE_SOCKET_ENV=(NCCL_NET=Socket NCCL_NSOCKS_PERTHREAD=4 NCCL_SOCKET_NTHREADS=1)

# --- MPS -----------------------------------------------------------------------------------
# MPS_STATE after mps_start: running (someone else's daemon, left alone), started (ours,
# stopped by mps_stop), unavailable (could not start; runs go on without MPS) or off.
MPS_STATE=off
MPS_NOTE=""
_mps_tmp=""

# Does a control daemon answer on CUDA_MPS_PIPE_DIRECTORY (default /tmp/nvidia-mps)?
mps_answers() {
  command -v nvidia-cuda-mps-control >/dev/null 2>&1 || return 1
  echo get_server_list | timeout 5 nvidia-cuda-mps-control >/dev/null 2>&1
}

mps_start() {
  if ! command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
    MPS_STATE=unavailable
    MPS_NOTE="nvidia-cuda-mps-control not found"
  elif mps_answers; then
    MPS_STATE=running
    MPS_NOTE="MPS already running (pipe dir ${CUDA_MPS_PIPE_DIRECTORY:-/tmp/nvidia-mps})"
  else
    # Our own pipe and log directories: never touch a daemon that another user configured.
    _mps_tmp=$(mktemp -d "${TMPDIR:-/tmp}/devmem-mps.XXXXXX")
    mkdir -p "$_mps_tmp/pipe" "$_mps_tmp/log"
    export CUDA_MPS_PIPE_DIRECTORY="$_mps_tmp/pipe" CUDA_MPS_LOG_DIRECTORY="$_mps_tmp/log"
    if timeout 15 nvidia-cuda-mps-control -d >/dev/null 2>&1; then
      local _
      for _ in 1 2 3 4 5 6; do  # the daemon needs a moment before it answers
        if mps_answers; then
          MPS_STATE=started
          MPS_NOTE="MPS started (pipe dir $CUDA_MPS_PIPE_DIRECTORY)"
          break
        fi
        sleep 0.5
      done
    fi
    if [[ "$MPS_STATE" != started ]]; then
      MPS_STATE=unavailable
      local why
      why=$(tail -n 3 "$_mps_tmp/log/control.log" 2>/dev/null | tr '\n' ' ')
      MPS_NOTE="MPS did not start${why:+ (control.log: $why)}"
      # Clients must not look for a daemon that is not there.
      unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
      rm -rf "$_mps_tmp"
      _mps_tmp=""
    fi
  fi
  echo "# MPS: $MPS_STATE: $MPS_NOTE"
  [[ "$MPS_STATE" == unavailable ]] && echo "# continuing without MPS: the two ranks time-slice the GPU"
  return 0
}

# Stops only a daemon that mps_start started; safe to call twice (EXIT traps).
mps_stop() {
  if [[ "$MPS_STATE" == started ]]; then
    echo quit | timeout 20 nvidia-cuda-mps-control >/dev/null 2>&1 ||
      echo "# warning: MPS quit did not answer; daemon may still run ($MPS_NOTE)" >&2
    MPS_STATE=stopped
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
  if [[ -n "$_mps_tmp" ]]; then
    rm -rf "$_mps_tmp"
    _mps_tmp=""
  fi
  return 0
}

# Where every thread of each PID waits, for a run that hung: the kernel's view from /proc
# (state, wait channel, the system call it sits in) always, and the user stacks from cuda-gdb
# (or gdb) where one is installed. Each debugger attach is bounded; a process it cannot attach
# to is reported and skipped.
dump_stacks() {
  local pid task debugger=""
  command -v cuda-gdb >/dev/null 2>&1 && debugger=cuda-gdb
  [[ -z "$debugger" ]] && command -v gdb >/dev/null 2>&1 && debugger=gdb
  for pid in "$@"; do
    [[ -d /proc/$pid ]] || continue
    echo "=== pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
    for task in /proc/"$pid"/task/*; do
      printf '  tid %-8s %-16s state %s wchan %-24s syscall %s\n' "${task##*/}" \
        "$(cat "$task/comm" 2>/dev/null)" \
        "$(awk '/^State:/ {print $2}' "$task/status" 2>/dev/null)" \
        "$(cat "$task/wchan" 2>/dev/null)" "$(cut -d' ' -f1-3 "$task/syscall" 2>/dev/null)"
    done
    if [[ -n "$debugger" ]]; then
      echo "--- $debugger backtraces of pid $pid"
      timeout -k 5 45 "$debugger" -q -batch -nx -p "$pid" -ex "set pagination off" \
        -ex "thread apply all bt 25" </dev/null 2>&1 | grep -vE "^\[New LWP|^warning: " | head -n 600
    fi
  done
}

# Microseconds since the epoch, from bash itself (no date fork; any decimal separator).
now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# --- before the runs of a GPU comparison ------------------------------------------------------
# Our plugin where none is named: $BUILD/libnccl-net-devmem.so (BUILD defaults to build), or
# $BUILD/lib/ where BUILD is a GPU-host bundle (tests/gpu/gpu_host_bundle.sh).
default_plugin() {
  local build=${BUILD:-build}
  if [[ -f "$build/libnccl-net-devmem.so" ]]; then
    echo "$build/libnccl-net-devmem.so"
  else
    echo "$build/lib/libnccl-net-devmem.so"
  fi
}

# Exit status 2, naming each thing in the caller's `missing` array, where it holds any: a file
# not found is a usage error, found before anything runs.
#   exit_if_missing SCRIPT
exit_if_missing() {
  ((${#missing[@]} == 0)) && return 0
  local item
  for item in "${missing[@]}"; do echo "$1: not found: $item"; done >&2
  exit 2
}

# Makes the caller's `out` folder (exit status 2 where it cannot) and makes `out` absolute, then
# writes its meta.json (perf/lib/perfkit.py begin; where that fails the runs go on, noted).
#   begin_results TOPIC "KNOB ..." SCRIPT [ARG...]
begin_results() {
  local topic=$1 knobs=$2 script=$3
  shift 3
  mkdir -p "$out" || exit 2
  out=$(cd "$out" && pwd)
  OUT=$out python3 "$perf_lib/perfkit.py" begin "$topic" "$knobs" "$script" "$@" >/dev/null ||
    echo "# $(basename "$script" .sh): could not write $out/meta.json" >&2
}

# --- the comparison ------------------------------------------------------------------------
usage() {  # the header comment, from the usage line to the environment notes
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" |
    sed -n '/^  perf\/scripts\/nccl_compare.sh/,/^LD_LIBRARY_PATH/p' >&2
  exit 2
}

main() {
  local argv=("$@")
  local op=all_reduce min=8 max=64M factor=2 warmup=5 iters=20 rounds=2 mode=emulated
  local label=devmem limit=${NCCL_COMPARE_TIMEOUT:-240} mps=${NCCL_COMPARE_MPS:-auto}
  local positional=() extra=()  # extra: after --, passed to every bench run last (they override)
  perf_parse_options nccl_compare.sh "--op:op:value -b:min:value -e:max:value -f:factor:value
    -w:warmup:value -n:iters:value --rounds:rounds:value --mode:mode:value --label:label:value
    --timeout:limit:value --mps:mps:value --:extra" "$@"
  ((${#positional[@]} >= 1 && ${#positional[@]} <= 3)) || usage
  [[ "$mode" == emulated || "$mode" == host ]] || { echo "--mode: emulated or host" >&2; exit 2; }
  [[ "$mps" == auto || "$mps" == off ]] || { echo "--mps: auto or off" >&2; exit 2; }
  [[ "$rounds" =~ ^[1-9][0-9]*$ && "$limit" =~ ^[1-9][0-9]*$ ]] ||
    { echo "--rounds and --timeout: positive integers" >&2; exit 2; }
  [[ "$label" != socket ]] || { echo "--label socket is the baseline's" >&2; exit 2; }
  local out plugin bench build=${BUILD:-build}
  out=${positional[0]}
  plugin=${positional[1]:-$(default_plugin)}
  bench=${positional[2]:-$build/bin/devmem-nccl-bench}
  mkdir -p "$out" || exit 1
  OUT=$out python3 "$perf_lib/perfkit.py" begin nccl-compare \
    "BUILD NCCL_COMPARE_TIMEOUT NCCL_COMPARE_MPS" "${BASH_SOURCE[0]}" ${argv[@]+"${argv[@]}"} \
    >/dev/null ||
    echo "# nccl_compare: could not write $out/meta.json" >&2
  local missing=""
  [[ -f "$plugin" ]] || missing+=" plugin $plugin"
  [[ -x "$bench" ]] || missing+=" bench $bench"
  if [[ -n "$missing" ]]; then
    echo "nccl_compare.sh: not found:$missing" >&2
    printf '{"verdict":"FAIL","error":"not found:%s","runs":[],"ratios":[]}\n' "$missing" \
      >"$out/compare.json"
    exit 1
  fi
  plugin=$(realpath "$plugin")

  if [[ "$mps" == auto ]]; then
    mps_start
    trap 'mps_stop' EXIT
    trap 'exit 130' INT TERM  # runs the EXIT trap: a started MPS daemon is always stopped
  fi

  local json="$out/nccl_busbw.jsonl" runs="$out/runs.tsv"
  : >"$json"
  : >"$runs"
  local common=("${NCCL_COMPARE_COMMON_ENV[@]}")
  local bench_args=(-b "$min" -e "$max" -f "$factor" -w "$warmup" -n "$iters" --op "$op")
  local ours_env=(NCCL_NET_PLUGIN="$plugin" NCCL_NET=devmem)
  local ours_unset=()
  if [[ "$mode" == emulated ]]; then
    ours_env+=(NCCL_DEVMEM_EMULATE=1)
  else
    ours_unset=(-u NCCL_DEVMEM_EMULATE)
  fi
  echo "# nccl_compare: op $op, sizes $min..$max x$factor, -w $warmup -n $iters, $rounds" \
       "round(s), ours: $label ($mode, NCCL_DEVMEM_UNPACK=${NCCL_DEVMEM_UNPACK:-default})," \
       "timeout ${limit}s per run, MPS $MPS_STATE"

  # One bench run under `timeout`; its verdict goes to runs.tsv, never aborts the script.
  run_one() {
    local who=$1 round=$2
    shift 2
    local base="$out/$who.$round" t0 rc verdict
    t0=$(now_us)
    # In the background of this script's process group, so whoever times out this script takes
    # the bench down too. At our own limit the stacks of the bench and its ranks go to
    # $base.stacks first (a hang is diagnosed from where every thread waits), then the bench's
    # parent is killed and its ranks die with it (PR_SET_PDEATHSIG).
    "$@" --label "$who" --json "$json" "${bench_args[@]}" ${extra[@]+"${extra[@]}"} \
      >"$base.txt" 2>"$base.log" &
    local pid=$! deadline_us=$((t0 + limit * 1000000))
    while kill -0 "$pid" 2>/dev/null && (($(now_us) < deadline_us)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      # shellcheck disable=SC2046  # one PID a word
      dump_stacks "$pid" $(pgrep -P "$pid" 2>/dev/null) >"$base.stacks" 2>&1
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      rc=124
    else
      wait "$pid"
      rc=$?
    fi
    case $rc in
      0) verdict=PASS ;;
      3) verdict=WRONG ;;
      124|137) verdict=TIMEOUT ;;
      *) verdict=FAIL ;;
    esac
    if [[ "$verdict" == TIMEOUT && "$MPS_STATE" == started ]]; then
      # A client killed with its kernels still spinning can leave our MPS daemon refusing the
      # next run ("CUDA-capable device(s) is/are busy or unavailable"): start it afresh.
      mps_stop
      mps_start
      echo "# MPS restarted after the timeout: $MPS_STATE ($MPS_NOTE)"
    fi
    local ms=$((($(now_us) - t0) / 1000))
    printf '%s\t%s\t%s\t%s\t%s\n' "$who" "$round" "$verdict" "$rc" "$ms" >>"$runs"
    printf '# run %-8s round %d: %-7s (exit %d, %d.%03d s)\n' "$who" "$round" "$verdict" "$rc" \
      $((ms / 1000)) $((ms % 1000))
    if [[ "$verdict" != PASS ]]; then
      # The reason, where a reader looks first.
      grep -E "failed|error|Error|WARN|killed|EOF|wrong" "$base.log" | tail -n 5 | sed 's/^/#   /'
    fi
  }

  local round
  for ((round = 1; round <= rounds; round++)); do  # interleaved: noise hits both
    run_one socket "$round" env -u NCCL_NET_PLUGIN "${common[@]}" \
      "${NCCL_COMPARE_SOCKET_ENV[@]}" "$bench"
    run_one "$label" "$round" env ${ours_unset[@]+"${ours_unset[@]}"} "${common[@]}" \
      "${ours_env[@]}" "$bench"
  done
  cat "$out/socket.$rounds.txt" "$out/$label.$rounds.txt" 2>/dev/null

  # Evidence from our last round's NCCL log: which net NCCL used and which mode the plugin ran.
  local log="$out/$label.$rounds.log"
  echo "# evidence that NCCL used the plugin and which mode ($log):"
  grep -m3 -E "Loaded net plugin|Using network|via NET/devmem" "$log" | sed 's/^/#   /'
  grep -m2 -E "EMULATED devmem RX|plain-TCP data path|data path plain TCP" "$log" | sed 's/^/#   /'

  python3 "$perf_lib/nccl_compare_report.py" "$out" "$label" "$mode" "$MPS_STATE" "$rounds"
  local rc=$?
  local plot_op
  for plot_op in all_reduce all_gather sendrecv; do
    grep -q "\"op\":\"$plot_op\"" "$json" 2>/dev/null || continue
    python3 "$perf_lib/plot_busbw.py" "$json" "$plot_op" "$out/busbw_$plot_op.png" ||
      echo "# plot of $plot_op failed (numbers are in $json)"
  done
  python3 "$perf_lib/perfkit.py" finish "$out" "$rc" || true
  return "$rc"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
  exit $?
fi
