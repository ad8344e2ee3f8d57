#!/usr/bin/env bash
# nccl-tests (the user's own build of NVIDIA/nccl-tests with MPI) through our plugin against
# NCCL's built-in Socket transport in the same run, on one GPU host: two MPI ranks on one GPU
# (NCCL_TESTS_DEVICE=0) with different NCCL_HOSTID, so every byte crosses the network layer.
# Ours runs in host mode (the plugin's plain-TCP path) and as emulated devmem RX with
# NCCL_DEVMEM_UNPACK=plugin and =nccl; rounds are interleaved (socket, then each mode of ours,
# for every collective, round after round) so noise hits all of them. Every run is checked:
# `-c 1` checks every size, the #wrong columns and "Out of bounds values" must be 0.
#
#   perf/scripts/compare_nccl_tests.sh [options] OUT_DIR
#
#   --nccl-tests DIR  folder holding all_reduce_perf, all_gather_perf, ... (default
#                     $NCCL_TESTS_BIN)
#   --mpirun PATH     Open MPI's mpirun (default $MPIRUN, else mpirun on PATH); extra mpirun
#                     arguments in $MPIRUN_ARGS (e.g. "--mca btl self,tcp")
#   --plugin SO       our plugin (default $BUILD/libnccl-net-devmem.so or $BUILD/lib/...)
#   --ops LIST        comma list of all_reduce, all_gather, reduce_scatter, sendrecv, alltoall
#                     (default: all five)
#   --modes LIST      comma list of host, emulated-plugin, emulated-nccl (default: all three)
#   -b SIZE -e SIZE   message sizes, default 8 .. 256M (factor -f, default 2)
#   -w N -n N         warmup and timed iterations per size (default 5 and 20)
#   --rounds N        interleaved rounds, medians over them (default 3)
#   --timeout SECS    limit per nccl-tests run (default $NCCL_COMPARE_TIMEOUT or 300)
#   --mps on|off|both under MPS (default on: started when not running), without, or both
#                     (MPS first, then without; results in OUT_DIR/mps and OUT_DIR/nomps)
#
# The NCCL library comes from LD_LIBRARY_PATH (the one nccl-tests was built against or a newer
# one). Per phase (OUT_DIR/mps, OUT_DIR/nomps): LABEL.OP.ROUND.txt (nccl-tests' stdout with
# NCCL's INFO log) and .log (stderr), runs.tsv, records.jsonl (every size of every run,
# perf/lib/nccl_tests_parse.py), compare.json (verdicts and the busbw table ours/Socket per
# collective and size, median over rounds), busbw_median.jsonl and busbw_OP.png; OUT_DIR gets
# meta.json (perf/lib/perfkit.py) and summary.txt.
# Exit status: 0 every run PASS; 3 some #wrong or out-of-bounds value non-zero; 1 some run
# failed, timed out or lacked its evidence (the NCCL log must show "via NET/Socket" for the
# baseline, "via NET/devmem" for ours, "EMULATED devmem RX" exactly in the emulated modes);
# 2 bad usage or a binary not found.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# mps_start, mps_stop, now_us, perf_lib, NCCL_COMPARE_{COMMON,SOCKET}_ENV and the steps before
# the runs: perf_parse_options, default_plugin, exit_if_missing, begin_results (runs nothing else).
# shellcheck source=perf/scripts/nccl_compare.sh
source "$here/nccl_compare.sh"
parse="$perf_lib/nccl_tests_parse.py"

ALL_OPS=all_reduce,all_gather,reduce_scatter,sendrecv,alltoall
ALL_MODES=host,emulated-plugin,emulated-nccl

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" |
    sed -n '/^  perf\/scripts\/compare_nccl_tests.sh/,/^  --mps/p' >&2
  exit 2
}
die_usage() { echo "compare_nccl_tests.sh: $*" >&2; exit 2; }

# ours' environment per mode: NAME=VALUE words, and the variables to unset.
mode_env() {
  case "$1" in
    host) echo "-u NCCL_DEVMEM_EMULATE -u NCCL_DEVMEM_UNPACK" ;;
    emulated-plugin) echo "NCCL_DEVMEM_EMULATE=1 NCCL_DEVMEM_UNPACK=plugin" ;;
    emulated-nccl) echo "NCCL_DEVMEM_EMULATE=1 NCCL_DEVMEM_UNPACK=nccl" ;;
  esac
}

