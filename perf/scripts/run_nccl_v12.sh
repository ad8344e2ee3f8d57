#!/usr/bin/env bash
# Our plugin under NCCL 2.30.7 (the release that looks up ncclNetPlugin_v12 first), on one GPU
# host: two ranks on one GPU (distinct NCCL_HOSTID) through devmem-nccl-bench, which checks every
# byte. The NCCL is the user's own build of NVIDIA/nccl v2.30.7-1 for sm_90 with only the
# functions these runs use (NCCL's ONLY_FUNCS filter, src/device/generate.py:34-63 of
# v2.30.7-1):
#     AllReduce Sum f32 * *|AllReduce Sum i64 * *|AllGather * *|SendRecv
# (the bench's collectives in float, and its #wrong sum in int64: perf/bench/nccl_bench.cc).
# Functions left out run as no-ops and give wrong data: run nothing else on that build.
#
#   perf/scripts/run_nccl_v12.sh [options] OUT_DIR
#
#   --nccl DIR        folder holding NCCL 2.30.7's libnccl.so.2 (default $NCCL_V12_LIB);
#                     put first in LD_LIBRARY_PATH for every run
#   --plugin SO       our plugin (default $BUILD/libnccl-net-devmem.so or $BUILD/lib/...)
#   --bench PATH      devmem-nccl-bench (default $BUILD/bin/devmem-nccl-bench)
#   --ops LIST        comma list of all_reduce, all_gather, sendrecv (default all_reduce)
#   -b SIZE -e SIZE   message sizes (default 8 .. 16M), -w N -n N (default 3 and 10)
#   --rails SPEC      also the rail check: NCCL_DEVMEM_RAILS=SPEC (e.g. d0=0,d1=0,d2=1, at
#                     least two NICs on one rail), NCCL_SOCKET_IFNAME=the named NICs,
#                     NCCL_NET_MERGE_POLICY=RAIL and NCCL_NET_MERGE_LEVEL=SYS
#   --timeout SECS    limit per run (default 180)
#
# Checks, each a line `check NAME: PASS|FAIL reason` (OUT_DIR/checks.txt):
#   nccl-version    NCCL's log says "NCCL version 2.30" (src/init.cc:694 of v2.30.7-1)
#   v12-loaded      "NET/Plugin: Loaded net plugin devmem (v12)" (src/plugin/net/net_v12.cc:18)
#                   and ours: "init through the v12 table" (plugin/abi/plugin_api.cc)
#   via-devmem      NCCL's channels run "via NET/devmem"
#   OP              the bench's run passed (every byte checked; exit 3 is WRONG)
#   rails-*         with --rails (docs/rails-and-vnics.md): NCCL read the policy ("NCCL_NET_
#                   MERGE_POLICY set by environment to RAIL", src/graph/topo.cc:1755); the
#                   plugin logged the rails it was given; every virtual NIC the plugin made
#                   (its "virtual NIC N: a+b (2 NICs), ..., rail R" line) fuses NICs of one
#                   rail only and reports that rail (RAIL fuses only NICs with the same rail,
#                   topo.cc:1406); NICs of a rail with two or more members were fused (NCCL
#                   may fuse any two at NCCL_NET_MERGE_LEVEL=SYS, topo.cc:1405); the run
#                   itself passed.
# On one host the rail NICs can be dummy interfaces with their own addresses (the kernel
# delivers traffic between local addresses over loopback), e.g.
#   ip link add d0 type dummy && ip addr add 10.77.0.1/32 dev d0 && ip link set d0 up
# OUT_DIR gets every run's table (NAME.txt, NCCL's INFO log included) and stderr (NAME.log),
# busbw.jsonl (the bench's --json lines), checks.txt and meta.json (perf/lib/perfkit.py).
# Exit status: 0 every check PASS; 3 some run WRONG and no check FAIL; 1 some check FAIL;
# 2 bad usage or a file not found.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# now_us, perf_lib, NCCL_COMPARE_COMMON_ENV and the steps before the runs: perf_parse_options,
# default_plugin, exit_if_missing, begin_results (sourcing runs nothing else).
# shellcheck source=perf/scripts/nccl_compare.sh
source "$here/nccl_compare.sh"

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" |
    sed -n '/^  perf\/scripts\/run_nccl_v12.sh/,/^  --timeout/p' >&2
  exit 2
}
die_usage() { echo "run_nccl_v12.sh: $*" >&2; exit 2; }

