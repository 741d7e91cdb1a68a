"""Action distributions: log-likelihood, entropy, KL, their derivatives, and the Fisher metric.

A distribution is described by its parameters ``p`` for a batch of states: a small named tuple
(:class:`GaussianParams`, :class:`CategoricalParams`) that knows which of its fields hold one row
per state and which are shared by all states (the Gaussian log-std). Each class gives closed forms for

- ``logp(p, a)`` and ``dlogp(p, a, w)``: log π(a|s) and the cotangent of ``Σ_n w_n log π_n``,
- ``kl(p_old, p)`` = KL(π_old ‖ π) per state, and ``dkl(p_old, p, w)``, its derivative in ``p``,
- ``entropy(p)`` and ``dentropy(p, w)``, the cotangent of ``Σ_n w_n H(π_n)`` (for the optional
  entropy bonus), ``sample_logp(p, rng)`` (and ``sampler``, the same for a batch of acting), ``mode(p)``,
- ``fisher(p, u) = M u``: the Hessian of ``kl(p_old, ·)`` at ``p = p_old`` times a tangent ``u``.
  This is the Fisher information of the distribution in its own parameters; with the network
  Jacobian J it gives the policy's Fisher matrix F = (1/N) Σ_n J_nᵀ M_n J_n (paper App. C).

Tangents ``u`` and cotangents (``dlogp``, ``dkl``, ``fisher``) have one row per state in every
field, the shared log-std too: a distribution works state by state, and the policy, which knows
that ℓ is one parameter shared by all states, sums its rows (:meth:`trpo_np.policy.Policy.vjp`).

Diagonal Gaussian, p = (mean m: (n, a), log-std ℓ: (a,)) with a state-independent log-std, as
in the paper's continuous-control policy (App. D): ``M [u_m; u_ℓ] = [u_m / σ²; 2 u_ℓ]``.
Categorical on logits z: (n, k), π = softmax(z): ``M u = π ⊙ u − π (πᵀ u)``.

References:
    Schulman et al. (2015), Trust Region Policy Optimization, arXiv 1502.05477, App. C.
    Martens (2020), New insights and perspectives on the natural gradient method, arXiv 1412.1193.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class GaussianParams(NamedTuple):
    """Diagonal Gaussian parameters of n states: per-state means, one log-std for all states."""

    mean_na: np.ndarray    # (n, a), one row per state
    logstd_a: np.ndarray   # (a,), shared

    def rows(self, sl) -> "GaussianParams":
        return GaussianParams(self.mean_na[sl], self.logstd_a)

    @staticmethod
    def join(parts: list) -> "GaussianParams":
        return GaussianParams(np.concatenate([p.mean_na for p in parts]), parts[0].logstd_a)


class CategoricalParams(NamedTuple):
    """Categorical parameters of n states: logits, one row per state."""

    logits_nk: np.ndarray  # (n, k)

    def rows(self, sl) -> "CategoricalParams":
        return CategoricalParams(self.logits_nk[sl])

    @staticmethod
    def join(parts: list) -> "CategoricalParams":
        return CategoricalParams(np.concatenate([p.logits_nk for p in parts]))


class DiagGaussian:
    """π(a|s) = N(a; m(s), diag(σ²)), σ = exp(ℓ), ℓ a free parameter vector of size ``dim``."""

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.net_outputs = self.dim   # the network outputs the mean
        self.shared_size = self.dim   # θ also holds ℓ, shared by all states (initialized to 0: σ = 1)

    def params(self, mean_na: np.ndarray, logstd_a: np.ndarray) -> GaussianParams:
        """Parameters from the network's output and θ's shared part (copied: p is a snapshot)."""
        return GaussianParams(mean_na, logstd_a.copy())

    def tangent(self, rmean_na: np.ndarray, rlogstd_a: np.ndarray) -> GaussianParams:
        """A tangent with one row per state: the shared ℓ's direction repeated for every state."""
        return GaussianParams(rmean_na, np.broadcast_to(rlogstd_a, rmean_na.shape))

    def logp(self, p, a):
        m, logstd = p
        z = (a - m) * np.exp(-logstd)
        return -0.5 * np.sum(z * z, axis=1) - np.sum(logstd) - 0.5 * self.dim * math.log(2 * math.pi)

    def dlogp(self, p, a, w):
        """Cotangents (dm: (n, a), dℓ: (n, a)) of Σ_n w_n log π(a_n | s_n)."""
        m, logstd = p
        z = (a - m) * np.exp(-logstd)
        dm = w[:, None] * z * np.exp(-logstd)  # ∂/∂m = (a − m) / σ²
        return GaussianParams(dm, w[:, None] * (z * z - 1.0))  # ∂/∂ℓ = z² − 1

    def kl(self, p_old, p):
        """KL(N_old ‖ N) per state: Σ_i ℓ_i − ℓ_old,i + (σ_old² + (m_old − m)²) / (2σ²) − 1/2."""
        m0, l0 = p_old
        m1, l1 = p
        var1 = np.exp(2 * l1)
        return np.sum(l1 - l0 + (np.exp(2 * l0) + (m0 - m1) ** 2) / (2 * var1) - 0.5, axis=1)

    def dkl(self, p_old, p, w):
        """Cotangents of Σ_n w_n KL(p_old,n ‖ p_n) with respect to p."""
        m0, l0 = p_old
        m1, l1 = p
        inv_var1 = np.exp(-2 * l1)
        dm = w[:, None] * (m1 - m0) * inv_var1
        return GaussianParams(dm, w[:, None] * (1.0 - (np.exp(2 * l0) + (m0 - m1) ** 2) * inv_var1))

    def entropy(self, p):
        m, logstd = p
        h = np.sum(logstd) + 0.5 * self.dim * (1.0 + math.log(2 * math.pi))
        return np.full(m.shape[0], h, dtype=m.dtype)

    def dentropy(self, p, w):
        """Cotangents of Σ_n w_n H(π_n): H = Σ_i ℓ_i + const does not depend on the mean."""
        m, _ = p
        return GaussianParams(np.zeros_like(m), np.broadcast_to(w[:, None], m.shape).astype(m.dtype))

    def fisher(self, p, u):
        """M u at p: ``[u_m / σ²; 2 u_ℓ]`` with u_m, u_ℓ: (n, a). The ℓ block of M is 2I at every
        state, whatever the mean: so the log-std block of F (the mean over states) is exactly 2I."""
        _, logstd = p
        um, ul = u
        return GaussianParams(um * np.exp(-2 * logstd), 2.0 * ul)

    def noise(self, rng: np.random.Generator, shape: tuple) -> np.ndarray:
        """The random numbers of ``shape`` draws: standard normals ε, shape + (dim,)."""
        return rng.standard_normal(shape + (self.dim,))

    def from_noise(self, p, eps):
        """The actions a = m + σ ε for given noise (the vine method reuses ε across branches)."""
        m, logstd = p
        return m + np.exp(logstd) * eps.astype(m.dtype, copy=False)

    def sampler(self, logstd_a: np.ndarray):
        """``sample(m_na, noise) -> (a, log π(a))`` for the fixed log-std ``logstd_a``:
        a = m + σ ε and log π(a) = −½‖ε‖² − Σℓ − (a/2) log 2π, without recomputing (a − m)/σ.
        σ and the constant are computed here once (a sampler calls it once per batch, during which
        θ is fixed); ``noise``: standard normals ε from :meth:`noise`."""
        sigma_a = np.exp(logstd_a)
        const = np.sum(logstd_a) + 0.5 * self.dim * math.log(2 * math.pi)

        def sample(m_na, noise):
            eps = noise.astype(m_na.dtype, copy=False)
            return m_na + sigma_a * eps, -0.5 * np.add.reduce(eps * eps, axis=1) - const  # np.sum without its wrapper
        return sample

    def sample_logp(self, p, rng: np.random.Generator | None, noise: np.ndarray | None = None):
        """Actions and their log-probabilities (:meth:`sampler`); ε is drawn from ``rng`` unless
        given as ``noise`` (drawn beforehand by :meth:`noise`)."""
        m, logstd = p
        return self.sampler(logstd)(m, self.noise(rng, (m.shape[0],)) if noise is None else noise)

    def mode(self, p):
        return p[0]


