"""Shared pieces of the benchmark scripts: the machine description and the results files."""

from __future__ import annotations

import csv
import os
import platform
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")


def single_threaded_blas() -> None:
    """As run.py does: small matrices, so BLAS threads only contend. Call before importing numpy."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """'Measured <date> on N cores (CPU), OPENBLAS_CORETYPE=..., N BLAS threads'."""
    return (f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({cpu_model()}), "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}")


def cpu_steal() -> tuple[float, float]:
    """(CPU seconds the hypervisor has taken from this VM's CPUs so far, by /proc/stat's steal
    column; wall-clock now), for :func:`stolen_since`. NaN where the kernel does not report it."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()  # cpu user nice system idle iowait irq softirq steal ...
        return int(fields[8]) / os.sysconf("SC_CLK_TCK"), time.perf_counter()
    except (OSError, IndexError, ValueError):
        return float("nan"), time.perf_counter()


def stolen_since(start: tuple[float, float]) -> float:
    """The share of all CPUs' time since ``start`` (from :func:`cpu_steal`) that the hypervisor
    took: time in which a busy process of this VM did not run."""
    stolen, now = cpu_steal()
    return (stolen - start[0]) / ((now - start[1]) * (os.cpu_count() or 1))


def progress_rows(run_dir: str) -> list[dict]:
    """The rows of ``<run_dir>/progress.csv`` (values as strings)."""
    with open(os.path.join(run_dir, "progress.csv"), newline="") as f:
        return list(csv.DictReader(f))


CURVE_FIELDS = ("env_steps", "eval_return_mean", "ep_return_mean")


def write_curve(run_dir: str, name: str, results: str = RESULTS) -> str:
    """Write a run's learning curve, <results>/curves/<name>.csv: env steps, periodic
    deterministic evaluation (empty between evaluations), mean return of the training episodes
    that ended in the iteration; cut from ``<run_dir>/progress.csv``."""
    path = os.path.join(results, "curves", f"{name}.csv")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CURVE_FIELDS)
        for r in progress_rows(run_dir):
            w.writerow([r[k] for k in CURVE_FIELDS])
    return path


def median_time(fn, repeats: int) -> float:
    """Seconds: the median of ``repeats`` timed calls of ``fn``, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(statistics.median(times))


def write_result(name: str, lines: list[str]) -> str:
    """Write bench/results/<name> (markdown) and print it."""
    text = "\n".join(lines) + "\n"
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name), "w") as f:
        f.write(text)
    print(text)
    return text


def random_actions(space, n: int, rng):
    """n uniform random actions of a Box or Discrete space, as one batch."""
    import numpy as np

    if hasattr(space, "n"):
        return rng.integers(0, int(space.n), size=n)
    return rng.uniform(space.low, space.high, size=(n,) + space.shape).astype(space.dtype)


def random_stepping(venv, steps: int, seed: int = 0) -> float:
    """Seconds to step a vector env ``steps`` env steps with uniform random actions."""
    import time

    import numpy as np

    rng = np.random.default_rng(seed)
    venv.reset(seed=seed)
    n = venv.num_envs
    acts = [random_actions(venv.single_action_space, n, rng) for _ in range(64)]  # drawn beforehand
    t0 = time.perf_counter()
    for i in range(-(-steps // n)):
        venv.step(acts[i % 64])
    return time.perf_counter() - t0
