#!/usr/bin/env bash
# Aggregate bandwidth of a virtual NIC of 1, 2 and 3 fused veth pairs between two network
# namespaces, every member rate-limited (tc tbf on the sender's side), same run, interleaved
# rounds; each median against the sum of its members' limits.
#
#   perf/compare_fused.sh [RATE] [SIZE] [ROUNDS] [SLOW_RATE]   (defaults: 1gbit 64M 5, none)
#
# RATE: tc rate of every member (e.g. 1gbit, 500mbit). Fused runs go once per striping mode
# (NCCL_DEVMEM_VNIC_STRIPING=roundrobin and adaptive), interleaved. SLOW_RATE, when given,
# adds mixed runs: two members, the second at SLOW_RATE, against the sum of the two limits.
# Needs root, iproute2 and tc; the namespaces and veths are removed at exit.
set -euo pipefail
rate=${1:-1gbit}
size=${2:-64M}
rounds=${3:-5}
slow=${4:-}
bench=${BENCH:-build/bin/nccl-net-devmem-bench}
[[ $(id -u) == 0 ]] || { echo "compare_fused.sh: needs root (network namespaces)" >&2; exit 2; }
id=$$
ns_a=dmcA$id
ns_b=dmcB$id
out=$(mktemp)
cleanup() {
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  rm -f "$out"
}
trap cleanup EXIT
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
to_bps() {  # "1gbit" -> bytes per second
  python3 -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)([kmg]?)bit", sys.argv[1].lower())
if not m: sys.exit("bad rate " + sys.argv[1])
print(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8)' "$1"
}
gbps() {  # gbps FUSE STRIPING
  NCCL_SOCKET_IFNAME=dmc NCCL_DEVMEM_VNIC_STRIPING=$2 "$bench" --fuse "$1" --netns-recv "$ns_a" \
    --netns-send "$ns_b" -b "$size" -e "$size" -w 2 -n 20 --json >"$out"
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["gbps"])' "$out"
}
declare -A runs
cases=("1 roundrobin" "2 roundrobin" "2 adaptive" "3 roundrobin" "3 adaptive")
for ((r = 1; r <= rounds; r++)); do
  line="round $r:"
  for c in "${cases[@]}"; do
    read -r fuse striping <<<"$c"
    g=$(gbps "$fuse" "$striping")
    runs[$c]+="$g "
    line+=$(printf '  %s %.4f' "$c" "$g")
  done
  if [[ -n "$slow" ]]; then
    limit 1 "$slow"
    for striping in roundrobin adaptive; do
      g=$(gbps 2 "$striping")
      runs[mixed $striping]+="$g "
      line+=$(printf '  mixed %s %.4f' "$striping" "$g")
    done
    limit 1 "$rate"
  fi
  echo "$line GB/s"
done
member=$(to_bps "$rate")
report() {  # report LABEL LIMIT_BYTES_PER_S VALUES
  python3 -c '
import statistics, sys
label, limit, values = sys.argv[1], float(sys.argv[2]), sys.argv[3].split()
median = statistics.median(float(v) for v in values)
print("%-22s median %.4f GB/s, limit sum %.4f GB/s, ratio %.2f" %
      (label, median, limit / 1e9, median * 1e9 / limit))' "$1" "$2" "$3"
}
for c in "${cases[@]}"; do
  read -r fuse striping <<<"$c"
  report "$fuse fused $striping" "$(python3 -c "print($fuse * $member)")" "${runs[$c]}"
done
if [[ -n "$slow" ]]; then
  both=$(python3 -c "print($member + $(to_bps "$slow"))")
  for striping in roundrobin adaptive; do
    report "mixed(2) $striping" "$both" "${runs[mixed $striping]}"
  done
fi
