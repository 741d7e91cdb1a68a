#!/usr/bin/env python
"""Atari results beside the paper's Table 1 and OpenAI baselines' TRPO.

It trains nothing: for each run directory given (``run.py --env ALE/<Game>-v5 --out DIR``,
finished or interrupted; its last checkpoint is the agent), it plays the final deterministic
evaluation (10 episodes, the 2015 protocol: argmax action, noop starts, whole games, no sticky
actions unless the run trained with them) with the run's final-evaluation seed, and writes a
row with the env steps and TRPO iterations the figure took, beside

- the paper's Table 1 (Schulman et al. 2015, arXiv 1502.05477: 500 iterations; single path
  100k steps per iteration = 50M steps, vine 400k), and
- OpenAI baselines' TRPO at 10M steps (baselines' published Atari benchmark table, trpo_mpi).

Each evaluated run becomes a row of ``bench/results/atari-runs.csv`` (a run evaluated again
replaces its row), and the table is built from all rows there, so runs evaluated by separate
commands (or whose run directories are gone) stay in it. Writes
``bench/results/atari-table1.md``. Games of the paper without a run appear with the published
figures only ("not run").

Example (the Pong row of bench/README.md):
    timeout -s INT 7200 python run.py --env ALE/Pong-v5 --seed 0 --out runs/pong2h
    python bench/atari_table.py runs/pong2h --note "2 hours in one process on 2 cores, beside a MuJoCo benchmark"
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import RESULTS, machine, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402

# game: (ALE name, random, TRPO single path, TRPO vine) — the paper's Table 1
PAPER = {
    "Beam Rider": ("BeamRider", 354, 1425.2, 859.5),
    "Breakout": ("Breakout", 1.2, 10.8, 34.2),
    "Enduro": ("Enduro", 0, 534.6, 430.8),
    "Pong": ("Pong", -20.4, 20.9, 20.9),
    "Q*bert": ("Qbert", 157, 1973.5, 7732.5),
    "Seaquest": ("Seaquest", 110, 1908.6, 788.4),
    "Space Invaders": ("SpaceInvaders", 179, 568.4, 450.2),
}
# OpenAI baselines' TRPO (trpo_mpi), 10M steps, as quoted in the project's Atari issue
BASELINES_10M = {"Pong": 2.8, "Breakout": 15.0, "Enduro": 24.8, "Seaquest": 710, "Q*bert": 2486,
                 "Beam Rider": 683, "Space Invaders": 458}


def game_of(env_id: str) -> str | None:
    name = env_id.split("/")[-1].split("-")[0].replace("NoFrameskip", "")
    for game, (ale, *_) in PAPER.items():
        if ale == name:
            return game
    return None


def run_row(run_dir: str, episodes: int):
    """(game, method, steps, iterations, sticky, CG damping, returns) of one run directory."""
    import trpo_np
    from trpo_np.rundir import checkpoint_path, load_checkpoint, read_progress

    agent = trpo_np.load(run_dir)
    cfg = agent.config
    game = game_of(cfg.env)
    if game is None:
        raise SystemExit(f"{run_dir}: {cfg.env} is not a game of the paper's Table 1")
    _, meta = load_checkpoint(checkpoint_path(run_dir))  # the checkpoint's iteration (a live run writes on)
    last = read_progress(os.path.join(run_dir, "progress.csv"), meta["iteration"])[-1]
    returns = agent.evaluate(episodes=episodes)
    train100 = ""  # the mean score of the last 100 training games (the stochastic policy), from monitor.csv
    monitor = os.path.join(run_dir, "monitor.csv")
    if os.path.exists(monitor):
        scores = np.loadtxt(monitor, delimiter=",", skiprows=2, usecols=0, ndmin=1)
        train100 = f"{np.mean(scores[-100:]):.1f}" if scores.size else ""
    return dict(train100=train100, game=game, method=cfg.method, steps=int(float(last["env_steps"])), iterations=int(float(last["iteration"])),
                hours=float(last["elapsed"]) / 3600, sticky=cfg.atari.get("sticky_actions", 0.0),
                ret=float(np.mean(returns)), std=float(np.std(returns)), lo=float(np.min(returns)),
                hi=float(np.max(returns)), episodes=episodes, env=cfg.env, run=run_dir, damping=cfg.damping,
                frame=cfg.atari.get("frame_size"), params=agent.policy.net.size)


RUNS_CSV = os.path.join(RESULTS, "atari-runs.csv")
FIELDS = ["game", "method", "steps", "iterations", "hours", "sticky", "ret", "std", "lo", "hi", "episodes", "env",
          "train100", "run", "note", "date", "damping"]


def read_rows() -> list[dict]:
    if not os.path.exists(RUNS_CSV):
        return []
    with open(RUNS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("steps", "iterations", "episodes"):
            r[k] = int(r[k])
        for k in ("hours", "sticky", "ret", "std", "lo", "hi", "damping"):
            r[k] = float(r[k])
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories of Atari runs (none: rebuild the table from the CSV)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--note", default="", help="how these runs were made (budget, machine, sharing)")
    args = p.parse_args()

    rows = read_rows()
    for run_dir in args.runs:
        r = run_row(run_dir, args.episodes)
        r.update(note=args.note, date=time.strftime("%Y-%m-%d"))
        print(f"{r['game']} ({r['method']}): {r['ret']:.1f} ± {r['std']:.1f} after {r['steps']:,} steps", flush=True)
        rows = [x for x in rows if x["run"] != r["run"]] + [r]
    os.makedirs(RESULTS, exist_ok=True)
    with open(RUNS_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    ours = {}
    for r in rows:
        ours.setdefault(r["game"], []).append(r)
    lines = ["# Atari: trpo_np beside the paper's Table 1 and OpenAI baselines' TRPO", "",
             f"Table built {time.strftime('%Y-%m-%d')} from [`atari-runs.csv`](atari-runs.csv) (each row: the date "
             f"its run was evaluated, by `python bench/atari_table.py RUN_DIR --note ...`; the last command: "
             f"`python bench/atari_table.py {' '.join(args.runs)}`). {machine()}.", "",
             f"trpo_np: the final deterministic evaluation ({args.episodes} episodes: argmax action, up to 30 "
             "noop starts, whole games, FIRE at reset where the game needs it) of the run's last checkpoint, "
             "± over episodes, with the env steps (agent steps, 4 frames each; for the vine trunk and branch "
             "steps together) and TRPO iterations it took. "
             "The paper: 500 iterations (single path 50M steps, vine about 200M with its branches); "
             "baselines: TRPO (trpo_mpi) at 10M steps. Sticky actions: 0 (the 2015 protocol) unless stated; "
             "scores under ALE v5's default 0.25 are not comparable. The CG damping of each run is given: "
             "the Atari default was 0.1 until it became 1e-3 (bench/README.md, \"Atari settings\").", "",
             "| game | random | paper: single path (50M) | paper: vine | baselines TRPO (10M) | trpo_np | steps, iterations, hours |",
             "|---|---|---|---|---|---|---|"]
    for game, (_, rnd, single, vine) in PAPER.items():
        mine = ours.get(game, [])
        text = "; ".join(f"**{r['ret']:.1f} ± {r['std']:.1f}** ({r['method']}, damping {r['damping']:g}"
                         + (f", sticky {r['sticky']}" if r["sticky"] else "") + ")" for r in mine) or "not run"
        took = "; ".join(f"{r['steps']:,}, {r['iterations']}, {r['hours']:.1f} h" for r in mine)
        lines.append(f"| {game} | {rnd:,} | {single:,} | {vine:,} | {BASELINES_10M[game]:,} | {text} | {took} |")
    lines += ["", "Per run (evaluation episodes' min and max; the mean score of the last 100 training games, "
              "played by the stochastic policy, where the run directory had them):", ""]
    lines += [f"- {r['game']} ({r['method']}), `{r['run']}` ({r['env']}, evaluated {r['date']}): min {r['lo']:.0f}, "
              f"max {r['hi']:.0f}" + (f"; last 100 training games {r['train100']}" if r.get("train100") else "")
              + f". {r['note']}" for rs in ours.values() for r in rs]
    write_result("atari-table1.md", lines)


if __name__ == "__main__":
    main()
