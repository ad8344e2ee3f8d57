#!/usr/bin/env python3
"""torch.distributed all_reduce (NCCL backend) through nccl-net-devmem, as a user runs it:
two processes on one GPU with different NCCL_HOSTID, so NCCL routes every byte through the
network plugin. Verifies the sums and prints bus bandwidth per size.

  NCCL_NET_PLUGIN=/path/libnccl-net-devmem.so NCCL_NET=devmem NCCL_DEVMEM_EMULATE=1 \\
  NCCL_SOCKET_IFNAME=lo NCCL_NET_GDR_LEVEL=SYS python3 tests/gpu/torch_allreduce.py \\
      [--min-bytes 4K] [--max-bytes 256M] [--iters 10] [--warmup 3] [--json FILE]

Run two ranks on one GPU under MPS (perf/scripts/nccl_compare.sh explains why). Exit status:
0 every sum correct; 3 some sum wrong; 1 a rank failed (its traceback is printed).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WRONG_EXIT = 3


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


# --- what both torch scripts share (tests/gpu/torch_collectives.py imports these) -------------
def add_size_arguments(parser):
    """The sizes, iterations and result file, with the same defaults in both scripts."""
    parser.add_argument("--min-bytes", default="4K", type=parse_size)
    parser.add_argument("--max-bytes", default="256M", type=parse_size)
    parser.add_argument("--factor", default=4, type=int)
    parser.add_argument("--iters", default=10, type=int)
    parser.add_argument("--warmup", default=3, type=int)
    parser.add_argument("--json", help="write the results (one object) to this file")


def sizes_of(args):
    """--min-bytes, then times --factor while not above --max-bytes."""
    sizes = []
    nbytes = args.min_bytes
    while nbytes <= args.max_bytes:
        sizes.append(nbytes)
        nbytes *= args.factor
    return sizes


def no_cuda(program):
    """True, with the reason on stderr, where torch finds no GPU."""
    if torch.cuda.is_available():
        return False
    print("%s: torch sees no CUDA device (torch %s)" % (program, torch.__version__),
          file=sys.stderr)
    return True


def join_group(rank, world, port):
    """This rank's GPU, once it joined the NCCL process group of `world` ranks on this host. Each
    rank names its own NCCL_HOSTID (before NCCL initializes) so that NCCL takes the ranks for two
    hosts and routes every byte through the network."""
    os.environ["NCCL_HOSTID"] = "torch-devmem-rank%d" % rank
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    device = torch.device("cuda", rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
    return device


def spawn_ranks(worker, world, args):
    """Runs worker(rank, world, port, *args, results) in `world` processes; returns what they
    appended to `results` and the exception of a rank that failed (None when all succeeded)."""
    port = 29500 + os.getpid() % 1000
    failure = None
    with mp.Manager() as manager:
        results = manager.list()
        try:
            mp.spawn(worker, args=(world, port) + tuple(args) + (results,), nprocs=world,
                     join=True)
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as e:
            failure = e
        return list(results), failure


def print_versions():
    """The heading line of both scripts' tables; returns NCCL's version."""
    nccl = ".".join(map(str, torch.cuda.nccl.version()))
    print("# torch %s, NCCL %s, NCCL_NET=%s" % (torch.__version__, nccl,
                                                 os.environ.get("NCCL_NET", "(unset)")))
    return nccl


# --- all_reduce ------------------------------------------------------------------------------
def worker(rank, world, port, sizes, warmup, iters, results):
    device = join_group(rank, world, port)
    ok = True
    for nbytes in sizes:
        n = nbytes // 4
        x = torch.arange(n, device=device, dtype=torch.float32).remainder_(97).add_(rank + 1)
        expected = torch.arange(n, device=device, dtype=torch.float32).remainder_(97) * world + sum(
            r + 1 for r in range(world))
        for _ in range(warmup):
            y = x.clone()
            dist.all_reduce(y)
        torch.cuda.synchronize()
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
        sys.exit(WRONG_EXIT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser)
    args = parser.parse_args()
    if args.min_bytes < 4 or args.max_bytes < args.min_bytes or args.factor < 2 or args.iters < 1:
        parser.error("need 4 <= --min-bytes <= --max-bytes, --factor >= 2, --iters >= 1")
    if no_cuda("torch_allreduce"):
        return 1
    world = 2
    sizes = sizes_of(args)
    rc = 0
    rows, failure = spawn_ranks(worker, world, (sizes, args.warmup, args.iters))
    if isinstance(failure, mp.ProcessExitedException):
        # A rank that found a wrong sum exits 3; anything else is a failure.
        rc = WRONG_EXIT if failure.exit_code == WRONG_EXIT else 1
        print("torch_allreduce: %s" % failure, file=sys.stderr)
    elif failure is not None:
        rc = 1
        print("torch_allreduce: a rank raised:\n%s" % failure, file=sys.stderr)
    nccl = print_versions()
    print("%12s %10s %8s %s" % ("size(B)", "time(us)", "busbw", "correct"))
    for nbytes, us, busbw, good in rows:
        print("%12d %10.1f %8.2f %s" % (nbytes, us, busbw, good))
    if rc == 0 and not all(r[3] for r in rows):
        rc = WRONG_EXIT
    if rc == 0 and len(rows) != len(sizes):
        print("torch_allreduce: %d of %d sizes reported" % (len(rows), len(sizes)), file=sys.stderr)
        rc = 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "nccl": nccl,
                       "net": os.environ.get("NCCL_NET"), "exit": rc,
                       "rows": [{"bytes": b, "time_us": round(us, 3), "busbw": round(bw, 4),
                                 "correct": bool(g)} for b, us, bw, g in rows]}, f, indent=1)
    if rc == WRONG_EXIT:
        print("torch_allreduce: WRONG sums", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
