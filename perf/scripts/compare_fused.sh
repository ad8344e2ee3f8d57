#!/usr/bin/env bash
# Aggregate bandwidth of a virtual NIC of 1, 2 and 3 fused veth pairs between two network
# namespaces, every member rate-limited (tc tbf on the sender's side), same run, interleaved
# rounds; each median against the sum of its members' limits.
#
#   perf/scripts/compare_fused.sh [RATE] [SIZE] [ROUNDS] [SLOW_RATE]   (defaults: 1gbit 64M 5, none)
#
# RATE: tc rate of every member (e.g. 1gbit, 500mbit). Fused runs go once per striping mode
# (NCCL_DEVMEM_VNIC_STRIPING=roundrobin and adaptive), interleaved. SLOW_RATE, when given,
# adds mixed runs: two members, the second at SLOW_RATE, against the sum of the two limits.
# Needs root, iproute2 and tc; the namespaces and veths are removed at exit.
#
# Environment: BUILD (default build), BENCH (default $BUILD/bin/nccl-net-devmem-bench), OUT
# (default $BUILD/results/<date>_<machine>_fused-vnic). Writes under OUT: runs.jsonl (every
# bench result, labelled "FUSE STRIPING" or "mixed STRIPING"), output.txt, meta.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/scripts/common.sh
source "$here/common.sh"
rate=${1:-1gbit}
size=${2:-64M}
rounds=${3:-5}
slow=${4:-}
[[ $(id -u) == 0 ]] || { echo "compare_fused.sh: needs root (network namespaces)" >&2; exit 2; }
perf_use_bench  # not plugin_args: the bench's own plugin
perfkit rate-bytes "$rate" >/dev/null  # a bad rate fails here, before any setup
[[ -z "$slow" ]] || perfkit rate-bytes "$slow" >/dev/null
id=$$
ns_a=dmcA$id
ns_b=dmcB$id
perf_begin fused-vnic "" "$0" "$@"
cleanup() {
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
}
perf_at_exit cleanup
ip netns add "$ns_a"
ip netns add "$ns_b"
for k in 0 1 2; do
  a=dmca${id}x$k b=dmcb${id}x$k net=198.18.$((30 + k))
  ip link add "$a" type veth peer name "$b"
  ip link set "$a" netns "$ns_a"
  ip link set "$b" netns "$ns_b"
  ip -n "$ns_a" addr add "$net.1/24" dev "$a"
  ip -n "$ns_b" addr add "$net.2/24" dev "$b"
  ip -n "$ns_a" link set "$a" up
  ip -n "$ns_b" link set "$b" up
done
# Limits every member's egress on the sender's side (burst: a few 64 KiB GSO segments).
limit() {  # limit MEMBER RATE
  ip netns exec "$ns_b" tc qdisc replace dev "dmcb${id}x$1" root tbf rate "$2" burst 512kb \
    latency 100ms
}
for k in 0 1 2; do limit "$k" "$rate"; done
gbps() {  # gbps LABEL ROUND FUSE STRIPING: one run, recorded; prints its GB/s
  NCCL_SOCKET_IFNAME=dmc NCCL_DEVMEM_VNIC_STRIPING=$4 "$bench" --fuse "$3" --netns-recv "$ns_a" \
    --netns-send "$ns_b" -b "$size" -e "$size" -w 2 -n 20 --json >"$PERF_TMP/run.json"
  perfkit record "$1" "$2" --from "$PERF_TMP/run.json" >>"$PERF_RUNS"
  perfkit field "$PERF_TMP/run.json" gbps
}
cases=("1 roundrobin" "2 roundrobin" "2 adaptive" "3 roundrobin" "3 adaptive")
for ((r = 1; r <= rounds; r++)); do
  line="round $r:"
  for c in "${cases[@]}"; do
    read -r fuse striping <<<"$c"
    g=$(gbps "$c" "$r" "$fuse" "$striping")
    line+=$(printf '  %s %.4f' "$c" "$g")
  done
  if [[ -n "$slow" ]]; then
    limit 1 "$slow"
    for striping in roundrobin adaptive; do
      g=$(gbps "mixed $striping" "$r" 2 "$striping")
      line+=$(printf '  mixed %s %.4f' "$striping" "$g")
    done
    limit 1 "$rate"
  fi
  echo "$line GB/s"
done
for c in "${cases[@]}"; do
  read -r fuse striping <<<"$c"
  members=()
  for ((k = 0; k < fuse; k++)); do members+=("$rate"); done
  perfkit against "$PERF_RUNS" gbps "$c" "$fuse fused $striping" "${members[@]}"
done
if [[ -n "$slow" ]]; then
  for striping in roundrobin adaptive; do
    perfkit against "$PERF_RUNS" gbps "mixed $striping" "mixed(2) $striping" "$rate" "$slow"
  done
fi