# Which evidence one run's output must hold, from the NCCL and plugin INFO lines (the plugin's
# mode line: plugin/setup/device_table.cc and docs/devmem-rx.md). Prints the reason it lacks,
# nothing when all is there.
missing_evidence() {
  local label=$1 text=$2
  if [[ "$label" == socket ]]; then
    grep -q "via NET/Socket" "$text" || echo "no 'via NET/Socket' in its NCCL log"
    return
  fi
  grep -q "via NET/devmem" "$text" || { echo "no 'via NET/devmem' in its NCCL log"; return; }
  if [[ "$label" == host ]]; then
    grep -q "EMULATED devmem RX" "$text" &&
      echo "host mode but the plugin logged EMULATED devmem RX"
  else
    grep -q "EMULATED devmem RX" "$text" || echo "no 'EMULATED devmem RX' line in its NCCL log"
  fi
}

# --- shared with compare_torch.sh, which sources this file ------------------------------------
# The checks of the options both take: --modes, --mps, --rounds and --timeout, from the caller's
# locals; a bad one is the caller's die_usage.
check_phase_options() {
  local mode
  for mode in ${modes//,/ }; do
    [[ ",$ALL_MODES," == *",$mode,"* ]] || die_usage "--modes: $mode is not one of $ALL_MODES"
  done
  [[ "$mps" =~ ^(on|off|both)$ ]] || die_usage "--mps: on, off or both"
  [[ "$rounds" =~ ^[1-9][0-9]*$ && "$limit" =~ ^[1-9][0-9]*$ ]] ||
    die_usage "--rounds and --timeout: positive integers"
}

# The verdict of one finished run of LABEL (socket, or a mode of ours) from its exit status RC,
# into the caller's `verdict` and `reason`: 0 is PASS only with its evidence in TEXT (the NCCL
# log, missing_evidence), else FAIL; WRONG_RC (a number, or - where the program has none) is
# WRONG; 124 and 137 (timeout's own status, and its KILL) are TIMEOUT, after which our own MPS
# daemon is restarted (a killed client can leave it refusing the next one: nccl_compare.sh);
# anything else is FAIL, with the first line of each FILE that matches FAIL_PATTERN.
#   judge_run LABEL RC LIMIT_S WRONG_RC TEXT FAIL_PATTERN FILE...
judge_run() {
  local label=$1 rc=$2 limit_s=$3 wrong_rc=$4 text=$5 fail_pattern=$6
  shift 6
  reason=""
  case $rc in
    0) verdict=PASS ;;
    "$wrong_rc") verdict=WRONG ;;
    124|137) verdict=TIMEOUT; reason="no exit within ${limit_s}s" ;;
    *) verdict=FAIL; reason=$(grep -m1 -E "$fail_pattern" "$@" | cut -c1-200) ;;
  esac
  if [[ "$verdict" == PASS ]]; then
    reason=$(missing_evidence "$label" "$text")
    [[ -n "$reason" ]] && verdict=FAIL
  fi
  if [[ "$verdict" == TIMEOUT && "$MPS_STATE" == started ]]; then
    mps_stop
    mps_start
  fi
  return 0
}

