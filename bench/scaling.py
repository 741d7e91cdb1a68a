"""Scaling over MPI ranks: full-training throughput with 1, 2, ... ranks, the time spent in
collectives, and a latency-bandwidth model of the communication on 16 and 64 hosts.

For each env and rank count R, in one benchmark run (medians of ``--repeats``, interleaved):
  (a) random-action stepping of the same env copies, R processes at once, each its block;
  (c) full training, ``mpiexec -n R python run.py`` (progress.csv: env steps / elapsed), and
      the share of it rank 0 spent in collectives (the ``time_comm`` column);
and the share of the machine's CPU time the hypervisor took during (a) and during (c) (the
steal column of /proc/stat: on a VM, time in which a busy process did not run).
Then it counts, in one process, the collectives of one iteration and their sizes (a Comm that
records every sum and gather), and models an iteration on P hosts with the collectives of
trpo_np (each sum added in rank order, by one Allgather or, for large ones, Alltoallv +
Allgatherv; see ``MPIComm.sum``) against the compute of one host (weak scaling: each host keeps
the batch of one machine and the value-fit minibatch grows with the batch).

    python bench/scaling.py --envs Hopper-v4 ALE/Pong-v5 --ranks 1 2

Writes bench/results/scaling.md.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (ROOT, cpu_steal, machine, progress_rows, random_stepping, single_threaded_blas,  # noqa: E402
                          stolen_since, write_result)

single_threaded_blas()

import numpy as np  # noqa: E402

from trpo_np.config import Config  # noqa: E402
from trpo_np.envs import VectorEnv  # noqa: E402
from trpo_np.parallel import Comm, MPIComm, find_mpiexec, split  # noqa: E402
from trpo_np.train import Trainer  # noqa: E402

# Interconnect for the model: α = 10 µs per message (a switched 10-25 GbE cluster; MPI over
# InfiniBand is 1-3 µs), β = 1 / (1.25 GB/s) (10 Gb/s).
ALPHA, BETA = 10e-6, 1 / 1.25e9


def _random_block(env_id, n, steps, barrier, seed, atari):
    venv = VectorEnv(env_id, n, **atari)
    barrier.wait()
    random_stepping(venv, steps, seed)
    venv.close()


def random_rate(cfg: Config, steps: int, ranks: int) -> float:
    """(a): env steps/s of all copies stepped with random actions, one process per block."""
    blocks = split(cfg.num_envs, ranks)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(len(blocks) + 1)
    per_copy = -(-steps // cfg.num_envs)
    procs = [ctx.Process(target=_random_block, args=(cfg.env, b - a, per_copy * (b - a), barrier, a, cfg.atari))
             for a, b in blocks]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    return per_copy * cfg.num_envs / (time.perf_counter() - t0)


def training(env_id: str, steps: int, ranks: int, extra: list[str]) -> tuple[float, float, int]:
    """(c): (env steps/s of the training loop, share of it in collectives, iterations)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        cmd = [find_mpiexec(), "-n", str(ranks), sys.executable, os.path.join(ROOT, "run.py"), "--env", env_id,
               "--steps", str(steps), "--eval-every", "0", "--quiet", "--out", out] + extra
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        rows = progress_rows(out)
    elapsed, comm = float(rows[-1]["elapsed"]), float(rows[-1]["time_comm"])
    return int(rows[-1]["env_steps"]) / elapsed, comm / elapsed, len(rows)


class CountingComm(Comm):
    """One process that records each collective it would make with several ranks."""

    def __init__(self):
        self.calls = []  # (kind, bytes of this rank's part, values)

    def sum(self, x):
        self.calls.append(("sum", np.asarray(x).nbytes, np.asarray(x).size))
        return x

    def gather(self, items):
        self.calls.append(("gather", 64 * max(1, len(items)), 1))  # small pickled lists
        return list(items)


def collectives_per_iteration(cfg: Config, iterations: int = 3):
    """(collectives, (bytes, values) of each of one rank's parts) per iteration, counted on a short run of
    ``iterations`` updates (its first batch, which starts the normalizers, is counted in its
    collectives but not as an iteration: a slight overcount)."""
    comm = CountingComm()
    cfg.steps, cfg.eval_every = cfg.batch_steps * (iterations + 1), 0
    tr = Trainer(cfg, None, quiet=True, comm=comm)
    tr.train()
    sizes = [(b, v) for _, b, v in comm.calls]
    return len(sizes) / tr.iteration, sizes, tr.iteration


def model(sizes: list[tuple[int, int]], iterations: int, hosts: int) -> float:
    """Seconds of collectives per iteration on ``hosts`` hosts, each sum by the algorithm that
    ``MPIComm.sum`` picks: one Allgather (⌈log₂P⌉·α + (P − 1)·m·β) or, above its threshold,
    Alltoallv + Allgatherv ((P − 1)·α + ⌈log₂P⌉·α + 2·(P − 1)/P·m·β)."""
    lat = math.ceil(math.log2(hosts)) * ALPHA
    per = []
    for m, values in sizes:
        if MPIComm.scatters(values, m, hosts):
            per.append((hosts - 1) * ALPHA + lat + 2 * (hosts - 1) / hosts * m * BETA)
        else:
            per.append(lat + (hosts - 1) * m * BETA)
    return sum(per) / iterations


