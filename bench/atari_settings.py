#!/usr/bin/env python
"""Atari learning dynamics: the same game, seed and step budget under several settings (arms).

Each arm is ``NAME=FLAGS``: run.py's Atari defaults plus FLAGS (``defaults=`` adds none). An arm
trains into ``OUT/<name>`` with ``run.py --env ENV --steps STEPS --seed SEED FLAGS`` (a run
directory that already holds a finished run of that budget is reused, not retrained); then its
last checkpoint plays the final deterministic evaluation (the 2015 protocol, as
``bench/atari_table.py``: argmax action, noop starts, whole games). Per arm the table gives the
evaluation, the mean score of the last 100 training games (the stochastic policy, from
``monitor.csv``), the policy entropy over the last 10% of the iterations (a policy that turned
deterministic before it plays well stays there), the mean KL of an accepted step, the iterations
and the hours. Writes ``bench/results/atari-settings-<game>.md`` (``-s<SEED>`` added for seeds
other than 0, then ``--tag``) and the curves (one CSV per arm) under ``bench/results/curves/``.

    python bench/atari_settings.py --env ALE/Breakout-v5 --steps 1000000 --seed 0 --jobs 2 \\
        --out runs/settings --arm defaults= --arm "batch20k=--batch-steps 20000" \\
        --arm "kl0.002=--max-kl 0.002" --arm "damping0.001=--damping 0.001"

One seed per arm and 1M steps (45-60 minutes per arm in one process on this machine): a
difference of a few points on Breakout is within one seed's noise, a policy whose entropy
collapsed while its score stayed at random play's is not.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.atari_table import game_of, run_row  # noqa: E402
from bench.common import RESULTS, machine, progress_rows, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402


def parse_arm(text: str) -> tuple[str, list[str]]:
    name, sep, flags = text.partition("=")
    if not sep or not name or any(c in name for c in "/ "):
        raise SystemExit(f"--arm {text!r}: expected NAME=FLAGS with a name of letters, digits, '.', '-' or '_'")
    return name, shlex.split(flags)


def finished(run_dir: str, steps: int) -> bool:
    """True when ``run_dir`` holds a run that reached ``steps`` env steps."""
    if not os.path.exists(os.path.join(run_dir, "progress.csv")):
        return False
    rows = progress_rows(run_dir)
    return bool(rows) and int(float(rows[-1]["env_steps"])) >= steps


def train(arms, args) -> None:
    """Train the arms that have no finished run, ``--jobs`` at a time."""
    todo = [(name, flags) for name, flags in arms if not finished(os.path.join(args.out, name), args.steps)]
    running: list[tuple[str, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < args.jobs:
            name, flags = todo.pop(0)
            run_dir = os.path.join(args.out, name)
            if os.path.exists(run_dir):
                raise SystemExit(f"{run_dir} holds an unfinished run: resume it (run.py --resume {run_dir}) or remove it")
            cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--env", args.env, "--steps", str(args.steps),
                   "--seed", str(args.seed), "--quiet", "--out", run_dir] + flags
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[1:])}", flush=True)
            running.append((name, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)))
        time.sleep(5)
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                if proc.returncode != 0:
                    raise SystemExit(f"arm {name} failed (exit {proc.returncode}); see {os.path.join(args.out, name)}")
                print(f"[{time.strftime('%H:%M:%S')}] {name}: done", flush=True)


def summary(name: str, flags: list[str], run_dir: str, episodes: int) -> dict:
    rows = progress_rows(run_dir)
    tail = rows[-max(1, len(rows) // 10):]
    accepted = [float(r["kl"]) for r in rows if r["accepted"] == "1"]
    r = run_row(run_dir, episodes)
    r.update(arm=name, flags=" ".join(flags) or "(none)", rows=rows, entropy0=float(rows[0]["entropy"]),
             entropy=float(np.mean([float(x["entropy"]) for x in tail])),
             kl=float(np.mean(accepted)) if accepted else float("nan"),
             accepted=len(accepted), curve=[(int(float(x["env_steps"])), x["ep_return_mean"], x["entropy"], x["kl"])
                                            for x in rows])
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="ALE/Breakout-v5")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arm", action="append", required=True, help="NAME=FLAGS (repeat; 'defaults=' for none)")
    p.add_argument("--out", default="runs/atari-settings", help="parent of the arms' run directories")
    p.add_argument("--jobs", type=int, default=1, help="arms trained at a time (one process each)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--note", default="", help="how these runs were made (commit, machine sharing)")
    p.add_argument("--tag", default="", help="suffix of the results file's name, so that a comparison of "
                   "other arms on the same game and seed does not replace an earlier table (e.g. -ent)")
    args = p.parse_args()
    game = game_of(args.env)
    if game is None:
        raise SystemExit(f"{args.env} is not a game of the paper's Table 1")
    arms = [parse_arm(a) for a in args.arm]
    train(arms, args)

    results = []
    for name, flags in arms:
        results.append(summary(name, flags, os.path.join(args.out, name), args.episodes))
        r = results[-1]
        print(f"{name}: {r['ret']:.1f} ± {r['std']:.1f}, last 100 games {r['train100']}, entropy {r['entropy']:.2f}",
              flush=True)
    slug = args.env.replace("/", "_")
    os.makedirs(os.path.join(RESULTS, "curves"), exist_ok=True)
    for r in results:
        with open(os.path.join(RESULTS, "curves", f"{slug}-settings-{r['arm']}-s{args.seed}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["env_steps", "ep_return_mean", "entropy", "kl"])
            w.writerows(r["curve"])
    arm_flags = " ".join(shlex.quote(a) for a in (f"--arm={a}" for a in args.arm))
    lines = [f"# Atari settings, {game} ({args.env}): {args.steps:,} steps, seed {args.seed}", "",
             f"{machine()}. Command: `python bench/atari_settings.py --env {args.env} --steps {args.steps} "
             f"--seed {args.seed} --jobs {args.jobs} --out {args.out}{f' --tag={args.tag}' if args.tag else ''} "
             f"{arm_flags}`. {args.note}", "",
             f"Evaluation: the last checkpoint, {args.episodes} episodes of the 2015 protocol (argmax action, noop "
             "starts, whole games). Entropy: the policy's mean entropy over the last 10% of the iterations "
             f"(at the first iteration: {results[0]['entropy0']:.2f}, near uniform play). KL: mean over the "
             "accepted steps.", "",
             "| arm | flags over the Atari defaults | evaluation | last 100 training games | entropy at the end | "
             "KL per step | iterations (accepted) | hours |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['arm']} | `{r['flags']}` | {r['ret']:.1f} ± {r['std']:.1f} | {r['train100'] or '-'} | "
                     f"{r['entropy']:.2f} | {r['kl']:.4f} | {r['iterations']} ({r['accepted']}) | {r['hours']:.2f} |")
    lines += ["", f"Curves: `bench/results/curves/{slug}-settings-<arm>-s{args.seed}.csv` (env steps, mean training "
              "return of the episodes that ended in the iteration, entropy, KL)."]
    game_name = slug.split('_')[-1].split('-')[0].lower()
    write_result(f"atari-settings-{game_name}{f'-s{args.seed}' if args.seed else ''}{args.tag}.md", lines)


if __name__ == "__main__":
    main()
