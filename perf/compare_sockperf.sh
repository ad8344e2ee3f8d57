#!/usr/bin/env bash
# Small-message round-trip latency of the plugin vs sockperf TCP ping-pong on loopback.
#
#   perf/compare_sockperf.sh [ROUNDS]        (default 5)
#
# The bench does 8-byte isend/irecv round trips through the plugin's ABI; sockperf does TCP
# ping-pong with its minimum 14-byte message (--full-rtt, so both report a full round trip).
# Alternates ROUNDS times; the last line is `ratio R` = median(bench RTT) / median(sockperf
# RTT): below 1 means the plugin's round trip is faster.
set -euo pipefail
rounds=${1:-5}
bench=${BENCH:-build/bin/nccl-net-devmem-bench}
plugin_args=()
[[ -n "${PLUGIN:-}" ]] && plugin_args=(--plugin "$PLUGIN")
command -v sockperf >/dev/null || { echo "sockperf is not installed" >&2; exit 2; }

port=$((20000 + RANDOM % 20000))
out=$(mktemp)
trap 'rm -f "$out"' EXIT
bench_us=()
sock_us=()
for ((r = 1; r <= rounds; r++)); do
  # To a file first: a parser running beside the bench would steal one of the 2 cores.
  NCCL_SOCKET_IFNAME=lo "$bench" "${plugin_args[@]}" --latency -b 8 -e 8 -n 20000 --json >"$out"
  b=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["usec"])' "$out")
  # The server runs only during its own rounds: idle, it still competes for the 2 cores.
  sockperf sr --tcp -i 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 50); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
  s=$(sockperf pp --tcp -i 127.0.0.1 -p "$port" -t 2 -m 14 --full-rtt 2>&1 |
      sed -n 's/.*avg-rtt=\([0-9.]*\).*/\1/p' | tail -1)
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  printf 'round %d: bench RTT %.2f us  sockperf RTT %.2f us\n' "$r" "$b" "$s"
  bench_us+=("$b")
  sock_us+=("$s")
done
python3 "$(dirname "$0")/ratio.py" "bench RTT" "${bench_us[*]}" "sockperf RTT" "${sock_us[*]}" "us"
