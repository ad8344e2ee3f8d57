#!/usr/bin/env bash
# PyTorch (torch.distributed, NCCL backend) through our plugin against NCCL_NET=Socket in the
# same run: tests/gpu/torch_collectives.py (all_reduce, all_gather_into_tensor,
# all_to_all_single, batch_isend_irecv; two processes on one GPU, exact values checked) once per
# label and round, rounds interleaved, ours in host mode and both emulated devmem modes, under
# MPS (and optionally without). The NCCL is torch's own (its pip nvidia-nccl package) unless
# LD_LIBRARY_PATH says otherwise.
#
#   perf/scripts/compare_torch.sh [options] OUT_DIR
#
#   --python PATH     the Python with torch (default $PYTHON or python3)
#   --plugin SO       our plugin (default $BUILD/libnccl-net-devmem.so or $BUILD/lib/...)
#   --ops LIST        torch_collectives.py's --ops (default all four)
#   --modes LIST      comma list of host, emulated-plugin, emulated-nccl (default: all three)
#   --min-bytes SIZE --max-bytes SIZE --factor N   sizes (default 4K .. 256M x4)
#   --iters N --warmup N                          per size (default 10 and 3)
#   --rounds N        interleaved rounds, medians over them (default 3)
#   --timeout SECS    limit per torch run (default $NCCL_COMPARE_TIMEOUT or 300)
#   --mps on|off|both as perf/scripts/compare_nccl_tests.sh
#
# Per phase (OUT_DIR/mps, OUT_DIR/nomps): LABEL.ROUND.txt (the script's table and NCCL's INFO
# log) and .log (stderr), LABEL.ROUND.json (torch_collectives.py --json), runs.tsv,
# records.jsonl, compare.json (verdicts, busbw ours/Socket per op and size, median over rounds,
# perf/lib/nccl_tests_parse.py report), busbw_median.jsonl and busbw_OP.png; OUT_DIR gets
# meta.json and summary.txt. The evidence each run must show is compare_nccl_tests.sh's.
# Exit status: 0 every run PASS; 3 some value wrong; 1 some run failed, timed out or lacked its
# evidence; 2 bad usage or a file not found.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# mode_env, missing_evidence, ALL_MODES and through it nccl_compare.sh's mps_start, mps_stop,
# now_us, perf_lib and NCCL_COMPARE_{COMMON,SOCKET}_ENV (sourcing runs nothing else).
# shellcheck source=perf/scripts/compare_nccl_tests.sh
source "$here/compare_nccl_tests.sh"
torch_script=$(cd "$here/../../tests/gpu" && pwd)/torch_collectives.py

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" |
    sed -n '/^  perf\/scripts\/compare_torch.sh/,/^  --mps/p' >&2
  exit 2
}
die_usage() { echo "compare_torch.sh: $*" >&2; exit 2; }

