#!/usr/bin/env bash
# Emulated devmem TX (every data-socket send with MSG_ZEROCOPY, done on the kernel's
# completions) vs the host path's copying sends, same bench, same run, interleaved rounds.
#
#   perf/scripts/compare_tx.sh [SIZE] [ROUNDS]        (defaults: 64M, 5)
#
# Prints per round the GB/s and the sending process's CPU seconds per GB of both, then the
# medians and `ratio R` = median(emulated-tx GB/s) / median(host GB/s). On loopback the kernel
# copies every zero-copy send after all (a deferred copy when the packet is looped to the
# receiver, reported as copied), so the CPU column shows the bookkeeping's cost, not the copy
# a NIC would save.
#
# Environment: BUILD (default build), BENCH (default $BUILD/bin/nccl-net-devmem-bench), OUT
# (default $BUILD/results/<date>_<machine>_emulated-tx). Writes under OUT: runs.jsonl (every
# bench result, labelled), output.txt, meta.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/scripts/common.sh
source "$here/common.sh"
size=${1:-64M}
rounds=${2:-5}
perf_use_bench  # not plugin_args: the bench's own plugin
perf_begin emulated-tx "" "$0" "$@"
run() {  # run MODE ROUND -> "GB/s CPU-s-per-GB"
  NCCL_SOCKET_IFNAME=lo "$bench" --mode "$1" -b "$size" -e "$size" -w 2 --json >"$PERF_TMP/run.json"
  perfkit record "$1" "$2" --from "$PERF_TMP/run.json" >>"$PERF_RUNS"
  perfkit field "$PERF_TMP/run.json" gbps send_cpu_s_per_gb
}
for ((r = 1; r <= rounds; r++)); do
  read -r h hc < <(run host "$r")
  read -r t tc < <(run emulated-tx "$r")
  printf 'round %d: host %.3f GB/s (send CPU %.3f s/GB)  emulated-tx %.3f GB/s (send CPU %.3f s/GB)\n' \
    "$r" "$h" "$hc" "$t" "$tc"
done
perfkit ratio "$PERF_RUNS" send_cpu_s_per_gb emulated-tx host s/GB "send CPU"
perfkit ratio "$PERF_RUNS" gbps emulated-tx host GB/s
