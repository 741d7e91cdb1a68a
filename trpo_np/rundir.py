"""Run directories: config.json, progress.csv and atomically written checkpoints.

Every iteration appends one flushed row to ``progress.csv`` and replaces ``checkpoint.npz``
(written to a temporary file, then ``os.replace``d), so an interrupted run loses at most the
iteration in progress and ``--resume`` continues from the last completed one.
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
    """Appends rows to progress.csv (flushed and synced each row, before the checkpoint that
    includes it is written) and prints one compact line. Resuming from the checkpoint of
    iteration k keeps the complete rows 1..k and drops the rest (rows of iterations after the
    checkpoint, a torn last row), rewriting the file atomically."""

    def __init__(self, run_dir: str, resume_iteration: int | None = None, quiet: bool = False):
        self.path = os.path.join(run_dir, "progress.csv")
        self.quiet = quiet
        rows = read_progress(self.path, resume_iteration) if resume_iteration else []
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, self.path)
        except BaseException:
            _remove(tmp)
            raise
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS, extrasaction="ignore")

    def log(self, row: dict) -> None:
        self.writer.writerow({k: _fmt(row.get(k, "")) for k in COLUMNS})
        self.file.flush()
        os.fsync(self.file.fileno())
        if not self.quiet:
            print(format_line(row), flush=True)

    def close(self):
        self.file.close()


def read_progress(path: str, last_iteration: int) -> list[dict]:
    """The complete rows of progress.csv with iterations 1..``last_iteration``: a last line
    without its newline (a torn write) and rows with missing or extra fields are dropped."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # torn last row
    rows = []
    for r in csv.DictReader(lines):
        if None in r or None in r.values() or not r["iteration"].isdigit():
            continue
        if int(r["iteration"]) == len(rows) + 1 <= last_iteration:
            rows.append(r)
    return rows


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _fmt(v):
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.6g}"
    return v


def format_line(r: dict) -> str:
    ret = (f"ret {r['ep_return_mean']:9.1f} len {r['ep_len_mean']:6.0f} (n={r['episodes']})"
           if r["episodes"] else "ret         - len      - (n=0)")
    ev = f" | eval {r['eval_return_mean']:.1f}±{r['eval_return_std']:.1f}" if not np.isnan(r.get("eval_return_mean", np.nan)) else ""
    ok = "" if r["accepted"] else " REJECTED"
    return (f"it {r['iteration']:4d} | steps {r['env_steps']:>9,d} | {ret} | kl {r['kl']:.4f} "
            f"ent {r['entropy']:6.3f} bt {r['backtracks']}{ok} | ev {r['vf_explained_var']:5.2f} | "
            f"{r['steps_per_s']:6,.0f} sps | {time.strftime('%H:%M:%S', time.gmtime(r['elapsed']))}{ev}")


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def default_run_dir(cfg: Config) -> str:
    return os.path.join("runs", f"{cfg.env.replace('/', '_')}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def create_run_dir(run_dir: str, cfg: Config) -> None:
    """A new run directory with its config.json; refuses a non-empty one."""
    if os.path.exists(run_dir) and os.listdir(run_dir):
        raise RunError(f"output directory {run_dir!r} exists and is not empty; use --resume {run_dir} to "
                       "continue that run, or choose another --out")
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "config.json"), cfg.to_json())


def load_config(run_dir: str) -> Config:
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise RunError(f"{run_dir!r} is not a trpo_np run directory (no config.json)")
    with open(path) as f:
        return Config.from_json(json.load(f))
