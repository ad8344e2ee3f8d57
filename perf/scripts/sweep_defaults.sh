#!/usr/bin/env bash
# How NCCL_DEVMEM_NSOCKS x NCCL_DEVMEM_NTHREADS x NCCL_DEVMEM_CHUNK_SIZE perform on this
# machine, as a ratio to the built-in defaults measured in the same run (interleaved rounds).
#
#   perf/scripts/sweep_defaults.sh [SIZE] [ROUNDS]        (defaults: 64M, 3)
#
# Environment: BUILD (default build), BENCH (default $BUILD/bin/nccl-net-devmem-bench), CONFIGS
# (the settings, ";"-separated "NSOCKS NTHREADS CHUNK" triples, default the list below), OUT
# (default $BUILD/results/<date>_<machine>_sweep-defaults). Writes under OUT: runs.jsonl (every
# bench result, labelled with its setting), output.txt, meta.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/scripts/common.sh
source "$here/common.sh"
size=${1:-64M}
rounds=${2:-3}
perf_use_bench  # not plugin_args: the bench's own plugin
IFS=';' read -r -a configs \
  <<<"${CONFIGS:-1 1 512K;2 1 512K;2 2 512K;4 1 512K;4 2 512K;8 2 512K;2 2 2M}"
configs=("default" "${configs[@]}")
perf_begin sweep-defaults "CONFIGS" "$0" "$@"
run() {  # run ROUND nsocks nthreads chunk | run ROUND default
  local round=$1 env=()
  shift
  [[ $1 != default ]] &&
    env=("NCCL_DEVMEM_NSOCKS=$1" "NCCL_DEVMEM_NTHREADS=$2" "NCCL_DEVMEM_CHUNK_SIZE=$3")
  env NCCL_SOCKET_IFNAME=lo "${env[@]}" "$bench" -b "$size" -e "$size" -w 2 \
    --json >"$PERF_TMP/run.json"
  perfkit record "$*" "$round" --from "$PERF_TMP/run.json" >>"$PERF_RUNS"
}
for ((r = 1; r <= rounds; r++)); do
  for c in "${configs[@]}"; do
    # shellcheck disable=SC2086  # c is the words of one setting
    run "$r" $c
  done
done
perfkit versus "$PERF_RUNS" gbps default "nsocks nthreads chunk"