# One run of each side, Socket first, then each mode of ours in the caller's `modes` with the
# caller's `plugin`: the caller's run_one PHASE_DIR LABEL ARG... ENV-WORD..., where the
# ENV-WORDs are what that side runs with (env's NAME=VALUE and -u NAME).
#   run_each_side PHASE_DIR ARG...
run_each_side() {
  local phase_dir=$1 mode
  shift
  run_one "$phase_dir" socket "$@" -u NCCL_NET_PLUGIN "${NCCL_COMPARE_COMMON_ENV[@]}" \
    "${NCCL_COMPARE_SOCKET_ENV[@]}"
  for mode in ${modes//,/ }; do
    # shellcheck disable=SC2046  # mode_env prints separate words
    run_one "$phase_dir" "$mode" "$@" $(mode_env "$mode") "${NCCL_COMPARE_COMMON_ENV[@]}" \
      NCCL_NET_PLUGIN="$plugin" NCCL_NET=devmem
  done
}

# One phase (mps or nomps) in OUT/PHASE: its runs.tsv and records.jsonl emptied, the caller's
# run_round PHASE_DIR ROUND for each of the caller's `rounds`, then the phase's verdicts and
# busbw table (perf/lib/nccl_tests_parse.py report: its exit status is the phase's) and a plot per
# collective of the caller's `ops` that has numbers. NOTE: what the phase runs, for its heading.
#   run_phase PHASE OUT NOTE
run_phase() {
  local phase=$1 phase_dir="$2/$1" note=$3 round rc op
  mkdir -p "$phase_dir"
  : >"$phase_dir/runs.tsv"
  : >"$phase_dir/records.jsonl"
  echo "# phase $phase: $note, MPS $MPS_STATE"
  for ((round = 1; round <= rounds; round++)); do
    run_round "$phase_dir" "$round"
  done
  python3 "$perf_lib/nccl_tests_parse.py" report "$phase_dir"
  rc=$?
  for op in ${ops//,/ }; do
    grep -q "\"op\": \"$op\"" "$phase_dir/busbw_median.jsonl" 2>/dev/null || continue
    python3 "$perf_lib/plot_busbw.py" "$phase_dir/busbw_median.jsonl" "$op" \
      "$phase_dir/busbw_$op.png" >/dev/null ||
      echo "# plot of $op failed (numbers are in $phase_dir/busbw_median.jsonl)"
  done
  return "$rc"
}

# Every phase, under MPS and/or without (MPS: on, off or both, MPS first), inside one
# `{ ...; } | tee OUT/summary.txt` that owns the MPS state it changes; the exit status is the
# worst phase's (1 FAIL outranks 3 WRONG outranks 0), printed as NAME's, written to
# OUT/exit_status and OUT/meta.json, and returned.
#   run_phases NAME MPS OUT NOTE
run_phases() {
  local name=$1 mps=$2 out=$3 note=$4 status=0 phase_rc
  worst() {  # 1 (failed) outranks 3 (wrong) outranks 0
    if (($1 == 1 || status == 1)); then status=1; elif (($1 == 3)); then status=3; fi
  }
  {
    if [[ "$mps" == on || "$mps" == both ]]; then
      mps_start
      trap 'mps_stop' EXIT
      trap 'exit 130' INT TERM  # runs the EXIT trap: a started MPS daemon is always stopped
      # MPS clients need their own hardware queues (docs/gpu-hosts.md, gpu_verify.sh).
      export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-32}
      run_phase mps "$out" "$note"
      phase_rc=$?
      worst "$phase_rc"
      mps_stop
    fi
    if [[ "$mps" == off || "$mps" == both ]]; then
      MPS_STATE=off
      run_phase nomps "$out" "$note"
      phase_rc=$?
      worst "$phase_rc"
    fi
    echo "# $name exit status: $status (0 PASS, 3 WRONG, 1 FAIL)"
    echo "$status" >"$out/exit_status"
  } 2>&1 | tee "$out/summary.txt"
  status=$(cat "$out/exit_status" 2>/dev/null)
  python3 "$perf_lib/perfkit.py" finish "$out" "${status:-1}" || true
  return "${status:-1}"
}

# --- nccl-tests --------------------------------------------------------------------------------
main() {
  local argv=("$@")
  local bin=${NCCL_TESTS_BIN:-} mpirun=${MPIRUN:-} plugin="" ops=$ALL_OPS modes=$ALL_MODES
  local min=8 max=256M factor=2 warmup=5 iters=20 rounds=3 limit=${NCCL_COMPARE_TIMEOUT:-300}
  local mps=on positional=()
  perf_parse_options compare_nccl_tests.sh "--nccl-tests:bin:folder --mpirun:mpirun:path
    --plugin:plugin:path --ops:ops:list --modes:modes:list -b:min:value -e:max:value
    -f:factor:value -w:warmup:value -n:iters:value --rounds:rounds:value --timeout:limit:value
    --mps:mps:value" "$@"
  ((${#positional[@]} == 1)) || usage
  local out=${positional[0]} op mode
  for op in ${ops//,/ }; do
    [[ ",$ALL_OPS," == *",$op,"* ]] || die_usage "--ops: $op is not one of $ALL_OPS"
  done
  check_phase_options
  ((rounds >= 3)) || echo "# note: $rounds round(s); issue 21 asks for >= 3 interleaved rounds" >&2

  # Every binary before anything runs: a missing one is a usage error, not a failed run.
  local missing=()
  plugin=${plugin:-$(default_plugin)}
  [[ -f "$plugin" ]] || missing+=("the plugin $plugin (--plugin or BUILD)")
  [[ -n "$bin" ]] || missing+=("the nccl-tests folder (--nccl-tests DIR or NCCL_TESTS_BIN)")
  if [[ -n "$bin" ]]; then
    for op in ${ops//,/ }; do
      [[ -x "$bin/${op}_perf" ]] || missing+=("$bin/${op}_perf")
    done
  fi
  [[ -n "$mpirun" ]] || mpirun=$(command -v mpirun || true)
  [[ -n "$mpirun" && -x "$mpirun" ]] ||
    missing+=("mpirun ${mpirun:-(not on PATH)} (--mpirun PATH or MPIRUN: nccl-tests with MPI=1)")
  exit_if_missing compare_nccl_tests.sh
  plugin=$(realpath "$plugin")
  begin_results nccl-tests-compare "BUILD NCCL_TESTS_BIN MPIRUN MPIRUN_ARGS NCCL_COMPARE_TIMEOUT" \
    "${BASH_SOURCE[0]}" "${argv[@]}"

  # Open MPI refuses root without this; ranks on one host need no launcher daemon elsewhere.
  local mpi_args=(-np 2 --oversubscribe --bind-to none)
  ((EUID == 0)) && mpi_args+=(--allow-run-as-root)
  local extra_mpi=()
  read -r -a extra_mpi <<<"${MPIRUN_ARGS:-}"
  local test_args=(-b "$min" -e "$max" -f "$factor" -w "$warmup" -n "$iters" -c 1)

  # One nccl-tests run under `timeout`: LABEL OP ROUND ENV-WORDS... ; its verdict to runs.tsv.
  # The per-rank wrapper gives each rank its own NCCL_HOSTID from Open MPI's rank number, so
  # NCCL sees two hosts and routes through the network plugin.
  run_one() {
    local phase_dir=$1 label=$2 op=$3 round=$4
    shift 4
    local base="$phase_dir/$label.$op.$round" t0 rc verdict reason="" names=() word
    for word in "$@"; do  # -x NAME for every variable we set: mpirun forwards them to the ranks
      [[ "$word" == *=* ]] && names+=(-x "${word%%=*}")
    done
    for word in LD_LIBRARY_PATH CUDA_VISIBLE_DEVICES CUDA_DEVICE_MAX_CONNECTIONS \
                CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; do  # and the ones MPS needs
      [[ -n "${!word:-}" ]] && names+=(-x "$word")
    done
    t0=$(now_us)
    # shellcheck disable=SC2016  # expanded by each rank's shell
    env "$@" NCCL_TESTS_DEVICE=0 timeout -k 15 "$limit" \
      "$mpirun" "${mpi_args[@]}" ${extra_mpi[@]+"${extra_mpi[@]}"} "${names[@]}" \
      -x NCCL_TESTS_DEVICE \
      bash -c 'export NCCL_HOSTID="nccl-tests-rank${OMPI_COMM_WORLD_RANK:?no Open MPI rank}"
               exec "$@"' \
      rank "$bin/${op}_perf" "${test_args[@]}" >"$base.txt" 2>"$base.log"
    rc=$?
    # nccl-tests has no exit status of its own for wrong data: its #wrong columns tell.
    judge_run "$label" "$rc" "$limit" - "$base.txt" "NCCL WARN|error|Error|failed" "$base.txt" \
      "$base.log"
    python3 "$parse" records "$base.txt" "$label" "$round" "$op" "${phase_dir##*/}" \
      >>"$phase_dir/records.jsonl"
    local ms=$((($(now_us) - t0) / 1000))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$op" "$round" "$verdict" "$rc" "$ms" \
      "${reason//$'\t'/ }" >>"$phase_dir/runs.tsv"
    printf '# %-16s %-15s round %d: %-7s (exit %d, %d.%03d s) %s\n' "$label" "$op" "$round" \
      "$verdict" "$rc" $((ms / 1000)) $((ms % 1000)) "$reason"
  }

  # One round of a phase: every collective, Socket then each mode of ours.
  run_round() {
    for op in ${ops//,/ }; do
      run_each_side "$1" "$op" "$2"
    done
  }

  local note="ops $ops, modes $modes, sizes $min..$max x$factor, -w $warmup -n $iters -c 1,"
  run_phases compare_nccl_tests "$mps" "$out" "$note $rounds round(s), ${limit}s per run"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
  exit $?
fi
