#!/usr/bin/env bash
# Bandwidth of the plugin vs iperf3 on loopback, in the same run, as a ratio.
#
#   perf/compare_iperf3.sh [SIZE] [ROUNDS]        (defaults: 64M, 5)
#
# Runs nccl-net-devmem-bench (one-way stream of SIZE-byte messages, window 8) and iperf3 with
# as many parallel TCP streams as the plugin has data sockets (NCCL_DEVMEM_NSOCKS, default 4),
# alternating ROUNDS times so both see the same machine noise, and prints each round, the
# medians, and as its last line `ratio R` = median(bench GB/s) / median(iperf3 GB/s).
# Bench binary: $BENCH if set, else build/bin/nccl-net-devmem-bench. Plugin: $PLUGIN if set,
# else the bench's default (../libnccl-net-devmem.so next to its bin/ directory).
set -euo pipefail
size=${1:-64M}
rounds=${2:-5}
bench=${BENCH:-build/bin/nccl-net-devmem-bench}
streams=${NCCL_DEVMEM_NSOCKS:-4}
plugin_args=()
[[ -n "${PLUGIN:-}" ]] && plugin_args=(--plugin "$PLUGIN")
command -v iperf3 >/dev/null || { echo "iperf3 is not installed" >&2; exit 2; }
[[ -x "$bench" ]] || { echo "no bench binary at $bench (set BENCH)" >&2; exit 2; }

port=$((20000 + RANDOM % 20000))
out=$(mktemp)
trap 'rm -f "$out"' EXIT
bench_gbps=()
iperf_gbps=()
for ((r = 1; r <= rounds; r++)); do
  # To a file first: a parser running beside the bench would steal one of the 2 cores.
  NCCL_SOCKET_IFNAME=lo "$bench" "${plugin_args[@]}" -b "$size" -e "$size" -w 2 --json >"$out"
  b=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["gbps"])' "$out")
  iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 50); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
  i=$(iperf3 -c 127.0.0.1 -p "$port" -P "$streams" -t 3 -J |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e9)')
  wait "$server" || true
  printf 'round %d: bench %.3f GB/s  iperf3 -P %d %.3f GB/s\n' "$r" "$b" "$streams" "$i"
  bench_gbps+=("$b")
  iperf_gbps+=("$i")
done
python3 "$(dirname "$0")/ratio.py" "bench" "${bench_gbps[*]}" "iperf3" "${iperf_gbps[*]}" "GB/s"
