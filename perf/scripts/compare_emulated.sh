#!/usr/bin/env bash
# The emulated devmem RX path vs the plain host path, same bench, same run, as a ratio.
#
#   perf/scripts/compare_emulated.sh [SIZE] [ROUNDS]        (defaults: 64M, 5)
#
# Alternates `nccl-net-devmem-bench --mode host` and `--mode emulated-devmem` ROUNDS times;
# the last line is `ratio R` = median(emulated GB/s) / median(host GB/s).
#
# Environment: BUILD (default build), BENCH (default $BUILD/bin/nccl-net-devmem-bench), PLUGIN
# (default the bench's own), OUT (default $BUILD/results/<date>_<machine>_emulated-rx). Writes
# under OUT: runs.jsonl (every bench result, labelled), output.txt, meta.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/scripts/common.sh
source "$here/common.sh"
size=${1:-64M}
rounds=${2:-5}
perf_use_bench
perf_begin emulated-rx "" "$0" "$@"
gbps() {  # gbps MODE ROUND: one run, recorded; prints its GB/s
  NCCL_SOCKET_IFNAME=lo "$bench" "${plugin_args[@]}" --mode "$1" -b "$size" -e "$size" -w 2 \
    --json >"$PERF_TMP/run.json"
  perfkit record "$1" "$2" --from "$PERF_TMP/run.json" >>"$PERF_RUNS"
  perfkit field "$PERF_TMP/run.json" gbps
}
for ((r = 1; r <= rounds; r++)); do
  h=$(gbps host "$r")
  e=$(gbps emulated-devmem "$r")
  printf 'round %d: host %.3f GB/s  emulated-devmem %.3f GB/s\n' "$r" "$h" "$e"
done
perfkit ratio "$PERF_RUNS" gbps emulated-devmem host GB/s
