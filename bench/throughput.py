#!/usr/bin/env python
"""Throughput: env steps per second of

  (a) stepping the env copies with random actions only,
  (b) sampling with the policy (single-path sampler, no updates),
  (c) full training including the TRPO updates and value fits (no periodic evaluation),

printed as ratios to (a), for Hopper-v4 and CartPole-v1, with all copies in this process (sync)
and with ``--async`` (the copies split over one process per core, trpo_np.parallel), all in one
run of this script. For async, (a) steps each block of copies in its own process at once, the
bare simulators on every core. Medians of ``--repeats``. Writes bench/results/throughput-<N>envs.md.

    python bench/throughput.py                       # defaults: 4 env copies, 40,960 steps
    python bench/throughput.py --envs Hopper-v4 --steps 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import machine, random_stepping, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402

from trpo_np.config import Config  # noqa: E402
from trpo_np.envs import VectorEnv  # noqa: E402
from trpo_np.parallel import split  # noqa: E402
from trpo_np.train import Trainer  # noqa: E402


def _random_block(env_id, n, steps, barrier, seed):
    venv = VectorEnv(env_id, n)
    barrier.wait()
    random_stepping(venv, steps, seed)
    venv.close()


def random_steps(env_id, steps, num_envs, asynchronous):
    """(a): one process; or each block of copies in its own process, all started together."""
    if not asynchronous:
        venv = VectorEnv(env_id, num_envs)
        dt = random_stepping(venv, steps)
        venv.close()
        return steps / dt
    blocks = split(num_envs, os.cpu_count() or 1)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(len(blocks) + 1)
    per_copy = -(-steps // num_envs)
    procs = [ctx.Process(target=_random_block, args=(env_id, b - a, per_copy * (b - a), barrier, a))
             for a, b in blocks]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    return per_copy * num_envs / (time.perf_counter() - t0)


def config(env_id, steps, num_envs, asynchronous, batch_steps):
    return Config(env=env_id, steps=steps, num_envs=num_envs, asynchronous=asynchronous,
                  batch_steps=batch_steps, eval_every=0, seed=0)


def sampling(env_id, steps, num_envs, asynchronous, batch_steps):
    tr = Trainer(config(env_id, steps, num_envs, asynchronous, batch_steps), run_dir=None, quiet=True)
    sampler = tr.make_sampler()
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        done += sampler.sample(batch_steps).paths.steps
    dt = time.perf_counter() - t0
    sampler.close()
    return done / dt


def training(env_id, steps, num_envs, asynchronous, batch_steps):
    tr = Trainer(config(env_id, steps, num_envs, asynchronous, batch_steps), run_dir=None, quiet=True)
    t0 = time.perf_counter()
    tr.train()
    return tr.env_steps / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["Hopper-v4", "CartPole-v1"])
    p.add_argument("--steps", type=int, default=40_960)
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--batch-steps", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rows = []
    for env_id in args.envs:
        for mode, n, asy in (("sync", args.num_envs, False), ("async", args.num_envs, True)):
            res = {k: [] for k in ("random", "sample", "train")}
            for _ in range(args.repeats):  # interleaved, so that a slow spell hits all three
                res["random"].append(random_steps(env_id, args.steps, n, asy))
                res["sample"].append(sampling(env_id, args.steps, n, asy, args.batch_steps))
                res["train"].append(training(env_id, args.steps, n, asy, args.batch_steps))
            med = {k: float(np.median(v)) for k, v in res.items()}
            rows.append(dict(env=env_id, mode=mode, n=n, **med))
            print(f"{env_id} {mode} ({n} copies): random {med['random']:,.0f}/s, sampling {med['sample']:,.0f}/s "
                  f"({med['sample'] / med['random']:.2f}x), training {med['train']:,.0f}/s "
                  f"({med['train'] / med['random']:.2f}x)", flush=True)
    sync_random = {r["env"]: r["random"] for r in rows if r["mode"] == "sync"}
    lines = ["# Throughput", "",
             f"{machine()}. {args.steps:,} env steps per measurement, batch {args.batch_steps}, medians of {args.repeats}. "
             f"Command: `python bench/throughput.py --envs {' '.join(args.envs)} --num-envs {args.num_envs} "
             f"--steps {args.steps} --repeats {args.repeats}`", "",
             "| env | mode | copies | (a) random steps/s | (b) sampling steps/s | (c) training steps/s | b/a | c/a | c / sync (a) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['env']} | {r['mode']} | {r['n']} | {r['random']:,.0f} | {r['sample']:,.0f} | "
                     f"{r['train']:,.0f} | {r['sample'] / r['random']:.2f} | {r['train'] / r['random']:.2f} | "
                     f"{r['train'] / sync_random[r['env']]:.2f} |")
    write_result(f"throughput-{args.num_envs}envs.md", lines)


if __name__ == "__main__":
    main()
