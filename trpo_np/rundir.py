"""Run directories: config.json, progress.csv, monitor.csv, versions.json and atomically
written checkpoints.

Every iteration appends one flushed row to ``progress.csv`` and replaces ``checkpoint.npz``
(written to a temporary file, then ``os.replace``d), so an interrupted run loses at most the
iteration in progress and ``--resume`` continues from the last completed one. ``monitor.csv``
has one row per finished training episode, in the format of the Monitor of OpenAI baselines and
Stable-Baselines3 (their plotters and the RL-zoo's read it). ``versions.json`` lists what ran:
one entry for the start and one for each resume (:mod:`trpo_np.versions`).
"""

from __future__ import annotations

import csv
import json
import os
import time

import numpy as np

from .config import Config

COLUMNS = ["iteration", "env_steps", "trunk_steps", "branch_steps", "episodes", "ep_return_mean",
           "ep_len_mean", "kl", "entropy", "surr_improve", "expected_improve", "backtracks", "accepted",
           "cg_residual", "vf_explained_var", "vf_loss", "eval_return_mean", "eval_return_std",
           "steps_per_s", "time_sample", "time_update", "time_comm", "eval_time", "elapsed"]
WALL_CLOCK = {"steps_per_s", "time_sample", "time_update", "time_comm", "eval_time", "elapsed"}


class RunError(ValueError):
    """A user-facing problem with a run directory or checkpoint."""


def save_checkpoint(path: str, arrays: dict, meta: dict) -> None:
    """Write arrays + JSON metadata to ``path`` atomically."""
    tmp = path + ".tmp.npz"
    with open(tmp, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def checkpoint_path(path: str) -> str:
    """A run directory's checkpoint.npz, or ``path`` itself when it is not a directory."""
    return os.path.join(path, "checkpoint.npz") if os.path.isdir(path) else path


def load_checkpoint(path: str):
    """-> (arrays dict, meta dict); a clear error for a missing or foreign file."""
    if not os.path.isfile(path):
        raise RunError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("__meta__")))
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"{path!r} is not a trpo_np checkpoint ({e})") from e
    return arrays, meta


class ProgressLog:
    """Appends rows to progress.csv (flushed each row) and the iteration's finished episodes to
    monitor.csv, and prints one compact line."""

    def __init__(self, run_dir: str, resume_iteration: int | None = None, quiet: bool = False,
                 env_id: str = ""):
        self.path = os.path.join(run_dir, "progress.csv")
        self.quiet = quiet
        rows = []
        if resume_iteration is not None and os.path.exists(self.path):
            with open(self.path, newline="") as f:  # keep rows up to the checkpoint's iteration
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= resume_iteration]
            self._write_header()
            for r in rows:
                self.writer.writerow(r)
        else:
            self._write_header()
        self.file.flush()
        # monitor.csv: the episodes of the kept rows (each row counts its episodes)
        keep = sum(int(r["episodes"]) for r in rows) if resume_iteration is not None else None
        self.monitor = MonitorLog(os.path.join(run_dir, "monitor.csv"), env_id, keep)

    def _write_header(self):
        self.file = open(self.path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS, extrasaction="ignore")
        self.writer.writeheader()

    def log(self, row: dict, episodes: list = ()) -> None:
        """One iteration: its row, and ``episodes``, the (return, length) of the training episodes
        that finished in it."""
        self.monitor.log(episodes)
        self.writer.writerow({k: _fmt(row.get(k, "")) for k in COLUMNS})
        self.file.flush()
        if not self.quiet:
            print(format_line(row), flush=True)

    def close(self):
        self.file.close()
        self.monitor.close()


class MonitorLog:
    """monitor.csv as the Monitor wrapper of OpenAI baselines and Stable-Baselines3 writes it: a
    header line ``#{"t_start": <unix time>, "env_id": "<id>"}``, then ``r,l,t`` per finished
    episode (raw return, length, seconds since t_start; here the time at the end of the iteration
    in which the episode finished). A resumed run keeps the first ``keep`` episodes and t_start."""

    def __init__(self, path: str, env_id: str, keep: int | None = None):
        rows, t_start = [], time.time()
        if keep is not None and os.path.exists(path):
            with open(path, newline="") as f:
                header = f.readline()
                rows = list(csv.DictReader(f))[:keep]
            t_start = json.loads(header[1:])["t_start"]
        self.t_start = t_start
        self.file = open(path, "w", newline="")
        self.file.write("#" + json.dumps({"t_start": t_start, "env_id": env_id}) + "\n")
        self.writer = csv.DictWriter(self.file, fieldnames=("r", "l", "t"))
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.file.flush()

    def log(self, episodes) -> None:
        t = round(time.time() - self.t_start, 6)
        self.writer.writerows({"r": round(r, 6), "l": int(l), "t": t} for r, l in episodes)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _fmt(v):
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.6g}"
    return v


def format_line(r: dict) -> str:
    ret = (f"ret {r['ep_return_mean']:9.1f} len {r['ep_len_mean']:6.0f} (n={r['episodes']})"
           if r["episodes"] else "ret         - len      - (n=0)")
    ev = f" | eval {r['eval_return_mean']:.1f}±{r['eval_return_std']:.1f}" if not np.isnan(r.get("eval_return_mean", np.nan)) else ""
    ok = "" if r["accepted"] else " REJECTED"
    eta = f" eta {hms(r['eta'])}" if "eta" in r else ""
    return (f"it {r['iteration']:4d} | steps {r['env_steps']:>9,d} | {ret} | kl {r['kl']:.4f} "
            f"ent {r['entropy']:6.3f} bt {r['backtracks']}{ok} | ev {r['vf_explained_var']:5.2f} | "
            f"{r['steps_per_s']:6,.0f} sps | {hms(r['elapsed'])}{eta}{ev}")


def hms(seconds: float) -> str:
    """H:MM:SS (hours past 24 too)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def default_run_dir(cfg: Config) -> str:
    env = cfg.env.replace("/", "_").replace(":", "_")  # ALE/Pong-v5, module:Env-v0
    return os.path.join("runs", f"{env}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def create_run_dir(run_dir: str, cfg: Config) -> None:
    """A new run directory with its config.json; refuses a non-empty one."""
    if os.path.exists(run_dir) and os.listdir(run_dir):
        raise RunError(f"output directory {run_dir!r} exists and is not empty; use --resume {run_dir} to "
                       "continue that run, or choose another --out")
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "config.json"), cfg.to_json())
    record_versions(run_dir, 0)


def record_versions(run_dir: str, iteration: int) -> None:
    """Add what runs now (trpo_np version, git commit, libraries) to versions.json, for the
    start (iteration 0) or a resume from ``iteration``."""
    from .versions import versions

    path = os.path.join(run_dir, "versions.json")
    entries = []
    if os.path.exists(path):
        with open(path) as f:
            entries = json.load(f)
    write_json(path, entries + [{"from_iteration": iteration, **versions()}])


def load_config(run_dir: str) -> Config:
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise RunError(f"{run_dir!r} is not a trpo_np run directory (no config.json)")
    with open(path) as f:
        return Config.from_json(json.load(f))
