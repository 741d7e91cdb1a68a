"""trpo_np: Trust Region Policy Optimization (Schulman et al., 2015) in plain NumPy.

The Python API (:mod:`trpo_np.api`)::

    import trpo_np
    run = trpo_np.train("CartPole-v1", steps=50_000, seed=0, out="runs/cartpole")
    agent = trpo_np.load("runs/cartpole")          # a run directory or a checkpoint.npz
    action = agent.predict(obs)                     # one raw observation (or a batch)

The command line: ``python -m trpo_np train|eval|plot`` (:mod:`trpo_np.cli`).

BLAS threads: importing trpo_np before numpy sets OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and
MKL_NUM_THREADS to 1 where they are not set. The networks are small (64-unit layers, batches of
a few states while sampling): threaded BLAS costs more in synchronization than it gains (measured
in the README). To opt out, set the variables yourself before importing trpo_np (or numpy).
"""

import os
import sys

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (dynamic version)

_BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# numpy reads these when it is first imported; later they change nothing (api.train warns then).
BLAS_SET_TOO_LATE = "numpy" in sys.modules and not any(v in os.environ for v in _BLAS_VARS)
if "numpy" not in sys.modules:
    for _var in _BLAS_VARS:
        os.environ.setdefault(_var, "1")

# The API. Imported here, not on first use: the submodule trpo_np.train (the training loop) would
# otherwise shadow the function trpo_np.train once anything imports it.
from .api import Agent, Run, load, train  # noqa: E402
from .config import Config  # noqa: E402
from .plot import plot_runs  # noqa: E402  (matplotlib is imported when a plot is drawn)

__all__ = ["__version__", "train", "load", "Agent", "Run", "Config", "plot_runs"]
