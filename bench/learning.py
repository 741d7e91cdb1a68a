#!/usr/bin/env python
"""Learning benchmark (the protocol is in bench/README.md: final deterministic evaluation over seeds).

Trains ``--seeds`` runs of ``run.py`` on one env with default settings (plus any extra flags),
``--jobs`` at a time, and in the same benchmark run steps the same vectorized env with random
actions for the same number of steps. Reports per seed the final deterministic evaluation
(10 episodes, frozen normalizer, after the last iteration) and the mean of the last 5
evaluations (every 50k steps), then mean ± std across seeds, wall time and the ratio of one
seed's training time to random-action stepping. Writes

    bench/results/learning-<ENV>-<METHOD>.md   the table
    bench/results/curves/<ENV>-<METHOD>-s<SEED>.csv   steps, eval return, training episode return

Example (the README's Hopper figure):
    python bench/learning.py --env Hopper-v4 --seeds 0 1 2 3 4 --steps 1000000 --jobs 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import machine, progress_rows, random_stepping, single_threaded_blas, write_curve, write_result  # noqa: E402

single_threaded_blas()  # also for the run.py children

import numpy as np  # noqa: E402

from trpo_np.config import SAMPLERS  # noqa: E402


def random_stepping_time(env_id: str, steps: int, num_envs: int, seed: int = 0) -> float:
    """Seconds to step the training's vector env with random actions for ``steps`` env steps."""
    from trpo_np.envs import VectorEnv

    venv = VectorEnv(env_id, num_envs)
    dt = random_stepping(venv, steps, seed)
    venv.close()
    return dt


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Hopper-v4")
    p.add_argument("--method", default="single", choices=list(SAMPLERS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    p.add_argument("--num-envs", type=int, default=4, help="must match the training's --num-envs")
    p.add_argument("--no-random-baseline", action="store_true")
    p.add_argument("--tag", default="", help="suffix for the output names")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="extra run.py flags after --")
    args = p.parse_args()
    extra = [a for a in args.extra if a != "--"]

    name = f"{args.env.replace('/', '_')}-{args.method}{args.tag}"
    out_root = os.path.join(ROOT, "bench", "out", name)
    os.makedirs(out_root, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    procs, pending, logs = {}, list(args.seeds), {}
    t_start = time.time()
    while pending or procs:
        while pending and len(procs) < args.jobs:
            s = pending.pop(0)
            run_dir = os.path.join(out_root, f"s{s}-{stamp}")
            cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--env", args.env, "--method", args.method,
                   "--steps", str(args.steps), "--seed", str(s), "--num-envs", str(args.num_envs),
                   "--out", run_dir, "--quiet", *extra]
            logs[s] = open(os.path.join(out_root, f"s{s}-{stamp}.log"), "w")
            procs[s] = (subprocess.Popen(cmd, stdout=logs[s], stderr=subprocess.STDOUT), run_dir)
            print(f"started seed {s}: {' '.join(cmd[1:])}", flush=True)
        time.sleep(2)
        for s, (proc, run_dir) in list(procs.items()):
            if proc.poll() is not None:
                if proc.returncode != 0:
                    sys.exit(f"seed {s} failed (exit {proc.returncode}); see {logs[s].name}")
                del procs[s]
                print(f"seed {s} done after {time.time() - t_start:.0f} s", flush=True)
                logs[s].close()
                logs[s] = run_dir

    rand_t = None
    if not args.no_random_baseline:
        rand_t = random_stepping_time(args.env, args.steps, args.num_envs)
        print(f"random-action stepping of {args.num_envs} env copies, {args.steps:,} steps: {rand_t:.1f} s")

    rows = []
    for s in args.seeds:
        prog = progress_rows(logs[s])
        evals = [float(r["eval_return_mean"]) for r in prog if r["eval_return_mean"]]
        final, final_std = float(prog[-1]["eval_return_mean"]), float(prog[-1]["eval_return_std"])
        rows.append(dict(seed=s, final=final, final_std=final_std, last5=float(np.mean(evals[-5:])),
                         wall=float(prog[-1]["elapsed"]), train=float(prog[-1]["elapsed"]) - float(prog[-1]["eval_time"]), steps=int(prog[-1]["env_steps"])))
        write_curve(logs[s], f"{name}-s{s}")
    finals = np.array([r["final"] for r in rows])
    walls = np.array([r["wall"] for r in rows])
    trains = np.array([r["train"] for r in rows])
    cmd = (f"python bench/learning.py --env {args.env} --method {args.method} --seeds "
           f"{' '.join(map(str, args.seeds))} --steps {args.steps} --jobs {args.jobs}"
           + (" --no-random-baseline" if args.no_random_baseline else "")
           + (f" --tag={args.tag}" if args.tag else "")
           + (f" -- {' '.join(extra)}" if extra else ""))
    lines = [f"# {args.env}, {SAMPLERS[args.method]}, {args.steps:,} env steps, {len(rows)} seeds", "",
             f"{machine()}; {args.jobs} training processes at a time. Command: `{cmd}`", "",
             "| seed | final eval (10 ep.) | mean of last 5 evals | wall time (s) | of it training (s) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['final']:.1f} ± {r['final_std']:.1f} | {r['last5']:.1f} | {r['wall']:.0f} | {r['train']:.0f} |")
    lines += ["", f"**Final deterministic evaluation: {finals.mean():.1f} ± {finals.std():.1f}** (mean ± std over seeds); "
              f"mean of the last 5 evaluations {np.mean([r['last5'] for r in rows]):.1f}.", "",
              f"Wall time per seed: median {np.median(walls):.0f} s, of which training (without the periodic "
              f"evaluations) {np.median(trains):.0f} s."]
    if rand_t:
        lines.append(f"Random-action stepping of the same {args.num_envs}-copy vector env for {args.steps:,} steps, "
                     f"measured after the training processes finished: {rand_t:.0f} s. "
                     f"Ratio training (without evaluations) / random stepping: {np.median(trains) / rand_t:.2f} (median seed; "
                     f"training ran {args.jobs} at a time on {os.cpu_count()} cores).")
    write_result(f"learning-{name}.md", lines)


if __name__ == "__main__":
    main()
