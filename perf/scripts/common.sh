# shellcheck shell=bash
# Sourced by every script in perf/scripts/: where its results go and what describes them, and
# the bench it drives.
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
