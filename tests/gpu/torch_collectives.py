#!/usr/bin/env python3
"""torch.distributed collectives (NCCL backend) as a user runs them: all_reduce,
all_gather_into_tensor, all_to_all_single and batch_isend_irecv, two processes on one GPU with
different NCCL_HOSTID so NCCL routes every byte through the network (our plugin, or
NCCL_NET=Socket for the baseline: whatever the environment selects). Every result is compared
element by element with the exact values (small integers in float32, exact in any order of
summation) and the bus bandwidth of every size printed.

  NCCL_NET_PLUGIN=/path/libnccl-net-devmem.so NCCL_NET=devmem NCCL_SOCKET_IFNAME=lo \\
  NCCL_NET_GDR_LEVEL=SYS python3 tests/gpu/torch_collectives.py \\
      [--ops all_reduce,all_gather,all_to_all,send_recv] [--min-bytes 4K] [--max-bytes 256M]
      [--factor 4] [--iters 10] [--warmup 3] [--json FILE] [--records FILE --label L --round N]

Sizes follow nccl-tests: all_gather's is the gathered output, all_to_all's and send_recv's one
rank's buffer; busbw uses nccl-tests' factors (doc/PERFORMANCE.md of NVIDIA/nccl-tests): all_reduce
2(n-1)/n, all_gather and all_to_all (n-1)/n, send_recv 1. --records appends one JSON line per
op and size plus one summary line per op in the form perf/lib/nccl_tests_parse.py's report reads
(perf/scripts/compare_torch.sh). Run two ranks on one GPU under MPS (docs/gpu-hosts.md).
Exit status: 0 every value correct; 3 some value wrong; 1 a rank failed; 2 bad usage.
"""
import argparse
import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import torch
    import torch.distributed as dist
    from torch_allreduce import (WRONG_EXIT, add_size_arguments, join_group, no_cuda,
                                 print_versions, sizes_of, spawn_ranks)  # one owner of each
except ImportError as e:
    print("torch_collectives: cannot import torch (%s): run it with the Python that has torch"
          % e, file=sys.stderr)
    sys.exit(2)

OPS = ("all_reduce", "all_gather", "all_to_all", "send_recv")
WORLD = 2


def busbw_factor(op, world):
    return {"all_reduce": 2.0 * (world - 1) / world, "all_gather": (world - 1) / world,
            "all_to_all": (world - 1) / world, "send_recv": 1.0}[op]


def pattern(n, rank, device):
    """Rank-specific small integers: exact in float32 after any sum of two."""
    return torch.arange(n, device=device, dtype=torch.float32).remainder_(997).add_(rank * 1000)