def model_rows(env_id: str, t_iter: float, run) -> list[str]:
    """The model's rows: one host's iteration (``t_iter`` s, 1-rank training) plus the
    collectives on P hosts."""
    n, sizes, iters = collectives_per_iteration(run.build_config(run.parse_args(["--env", env_id])))
    rows = []
    for hosts in (16, 64):
        t_comm = model(sizes, iters, hosts)
        rows.append(f"| {env_id} | {hosts} | {n:.0f} | {sum(b for b, _ in sizes) / iters / 1e3:,.0f} kB | "
                    f"{t_iter * 1e3:,.0f} ms | {t_comm * 1e3:,.1f} ms | **{t_comm / (t_iter + t_comm):.1%}** |")
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["Hopper-v4", "ALE/Pong-v5"])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, nargs="+", default=[40_960, 20_000],
                   help="training steps per env (with --weak: per rank)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--weak", action="store_true",
                   help="weak scaling: R ranks train with R times the env's --num-envs, --batch-steps and "
                        "--vf-minibatch (and R times --steps), so each rank keeps the work of one process")
    p.add_argument("--no-model", action="store_true", help="skip the collectives count and the P-host model")
    p.add_argument("--name", default="scaling.md", help="results file under bench/results")
    p.add_argument("--model-only", type=float, nargs="+", metavar="MS",
                   help="only the P-host model, with these measured milliseconds of one 1-rank iteration per env "
                        "(e.g. from an earlier results file) instead of measuring (a) and (c)")
    args = p.parse_args()
    from trpo_np import cli as run

    cmd = " ".join(sys.argv[1:])
    lines = ["# Scaling over MPI ranks" + (" (weak scaling)" if args.weak else ""), "",
             f"{machine()}. Command: `python bench/scaling.py {cmd}`. "
             f"Medians of {args.repeats}; (a) and (c) interleaved."
             + (" Weak scaling: R ranks run R times the env's env copies, batch and value-fit minibatch (each "
                "rank: the copies, batch and minibatch share of one process, and the same number of value-fit "
                "steps), so ideal training throughput is R times the 1-rank figure."
                if args.weak else ""), "",
             "| env | ranks | env copies, batch | (a) random steps/s, all copies | (c) training steps/s | c/a "
             "| c / (c with 1 rank) | collectives (rank 0) | iterations | CPU stolen during (a), (c) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    models = []
    for k, (env_id, steps) in enumerate(zip(args.envs, args.steps)):
        cfg1 = run.build_config(run.parse_args(["--env", env_id]))
        if args.model_only:
            models += model_rows(env_id, args.model_only[k] / 1e3, run)
            continue
        res, shape = {}, {}
        for _ in range(args.repeats):
            for r in args.ranks:
                scale = r if args.weak else 1
                extra = ["--num-envs", str(cfg1.num_envs * scale), "--batch-steps", str(cfg1.batch_steps * scale),
                         "--vf-minibatch", str(cfg1.vf_minibatch * scale)]
                cfg = run.build_config(run.parse_args(["--env", env_id] + extra))
                shape[r] = f"{cfg.num_envs}, {cfg.batch_steps:,}"
                start = cpu_steal()
                a = random_rate(cfg, min(steps, 20_000) * scale, r)
                stolen_a, start = stolen_since(start), cpu_steal()
                c = training(env_id, steps * scale, r, extra)
                res.setdefault(r, []).append((a, *c, stolen_a, stolen_since(start)))
                print(f"  {env_id} ranks {r}: {res[r][-1]}", flush=True)
        base = None
        for r in args.ranks:
            a, c, share, iters, stolen_a, stolen_c = (float(np.median([x[i] for x in res[r]])) for i in range(6))
            base = base or c
            print(f"{env_id} ranks {r}: random {a:,.0f}/s, training {c:,.0f}/s ({c / a:.2f}), "
                  f"collectives {share:.1%}", flush=True)
            lines.append(f"| {env_id} | {r} | {shape[r]} | {a:,.0f} | {c:,.0f} | {c / a:.2f} | {c / base:.2f} | "
                         f"{share:.1%} | {iters:.0f} | {stolen_a:.1%}, {stolen_c:.1%} |")
        if not args.no_model:
            models += model_rows(env_id, cfg1.batch_steps / base, run)
    if args.model_only:
        lines = ["# Model of the collectives on many hosts", "",
                 f"{machine()}. Command: `python bench/scaling.py {cmd}`: the compute of one 1-rank iteration "
                 f"({', '.join(f'{e} {t:,.0f} ms' for e, t in zip(args.envs, args.model_only))}) is taken from an "
                 "earlier measurement (bench/results/scaling.md), the collectives are counted here."]
    if models:
        lines += ["", "Model of the collectives on P hosts, weak scaling (each host samples the batch of one machine, "
                  "the value-fit minibatch grows with the batch as `--vf-minibatch` says, so the number of sums per "
                  f"iteration stays that of one machine): α = {ALPHA * 1e6:.0f} µs per message, "
                  f"β = 1/{1 / BETA / 1e9:.2f} GB/s; a sum of m bytes per host costs ⌈log₂P⌉·α + (P − 1)·m·β as one "
                  "Allgather, or (P − 1)·α + ⌈log₂P⌉·α + 2·(P − 1)/P·m·β as Alltoallv + Allgatherv, whichever "
                  "`MPIComm.sum` picks. Collectives and bytes per iteration are counted on a short one-process run.",
                  "",
                  "| env | hosts P | collectives / iteration | bytes / iteration (one rank) | compute / iteration "
                  "(1 host) | collectives / iteration (model) | share |", "|---|---|---|---|---|---|---|"] + models
    write_result(args.name, lines)


if __name__ == "__main__":
    main()
