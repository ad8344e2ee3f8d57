#!/usr/bin/env bash
# NCCL busbw through our plugin vs NCCL's built-in Socket transport, in the same run, on one
# GPU host: two ranks (processes) on one GPU with different NCCL_HOSTID, so every byte crosses
# the network layer (loopback). Ours runs the emulated devmem RX path on the GPU (payload placed
# in a GPU RX region, consumed by NCCL_DEVMEM_UNPACK's choice). Prints both nccl-tests tables,
# the busbw ratio per size, and writes busbw PNGs.
#
#   perf/nccl_compare.sh OUT_DIR [PLUGIN_SO] [BENCH] [-- extra bench args]
# Environment: NCCL_DEVMEM_UNPACK (plugin|nccl), NCCL lib path in LD_LIBRARY_PATH.
set -euo pipefail
out=${1:?usage: nccl_compare.sh OUT_DIR [PLUGIN_SO] [BENCH]}
plugin=${2:-$(dirname "$0")/../lib/libnccl-net-devmem.so}
bench=${3:-$(dirname "$0")/devmem-nccl-bench}
shift $(( $# < 3 ? $# : 3 ))
[[ "${1:-}" == "--" ]] && shift
mkdir -p "$out"
json="$out/nccl_busbw.jsonl"
: > "$json"
common=(NCCL_SOCKET_IFNAME=lo NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_NET_GDR_LEVEL=SYS
        NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET)
for round in 1 2; do  # interleaved: noise hits both
  env "${common[@]}" NCCL_NET=Socket NCCL_NSOCKS_PERTHREAD=4 NCCL_SOCKET_NTHREADS=1 \
    "$bench" --label socket --json "$json" "$@" >"$out/socket.$round.txt" 2>"$out/socket.$round.log"
  env "${common[@]}" NCCL_NET_PLUGIN="$(realpath "$plugin")" NCCL_NET=devmem \
    NCCL_DEVMEM_EMULATE=1 "$bench" --label devmem --json "$json" "$@" \
    >"$out/devmem.$round.txt" 2>"$out/devmem.$round.log"
done
cat "$out/socket.2.txt" "$out/devmem.2.txt"
echo "# evidence that NCCL used the plugin and which mode:"
grep -m3 -E "Loaded net plugin|Using network|via NET/devmem" "$out/devmem.2.log" || true
grep -m2 -E "EMULATED devmem RX" "$out/devmem.2.log" || true
python3 - "$json" <<'PY'
import json, sys, collections
best = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = (r["op"], r["bytes"])
    best[key][r["label"]] = max(best[key].get(r["label"], 0), r["busbw"])
print("# busbw ratio devmem/socket (best of 2 interleaved rounds)")
print("%-11s %12s %10s %10s %7s" % ("op", "bytes", "socket", "devmem", "ratio"))
for (op, size), v in sorted(best.items()):
    if "socket" in v and "devmem" in v and v["socket"] > 0:
        print("%-11s %12d %10.2f %10.2f %7.2f" % (op, size, v["socket"], v["devmem"], v["devmem"] / v["socket"]))
PY
for op in all_reduce all_gather; do
  python3 "$(dirname "$0")/plot_busbw.py" "$json" "$op" "$out/busbw_$op.png" || true
done