class Categorical:
    """π(a|s) = softmax(z(s))_a over ``n`` actions; parameters p = (logits z: (n, k),)."""

    shared_size = 0  # no parameters beyond the network's

    def __init__(self, n: int):
        self.n = int(n)
        self.net_outputs = self.n  # the network outputs the logits

    def params(self, logits_nk: np.ndarray, shared: np.ndarray) -> CategoricalParams:
        return CategoricalParams(logits_nk)

    def tangent(self, rlogits_nk: np.ndarray, rshared: np.ndarray) -> CategoricalParams:
        return CategoricalParams(rlogits_nk)

    @staticmethod
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def probs(self, p):
        return np.exp(self.log_softmax(p[0]))

    def logp(self, p, a):
        return np.take_along_axis(self.log_softmax(p[0]), a.reshape(-1, 1).astype(np.intp), axis=1)[:, 0]

    def dlogp(self, p, a, w):
        """∂ log π_a / ∂z = onehot(a) − π, weighted by w_n."""
        d = -self.probs(p)
        d[np.arange(d.shape[0]), a.astype(np.intp)] += 1.0
        return CategoricalParams(w[:, None] * d)

    def kl(self, p_old, p):
        lp0, lp1 = self.log_softmax(p_old[0]), self.log_softmax(p[0])
        return np.sum(np.exp(lp0) * (lp0 - lp1), axis=1)

    def dkl(self, p_old, p, w):
        """∂/∂z KL(π_old ‖ softmax(z)) = π − π_old."""
        return CategoricalParams(w[:, None] * (self.probs(p) - self.probs(p_old)))

    def entropy(self, p):
        lp = self.log_softmax(p[0])
        return -np.sum(np.exp(lp) * lp, axis=1)

    def dentropy(self, p, w):
        """∂/∂z_j of H = −Σ_k π_k log π_k is −π_j (log π_j + H), weighted by w_n."""
        lp = self.log_softmax(p[0])
        pi = np.exp(lp)
        h = -np.sum(pi * lp, axis=1, keepdims=True)
        return CategoricalParams(-w[:, None] * pi * (lp + h))

    def fisher(self, p, u):
        """M u = π ⊙ u − π (πᵀ u): the Hessian of the KL in the logits."""
        pi = self.probs(p)
        (uz,) = u
        return CategoricalParams(pi * uz - pi * np.sum(pi * uz, axis=1, keepdims=True))

    def noise(self, rng: np.random.Generator, shape: tuple) -> np.ndarray:
        """The random numbers of ``shape`` draws: uniforms u in [0, 1)."""
        return rng.random(shape)

    def from_noise(self, p, u, lp=None):
        """Inverse CDF: the first action whose cumulative probability exceeds u (vectorized)."""
        cdf = np.cumsum(np.exp(self.log_softmax(p[0]) if lp is None else lp), axis=1)
        return np.minimum((u.reshape(-1, 1) * cdf[:, -1:] > cdf).sum(axis=1), self.n - 1)

    def sampler(self, shared: np.ndarray):
        """``sample(z_nk, noise) -> (a, log π(a))`` (:meth:`sample_logp`); a categorical policy has
        no parameters shared by all states to compute once."""
        return lambda z_nk, noise: self.sample_logp(CategoricalParams(z_nk), None, noise)

    def sample_logp(self, p, rng: np.random.Generator | None, noise: np.ndarray | None = None):
        """Inverse-CDF sampling and the log-probabilities of the draws (log-softmax computed once);
        the uniforms are drawn from ``rng`` unless given as ``noise``."""
        lp = self.log_softmax(p[0])
        a = self.from_noise(p, self.noise(rng, (lp.shape[0],)) if noise is None else noise, lp)
        return a, lp[np.arange(len(a)), a]

    def mode(self, p):
        return np.argmax(p[0], axis=1)
