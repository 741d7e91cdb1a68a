#!/usr/bin/env python
"""Atari frame size in learning: 84×84 against 42×42 frames, at equal env steps and at equal time.

Two runs of the same game and seed start together on this machine, one process (one core) each,
run.py's Atari defaults otherwise: the 84×84 run trains for ``--steps``; the 42×42 run (a cap of
5 × ``--steps``) is stopped with SIGINT, which leaves a complete checkpoint, when the 84×84 run
ends. (The first measurement ran with a cap of 3 × ``--steps``, which the 42×42 run reached 69 s
before the 84×84 run ended, after 7,097 of 7,166 s: 84×84 cost 3 times as much per step there.)
So the two runs had the same wall time on the same shared machine. Then each run's last checkpoint plays the final deterministic evaluation (the 2015
protocol, as ``bench/atari_table.py``: argmax action, noop starts, whole games).

Reported per run: the budget reached, the median seconds per iteration (sampling, update + value
fit), the iterations whose line search took a step, the policy entropy over the last 10% of the
iterations, the final evaluation and the mean score of the last 100 training games (the stochastic
policy); at equal env steps, the 84×84 budget: the 42×42 run's periodic evaluation there (every
250,000 steps, 3 episodes) and its last 100 training games before it; and the training-game
scores per 250,000 steps of both runs.

    python bench/atari_frame_size.py --env ALE/Breakout-v5 --seed 0 --steps 1000000 --out runs/fs

Run directories that already hold the pair (``OUT/f84-s<SEED>`` finished, ``OUT/f42-s<SEED>``
stopped) are evaluated, not trained again. Writes
``bench/results/atari-frame-size-<game>-s<SEED>.md`` and the curves of both runs under
``bench/results/curves/``. The cost alone (time per iteration, memory) is in
``bench/results/atari-frame-size.md``.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.atari_settings import finished, summary  # noqa: E402
from bench.atari_table import game_of  # noqa: E402
from bench.common import RESULTS, machine, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402

WINDOW = 250_000  # env steps per row of the training-score table (the Atari entry's eval_every)


def train_pair(args, big: str, small: str) -> None:
    """Start both runs, wait for the 84×84 one, stop the 42×42 one with SIGINT."""
    base = [sys.executable, os.path.join(ROOT, "run.py"), "--env", args.env, "--seed", str(args.seed), "--quiet"]
    for d in (big, small):
        if os.path.exists(d):
            raise SystemExit(f"{d} exists but the pair is not complete: remove both run directories and start again")
    print(f"[{time.strftime('%H:%M:%S')}] training {big} and {small} at once", flush=True)
    p42 = subprocess.Popen(base + ["--steps", str(5 * args.steps), "--out", small],
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    rc = subprocess.call(base + ["--steps", str(args.steps), "--frame-size", "84", "--out", big],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    p42.send_signal(signal.SIGINT)  # run.py saves a complete checkpoint and ends
    p42.wait()
    if rc != 0:
        raise SystemExit(f"the 84×84 run failed (exit {rc}); see {big}")
    print(f"[{time.strftime('%H:%M:%S')}] done", flush=True)


def scores_by_step(run_dir: str, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(score, env steps at the end of the iteration in which it ended) of every training game,
    from monitor.csv (its t is the run's elapsed time when the game's iteration ended)."""
    data = np.loadtxt(os.path.join(run_dir, "monitor.csv"), delimiter=",", skiprows=2, ndmin=2)
    elapsed = np.array([float(r["elapsed"]) for r in rows])
    steps = np.array([int(float(r["env_steps"])) for r in rows])
    # the iteration that ended at t (progress.csv rounds elapsed to 6 digits; iterations are seconds apart)
    at = np.searchsorted(elapsed, data[:, 2] - 0.5)
    return data[:, 0], steps[np.minimum(at, len(steps) - 1)]


def summarize(run_dir: str, episodes: int) -> dict:
    """atari_settings' summary of a run (evaluation, entropy, accepted steps, progress rows) with
    its training games by env step and the median seconds per iteration."""
    r = summary(os.path.basename(run_dir), [], run_dir, episodes)
    r["score"], r["step"] = scores_by_step(run_dir, r["rows"])
    r["sample"] = float(np.median([float(x["time_sample"]) for x in r["rows"]]))
    r["update"] = float(np.median([float(x["time_update"]) for x in r["rows"]]))
    return r


