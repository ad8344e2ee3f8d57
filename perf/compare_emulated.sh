#!/usr/bin/env bash
# The emulated devmem RX path vs the plain host path, same bench, same run, as a ratio.
#
#   perf/compare_emulated.sh [SIZE] [ROUNDS]        (defaults: 64M, 5)
#
# Alternates `nccl-net-devmem-bench --mode host` and `--mode emulated-devmem` ROUNDS times;
# the last line is `ratio R` = median(emulated GB/s) / median(host GB/s).
set -euo pipefail
size=${1:-64M}
rounds=${2:-5}
bench=${BENCH:-build/bin/nccl-net-devmem-bench}
plugin_args=()
[[ -n "${PLUGIN:-}" ]] && plugin_args=(--plugin "$PLUGIN")
out=$(mktemp)
trap 'rm -f "$out"' EXIT
gbps() {
  NCCL_SOCKET_IFNAME=lo "$bench" "${plugin_args[@]}" --mode "$1" -b "$size" -e "$size" -w 2 --json >"$out"
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["gbps"])' "$out"
}
host=()
emulated=()
for ((r = 1; r <= rounds; r++)); do
  h=$(gbps host)
  e=$(gbps emulated-devmem)
  printf 'round %d: host %.3f GB/s  emulated-devmem %.3f GB/s\n' "$r" "$h" "$e"
  host+=("$h")
  emulated+=("$e")
done
python3 "$(dirname "$0")/ratio.py" "emulated-devmem" "${emulated[*]}" "host" "${host[*]}" "GB/s"