# Each phase runs inside one `{ ...; } | tee` subshell, which owns the MPS state it changes.
# shellcheck disable=SC2031
main() {
  local argv=("$@")
  local python=${PYTHON:-python3} plugin="" ops=all_reduce,all_gather,all_to_all,send_recv
  local modes=$ALL_MODES min=4K max=256M factor=4 iters=10 warmup=3 rounds=3
  local limit=${NCCL_COMPARE_TIMEOUT:-300} mps=on positional=()
  while (($# > 0)); do
    case "$1" in
      --python) python=${2:?--python needs a path}; shift 2 ;;
      --plugin) plugin=${2:?--plugin needs a path}; shift 2 ;;
      --ops) ops=${2:?--ops needs a list}; shift 2 ;;
      --modes) modes=${2:?--modes needs a list}; shift 2 ;;
      --min-bytes) min=${2:?--min-bytes needs a value}; shift 2 ;;
      --max-bytes) max=${2:?--max-bytes needs a value}; shift 2 ;;
      --factor) factor=${2:?--factor needs a value}; shift 2 ;;
      --iters) iters=${2:?--iters needs a value}; shift 2 ;;
      --warmup) warmup=${2:?--warmup needs a value}; shift 2 ;;
      --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
      --timeout) limit=${2:?--timeout needs a value}; shift 2 ;;
      --mps) mps=${2:?--mps needs a value}; shift 2 ;;
      -h|--help) usage ;;
      -*) echo "compare_torch.sh: unknown option $1" >&2; usage ;;
      *) positional+=("$1"); shift ;;
    esac
  done
  ((${#positional[@]} == 1)) || usage
  local out=${positional[0]} mode
  for mode in ${modes//,/ }; do
    [[ ",$ALL_MODES," == *",$mode,"* ]] || die_usage "--modes: $mode is not one of $ALL_MODES"
  done
  [[ "$mps" =~ ^(on|off|both)$ ]] || die_usage "--mps: on, off or both"
  [[ "$rounds" =~ ^[1-9][0-9]*$ && "$limit" =~ ^[1-9][0-9]*$ ]] ||
    die_usage "--rounds and --timeout: positive integers"

  local build=${BUILD:-build} missing=()
  if [[ -z "$plugin" ]]; then
    plugin=$build/libnccl-net-devmem.so
    [[ -f "$plugin" ]] || plugin=$build/lib/libnccl-net-devmem.so
  fi
  [[ -f "$plugin" ]] || missing+=("the plugin $plugin (--plugin or BUILD)")
  if ! command -v "$python" >/dev/null 2>&1; then
    missing+=("python $python (--python or PYTHON)")
  elif ! "$python" -c "import torch" >/dev/null 2>&1; then
    missing+=("torch in $python (--python names the Python that has torch)")
  fi
  if ((${#missing[@]} > 0)); then
    printf 'compare_torch.sh: not found: %s\n' "${missing[@]}" >&2
    exit 2
  fi
  plugin=$(realpath "$plugin")
  mkdir -p "$out" || exit 2
  out=$(cd "$out" && pwd)
  OUT=$out python3 "$perf_lib/perfkit.py" begin torch-compare "BUILD PYTHON NCCL_COMPARE_TIMEOUT" \
    "${BASH_SOURCE[0]}" "${argv[@]}" >/dev/null ||
    echo "# compare_torch: could not write $out/meta.json" >&2
  local torch_args=(--ops "$ops" --min-bytes "$min" --max-bytes "$max" --factor "$factor"
                    --iters "$iters" --warmup "$warmup")

  # One torch run: PHASE_DIR LABEL ROUND ENV-WORDS...; one runs.tsv line per op.
  run_one() {
    local phase_dir=$1 label=$2 round=$3
    shift 3
    local base="$phase_dir/$label.$round" t0 rc verdict reason="" op
    t0=$(now_us)
    env "$@" timeout -k 15 "$limit" "$python" "$torch_script" "${torch_args[@]}" \
      --json "$base.json" --records "$phase_dir/records.jsonl" --label "$label" \
      --round "$round" >"$base.txt" 2>"$base.log"
    rc=$?
    case $rc in
      0) verdict=PASS ;;
      3) verdict=WRONG ;;
      124|137) verdict=TIMEOUT; reason="no exit within ${limit}s" ;;
      *) verdict=FAIL; reason=$(grep -m1 -E "NCCL WARN|Error|failed" "$base.log" "$base.txt" |
                                 cut -c1-200) ;;
    esac
    if [[ "$verdict" == PASS ]]; then
      reason=$(missing_evidence "$label" "$base.txt")
      [[ -n "$reason" ]] && verdict=FAIL
    fi
    if [[ "$verdict" == TIMEOUT && "$MPS_STATE" == started ]]; then
      mps_stop  # a killed client can leave our daemon refusing the next one (nccl_compare.sh)
      mps_start
    fi
    local ms=$((($(now_us) - t0) / 1000))
    for op in ${ops//,/ }; do
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$op" "$round" "$verdict" "$rc" "$ms" \
        "${reason//$'\t'/ }" >>"$phase_dir/runs.tsv"
    done
    printf '# %-16s round %d: %-7s (exit %d, %d.%03d s) %s\n' "$label" "$round" "$verdict" \
      "$rc" $((ms / 1000)) $((ms % 1000)) "$reason"
  }

  run_phase() {
    local phase=$1 phase_dir="$out/$1" round
    mkdir -p "$phase_dir"
    : >"$phase_dir/runs.tsv"
    : >"$phase_dir/records.jsonl"
    echo "# phase $phase: ops $ops, modes $modes, sizes $min..$max x$factor, $rounds round(s)," \
         "${limit}s per run, MPS $MPS_STATE"
    for ((round = 1; round <= rounds; round++)); do
      run_one "$phase_dir" socket "$round" -u NCCL_NET_PLUGIN "${NCCL_COMPARE_COMMON_ENV[@]}" \
        "${NCCL_COMPARE_SOCKET_ENV[@]}"
      for mode in ${modes//,/ }; do
        # shellcheck disable=SC2046  # mode_env prints separate words
        run_one "$phase_dir" "$mode" "$round" $(mode_env "$mode") \
          "${NCCL_COMPARE_COMMON_ENV[@]}" NCCL_NET_PLUGIN="$plugin" NCCL_NET=devmem
      done
    done
    python3 "$perf_lib/nccl_tests_parse.py" report "$phase_dir"
    local rc=$? op
    for op in ${ops//,/ }; do
      grep -q "\"op\": \"$op\"" "$phase_dir/busbw_median.jsonl" 2>/dev/null || continue
      python3 "$perf_lib/plot_busbw.py" "$phase_dir/busbw_median.jsonl" "$op" \
        "$phase_dir/busbw_$op.png" >/dev/null ||
        echo "# plot of $op failed (numbers are in $phase_dir/busbw_median.jsonl)"
    done
    return "$rc"
  }

  local status=0 phase_rc
  {
    if [[ "$mps" == on || "$mps" == both ]]; then
      mps_start
      trap 'mps_stop' EXIT
      trap 'exit 130' INT TERM
      export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-32}
      run_phase mps
      phase_rc=$?
      ((phase_rc == 1 || (phase_rc == 3 && status == 0))) && status=$phase_rc
      mps_stop
    fi
    if [[ "$mps" == off || "$mps" == both ]]; then
      MPS_STATE=off
      run_phase nomps
      phase_rc=$?
      ((phase_rc == 1 || (phase_rc == 3 && status == 0))) && status=$phase_rc
    fi
    echo "# compare_torch exit status: $status (0 PASS, 3 WRONG, 1 FAIL)"
    echo "$status" >"$out/exit_status"
  } 2>&1 | tee "$out/summary.txt"
  status=$(cat "$out/exit_status" 2>/dev/null)
  python3 "$perf_lib/perfkit.py" finish "$out" "${status:-1}" || true
  return "${status:-1}"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
  exit $?
fi