def at_steps(r: dict, steps: int) -> tuple[str, str]:
    """(the periodic evaluation at ``steps`` or '-', mean of the last 100 training games ended by it)."""
    ev = [x for x in r["rows"] if int(float(x["env_steps"])) <= steps and x["eval_return_mean"]]
    evaluation = f"{float(ev[-1]['eval_return_mean']):.1f} (at {int(float(ev[-1]['env_steps'])):,})" if ev else "-"
    games = r["score"][r["step"] <= steps][-100:]
    return evaluation, (f"{games.mean():.1f}" if games.size else "-")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="ALE/Breakout-v5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1_000_000, help="the 84×84 run's budget (agent steps)")
    p.add_argument("--out", default="runs/fs", help="parent of the two run directories")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--note", default="", help="how these runs were made (commit, machine sharing)")
    args = p.parse_args()
    game = game_of(args.env)
    if game is None:
        raise SystemExit(f"{args.env} is not a game of the paper's Table 1")
    big, small = (os.path.join(args.out, f"f{s}-s{args.seed}") for s in (84, 42))
    if not (finished(big, args.steps) and os.path.exists(os.path.join(small, "progress.csv"))):
        train_pair(args, big, small)

    r84, r42 = summarize(big, args.episodes), summarize(small, args.episodes)
    budget = r84["steps"]
    ev42, games42 = at_steps(r42, budget)
    first42 = [x for x in r42["rows"] if int(float(x["env_steps"])) <= budget]
    acc42 = sum(x["accepted"] == "1" for x in first42)
    slug = args.env.replace("/", "_")
    os.makedirs(os.path.join(RESULTS, "curves"), exist_ok=True)
    for r in (r84, r42):
        with open(os.path.join(RESULTS, "curves", f"{slug}-frame{r['frame']}-s{args.seed}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["env_steps", "elapsed", "ep_return_mean", "eval_return_mean", "entropy"])
            w.writerows([(x["env_steps"], x["elapsed"], x["ep_return_mean"], x["eval_return_mean"], x["entropy"])
                         for x in r["rows"]])

    lines = [f"# Atari frame size in learning, {game} ({args.env}), seed {args.seed}", "",
             f"{machine()}. Command: `python bench/atari_frame_size.py --env {args.env} --seed {args.seed} "
             f"--steps {args.steps} --out {args.out}`. Both runs at once, one process each, run.py's Atari "
             f"defaults otherwise; the 42×42 run was stopped when the 84×84 run finished: the same wall time. "
             f"{args.note}", "",
             f"Final evaluation: the last checkpoint, {args.episodes} episodes of the 2015 protocol (argmax action, "
             "noop starts, whole games). Training games: the stochastic policy's scores from monitor.csv.", "",
             "| frame size | π's parameters | agent steps | iterations | hours | seconds per iteration (sampling + "
             "update) | iterations that took a step | entropy, last 10% of iterations | final evaluation | last 100 training "
             "games |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r84, r42):
        lines.append(f"| {r['frame']}×{r['frame']} | {r['params']:,} | {r['steps']:,} | {r['iterations']} | "
                     f"{r['hours']:.2f} | {r['sample']:.1f} + {r['update']:.1f} | {r['accepted']} | {r['entropy']:.2f} | "
                     f"{r['ret']:.1f} ± {r['std']:.1f} | "
                     f"{r['train100']} |")
    lines += ["", f"At equal env steps ({budget:,}): 84×84 final evaluation {r84['ret']:.1f} ± {r84['std']:.1f}, last "
              f"100 training games {r84['train100']}; 42×42 periodic evaluation {ev42}, 3 episodes, last 100 training "
              f"games {games42}, {acc42} of its first {len(first42)} iterations took a step.", "",
              "Mean score of the training games that ended in each window of env steps:", "",
              "| env steps | 84×84 | 42×42 |", "|---|---|---|"]
    for lo in range(0, r42["steps"], WINDOW):
        cells = []
        for r in (r84, r42):
            s = r["score"][(r["step"] > lo) & (r["step"] <= lo + WINDOW)]
            cells.append(f"{s.mean():.1f} ({s.size} games)" if s.size else "-")
        lines.append(f"| {lo / 1e6:.2f}M–{(lo + WINDOW) / 1e6:.2f}M | " + " | ".join(cells) + " |")
    lines += ["", f"Curves: `bench/results/curves/{slug}-frame<size>-s{args.seed}.csv` (env steps, elapsed seconds, "
              "mean training return per iteration, periodic evaluation, entropy)."]
    write_result(f"atari-frame-size-{game.lower().replace(' ', '')}-s{args.seed}.md", lines)


if __name__ == "__main__":
    main()
