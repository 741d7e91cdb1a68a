"""Learning curves: evaluation return and training episode return against env steps, for one run
or many, into a PNG (``python -m trpo_np plot RUN... --out curves.png``).

A run is a run directory (its progress.csv, named by its config.json as "ENV METHOD") or a CSV
file with the columns ``env_steps``, ``eval_return_mean`` and optionally ``ep_return_mean``
(progress.csv, or bench/results/curves/*.csv, named by its file name without ``-sSEED``). Runs
of the same name (the seeds of one env and method) are drawn as their mean ± one standard
deviation across runs, on the env steps that all of them reached.

Needs matplotlib (``pip install "trpo_np[plot]"``); it is imported only to draw.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass

import numpy as np


@dataclass
class Curve:
    """One run's curves: evaluation return at its evaluation steps, training return per iteration."""

    name: str              # runs of the same name are averaged
    eval_steps: np.ndarray
    eval_return: np.ndarray
    train_steps: np.ndarray
    train_return: np.ndarray


def read_curve(path: str) -> Curve:
    """A run directory or a progress-format CSV file (see the module docstring)."""
    csv_path = os.path.join(path, "progress.csv") if os.path.isdir(path) else path
    if not os.path.isfile(csv_path):
        raise ValueError(f"{path!r} is neither a run directory with a progress.csv nor a CSV file")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "env_steps" not in rows[0] or "eval_return_mean" not in rows[0]:
        raise ValueError(f"{csv_path!r} has no rows with env_steps and eval_return_mean columns")
    config = os.path.join(os.path.dirname(csv_path), "config.json")
    if os.path.isfile(config):
        with open(config) as f:
            cfg = json.load(f)
        name = f"{cfg['env']} {cfg.get('method', 'single')}"
    else:
        name = re.sub(r"-s\d+$", "", os.path.splitext(os.path.basename(csv_path))[0])

    def column(key):
        pairs = [(float(r["env_steps"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return (np.array([s for s, _ in pairs]), np.array([v for _, v in pairs])) if pairs else (np.zeros(0),) * 2

    return Curve(name, *column("eval_return_mean"), *column("ep_return_mean"))


def mean_std(runs: list[tuple[np.ndarray, np.ndarray]]):
    """(steps, mean, std) of several runs' (steps, values) on the first run's steps within the
    range that every run covers (linear interpolation between a run's own steps)."""
    runs = [(x, y) for x, y in runs if len(x)]
    if not runs:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    lo, hi = max(x[0] for x, _ in runs), min(x[-1] for x, _ in runs)
    grid = runs[0][0][(runs[0][0] >= lo) & (runs[0][0] <= hi)]
    y_rn = np.stack([np.interp(grid, x, y) for x, y in runs])
    return grid, y_rn.mean(axis=0), y_rn.std(axis=0)


def plot_runs(paths: list[str], out: str, title: str | None = None) -> str:
    """Draw the runs at ``paths`` (run directories or CSV files) into the PNG ``out``: evaluation
    return (left) and training episode return (right) against env steps, one line per name with
    a ± std band across its runs. Returns ``out``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise RuntimeError(f"plotting needs matplotlib ({e}); pip install matplotlib, or "
                           "pip install \"trpo_np[plot]\"") from e
    if not paths:
        raise ValueError("plot: no runs given")
    groups: dict[str, list[Curve]] = {}
    for p in paths:
        c = read_curve(p)
        groups.setdefault(c.name, []).append(c)

    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for (name, curves), color in zip(groups.items(), _colors()):
        label = f"{name} ({len(curves)} run{'s' if len(curves) > 1 else ''})"
        for ax, steps, values in [(axes[0], "eval_steps", "eval_return"), (axes[1], "train_steps", "train_return")]:
            x, mean, std = mean_std([(getattr(c, steps), getattr(c, values)) for c in curves])
            if not len(x):
                continue
            ax.plot(x, mean, color=color, label=label, lw=1.6)
            if len(curves) > 1:
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
    for ax, what in zip(axes, ["deterministic evaluation return", "training episode return"]):
        ax.set_xlabel("env steps")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
    several = any(len(curves) > 1 for curves in groups.values())
    fig.suptitle(title or ", ".join(groups) + (": mean ± std across runs" if several else ""))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _colors():
    while True:
        yield from ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray"]
