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
# mode_env, missing_evidence, ALL_MODES, check_phase_options, judge_run, run_each_side,
# run_phases and through it nccl_compare.sh's mps_start, mps_stop, now_us, perf_lib,
# NCCL_COMPARE_{COMMON,SOCKET}_ENV, perf_parse_options, default_plugin, exit_if_missing and
# begin_results (sourcing runs nothing else).
# shellcheck source=perf/scripts/compare_nccl_tests.sh
source "$here/compare_nccl_tests.sh"
torch_script=$(cd "$here/../../tests/gpu" && pwd)/torch_collectives.py

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" |
    sed -n '/^  perf\/scripts\/compare_torch.sh/,/^  --mps/p' >&2
  exit 2
}
die_usage() { echo "compare_torch.sh: $*" >&2; exit 2; }

main() {
  local argv=("$@")
  local python=${PYTHON:-python3} plugin="" ops=all_reduce,all_gather,all_to_all,send_recv
  local modes=$ALL_MODES min=4K max=256M factor=4 iters=10 warmup=3 rounds=3
  local limit=${NCCL_COMPARE_TIMEOUT:-300} mps=on positional=()
  perf_parse_options compare_torch.sh "--python:python:path --plugin:plugin:path --ops:ops:list
    --modes:modes:list --min-bytes:min:value --max-bytes:max:value --factor:factor:value
    --iters:iters:value --warmup:warmup:value --rounds:rounds:value --timeout:limit:value
    --mps:mps:value" "$@"
  ((${#positional[@]} == 1)) || usage
  local out=${positional[0]} mode
  check_phase_options

  local missing=()
  plugin=${plugin:-$(default_plugin)}
  [[ -f "$plugin" ]] || missing+=("the plugin $plugin (--plugin or BUILD)")
  if ! command -v "$python" >/dev/null 2>&1; then
    missing+=("python $python (--python or PYTHON)")
  elif ! "$python" -c "import torch" >/dev/null 2>&1; then
    missing+=("torch in $python (--python names the Python that has torch)")
  fi
  exit_if_missing compare_torch.sh
  plugin=$(realpath "$plugin")
  begin_results torch-compare "BUILD PYTHON NCCL_COMPARE_TIMEOUT" "${BASH_SOURCE[0]}" "${argv[@]}"
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
    # torch_collectives.py exits 3 for a wrong value (its WRONG_EXIT).
    judge_run "$label" "$rc" "$limit" 3 "$base.txt" "NCCL WARN|Error|failed" "$base.log" \
      "$base.txt"
    local ms=$((($(now_us) - t0) / 1000))
    for op in ${ops//,/ }; do
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$op" "$round" "$verdict" "$rc" "$ms" \
        "${reason//$'\t'/ }" >>"$phase_dir/runs.tsv"
    done
    printf '# %-16s round %d: %-7s (exit %d, %d.%03d s) %s\n' "$label" "$round" "$verdict" \
      "$rc" $((ms / 1000)) $((ms % 1000)) "$reason"
  }

  # One round of a phase: Socket then each mode of ours, every op in one run.
  run_round() { run_each_side "$1" "$2"; }

  local note="ops $ops, modes $modes, sizes $min..$max x$factor, $rounds round(s),"
  run_phases compare_torch "$mps" "$out" "$note ${limit}s per run"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
  exit $?
fi
