"""Run directories: config.json, progress.csv, monitor.csv, versions.json, atomically written
checkpoints, and a lock.

Every iteration appends one synced row to ``progress.csv``, then replaces ``checkpoint.npz``
(written to a temporary file, then ``os.replace``d), so an interrupted run loses at most the
iteration in progress and ``--resume`` continues from the last completed one. ``monitor.csv``
has one row per finished training episode, in the format of the Monitor of OpenAI baselines and
Stable-Baselines3 (their plotters and the RL-zoo's read it). ``versions.json`` lists what ran:
one entry for the start and one for each resume (:mod:`trpo_np.versions`). A process that
trains in a directory holds an exclusive ``flock`` on its ``.lock`` file (:class:`RunLock`) for
the whole run: a second run or resume of the same directory is refused, and since the kernel
drops the lock when a process ends, however it ends, a crashed run never leaves it in the way.
"""

from __future__ import annotations

import csv
import fcntl
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


LOCK = ".lock"
RUN_FILES = {"config.json", "progress.csv", "checkpoint.npz", "monitor.csv", "versions.json", LOCK}


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock``, held by the one process that trains in
    ``run_dir`` (rank 0 of an MPI run) until :meth:`release` or its end. The holder's pid is
    written into the file and cleared on release: a pid found by the next holder means that the
    previous process ended without releasing (killed or crashed); ``stale_pid`` says which."""

    def __init__(self, run_dir: str):
        path = os.path.join(run_dir, LOCK)
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"cannot write in the run directory {run_dir!r}: {e.strerror}") from e
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise RunError(f"run directory {run_dir!r} is in use by another process (pid {holder}); "
                           "wait for it to end, or choose another --out") from None
        self.stale_pid = os.read(self.fd, 32).decode(errors="replace").strip() or None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def save_checkpoint(path: str, arrays: dict, meta: dict) -> None:
    """Write arrays + JSON metadata to ``path`` atomically; on any failure (a full disk, a
    signal) the temporary file is removed and ``path`` is left as it was."""
    tmp = path + ".tmp.npz"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, OSError):
            raise RunError(f"could not write the checkpoint {path!r}: {e.strerror or e}; the previous "
                           "checkpoint is kept") from e
        raise


def checkpoint_path(path: str) -> str:
    """A run directory's checkpoint.npz, or ``path`` itself when it is not a directory."""
    return os.path.join(path, "checkpoint.npz") if os.path.isdir(path) else path


def load_checkpoint(path: str):
    """-> (arrays dict, meta dict); a clear error for a missing, foreign, truncated or corrupt file."""
    if not os.path.isfile(path):
        raise RunError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("__meta__")))
        if not isinstance(meta, dict):
            raise ValueError("no metadata")
    except Exception as e:  # BadZipFile, EOFError, zlib.error, ValueError, KeyError, ...
        raise RunError(f"{path!r} is not a trpo_np checkpoint or is damaged ({type(e).__name__}: {e})") from e
    return arrays, meta


class ProgressLog:
    """Appends rows to progress.csv (flushed and synced each row, before the checkpoint that
    includes it is written) and the iteration's finished episodes to monitor.csv, and prints one
    compact line. Resuming from the checkpoint of iteration k keeps the complete rows 1..k and
    drops the rest (rows of iterations after the checkpoint, a torn last row), rewriting the file
    atomically; monitor.csv keeps the episodes of those rows."""

    def __init__(self, run_dir: str, resume_iteration: int | None = None, quiet: bool = False,
                 env_id: str = ""):
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
        # monitor.csv: the episodes of the kept rows (each row counts its episodes)
        keep = sum(int(r["episodes"]) for r in rows) if resume_iteration else None
        self.monitor = MonitorLog(os.path.join(run_dir, "monitor.csv"), env_id, keep)
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS, extrasaction="ignore")

    def log(self, row: dict, episodes: list = ()) -> None:
        """One iteration: its row, and ``episodes``, the (return, length) of the training episodes
        that finished in it."""
        self.monitor.log(episodes)
        self.writer.writerow({k: _fmt(row.get(k, "")) for k in COLUMNS})
        self.file.flush()
        os.fsync(self.file.fileno())
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
    eta = f" eta {hms(r['eta'])}" if "eta" in r else ""
    return (f"it {r['iteration']:4d} | steps {r['env_steps']:>9,d} | {ret} | kl {r['kl']:.4f} "
            f"ent {r['entropy']:6.3f} bt {r['backtracks']}{ok} | ev {r['vf_explained_var']:5.2f} | "
            f"{r['steps_per_s']:6,.0f} sps | {hms(r['elapsed'])}{eta}{ev}")


def hms(seconds: float) -> str:
    """H:MM:SS (hours past 24 too)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def write_json(path: str, obj) -> None:
    """Write ``obj`` to ``path`` atomically (a temporary file, then ``os.replace``)."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        if isinstance(e, OSError):
            raise RunError(f"could not write {path!r}: {e.strerror or e}") from e
        raise


def default_run_dir(cfg: Config) -> str:
    env = cfg.env.replace("/", "_").replace(":", "_")  # ALE/Pong-v5, module:Env-v0
    return os.path.join("runs", f"{env}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def _never_started(run_dir: str) -> bool:
    """Whether ``run_dir`` holds only a run that ended before its first checkpoint."""
    left = set(os.listdir(run_dir))
    if not left <= RUN_FILES - {"checkpoint.npz"}:
        return False
    try:
        return "config.json" not in left or load_config(run_dir) is not None
    except RunError:
        return False  # someone else's config.json


def create_run_dir(run_dir: str, cfg: Config) -> RunLock:
    """A new run directory with its config.json, locked for this process; refuses a non-empty one
    (except one whose run ended before its first checkpoint: it starts again)."""
    def check():
        if os.path.isdir(run_dir) and not _never_started(run_dir):
            raise RunError(f"output directory {run_dir!r} exists and is not empty; use --resume {run_dir} to "
                           "continue that run, or choose another --out")
    check()  # before anything is written into a directory that is not ours
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create the run directory {run_dir!r}: {e.strerror or e}") from e
    lock = RunLock(run_dir)
    try:
        check()  # again, now that no other process can be writing here
        write_json(os.path.join(run_dir, "config.json"), cfg.to_json())
        record_versions(run_dir, 0)
    except BaseException:
        lock.release()
        raise
    return lock


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
    try:
        with open(path) as f:
            return Config.from_json(json.load(f))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise RunError(f"{path!r} is damaged and cannot be read ({type(e).__name__}: {e})") from e
