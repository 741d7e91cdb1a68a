#!/usr/bin/env python
"""Vine vs single path at equal env steps (the protocol is in bench/README.md).

For each env and seed, trains both methods for the same total env steps (vine: trunk + branch
steps) and reports the final deterministic evaluation (mean action / argmax, ``--eval-episodes``
episodes on a separate env copy with the frozen normalizer, after the last iteration), the mean
of the last 5 periodic evaluations (every 50k steps), wall time (and of it, the periodic
evaluations) and env steps per second. The runs go one after another (``--jobs 1``) so that
their timings are comparable; ``--jobs 2`` halves the time on 2 cores but the timings then
share the machine.

Per-env settings: everything not listed is run.py's (the Config defaults, δ = 0.01, γ = 0.99,
λ = 0.95, 64-64 tanh networks, 4 env copies, observation normalization, reward scaling, under
the env's entry in trpo_np/settings.py, e.g. Hopper's γ = 0.995).

    env           steps   single path          vine
    CartPole-v1   100k    2,048 steps / iter.  N=50,  K=2 (all actions), T=50, 8,000 steps / iter.
    Swimmer-v4    1M      2,048 steps / iter.  N=50,  K=4, T=25, 7,500 steps / iter. (its entry)
    Hopper-v4     1M      2,048 steps / iter.  N=125, K=4, T=6,  5,500 steps / iter. (other envs: as Hopper)

(vine: N·K·T branch steps at most, the trunk gets the rest, and Q̂ is bootstrapped with V at the
horizon; see trpo_np/vine.py. The MuJoCo setting is the paper's Table 2 (K = 4, T = 50-100,
500-2,500 Q-values per batch) scaled to 1M steps on 2 cores: 500 Q-values of horizon 6, so that
1M steps give ~180 iterations. On Hopper (10 seeds) it reached 0.94 of single path, against 0.86
for N = 50, T = 12 (200 Q-values); with T = 25 (7,500 steps, ~133 iterations) the vine was still
rising at 1M and trailed single path by 24%. Swimmer's entry (trpo_np/settings.py) keeps N = 50,
T = 25: with γ = 0.9999 its 12-step branches left one seed in five at a slow gait. These are
run.py's vine settings.)

Writes ``<results>/vine.csv`` (one row per run), ``<results>/vine.md`` (the table) and the
runs' progress.csv under ``<out>/<env>-<method>-s<seed>/``; with ``--curves TAG`` also each run's
learning curve, ``<results>/curves/<env>-<method>-<TAG>-s<seed>.csv`` (env steps, evaluation,
training episode return; as bench/learning.py's).

    python bench/vine.py                                   # the full benchmark, 3 seeds
    python bench/vine.py --envs CartPole-v1 --seeds 0 1 2 3 4
    python bench/vine.py --envs Hopper-v4 --seeds 5 6 7 8 9 --curves n125t6   # with curves
    python bench/vine.py --steps 3000 --seeds 0 --eval-episodes 1 --results /tmp/vb --out /tmp/vb/runs  # smoke
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import warnings
from dataclasses import dataclass

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: BLAS threads only contend
warnings.filterwarnings("ignore", message=".*is out of date.*")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import cpu_model, progress_rows, write_curve  # noqa: E402

ENVS = {
    "CartPole-v1": dict(steps=100_000, single=dict(batch_steps=2048),
                        vine=dict(batch_steps=8_000, vine_states=50, vine_actions=2, vine_horizon=50)),
    # MuJoCo: run.py's vine defaults (config.make_config sizes the batch as N·K·T + 2,500)
    "Swimmer-v4": dict(steps=1_000_000, single=dict(batch_steps=2048), vine=dict()),
    "Hopper-v4": dict(steps=1_000_000, single=dict(batch_steps=2048), vine=dict()),
}
FIELDS = ["env", "method", "seed", "env_steps", "trunk_steps", "branch_steps", "iterations", "final_mean",
          "final_std", "last5_mean", "wall_s", "eval_s", "steps_per_s", "vine_states", "vine_actions",
          "vine_horizon", "batch_steps"]


@dataclass
class Job:
    """One (env, method, seed) run of the benchmark and where its outputs go."""

    env_id: str
    method: str
    seed: int
    steps: int
    overrides: dict      # Config fields over the env's entry (ENVS, then the flags)
    eval_episodes: int
    out: str             # run directories go under it
    curves: str | None   # tag of the learning-curve file, or None for no curve
    results: str         # results directory


def run_one(job: Job):
    """Train one (env, method, seed) and evaluate it; returns a CSV row."""
    from trpo_np.config import make_config
    from trpo_np.evaluation import evaluate
    from trpo_np.train import Trainer

    warnings.filterwarnings("ignore", message=".*is out of date.*")  # again: gymnasium resets filters on import
    # the env's entry of the settings table and the vine's rules, as run.py builds them
    cfg = make_config(job.env_id, method=job.method, steps=job.steps, seed=job.seed, **job.overrides)
    name = f"{job.env_id.replace('/', '_')}-{job.method}"
    run_dir = os.path.join(job.out, f"{name}-s{job.seed}")
    os.makedirs(run_dir, exist_ok=True)
    trainer = Trainer(cfg, run_dir=run_dir, quiet=True)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    rets = evaluate(cfg, trainer.policy, trainer.obs_rms, job.eval_episodes, seed=trainer.seeds.env_seed("final_eval"))
    evals = [float(r["eval_return_mean"]) for r in progress_rows(run_dir) if r["eval_return_mean"] not in ("", "nan")]
    if job.curves is not None:
        write_curve(run_dir, f"{name}-{job.curves}-s{job.seed}", job.results)
    vine = job.method == "vine"
    return dict(env=job.env_id, method=job.method, seed=job.seed, env_steps=trainer.env_steps,
                trunk_steps=trainer.trunk_steps, branch_steps=trainer.branch_steps, iterations=trainer.iteration,
                final_mean=float(np.mean(rets)), final_std=float(np.std(rets)),
                last5_mean=float(np.mean(evals[-5:])) if evals else float("nan"),
                wall_s=wall, eval_s=trainer.eval_time, steps_per_s=trainer.env_steps / wall,
                vine_states=cfg.vine_states if vine else "", batch_steps=cfg.batch_steps,
                vine_actions=cfg.vine_actions if vine else "", vine_horizon=cfg.vine_horizon if vine else "")


def table(rows, command: str, jobs: int) -> str:
    lines = ["# Vine vs single path at equal env steps", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({cpu_model()}), {jobs} run(s) at a time. "
             f"Command: `{command}`", "",
             "Final deterministic evaluation after the last iteration (mean ± std over seeds; per seed in brackets), "
             "mean of the last 5 periodic evaluations, median wall time per run (of it periodic evaluations) "
             "and env steps per second (vine: trunk + branch steps).", "",
             "| env | method | env steps | final eval | per seed | last 5 evals | wall time (s) | steps/s |",
             "|---|---|---|---|---|---|---|---|"]
    for env_id in dict.fromkeys(r["env"] for r in rows):
        for method in ("single", "vine"):
            rs = [r for r in rows if r["env"] == env_id and r["method"] == method]
            if not rs:
                continue
            fin = np.array([r["final_mean"] for r in rs])
            label = "single path" if method == "single" else (
                f"vine (N={rs[0]['vine_states']}, K={rs[0]['vine_actions']}, T={rs[0]['vine_horizon']})")
            steps = int(np.median([r["env_steps"] for r in rs]))
            if method == "vine":
                br = int(np.median([r["branch_steps"] for r in rs]))
                steps_s = f"{steps:,} ({br:,} in branches)"
            else:
                steps_s = f"{steps:,}"
            lines.append(f"| {env_id} | {label} | {steps_s} | {fin.mean():.1f} ± {fin.std():.1f} | "
                         f"{', '.join(f'{x:.0f}' for x in fin)} | {np.mean([r['last5_mean'] for r in rs]):.1f} | "
                         f"{np.median([r['wall_s'] for r in rs]):.0f} ({np.median([r['eval_s'] for r in rs]):.0f}) | "
                         f"{np.median([r['steps_per_s'] for r in rs]):.0f} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=list(ENVS), help="env ids (settings above; others get the MuJoCo ones)")
    p.add_argument("--methods", nargs="+", default=["single", "vine"], choices=["single", "vine"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, help="total env steps per run for every env (default: per env, above)")
    p.add_argument("--vine-states", type=int, help="override N")
    p.add_argument("--vine-actions", type=int, help="override K")
    p.add_argument("--vine-horizon", type=int, help="override T")
    p.add_argument("--vine-batch-steps", type=int, help="override the vine env steps per iteration")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results"), help="where vine.csv / vine.md go")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "vine"), help="run directories")
    p.add_argument("--curves", metavar="TAG", help="also write each run's learning curve to "
                   "<results>/curves/<env>-<method>-<TAG>-s<seed>.csv")
    args = p.parse_args()

    jobs = []
    for env_id in args.envs:
        spec = ENVS.get(env_id, ENVS["Hopper-v4"])
        steps = args.steps or spec["steps"]
        for seed in args.seeds:
            for method in args.methods:
                ov = dict(spec[method])
                if method == "vine":
                    for k in ("vine_states", "vine_actions", "vine_horizon"):
                        if getattr(args, k) is not None:
                            ov[k] = getattr(args, k)
                    if args.vine_batch_steps is not None:
                        ov["batch_steps"] = args.vine_batch_steps
                jobs.append(Job(env_id, method, seed, steps, ov, args.eval_episodes, args.out, args.curves, args.results))

    rows = []
    t0 = time.time()
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for row in pool.imap_unordered(run_one, jobs):
                rows.append(row)
                print(f"{row['env']} {row['method']} seed {row['seed']}: {row['final_mean']:.1f} "
                      f"({row['wall_s']:.0f} s, {time.time() - t0:.0f} s so far)", flush=True)
    else:
        for job in jobs:
            row = run_one(job)
            rows.append(row)
            print(f"{row['env']} {row['method']} seed {row['seed']}: {row['final_mean']:.1f} "
                  f"({row['wall_s']:.0f} s, {time.time() - t0:.0f} s so far)", flush=True)
    order = {(j.env_id, j.method, j.seed): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["env"], r["method"], r["seed"])])

    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "vine.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    text = table(rows, "python bench/vine.py " + " ".join(sys.argv[1:]), args.jobs)
    with open(os.path.join(args.results, "vine.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
