#!/bin/bash
# Interleaved --comms 8 runs: ours at three NCCL_DEVMEM_PROXY_BYTES, NCCL socket default/1x4.
B=build/bin/nccl-net-devmem-bench; Y=build/peers/nccl_socket/libnccl-net-ncclsocket.so
for r in 1 2 3 4 5; do
  for s in "ours:X=1" "ours:NCCL_DEVMEM_PROXY_BYTES=0 NCCL_DEVMEM_INLINE_BYTES=1024" "nccl:X=1" "nccl:NCCL_SOCKET_NTHREADS=1 NCCL_NSOCKS_PERTHREAD=4" "nccl:NCCL_SOCKET_NTHREADS=2 NCCL_NSOCKS_PERTHREAD=2"; do
    who=${s%%:*}; e=${s#*:}; p=(); [[ $who == nccl ]] && p=(--plugin $Y)
    env NCCL_SOCKET_IFNAME=lo $e timeout 300 $B "${p[@]}" --comms 8 -b 512K -e 4M -f 8 -n 200 -w 10 --json 2>/dev/null | grep '^{' | sed "s/^{/{\"who\":\"$who $e\",\"round\":$r,/"
  done
done
