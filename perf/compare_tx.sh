#!/usr/bin/env bash
# Emulated devmem TX (every data-socket send with MSG_ZEROCOPY, done on the kernel's
# completions) vs the host path's copying sends, same bench, same run, interleaved rounds.
#
#   perf/compare_tx.sh [SIZE] [ROUNDS]        (defaults: 64M, 5)
#
# Prints per round the GB/s and the sending process's CPU seconds per GB of both, then the
# medians and `ratio R` = median(emulated-tx GB/s) / median(host GB/s). On loopback the kernel
# copies every zero-copy send after all (a deferred copy when the packet is looped to the
# receiver, reported as copied), so the CPU column shows the bookkeeping's cost, not the copy
# a NIC would save.
set -euo pipefail
size=${1:-64M}
rounds=${2:-5}
bench=${BENCH:-build/bin/nccl-net-devmem-bench}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
run() {  # run MODE -> "GB/s CPU-s-per-GB"
  NCCL_SOCKET_IFNAME=lo "$bench" --mode "$1" -b "$size" -e "$size" -w 2 --json >"$out"
  python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).readlines()[-1])
print(r["gbps"], r["send_cpu_s_per_gb"])' "$out"
}
host=() tx=() host_cpu=() tx_cpu=()
for ((r = 1; r <= rounds; r++)); do
  read -r h hc < <(run host)
  read -r t tc < <(run emulated-tx)
  printf 'round %d: host %.3f GB/s (send CPU %.3f s/GB)  emulated-tx %.3f GB/s (send CPU %.3f s/GB)\n' \
    "$r" "$h" "$hc" "$t" "$tc"
  host+=("$h") tx+=("$t") host_cpu+=("$hc") tx_cpu+=("$tc")
done
python3 -c '
import statistics, sys
hc, tc = (statistics.median(float(x) for x in v.split()) for v in sys.argv[1:3])
print("median send CPU: host %.3f s/GB  emulated-tx %.3f s/GB  (ratio %.2f)" % (hc, tc, tc / hc))
' "${host_cpu[*]}" "${tx_cpu[*]}"
python3 "$(dirname "$0")/ratio.py" "emulated-tx" "${tx[*]}" "host" "${host[*]}" "GB/s"
