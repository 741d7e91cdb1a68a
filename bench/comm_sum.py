"""Time of one ``MPIComm.sum`` of a float32 vector with P ranks, by both of its algorithms: one
Allgather then a rank-order sum (each rank receives P·m bytes), and reduce-scatter (Alltoallv,
rank-order sum of one block) then Allgatherv (each rank receives about 2·m bytes). Both give the
same bits; ``MPIComm.SCATTER_BYTES`` picks between them.

    python bench/comm_sum.py --ranks 2 4 8 16

Writes bench/results/comm-sum.md (medians over --reps calls, rank 0's clock).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import ROOT, machine, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402

SIZES = (1_000, 5_000, 50_000, 500_000)  # float32 values: 4 kB (a small MLP) ... 2 MB (a CNN)


def child(reps: int) -> None:
    from trpo_np import parallel

    comm = parallel.world()
    res = {}
    for m in SIZES:
        x = np.random.default_rng(comm.rank).standard_normal(m).astype(np.float32)
        for algo, limit in (("allgather", 1 << 62), ("scatter", 0)):
            comm.SCATTER_BYTES = limit
            n = max(5, reps * 5_000 // max(m, 5_000))
            times = []
            for _ in range(n):
                comm.gather([])  # start together
                t0 = time.perf_counter()
                comm.sum(x)
                times.append(time.perf_counter() - t0)
            res[f"{m} {algo}"] = float(np.median(times))
    if comm.rank == 0:
        print("RESULT " + json.dumps(res), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[2])
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.reps)
    from trpo_np.parallel import find_mpiexec

    lines = ["# One sum over P ranks: Allgather against reduce-scatter + Allgatherv", "",
             f"{machine()}. Command: `python bench/comm_sum.py --ranks {' '.join(map(str, args.ranks))} "
             f"--reps {args.reps}`. Median µs per call (rank 0) of a float32 vector of m values; both "
             "algorithms add the ranks' values in rank order (the same bits).", "",
             "| ranks P | m (bytes) | Allgather + sum (µs) | reduce-scatter + Allgatherv (µs) | ratio |",
             "|---|---|---|---|---|"]
    for r in args.ranks:
        out = subprocess.run([find_mpiexec(), "-n", str(r), sys.executable, os.path.abspath(__file__), "--child",
                              "--reps", str(args.reps)], capture_output=True, text=True, cwd=ROOT, timeout=600)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            sys.exit(f"{r} ranks failed: {out.stderr[-2000:]}")
        res = json.loads(line[0][7:])
        for m in SIZES:
            a, s = res[f"{m} allgather"] * 1e6, res[f"{m} scatter"] * 1e6
            print(f"P={r} m={m}: allgather {a:.0f} µs, scatter {s:.0f} µs", flush=True)
            lines.append(f"| {r} | {m:,} ({4 * m / 1e3:,.0f} kB) | {a:,.0f} | {s:,.0f} | {a / s:.2f} |")
    write_result("comm-sum.md", lines)


if __name__ == "__main__":
    main()
