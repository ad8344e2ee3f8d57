#!/usr/bin/env python3
"""torch.distributed all_reduce (NCCL backend) through nccl-net-devmem, as a user runs it:
two processes on one GPU with different NCCL_HOSTID, so NCCL routes every byte through the
network plugin. Verifies the sums and prints bus bandwidth per size.

  NCCL_NET_PLUGIN=/path/libnccl-net-devmem.so NCCL_NET=devmem NCCL_DEVMEM_EMULATE=1 \
  NCCL_SOCKET_IFNAME=lo python3 perf/torch_allreduce.py
"""
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world, port, sizes, results):
    os.environ["NCCL_HOSTID"] = "torch-devmem-rank%d" % rank  # before NCCL initializes
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    device = torch.device("cuda", rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
    ok = True
    for nbytes in sizes:
        n = nbytes // 4
        x = torch.arange(n, device=device, dtype=torch.float32).remainder_(97).add_(rank + 1)
        expected = torch.arange(n, device=device, dtype=torch.float32).remainder_(97) * world + sum(
            r + 1 for r in range(world))
        for _ in range(3):
            y = x.clone()
            dist.all_reduce(y)
        torch.cuda.synchronize()
        iters = 10
        start = time.perf_counter()
        for _ in range(iters):
            y = x.clone()
            dist.all_reduce(y)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / iters
        good = torch.equal(y, expected)
        ok &= good
        if rank == 0:
            busbw = nbytes / seconds / 1e9 * 2 * (world - 1) / world
            results.append((nbytes, seconds * 1e6, busbw, good))
    dist.destroy_process_group()
    if not ok:
        sys.exit(3)


def main():
    world = 2
    sizes = [1 << s for s in range(12, 29, 2)]
    port = 29500 + os.getpid() % 1000
    with mp.Manager() as manager:
        results = manager.list()
        mp.spawn(worker, args=(world, port, sizes, results), nprocs=world, join=True)
        print("# torch %s, NCCL %s, NCCL_NET=%s" % (torch.__version__, ".".join(map(str, torch.cuda.nccl.version())),
                                                    os.environ.get("NCCL_NET", "(unset)")))
        print("%12s %10s %8s %s" % ("size(B)", "time(us)", "busbw", "correct"))
        for nbytes, us, busbw, good in results:
            print("%12d %10.1f %8.2f %s" % (nbytes, us, busbw, good))
        if not all(r[3] for r in results):
            sys.exit(3)


if __name__ == "__main__":
    main()
