#!/usr/bin/env python
"""The MuJoCo suite's summary: per env, the seeds' final deterministic evaluations (mean, std,
worst), the mean of the last 5 evaluations, the targets, and one figure of all the curves.

It trains nothing: it reads the learning curves that ``bench/learning.py`` wrote
(``bench/results/curves/<NAME>-s<SEED>.csv``; their last row holds the final 10-episode
evaluation), so that seeds measured by separate ``learning.py`` runs are summarized together.
``SUITE`` lists, per env, the target of the issue and the result names whose seeds it joins;
an env measured more than once (the same seeds again, at another commit or on another machine)
lists one group of names per measurement, and every run of every group enters its figures (no
measurement is chosen over another). The commands that produced them are in each
``bench/results/learning-<NAME>.md``. Writes

    bench/results/mujoco-suite.md    the table
    bench/results/mujoco-suite.png   evaluation return against env steps: each seed, mean ± std

Example:
    python bench/suite.py
"""

from __future__ import annotations

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from bench.common import RESULTS, write_result  # noqa: E402
from trpo_np.plot import mean_std, read_curve  # noqa: E402

# env: (targets at 1M steps with no flags, result names whose seeds are joined)
# Targets: mean of the final evaluations, worst seed, mean over seeds of the last 5 evaluations.
SUITE = {
    # twice on the 2-core machine: at 101ee20 and at fe93720 (the second beside the vine's rerun)
    "Hopper-v4": (dict(mean=3400, worst=2500), [["Hopper-v4-single-gamma0.995"], ["Hopper-v4-single-entry-rerun"]]),
    # twice: on the lent 16-core machine (at 4ad9526) and on the 2-core machine (at 06669eb); the two
    # differ from the first iterations in rounding only (another BLAS), seeds 1 and 2 not at all
    "Walker2d-v4": (dict(mean=4500, worst=3500, last5=4000),
                    [["Walker2d-v4-single-cg25vf20"], ["Walker2d-v4-single-entry-2core"]]),
    "HalfCheetah-v4": (dict(mean=3000), ["HalfCheetah-v4-single"]),
    "Swimmer-v4": (dict(mean=350), ["Swimmer-v4-single-ent0.01", "Swimmer-v4-single-ent0.01-s1to4"]),
    "Ant-v4": (dict(mean=3000), ["Ant-v4-single-kl0.02", "Ant-v4-single-kl0.02-s2to4"]),
}


def seed_curves(names: list[str], curves_dir: str) -> dict[int, str]:
    """{seed: curve file} over the result ``names`` (a seed found under two names is an error)."""
    found = {}
    for name in names:
        pattern = re.compile(re.escape(name) + r"-s(\d+)\.csv$")
        for file in sorted(os.listdir(curves_dir)):
            m = pattern.match(file)
            if m:
                seed = int(m.group(1))
                if seed in found:
                    raise SystemExit(f"seed {seed} appears twice: {found[seed]} and {file}")
                found[seed] = os.path.join(curves_dir, file)
    return dict(sorted(found.items()))


def seed_figures(path: str) -> dict:
    """Final evaluation (the last row) and the mean of the last 5 evaluations of one curve."""
    c = read_curve(path)
    return dict(final=float(c.eval_return[-1]), last5=float(np.mean(c.eval_return[-5:])),
                steps=int(c.eval_steps[-1]), curve=c)


def verdict(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return "met" if value >= target else f"missed by {target - value:,.0f}"


def draw(summary: dict, out: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(summary), 3.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(summary), squeeze=False)[0]
    for ax, (env, rows) in zip(axes, summary.items()):
        x, mean, std = mean_std([(r["curve"].eval_steps, r["curve"].eval_return) for r in rows.values()])
        for r in rows.values():  # each seed, thin, so that the worst one shows
            ax.plot(r["curve"].eval_steps, r["curve"].eval_return, color="tab:blue", lw=0.6, alpha=0.45)
        ax.plot(x, mean, color="tab:blue", lw=1.8)
        ax.fill_between(x, mean - std, mean + std, color="tab:blue", alpha=0.15, lw=0)
        seeds = len({seed for _, seed in rows})
        runs = f", {len(rows)} runs" if len(rows) > seeds else ""
        ax.set_title(f"{env} ({seeds} seed{'s' if seeds > 1 else ''}{runs})", fontsize=10)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("deterministic evaluation return")
    fig.tight_layout()
    fig.savefig(out, format="png")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=list(SUITE), choices=list(SUITE))
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args()
    curves_dir = os.path.join(RESULTS, "curves")

    summary = {}
    lines = ["# MuJoCo suite: single path, 1M env steps, `python run.py --env X` (no flags)", "",
             "Summary of the learning curves in `curves/` (`python bench/suite.py`); each seed's "
             "command, commit and timing are in the `learning-<name>.md` file of its result name. "
             "Final = the deterministic evaluation (10 episodes) after the last iteration; last 5 = "
             "the mean of the last 5 evaluations (every 50k steps, the final one included).", "",
             "| env | seeds | final: mean ± std | worst seed | last 5: mean | target (mean / worst / last 5) | verdict |",
             "|---|---|---|---|---|---|---|"]
    per_seed = ["", "| env | result names | per seed: final (last 5) |", "|---|---|---|"]
    for env in args.envs:
        targets, names = SUITE[env]
        groups = names if isinstance(names[0], list) else [names]  # one group per measurement
        rows = {(g, s): seed_figures(f) for g, group in enumerate(groups)
                for s, f in seed_curves(group, curves_dir).items()}  # every run of every measurement
        if not rows:
            lines.append(f"| {env} | none | not measured | | | | |")
            continue
        summary[env] = rows
        finals = np.array([r["final"] for r in rows.values()])
        last5 = float(np.mean([r["last5"] for r in rows.values()]))
        checks = [verdict(finals.mean(), targets.get("mean")), verdict(finals.min(), targets.get("worst")),
                  verdict(last5, targets.get("last5"))]
        target_text = " / ".join(f"{targets[k]:,}" if k in targets else "–" for k in ("mean", "worst", "last5"))
        verdict_text = "; ".join(f"{k} {v}" for k, v in zip(("mean", "worst", "last 5"), checks) if v)
        seeds = ", ".join(map(str, sorted({s for _, s in rows})))
        if len(groups) > 1:
            seeds += f", {len(groups)} measurements ({len(rows)} runs)"
        lines.append(f"| {env} | {seeds} | **{finals.mean():,.1f} ± {finals.std():,.1f}** | "
                     f"{finals.min():,.1f} | {last5:,.1f} | {target_text} | {verdict_text} |")
        for g, group in enumerate(groups):
            mine = {s: r for (gg, s), r in rows.items() if gg == g}
            fin = np.array([r["final"] for r in mine.values()])
            alone = (f" (alone: {fin.mean():,.1f} ± {fin.std():,.1f}, last 5 "
                     f"{np.mean([r['last5'] for r in mine.values()]):,.1f})") if len(groups) > 1 else ""
            per_seed.append(f"| {env} | {', '.join(group)}{alone} | "
                            + ", ".join(f"s{s}: {r['final']:,.1f} ({r['last5']:,.1f})" for s, r in mine.items()) + " |")
    lines += per_seed
    if summary and not args.no_plot:
        png = os.path.join(RESULTS, "mujoco-suite.png")
        draw(summary, png)
        lines += ["", "![evaluation return against env steps, mean ± std over seeds](mujoco-suite.png)"]
    write_result("mujoco-suite.md", lines)


if __name__ == "__main__":
    main()
