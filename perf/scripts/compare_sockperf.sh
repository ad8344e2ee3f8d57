#!/usr/bin/env bash
# Small-message round-trip latency of the plugin vs sockperf TCP ping-pong on loopback.
#
#   perf/scripts/compare_sockperf.sh [ROUNDS]        (default 5)
#
# The bench does 8-byte isend/irecv round trips through the plugin's ABI; sockperf does TCP
# ping-pong with its minimum 14-byte message (--full-rtt, so both report a full round trip).
# Alternates ROUNDS times; the last line is `ratio R` = median(bench RTT) / median(sockperf
# RTT): below 1 means the plugin's round trip is faster.
#
# Environment: BUILD (default build), BENCH (default $BUILD/bin/nccl-net-devmem-bench), PLUGIN
# (default the bench's own), ITERS (bench round trips per run, default 20000), OUT (default
# $BUILD/results/<date>_<machine>_sockperf). Writes under OUT: runs.jsonl (every bench result
# and sockperf's RTT, labelled), sockperf.ROUND.txt (sockperf's own output), output.txt,
# meta.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/scripts/common.sh
source "$here/common.sh"
rounds=${1:-5}
iters=${ITERS:-20000}
command -v sockperf >/dev/null || { echo "sockperf is not installed" >&2; exit 2; }
perf_use_bench
perf_begin sockperf "ITERS" "$0" "$@"

port=$((20000 + RANDOM % 20000))
for ((r = 1; r <= rounds; r++)); do
  # To a file first: a parser running beside the bench would steal one of the 2 cores.
  NCCL_SOCKET_IFNAME=lo "$bench" "${plugin_args[@]}" --latency -b 8 -e 8 -n "$iters" \
    --json >"$PERF_TMP/run.json"
  perfkit record bench "$r" --from "$PERF_TMP/run.json" >>"$PERF_RUNS"
  b=$(perfkit field "$PERF_TMP/run.json" usec)
  # The server runs only during its own rounds: idle, it still competes for the 2 cores.
  sockperf sr --tcp -i 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 50); do ss -Hltn "sport = :$port" | grep -q . && break; sleep 0.1; done
  sockperf pp --tcp -i 127.0.0.1 -p "$port" -t 2 -m 14 --full-rtt >"$PERF_OUT/sockperf.$r.txt" 2>&1
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  s=$(sed -n 's/.*avg-rtt=\([0-9.]*\).*/\1/p' "$PERF_OUT/sockperf.$r.txt" | tail -1)
  [[ -n "$s" ]] || { echo "no avg-rtt in $PERF_OUT/sockperf.$r.txt" >&2; exit 1; }
  perfkit record sockperf "$r" usec="$s" bytes=14 >>"$PERF_RUNS"
  printf 'round %d: bench RTT %.2f us  sockperf RTT %.2f us\n' "$r" "$b" "$s"
done
perfkit ratio "$PERF_RUNS" usec bench sockperf us