CHECKS=""
WRONG=0
FAILED=0
check() {  # NAME VERDICT REASON
  local line="check $1: $2${3:+ ($3)}"
  echo "$line"
  CHECKS+="$line"$'\n'
  case $2 in PASS) ;; WRONG) WRONG=1 ;; *) FAILED=1 ;; esac
}

main() {
  local argv=("$@")
  local nccl=${NCCL_V12_LIB:-} plugin="" bench="" ops=all_reduce rails="" min=8 max=16M
  local warmup=3 iters=10 limit=180 positional=()
  perf_parse_options run_nccl_v12.sh "--nccl:nccl:folder --plugin:plugin:path --bench:bench:path
    --ops:ops:list --rails:rails:spec -b:min:value -e:max:value -w:warmup:value -n:iters:value
    --timeout:limit:value" "$@"
  ((${#positional[@]} == 1)) || usage
  local out=${positional[0]} op
  for op in ${ops//,/ }; do
    [[ "$op" =~ ^(all_reduce|all_gather|sendrecv)$ ]] ||
      die_usage "--ops: $op is not one of all_reduce, all_gather, sendrecv"
  done
  [[ "$limit" =~ ^[1-9][0-9]*$ ]] || die_usage "--timeout: a positive integer"
  local rail_nics=()
  if [[ -n "$rails" ]]; then
    local item
    for item in ${rails//,/ }; do
      [[ "$item" =~ ^[^=/]+=[0-9]+(/[0-9]+)?$ ]] ||
        die_usage "--rails: '$item' is not IFNAME=RAIL or IFNAME=RAIL/PLANE (docs/configuration.md)"
      rail_nics+=("${item%%=*}")
    done
    ((${#rail_nics[@]} >= 2)) || die_usage "--rails: name at least two NICs"
  fi

  local missing=()
  plugin=${plugin:-$(default_plugin)}
  bench=${bench:-${BUILD:-build}/bin/devmem-nccl-bench}
  [[ -f "$plugin" ]] || missing+=("the plugin $plugin (--plugin or BUILD)")
  [[ -x "$bench" ]] || missing+=("devmem-nccl-bench $bench (--bench or BUILD)")
  if [[ -z "$nccl" ]]; then
    missing+=("NCCL 2.30.7's library folder (--nccl DIR or NCCL_V12_LIB)")
  elif [[ ! -e "$nccl/libnccl.so.2" ]]; then
    missing+=("$nccl/libnccl.so.2 (--nccl names the folder of the user-built NCCL 2.30.7)")
  fi
  local nic
  for nic in ${rail_nics[@]+"${rail_nics[@]}"}; do
    [[ -e "/sys/class/net/$nic" ]] || missing+=("network interface $nic (--rails)")
  done
  exit_if_missing run_nccl_v12.sh
  plugin=$(realpath "$plugin")
  nccl=$(cd "$nccl" && pwd)

  begin_results nccl-v12 "BUILD NCCL_V12_LIB" "${BASH_SOURCE[0]}" "${argv[@]}"
  : >"$out/busbw.jsonl"

  # shellcheck disable=SC2054  # INIT,NET,ENV,GRAPH is one value
  local ours=("${NCCL_COMPARE_COMMON_ENV[@]}" NCCL_NET_PLUGIN="$plugin" NCCL_NET=devmem
              LD_LIBRARY_PATH="$nccl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
              NCCL_DEBUG_SUBSYS=INIT,NET,ENV,GRAPH)
  # One bench run: NAME OP ENV-WORDS...; prints its exit status.
  run_bench() {
    local name=$1 op=$2
    shift 2
    env "$@" timeout -k 10 "$limit" "$bench" --label "$name" --json "$out/busbw.jsonl" \
      -b "$min" -e "$max" -w "$warmup" -n "$iters" --op "$op" >"$out/$name.txt" 2>"$out/$name.log"
    echo $?
  }
  verdict_of() {  # exit status -> PASS / WRONG / TIMEOUT / FAIL
    case $1 in 0) echo PASS ;; 3) echo WRONG ;; 124|137) echo TIMEOUT ;; *) echo FAIL ;; esac
  }

  local rc first=""
  for op in ${ops//,/ }; do
    rc=$(run_bench "$op" "$op" "${ours[@]}")
    local v
    v=$(verdict_of "$rc")
    check "$op" "$v" "$([[ "$v" != PASS ]] && echo "exit $rc; $out/$op.log")"
    first=${first:-$out/$op.txt}
  done
  local log="$first"
  if grep -q "NCCL version 2\.30" "$log"; then
    check nccl-version PASS "$(grep -m1 -o 'NCCL version [^ ]*' "$log")"
  else
    check nccl-version FAIL "no 'NCCL version 2.30' in $log: is $nccl first in LD_LIBRARY_PATH?"
  fi
  if grep -q "Loaded net plugin devmem (v12)" "$log" &&
     grep -q "init through the v12 table" "$log"; then
    check v12-loaded PASS
  else
    local seen
    seen=$(grep -m1 -oE 'Loaded net plugin [^ ]+ \(v[0-9]+\)|init through the v[0-9]+ table' "$log")
    check v12-loaded FAIL "${seen:-no plugin load line} in $log"
  fi
  if grep -q "via NET/devmem" "$log"; then check via-devmem PASS
  else check via-devmem FAIL "no 'via NET/devmem' in $log"; fi

  if [[ -n "$rails" ]]; then
    local ifnames
    ifnames="=$(IFS=,; echo "${rail_nics[*]}")"
    rc=$(run_bench rails all_reduce "${ours[@]}" NCCL_SOCKET_IFNAME="$ifnames" \
      NCCL_DEVMEM_RAILS="$rails" NCCL_NET_MERGE_POLICY=RAIL NCCL_NET_MERGE_LEVEL=SYS)
    local v
    v=$(verdict_of "$rc")
    check rails-run "$v" "$([[ "$v" != PASS ]] && echo "exit $rc; $out/rails.log")"
    log=$out/rails.txt
    if grep -q "NCCL_NET_MERGE_POLICY set by environment to RAIL" "$log"; then
      check rails-policy PASS
    else
      check rails-policy FAIL "NCCL did not log reading NCCL_NET_MERGE_POLICY=RAIL in $log"
    fi
    if grep -q "NCCL_DEVMEM_RAILS=\"" "$log" && ! grep -q "NCCL_DEVMEM_RAILS names" "$log"; then
      check rails-config PASS "$(grep -m1 -o 'NCCL_DEVMEM_RAILS="[^"]*"' "$log")"
    else
      check rails-config FAIL "the plugin did not log the rails, or named an unknown NIC, in $log"
    fi
    local verdict_reason
    verdict_reason=$(python3 - "$rails" "$log" <<'EOF'
import re, sys
spec, log = sys.argv[1], sys.argv[2]
rail = {item.split("=")[0]: int(item.split("=")[1].split("/")[0]) for item in spec.split(",")}
made = re.findall(r"virtual NIC \d+: (\S+) \(\d+ NICs\).*?rail (-?\d+)",
                  open(log, errors="replace").read())
problems = []
fused = set()
for members, reported in made:
    names = members.split("+")
    fused.update(names)
    rails = {rail.get(n) for n in names}
    if len(rails) != 1 or None in rails:
        problems.append("%s fuses rails %s" % (members, sorted(str(r) for r in rails)))
    elif int(reported) != rails.pop():
        problems.append("%s reports rail %s" % (members, reported))
by_rail = {}
for n, r in rail.items():
    by_rail.setdefault(r, []).append(n)
for r, names in sorted(by_rail.items()):
    if len(names) >= 2 and not set(names) & fused:
        problems.append("rail %d's NICs %s were not fused" % (r, "+".join(names)))
print("FAIL " + "; ".join(problems) if problems else
      "PASS " + (", ".join("%s rail %s" % m for m in made) or "no virtual NIC"))
EOF
)
    check rails-fusion "${verdict_reason%% *}" "${verdict_reason#* }"
  fi

  printf '%s' "$CHECKS" >"$out/checks.txt"
  local status=0  # a failed check outranks a wrong one
  if ((FAILED)); then status=1; elif ((WRONG)); then status=3; fi
  echo "# run_nccl_v12 exit status: $status (0 PASS, 3 WRONG, 1 FAIL); results in $out"
  python3 "$perf_lib/perfkit.py" finish "$out" "$status" || true
  return "$status"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
  exit $?
fi
