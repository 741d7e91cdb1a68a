"""Observation normalization and reward scaling.

Observation normalization keeps running mean and variance of raw observations (Chan et al.'s
parallel update); the policy and value see ``clip((o − μ) / sqrt(σ² + ε), ±10)``. The statistics
are updated from each sampled batch *after* the update, so they are frozen while a batch is
collected and optimized, and saved with checkpoints; they take their first statistics from one
batch before the first update (:meth:`trpo_np.train.Trainer.start_normalizers`). Optional reward scaling divides rewards by
the running standard deviation of the discounted return (as in OpenAI baselines' VecNormalize).

References:
    Chan, Golub & LeVeque (1979), Updating formulae and a pairwise algorithm for computing
    sample variances.
"""

from __future__ import annotations

import numpy as np

from .envs import EnvError
from .parallel import Comm


class RunningMeanStd:
    """Running mean and variance over the leading axis of batches, for observations or returns."""

    def __init__(self, shape=(), clip: float = 10.0, eps: float = 1e-8):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 0.0
        self.clip, self.eps = clip, eps

    def update(self, x: np.ndarray, comm: Comm = Comm()) -> None:
        """Fold in the batch ``x`` of every rank (rank order): the statistics of all the data."""
        x = np.asarray(x, dtype=np.float64)
        moments = [(x.shape[0], x.mean(axis=0), x.var(axis=0))] if x.shape[0] else []
        for n, b_mean, b_var in comm.gather(moments):
            self._fold(n, b_mean, b_var)

    def _fold(self, n: int, b_mean: np.ndarray, b_var: np.ndarray) -> None:
        """Chan et al.'s update with a batch of n values of mean b_mean and variance b_var."""
        tot = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * n / tot
        self.var = (self.var * self.count + b_var * n + delta ** 2 * self.count * n / tot) / tot
        self.count = tot

    def normalizer(self, dtype=np.float32):
        """``normalize(x)`` with the statistics of now, 1/σ computed once: for the steps of a
        batch, during which the statistics are frozen."""
        mean, inv_std, c = self.mean, 1.0 / np.sqrt(self.var + self.eps), self.clip

        def normalize(x: np.ndarray) -> np.ndarray:
            z = x - mean
            z *= inv_std
            np.maximum(z, -c, out=z)  # np.clip(z, -c, c) without the overhead of its wrapper
            return np.minimum(z, c, out=z).astype(dtype, copy=False)
        return normalize

    def normalize(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        return self.normalizer(dtype)(x)

    def state(self, prefix: str) -> dict:
        return {f"{prefix}_mean": self.mean, f"{prefix}_var": self.var, f"{prefix}_count": np.array(self.count)}

    def load(self, d: dict, prefix: str) -> None:
        if d[f"{prefix}_mean"].shape != self.mean.shape:
            raise EnvError(f"normalizer {prefix}: checkpoint shape {d[f'{prefix}_mean'].shape} "
                           f"differs from {self.mean.shape}")
        self.mean, self.var = d[f"{prefix}_mean"].copy(), d[f"{prefix}_var"].copy()
        self.count = float(d[f"{prefix}_count"])


class RewardScaler:
    """Divide rewards by the standard deviation of the discounted return G_t = γ G_{t−1} + r_t
    (per env copy, reset at episode ends). Like the observation statistics, the scale is frozen
    while a batch is collected and updated from the batch's returns afterwards."""

    def __init__(self, num_envs: int, gamma: float):
        self.rms = RunningMeanStd(())
        self.ret = np.zeros(num_envs)
        self.gamma = gamma
        self.seen = []

    def scale(self) -> float:
        """The factor the rewards are multiplied by (frozen while a batch is collected)."""
        return float(1.0 / np.sqrt(self.rms.var + 1e-8))

    def __call__(self, rew_e: np.ndarray, done_e: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + rew_e
        self.seen.append(self.ret)
        self.ret = np.where(done_e, 0.0, self.ret)
        return rew_e / np.sqrt(self.rms.var + 1e-8)

    def update(self, comm: Comm = Comm()) -> None:
        """Fold the returns seen since the last update (on every rank) into the statistics."""
        self.rms.update(np.concatenate(self.seen) if self.seen else np.zeros(0), comm)
        self.seen = []
