# shellcheck shell=bash
# Sourced by every script in perf/scripts/ (the GPU comparisons through nccl_compare.sh): where
# its results go and what describes them, the bench it drives, the options it takes.
#
#   perf_begin TOPIC "KNOB ..." "$0" "$@"
#
# makes the results folder (OUT when set, else $BUILD/results/<date>_<machine>_<topic>/; BUILD
# defaults to build, MACHINE names the machine, default CPUs and GPU such as 16cpu-h200), sets
# PERF_OUT to it, writes PERF_OUT/meta.json (commit and dirty flag, UTC date, machine, GPU, the
# exact command, the KNOBs and every NCCL_* variable that are set), copies everything the script
# prints to PERF_OUT/output.txt, and at exit records the exit status and the files written. Also
# sets PERF_RUNS (PERF_OUT/runs.jsonl, made empty: where the run records go) and PERF_TMP (a
# scratch directory removed at exit); perf_at_exit CMD adds cleanup of a script's own. Nothing
# goes into perf/results/ unless OUT points there.

perf_lib="$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)"
perfkit() { python3 "$perf_lib/perfkit.py" "$@"; }

PERF_OUT=""
PERF_RUNS=""
PERF_TMP=""
perf_exit_cmds=()
perf_at_exit() { perf_exit_cmds+=("$1"); }

# shellcheck disable=SC2317  # called by the EXIT trap
perf_finish() {
  local status=$1 cmd
  trap - EXIT
  for cmd in ${perf_exit_cmds[@]+"${perf_exit_cmds[@]}"}; do eval "$cmd" || true; done
  [[ -n "$PERF_TMP" ]] && rm -rf "$PERF_TMP"
  if [[ -n "$PERF_OUT" && -f "$PERF_OUT/meta.json" ]]; then
    perfkit finish "$PERF_OUT" "$status" || true
    echo "results: $PERF_OUT (meta.json, output.txt)" >&2
  fi
  exit "$status"
}

perf_begin() {
  local topic=$1 knobs=$2
  shift 2
  PERF_OUT=$(perfkit begin "$topic" "BUILD BENCH PLUGIN OUT MACHINE $knobs" "$@") ||
    { echo "$(basename "$1"): cannot create the results folder" >&2; exit 2; }
  PERF_RUNS="$PERF_OUT/runs.jsonl"
  : >"$PERF_RUNS"
  PERF_TMP=$(mktemp -d)
  trap 'perf_finish $?' EXIT
  trap 'exit 130' INT TERM  # runs the EXIT trap
  exec > >(tee -a "$PERF_OUT/output.txt") 2> >(tee -a "$PERF_OUT/output.txt" >&2)
}

# perf_use_bench: the nccl-net-devmem-bench a script drives. Sets `build` (BUILD, default build),
# `bench` (BENCH, default $build/bin/nccl-net-devmem-bench) and `plugin_args` (--plugin PLUGIN
# where PLUGIN is set; else the bench loads its own, ../libnccl-net-devmem.so beside its bin/);
# exits 2 where there is no bench binary.
# shellcheck disable=SC2034  # build and plugin_args are the calling script's
perf_use_bench() {
  build=${BUILD:-build}
  bench=${BENCH:-$build/bin/nccl-net-devmem-bench}
  plugin_args=()
  [[ -n "${PLUGIN:-}" ]] && plugin_args=(--plugin "$PLUGIN")
  [[ -x "$bench" ]] || { echo "no bench binary at $bench (set BENCH)" >&2; exit 2; }
}

# perf_parse_options SCRIPT TABLE ARGS...: the options of a main() that keeps them in locals.
# TABLE holds one word OPTION:VARIABLE:WHAT per option, each taking the next argument as the
# caller's VARIABLE (a missing or empty one: "SCRIPT: OPTION needs a WHAT", exit 1). -h and
# --help call the caller's usage, as does an unknown -option after naming it; other words are
# appended to the caller's `positional` array. A word --:VARIABLE in TABLE ends the options at
# `--` and puts the words after it into the caller's array VARIABLE.
perf_parse_options() {
  local _script=$1 _entries=() _entry _spec
  read -r -d '' -a _entries <<<"$2" || true  # every line of TABLE (read ends at the end)
  shift 2
  while (($# > 0)); do
    _spec=""
    for _entry in "${_entries[@]}"; do
      [[ "${_entry%%:*}" == "$1" ]] && { _spec=${_entry#*:}; break; }
    done
    if [[ "$1" == -- && -n "$_spec" ]]; then
      local -n _rest=$_spec
      shift
      _rest=("$@")
      return 0
    elif [[ -n "$_spec" ]]; then
      [[ -n "${2:-}" ]] || { echo "$_script: $1 needs a ${_spec#*:}" >&2; exit 1; }
      printf -v "${_spec%%:*}" '%s' "$2"
      shift 2
    elif [[ "$1" == -h || "$1" == --help ]]; then
      usage
    elif [[ "$1" == -* ]]; then
      echo "$_script: unknown option $1" >&2
      usage
    else
      positional+=("$1")
      shift
    fi
  done
}
