"""Stochastic policies π_θ(a|s): a network for the distribution parameters plus a distribution.

The parameter vector θ is one flat array: the network's parameters, then (Gaussian only) the
state-independent log-std ℓ. Its derivatives are assembled from the network's two passes:

- gradient (reverse mode): ``∇_θ Φ = Jᵀ (∂Φ/∂p)`` with ``J = ∂p/∂θ`` (one backward pass);
- Fisher-vector product (forward-over-reverse, paper App. C):
  ``F v = (1/N) Σ_n J_nᵀ M_n J_n v`` — one jvp pass for ``J v``, the closed-form metric ``M`` of
  the distribution, one backward pass for ``Jᵀ``. F is never formed; it is the Hessian of the
  mean KL at θ_old, where the term with second derivatives of the network vanishes.

:class:`TRPOBatch` binds a policy to a batch at θ_old and gives the three functions the TRPO
step needs: the surrogate and its gradient, ``F v``, and ``(surrogate, mean KL)`` at a trial θ.

References:
    Schulman et al. (2015), Trust Region Policy Optimization, arXiv 1502.05477, eq. (14), App. C.
    Schraudolph (2002), Fast curvature matrix-vector products.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .distributions import Categorical, DiagGaussian
from .nn import Sequential, ShapeError


class Policy:
    """π_θ(a|s). ``obs_scale`` multiplies observations after casting (1/255 for uint8 frames)."""

    def __init__(self, net: Sequential, dist: DiagGaussian | Categorical, obs_scale: float = 1.0):
        self.net, self.dist, self.obs_scale = net, dist, obs_scale
        self.dtype = net.dtype
        self.obs_shape = net.in_shape
        out = dist.dim if isinstance(dist, DiagGaussian) else dist.n
        if net.out_shape != (out,):
            raise ShapeError(f"policy network outputs {net.out_shape}, the distribution needs ({out},)")
        extra = dist.dim if isinstance(dist, DiagGaussian) else 0  # log-std ℓ, initialised to 0 (σ = 1)
        self.size = net.size + extra
        theta = np.zeros(self.size, dtype=self.dtype)
        theta[:net.size] = net.theta
        self.theta = theta
        net.bind(theta[:net.size])
        self.logstd = theta[net.size:] if extra else None

    # -- observations -------------------------------------------------------------------------
    def preprocess(self, obs: np.ndarray) -> np.ndarray:
        """Validate a batch of observations (n,) + obs_shape and cast it to the policy dtype."""
        obs = np.asarray(obs)
        if obs.shape[1:] != self.obs_shape or obs.ndim != len(self.obs_shape) + 1:
            raise ShapeError(f"policy: observations have shape {obs.shape}, expected (batch,) + {self.obs_shape}")
        if obs.dtype.kind not in "fiub":
            raise ShapeError(f"policy: observations have dtype {obs.dtype}, expected a numeric dtype")
        if obs.dtype.kind == "f" and not np.isfinite(obs).all():
            bad = np.argwhere(~np.isfinite(obs.reshape(len(obs), -1)))[0]
            raise ValueError(f"policy: observation {bad[0]} of the batch has a non-finite value "
                             f"(NaN or inf) at feature {bad[1]}; check the environment")
        x = obs.astype(self.dtype, copy=False)
        return x * self.dtype.type(self.obs_scale) if self.obs_scale != 1.0 else x

    # -- distribution parameters and their derivatives ----------------------------------------
    def params(self, x: np.ndarray):
        """Preprocessed observations -> (distribution parameters p, network caches)."""
        y, caches = self.net.forward(x)
        return ((y, self.logstd.copy()) if self.logstd is not None else (y,)), caches  # p is a snapshot

    def vjp(self, caches, dp, out: np.ndarray | None = None) -> np.ndarray:
        """Flat ∇_θ from cotangents ``dp`` of the distribution parameters (Jᵀ dp)."""
        g = np.zeros(self.size, dtype=self.dtype) if out is None else out
        self.net.backward(dp[0].astype(self.dtype, copy=False), caches, out=g[:self.net.size])
        if self.logstd is not None:
            dl = dp[1]
            g[self.net.size:] = dl.sum(axis=0) if dl.ndim == 2 else dl
        return g

    def jvp(self, caches, v: np.ndarray, n: int):
        """Tangents of the distribution parameters along θ-direction v (J v), per state."""
        ry = self.net.jvp(v[:self.net.size], caches)
        if self.logstd is None:
            return (ry,)
        return ry, np.broadcast_to(v[self.net.size:], (n, self.logstd.size))

    # -- acting ---------------------------------------------------------------------------------
    def act(self, obs: np.ndarray, rng: np.random.Generator | None, deterministic: bool = False,
            noise: np.ndarray | None = None):
        """Actions and their log-probabilities for a batch of observations; the random numbers
        come from ``rng`` or, drawn beforehand with ``dist.noise``, from ``noise``."""
        p, _ = self.params(self.preprocess(obs))
        if deterministic:
            a = self.dist.mode(p)
            return a, self.dist.logp(p, a)
        return self.dist.sample_logp(p, rng, noise)

    def logp(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        p, _ = self.params(self.preprocess(obs))
        return self.dist.logp(p, act)


def single_path_objective(logp_old: np.ndarray, adv: np.ndarray):
    """Surrogate of eq. (14) with q = π_old: L(θ) = mean_n π_θ(a_n|s_n)/π_old(a_n|s_n) · A_n.

    Returns Φ(logp) -> (L, ∂L/∂logp)."""
    def objective(logp):
        ratio = np.exp(logp - logp_old)
        return np.mean(ratio * adv), ratio * adv / len(adv)
    return objective


def _concat(ps):
    """Join per-chunk distribution parameters: per-state arrays are concatenated, shared ones
    (the Gaussian log-std) are taken once."""
    return tuple(np.concatenate([p[i] for p in ps]) if ps[0][i].ndim >= 2 else ps[0][i]
                 for i in range(len(ps[0])))


def _slice(p, sl):
    return tuple(a[sl] if a.ndim >= 2 else a for a in p)


class TRPOBatch:
    """A policy bound to one batch at θ_old: the pieces of the TRPO step.

    obs, act: the (state, action) pairs of the surrogate; ``objective(logp) -> (L, ∂L/∂logp)``.
    kl_obs: the states over which the mean KL and F are taken (default: obs).
    fvp_fraction: use a random subset of kl_obs for F (paper App. C uses 10% for Atari).
    chunk: process at most this many states per network pass, so that memory stays bounded for
    large image batches; the Fisher states keep their forward caches (reused by every F v), the
    other passes recompute forward per chunk. Default: the whole batch in one pass.
    """

    def __init__(self, policy: Policy, obs, act, objective: Callable, kl_obs=None,
                 damping: float = 0.1, fvp_fraction: float = 1.0, rng: np.random.Generator | None = None,
                 chunk: int | None = None):
        self.policy, self.obs, self.act, self.objective, self.damping = policy, obs, act, objective, damping
        self.kl_obs = obs if kl_obs is None else kl_obs
        self.chunk = int(chunk) if chunk else max(len(obs), len(self.kl_obs), 1)
        self.theta_old = policy.theta.copy()
        # one forward pass at θ_old: log π_old(a|s) and the old distributions on the KL states
        self.p, self.caches = self._forward(obs, keep=True)
        self.logp_old = policy.dist.logp(self.p, act)
        self.p_old = self.p if kl_obs is None else self._forward(self.kl_obs)[0]
        # Fisher states: kl_obs or a random subset, with forward caches at θ_old per chunk
        n = len(self.kl_obs)
        if fvp_fraction < 1.0:
            if rng is None:
                raise ValueError("TRPOBatch: fvp_fraction < 1 needs an rng to choose the Fisher states")
            idx = np.sort(rng.choice(n, size=max(1, int(round(fvp_fraction * n))), replace=False))
            self.f_obs = self.kl_obs[idx]
        else:
            self.f_obs = self.kl_obs
        if self.f_obs is obs and self.caches is not None:
            self.f_p, self.f_chunks = self.p, [(slice(0, len(obs)), self.caches)]
        else:
            self.f_chunks = []
            ps = []
            for sl in self._slices(len(self.f_obs)):
                p, caches = policy.params(policy.preprocess(self.f_obs[sl]))
                ps.append(p)
                self.f_chunks.append((sl, caches))
            self.f_p = _concat(ps)

    def _slices(self, n):
        return [slice(i, min(i + self.chunk, n)) for i in range(0, n, self.chunk)]

    def _forward(self, obs, keep=False):
        """Distribution parameters at the current θ, chunk by chunk; the caches are returned
        only when ``keep`` and the batch is one chunk."""
        ps, caches = [], None
        for sl in self._slices(len(obs)):
            p, caches = self.policy.params(self.policy.preprocess(obs[sl]))
            ps.append(p)
        return _concat(ps), (caches if keep and len(ps) == 1 else None)

    def loss_and_grad(self):
        """L(θ_old) and g = ∇_θ L at θ_old (Jᵀ ∂L/∂p, one backward pass per chunk)."""
        pol = self.policy
        L, dlogp = self.objective(self.logp_old)
        g = np.zeros(pol.size, dtype=pol.dtype)
        for sl in self._slices(len(self.obs)):
            if self.caches is not None:
                p, caches = self.p, self.caches
            else:  # recompute this chunk's forward pass at θ_old
                p, caches = pol.params(pol.preprocess(self.obs[sl]))
            g += pol.vjp(caches, pol.dist.dlogp(p, self.act[sl], dlogp[sl]))
        return L, g

    def fvp(self, v: np.ndarray) -> np.ndarray:
        """(F + damping·I) v with F = (1/N) Σ_n J_nᵀ M_n J_n at θ_old (forward-over-reverse)."""
        pol = self.policy
        n = len(self.f_obs)
        out = self.damping * v
        for sl, caches in self.f_chunks:
            p = _slice(self.f_p, sl)
            u = pol.jvp(caches, v, sl.stop - sl.start)       # J v
            mu = pol.dist.fisher(p, u)                       # M J v
            out = out + pol.vjp(caches, tuple(m / n for m in mu))  # (1/N) Jᵀ M J v
        return out

    def evaluate(self, theta: np.ndarray):
        """Set θ, return (L(θ), mean KL(π_old ‖ π_θ), mean entropy) on this batch."""
        pol = self.policy
        pol.theta[:] = theta
        p, _ = self._forward(self.obs)
        L, _ = self.objective(pol.dist.logp(p, self.act))
        if self.kl_obs is not self.obs:
            p, _ = self._forward(self.kl_obs)
        kl = float(np.mean(pol.dist.kl(self.p_old, p)))  # D̄_KL(θ_old, θ), eq. (12)
        return float(L), kl, float(np.mean(pol.dist.entropy(p)))

    def mean_kl_grad(self, theta: np.ndarray) -> np.ndarray:
        """∇_θ of the mean KL(π_old ‖ π_θ) over the Fisher states (an oracle for tests of F v)."""
        pol = self.policy
        pol.theta[:] = theta
        g = np.zeros(pol.size, dtype=pol.dtype)
        n = len(self.f_obs)
        for sl, _ in self.f_chunks:
            p, caches = pol.params(pol.preprocess(self.f_obs[sl]))
            w = np.full(sl.stop - sl.start, 1.0 / n, dtype=pol.dtype)
            g += pol.vjp(caches, pol.dist.dkl(_slice(self.f_p, sl), p, w))
        return g
