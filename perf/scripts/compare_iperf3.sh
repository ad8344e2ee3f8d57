#!/usr/bin/env bash
# Bandwidth of the plugin vs iperf3 on loopback, in the same run, as a ratio.
#
#   perf/scripts/compare_iperf3.sh [SIZE] [ROUNDS]        (defaults: 64M, 5)
#
# Runs nccl-net-devmem-bench (one-way stream of SIZE-byte messages, window 8) and iperf3 with
# as many parallel TCP streams as the plugin has data sockets (NCCL_DEVMEM_NSOCKS, default 4),
# alternating ROUNDS times so both see the same machine noise, and prints each round, the
# medians, and as its last line `ratio R` = median(bench GB/s) / median(iperf3 GB/s).
#
# Environment: BUILD (default build), BENCH (default $BUILD/bin/nccl-net-devmem-bench), PLUGIN
# (default the bench's own: ../libnccl-net-devmem.so next to its bin/ directory), OUT (default
# $BUILD/results/<date>_<machine>_iperf3). Writes under OUT: runs.jsonl (every bench result and
# iperf3's GB/s, labelled), iperf3.ROUND.json (iperf3's own reports), output.txt, meta.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/scripts/common.sh
source "$here/common.sh"
size=${1:-64M}
rounds=${2:-5}
streams=${NCCL_DEVMEM_NSOCKS:-4}
command -v iperf3 >/dev/null || { echo "iperf3 is not installed" >&2; exit 2; }
perf_use_bench
perf_begin iperf3 "" "$0" "$@"

port=$((20000 + RANDOM % 20000))
for ((r = 1; r <= rounds; r++)); do
  # To a file first: a parser running beside the bench would steal one of the 2 cores.
  NCCL_SOCKET_IFNAME=lo "$bench" "${plugin_args[@]}" -b "$size" -e "$size" -w 2 \
    --json >"$PERF_TMP/run.json"
  perfkit record bench "$r" --from "$PERF_TMP/run.json" >>"$PERF_RUNS"
  b=$(perfkit field "$PERF_TMP/run.json" gbps)
  iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 50); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
  iperf3 -c 127.0.0.1 -p "$port" -P "$streams" -t 3 -J >"$PERF_OUT/iperf3.$r.json"
  wait "$server" || true
  i=$(perfkit iperf3-gbps "$PERF_OUT/iperf3.$r.json")
  perfkit record iperf3 "$r" gbps="$i" streams="$streams" >>"$PERF_RUNS"
  printf 'round %d: bench %.3f GB/s  iperf3 -P %d %.3f GB/s\n' "$r" "$b" "$streams" "$i"
done
perfkit ratio "$PERF_RUNS" gbps bench iperf3 GB/s
