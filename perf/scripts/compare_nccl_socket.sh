#!/usr/bin/env bash
# Our host path vs NCCL's own socket transport (what NCCL_NET=Socket runs), both driven by
# nccl-net-devmem-bench the same way (in-order test, one proxy thread per side), on loopback,
# interleaved in one run. The yardstick is the socket transport inside the installed,
# unmodified NCCL library (`--yardstick installed:LIBNCCL`, NCCL 2.28.9 only; how it is found
# and what is done about its one CUDA call on a machine without a CUDA driver:
# perf/yardstick/installed_nccl_socket.h). Nothing of NCCL is built.
#
#   perf/scripts/compare_nccl_socket.sh [ROUNDS]        (default 5)
#
# Settings: ours (its defaults) and NCCL's socket transport at its default, at 1x4 and at 2x2
# (NCCL_SOCKET_NTHREADS x NCCL_NSOCKS_PERTHREAD; both are set, each auto-detects separately).
# Tests: one-way stream (window 8) and ping-pong, sizes MIN..MAX by FACTOR (8 B..64 MiB by 2).
# Each round runs every test of every setting once, the settings' order rotating per round;
# medians over rounds. Prints a Markdown table, ours / the best NCCL setting per size as a rate
# (above 1: ours faster), and as its last line `min ratio R`; writes runs.jsonl (every bench
# result, labelled), table.md, stream_gbps.png, pingpong_rtt.png, output.txt and meta.json
# under OUT.
#
# Environment: BUILD (build dir, default build), BENCH (default $BUILD/bin/nccl-net-devmem-bench),
# PLUGIN (ours; default the bench's own), LIBNCCL (the NCCL library whose socket transport is
# the yardstick, default /usr/local/cuda/lib64/libnccl.so.2), OUT (default
# $BUILD/results/<date>_<machine>_nccl-socket; OUT=perf/results/... to publish), MIN / MAX /
# FACTOR (bench -b / -e / -f), OURS_ENVS (below), RUN_TIMEOUT (seconds per bench run, default
# 600).
set -euo pipefail
rounds=${1:-5}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/scripts/common.sh
source "$here/common.sh"
build=${BUILD:-build}
bench=${BENCH:-$build/bin/nccl-net-devmem-bench}
libnccl=${LIBNCCL:-/usr/local/cuda/lib64/libnccl.so.2}
sizes=(-b "${MIN:-8}" -e "${MAX:-64M}" -f "${FACTOR:-2}")
run_timeout=${RUN_TIMEOUT:-600}

die() { echo "compare_nccl_socket.sh: $*" >&2; exit 2; }
[[ -x "$bench" ]] || die "no bench binary at $bench (cmake --build $build, or set BENCH)"
[[ -f "$libnccl" ]] || die "no NCCL library at $libnccl (set LIBNCCL to an NCCL 2.28.9 libnccl.so.2)"
ours_args=()
[[ -n "${PLUGIN:-}" ]] && ours_args=(--plugin "$PLUGIN")

# label | environment | plugin arguments
labels=("ours" "nccl default" "nccl 1x4" "nccl 2x2")
envs=("" "" "NCCL_SOCKET_NTHREADS=1 NCCL_NSOCKS_PERTHREAD=4"
      "NCCL_SOCKET_NTHREADS=2 NCCL_NSOCKS_PERTHREAD=2")
# OURS_ENVS: more settings of ours in the same rounds, one per word (VAR=VALUE[,VAR=VALUE]),
# labelled "ours VAR=VALUE": e.g. OURS_ENVS="NCCL_DEVMEM_PROXY_BYTES=0" for the old data path.
for setting in ${OURS_ENVS:-}; do
  labels+=("ours $setting")
  envs+=("${setting//,/ }")
done

perf_begin nccl-socket "LIBNCCL MIN MAX FACTOR OURS_ENVS RUN_TIMEOUT" "$0" "$@"
out=$PERF_OUT
tmp=$PERF_TMP
count=${#labels[@]}
for ((r = 1; r <= rounds; r++)); do
  for test in stream pingpong; do
    test_args=()
    [[ $test == pingpong ]] && test_args=(--latency)
    for ((k = 0; k < count; k++)); do
      i=$(((k + r - 1) % count))  # rotate who runs first: no setting always follows the same one
      label=${labels[$i]}
      plugin_args=("${ours_args[@]}")
      [[ $label != ours* ]] && plugin_args=(--yardstick "installed:$libnccl")
      # Output to a file first: a parser running beside the bench would steal one of the cores.
      # NCCL's thread/socket variables are cleared so that "default" means NCCL's default.
      # shellcheck disable=SC2086  # envs[i] is a list of VAR=value words
      if ! env -u NCCL_SOCKET_NTHREADS -u NCCL_NSOCKS_PERTHREAD NCCL_SOCKET_IFNAME=lo ${envs[$i]} \
          timeout "$run_timeout" "$bench" "${plugin_args[@]}" "${test_args[@]}" "${sizes[@]}" \
          --json >"$tmp/run.json" 2>"$tmp/run.err"; then
        cat "$tmp/run.err" >&2
        die "round $r, $test, $label failed (command: ${envs[$i]} $bench ${plugin_args[*]}" \
          "${test_args[*]} ${sizes[*]} --json)"
      fi
      perfkit record "$label" "$r" --from "$tmp/run.json" >>"$PERF_RUNS"
      echo "round $r/$rounds: $test $label done" >&2
    done
  done
done
python3 "$perf_lib/report_nccl_socket.py" "$PERF_RUNS" "$out" | tee "$tmp/report.txt"
grep '^|' "$tmp/report.txt" >"$out/table.md"