def case(op, nbytes, rank, world, device):
    """(run, expected): run() performs the collective once and returns its output tensor."""
    n = max(world, nbytes // 4 // world * world)  # elements, divisible by the world size
    if op == "all_reduce":
        x = pattern(n, rank, device)
        expected = sum(pattern(n, r, device) for r in range(world))

        def run():
            y = x.clone()
            dist.all_reduce(y)
            return y
        return run, expected
    if op == "all_gather":
        chunk = n // world
        x = pattern(chunk, rank, device)
        out = torch.empty(n, device=device)
        expected = torch.cat([pattern(chunk, r, device) for r in range(world)])

        def run():
            dist.all_gather_into_tensor(out, x)
            return out
        return run, expected
    if op == "all_to_all":
        chunk = n // world
        x = pattern(n, rank, device)
        out = torch.empty(n, device=device)
        # Chunk j of my output is chunk `rank` of rank j's input.
        expected = torch.cat([pattern(n, r, device)[rank * chunk:(rank + 1) * chunk]
                              for r in range(world)])

        def run():
            dist.all_to_all_single(out, x)
            return out
        return run, expected
    peer = (rank + 1) % world  # send_recv: exchange with the other rank
    x = pattern(n, rank, device)
    out = torch.empty(n, device=device)
    expected = pattern(n, (rank - 1) % world, device)

    def run():
        ops = [dist.P2POp(dist.isend, x, peer), dist.P2POp(dist.irecv, out, (rank - 1) % world)]
        for req in dist.batch_isend_irecv(ops):
            req.wait()
        return out
    return run, expected


def worker(rank, world, port, ops, sizes, warmup, iters, results):
    device = join_group(rank, world, port)
    for op in ops:
        for nbytes in sizes:
            run, expected = case(op, nbytes, rank, world, device)
            for _ in range(warmup):
                run()
            torch.cuda.synchronize()
            dist.barrier()
            start = time.perf_counter()
            for _ in range(iters):
                out = run()
            torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / iters
            wrong = int((out != expected).sum().item())
            nb = expected.numel() * 4
            busbw = nb / seconds / 1e9 * busbw_factor(op, world)
            results.append({"rank": rank, "op": op, "bytes": nb, "time_us": seconds * 1e6,
                            "busbw": busbw, "wrong": wrong})
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default=",".join(OPS))
    add_size_arguments(parser)
    parser.add_argument("--records", help="append run records (JSON lines) to this file")
    parser.add_argument("--label", default="ours", help="label of the records")
    parser.add_argument("--round", default=1, type=int, help="round of the records")
    args = parser.parse_args()
    ops = [op for op in args.ops.split(",") if op]
    if not ops or any(op not in OPS for op in ops):
        parser.error("--ops: a comma list of %s" % ", ".join(OPS))
    if args.min_bytes < 8 or args.max_bytes < args.min_bytes or args.factor < 2 or args.iters < 1:
        parser.error("need 8 <= --min-bytes <= --max-bytes, --factor >= 2, --iters >= 1")
    if no_cuda("torch_collectives"):
        return 1
    sizes = sizes_of(args)
    rc = 0
    measured, failure = spawn_ranks(worker, WORLD, (ops, sizes, args.warmup, args.iters))
    if failure is not None:
        rc = 1
        print("torch_collectives: a rank failed:\n%s" % failure, file=sys.stderr)
    # Rank 0's time and busbw; #wrong summed over both ranks.
    rows = []
    for r in measured:
        if r["rank"] != 0:
            continue
        row = dict(r)
        del row["rank"]
        row["wrong"] = sum(o["wrong"] for o in measured
                           if o["op"] == r["op"] and o["bytes"] == r["bytes"])
        rows.append(row)
    nccl = print_versions()
    print("%-11s %12s %10s %8s %7s" % ("op", "size(B)", "time(us)", "busbw", "#wrong"))
    for r in rows:
        print("%-11s %12d %10.1f %8.2f %7d" % (r["op"], r["bytes"], r["time_us"], r["busbw"],
                                               r["wrong"]))
    if rc == 0 and any(r["wrong"] for r in rows):
        rc = WRONG_EXIT
    if rc == 0 and len(rows) != len(ops) * len(sizes):
        print("torch_collectives: %d of %d results reported" % (len(rows), len(ops) * len(sizes)),
              file=sys.stderr)
        rc = 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "nccl": nccl,
                       "net": os.environ.get("NCCL_NET"), "exit": rc, "rows": rows}, f, indent=1)
            f.write("\n")
    if args.records:
        with open(args.records, "a") as f:
            for r in rows:
                f.write(json.dumps(dict(r, label=args.label, round=args.round)) + "\n")
            for op in ops:
                mine = [r for r in rows if r["op"] == op]
                bad = sum(1 for r in mine if r["wrong"])
                f.write(json.dumps({"summary": True, "op": op, "label": args.label,
                                    "round": args.round, "rows": len(mine),
                                    "avg_busbw": (sum(r["busbw"] for r in mine) / len(mine)
                                                  if mine else None),
                                    "out_of_bounds": bad if mine else None,
                                    "out_of_bounds_ok": bad == 0}) + "\n")
    if rc == WRONG_EXIT:
        print("torch_collectives: WRONG values", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
