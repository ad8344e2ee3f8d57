#!/bin/bash
# Interleaved --comms 8 runs: ours at three NCCL_DEVMEM_PROXY_BYTES, NCCL socket default/1x4/2x2.
# The NCCL runs drive the socket transport of the installed libnccl.so.2 (--yardstick installed;
# perf/yardstick/installed_nccl_socket.h). The numbers in RESULTS.md from 2026-11 were taken
# with a yardstick built from NCCL's source, whose recipe has since been removed.
B=${BENCH:-build/bin/nccl-net-devmem-bench}
for r in 1 2 3 4 5; do
  for s in "ours:X=1" "ours:NCCL_DEVMEM_PROXY_BYTES=0 NCCL_DEVMEM_INLINE_BYTES=1024" "nccl:X=1" "nccl:NCCL_SOCKET_NTHREADS=1 NCCL_NSOCKS_PERTHREAD=4" "nccl:NCCL_SOCKET_NTHREADS=2 NCCL_NSOCKS_PERTHREAD=2"; do
    who=${s%%:*}; e=${s#*:}; p=(); [[ $who == nccl ]] && p=(--yardstick installed)
    # shellcheck disable=SC2086  # $e is a list of VAR=value words
    env NCCL_SOCKET_IFNAME=lo $e timeout 300 "$B" "${p[@]}" --comms 8 -b 512K -e 4M -f 8 -n 200 -w 10 --json 2>/dev/null | grep '^{' | sed "s/^{/{\"who\":\"$who $e\",\"round\":$r,/"
  done
done
