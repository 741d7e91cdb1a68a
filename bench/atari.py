#!/usr/bin/env python
"""Atari speed: agent steps per second while sampling with the CNN policy vs stepping the same
preprocessed vector env with random actions (target >= 0.7x), and seconds per TRPO update
(policy step with F on 10% of the states, plus the value fit) for a batch of ``--update-steps``,
and full training throughput over ``--train-steps`` in one process and with one MPI rank per core
(``--ranks``; see also bench/scaling.py).

    python bench/atari.py --env ALE/Pong-v5 --steps 4000 --update-steps 20000 --train-steps 20000

Writes bench/results/atari-speed-<ENV>.md (``/`` in the id as ``_``). Uses the Atari defaults of run.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import machine, random_stepping, single_threaded_blas, write_result  # noqa: E402
from bench.scaling import training  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402

from trpo_np import cli as run  # noqa: E402
from trpo_np.envs import VectorEnv  # noqa: E402
from trpo_np.train import Trainer  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--steps", type=int, default=4000, help="agent steps for the sampling measurements")
    p.add_argument("--update-steps", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=20_000, help="0: skip the training measurement")
    args = p.parse_args()
    cfg = run.build_config(run.parse_args(["--env", args.env]))
    rand, samp = [], []
    for _ in range(args.repeats):
        venv = VectorEnv(cfg.env, cfg.num_envs, **cfg.atari)
        rand.append(args.steps / random_stepping(venv, args.steps))
        venv.close()
        tr = Trainer(cfg, run_dir=None, quiet=True)
        sampler = tr.make_sampler()
        t0 = time.perf_counter()
        sampler.sample(args.steps)
        samp.append(args.steps / (time.perf_counter() - t0))
        sampler.close()
    r, s = float(np.median(rand)), float(np.median(samp))
    print(f"random {r:,.0f} steps/s, sampling {s:,.0f} steps/s, ratio {s / r:.2f}", flush=True)

    tr = Trainer(cfg, run_dir=None, quiet=True)
    sampler = tr.make_sampler()
    batch = sampler.sample(args.update_steps)
    sampler.close()
    t0 = time.perf_counter()
    stats = tr.update(batch)
    t_update = time.perf_counter() - t0
    print(f"update of a {batch.paths.steps:,}-step batch: {t_update:.1f} s (kl {stats['kl']:.4f}, "
          f"backtracks {stats['backtracks']})", flush=True)
    train = {}
    for ranks in ([1, os.cpu_count() or 1] if args.train_steps else []):
        train[ranks > 1] = (training(args.env, args.train_steps, ranks, [])[0], ranks)
        print(f"training with {ranks} rank(s): {train[ranks > 1][0]:,.0f} steps/s", flush=True)
    lines = [f"# Atari speed, {args.env}", "",
             f"{machine()}; run.py's Atari defaults ({cfg.num_envs} env copies, {cfg.atari['frame_size']}×{cfg.atari['frame_size']}×4 "
             f"frames, paper CNN, F on {cfg.fvp_fraction:.0%} of the states, {cfg.vf_epochs} value epoch). "
             f"Command: `python bench/atari.py --env {args.env} --steps {args.steps} --update-steps {args.update_steps} "
             f"--train-steps {args.train_steps}`", "",
             "| what | figure |", "|---|---|",
             f"| random-action stepping of the preprocessed vector env | {r:,.0f} agent steps/s |",
             f"| sampling with the CNN policy | {s:,.0f} agent steps/s |",
             f"| ratio sampling / random | **{s / r:.2f}** |",
             f"| one TRPO update + value fit, {batch.paths.steps:,}-step batch | **{t_update:.1f} s** |"]
    if train:
        lines += [f"| full training, {args.train_steps:,} steps, one process | {train[False][0]:,.0f} agent steps/s "
                  f"(**{train[False][0] / r:.2f}x** random stepping) |",
                  f"| full training, {args.train_steps:,} steps, `--ranks {train[True][1]}` (MPI) | "
                  f"**{train[True][0]:,.0f} agent steps/s** ({train[True][0] / train[False][0]:.2f}x) |"]
    write_result(f"atari-speed-{args.env.replace('/', '_')}.md", lines)


if __name__ == "__main__":
    main()
