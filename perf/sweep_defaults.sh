#!/usr/bin/env bash
# How NCCL_DEVMEM_NSOCKS x NCCL_DEVMEM_NTHREADS x NCCL_DEVMEM_CHUNK_SIZE perform on this
# machine, as a ratio to the built-in defaults measured in the same run (interleaved rounds).
#
#   perf/sweep_defaults.sh [SIZE] [ROUNDS]        (defaults: 64M, 3)
set -euo pipefail
size=${1:-64M}
rounds=${2:-3}
bench=${BENCH:-build/bin/nccl-net-devmem-bench}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
configs=("default" "1 1 512K" "2 1 512K" "2 2 512K" "4 1 512K" "4 2 512K" "8 2 512K" "2 2 2M")
declare -A results
run() {  # nsocks nthreads chunk -> GB/s
  local env=()
  [[ $1 != default ]] && env=(NCCL_DEVMEM_NSOCKS=$1 NCCL_DEVMEM_NTHREADS=$2 NCCL_DEVMEM_CHUNK_SIZE=$3)
  env NCCL_SOCKET_IFNAME=lo "${env[@]}" "$bench" -b "$size" -e "$size" -w 2 --json >"$out"
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["gbps"])' "$out"
}
for ((r = 0; r < rounds; r++)); do
  for c in "${configs[@]}"; do
    # shellcheck disable=SC2086
    results[$c]+="$(run $c) "
  done
done
for c in "${configs[@]}"; do echo "$c|${results[$c]}"; done | python3 -c '
import statistics, sys
rows = [l.rstrip("\n").split("|") for l in sys.stdin]
med = {k: statistics.median(float(x) for x in v.split()) for k, v in rows}
base = med["default"]
print("%24s %14s %10s" % ("nsocks nthreads chunk", "GB/s (median)", "vs default"))
for k, _ in rows:
    print(f"{k:>24} {med[k]:14.3f} {med[k] / base:10.2f}")
'
