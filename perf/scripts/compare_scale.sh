#!/usr/bin/env bash
# What N comm pairs cost, ours against NCCL's socket transport (the installed libnccl.so.2's,
# perf/yardstick/installed_nccl_socket.h): nccl-net-devmem-scale-bench per setting and N, in
# interleaved rounds, one fresh process per case.
#
#   perf/scripts/compare_scale.sh [ROUNDS]        (default 1)
#
# Settings: ours (its defaults), NCCL's socket transport at its default and at 1x4
# (NCCL_SOCKET_NTHREADS=1 NCCL_NSOCKS_PERTHREAD=4: as many data sockets as ours). Per pair:
# setup time, threads (the process's total), fds, RSS with all comms open and after traffic,
# idle CPU, and the aggregate throughput of all N comms streaming at once. Prints a Markdown
# table per N and the ratios ours / NCCL (setup against 1x4, throughput against the best NCCL
# setting; above 1 means ours is faster), last line `min throughput ratio R`; writes runs.jsonl
# (every bench result), table.md, output.txt and meta.json under OUT. Medians over rounds.
#
# Environment: BUILD (build dir, default build), BENCH (default
# $BUILD/bin/nccl-net-devmem-scale-bench), PLUGIN (ours; default the bench's own), LIBNCCL (the
# NCCL library, default /usr/local/cuda/lib64/libnccl.so.2), PAIRS (default 1,64,512,1024),
# SIZES (default 64K,1M), WINDOW (messages in flight per comm, default 4), IDLE (seconds, default
# 2), SPLIT=1 (senders and receivers in two processes), CHECK=1 (byte-check every message),
# OURS_ENVS (more settings of ours, one per word, VAR=VALUE[,VAR=VALUE], e.g.
# "NCCL_DEVMEM_NTHREADS=4"), OUT (default $BUILD/results/<date>_<machine>_scale), RUN_TIMEOUT
# (seconds per case, default 900).
set -euo pipefail
rounds=${1:-1}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=perf/scripts/common.sh
source "$here/common.sh"
build=${BUILD:-build}
bench=${BENCH:-$build/bin/nccl-net-devmem-scale-bench}
libnccl=${LIBNCCL:-/usr/local/cuda/lib64/libnccl.so.2}
run_timeout=${RUN_TIMEOUT:-900}
IFS=, read -r -a pairs <<<"${PAIRS:-1,64,512,1024}"

die() { echo "compare_scale.sh: $*" >&2; exit 2; }
[[ -x "$bench" ]] || die "no scale bench at $bench (cmake --build $build, or set BENCH)"
[[ -f "$libnccl" ]] || die "no NCCL library at $libnccl (set LIBNCCL to an NCCL 2.28.9 libnccl.so.2)"
common=(--sizes "${SIZES:-64K,1M}" --window "${WINDOW:-4}" --idle-seconds "${IDLE:-2}" --json)
[[ "${SPLIT:-0}" == 1 ]] && common+=(--split)
[[ "${CHECK:-0}" == 1 ]] && common+=(--check)
ours=(--only ours)
[[ -n "${PLUGIN:-}" ]] && ours+=(--plugin "$PLUGIN")
nccl=(--only yardstick --yardstick "installed:$libnccl")

labels=("ours" "nccl default" "nccl 1x4")
envs=("" "" "NCCL_SOCKET_NTHREADS=1 NCCL_NSOCKS_PERTHREAD=4")
for setting in ${OURS_ENVS:-}; do
  labels+=("ours $setting")
  envs+=("${setting//,/ }")
done

perf_begin scale "LIBNCCL PAIRS SIZES WINDOW IDLE SPLIT CHECK OURS_ENVS RUN_TIMEOUT" "$0" "$@"
out=$PERF_OUT
count=${#labels[@]}
for ((r = 1; r <= rounds; r++)); do
  for n in "${pairs[@]}"; do
    for ((k = 0; k < count; k++)); do
      i=$(((k + r - 1) % count))  # rotate who runs first
      label=${labels[$i]}
      who=("${ours[@]}")
      [[ $label == nccl* ]] && who=("${nccl[@]}")
      # shellcheck disable=SC2086  # envs[i] is a list of VAR=value words
      if ! line=$(env -u NCCL_SOCKET_NTHREADS -u NCCL_NSOCKS_PERTHREAD NCCL_SOCKET_IFNAME=lo \
          ${envs[$i]} timeout "$run_timeout" "$bench" "${who[@]}" --label "$label" \
          --pairs "$n" "${common[@]}"); then
        echo "$line" >&2
        die "round $r, $n pairs, $label failed (command: ${envs[$i]} $bench ${who[*]}" \
          "--label '$label' --pairs $n ${common[*]})"
      fi
      perfkit record "$label" "$r" --from <(printf '%s\n' "$line") >>"$PERF_RUNS"
      echo "round $r/$rounds: $n pairs, $label done" >&2
    done
  done
done
python3 "$perf_lib/report_scale.py" "$PERF_RUNS" | tee "$out/table.md"
