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
A sampler's batch says what to optimize as a :class:`Surrogate`: the (state, action) pairs, the
objective over their log-probabilities, and the states over which the KL is bounded.

References:
    Schulman et al. (2015), Trust Region Policy Optimization, arXiv 1502.05477, eq. (14), App. C.
    Schraudolph (2002), Fast curvature matrix-vector products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .distributions import Categorical, DiagGaussian
from .nn import Sequential, ShapeError
from .parallel import Comm


class Policy:
    """π_θ(a|s). ``obs_scale`` multiplies observations after casting (1/255 for uint8 frames).

    θ = [network parameters, the distribution's shared parameters (the Gaussian log-std ℓ)]."""

    def __init__(self, net: Sequential, dist: DiagGaussian | Categorical, obs_scale: float = 1.0):
        self.net, self.dist, self.obs_scale = net, dist, obs_scale
        self.dtype = net.dtype
        self.obs_shape = net.in_shape
        if net.out_shape != (dist.net_outputs,):
            raise ShapeError(f"policy network outputs {net.out_shape}, the distribution needs ({dist.net_outputs},)")
        self.size = net.size + dist.shared_size
        self.theta = np.zeros(self.size, dtype=self.dtype)  # ℓ starts at 0 (σ = 1)
        self.theta[:net.size] = net.theta
        net.bind(self.theta[:net.size])
        self.shared = self.theta[net.size:]  # view: empty for a categorical policy

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
        if self.obs_scale != 1.0:  # cast and scale in one pass
            return np.multiply(obs, self.dtype.type(self.obs_scale), dtype=self.dtype)
        return obs.astype(self.dtype, copy=False)

    # -- distribution parameters and their derivatives ----------------------------------------
    def params(self, x: np.ndarray, caches: bool = True):
        """Preprocessed observations -> (distribution parameters p, network caches); without
        ``caches`` (None in their place) the network's faster pass for values alone."""
        y, cache = self.net.forward(x) if caches else (self.net(x), None)
        return self.dist.params(y, self.shared), cache

    def vjp(self, caches, dp, out: np.ndarray | None = None) -> np.ndarray:
        """Flat ∇_θ = Jᵀ dp from per-state cotangents ``dp`` of the distribution parameters: the
        network's backward pass, and for the shared ℓ the sum of its rows over the states."""
        g = np.zeros(self.size, dtype=self.dtype) if out is None else out
        self.net.backward(dp[0].astype(self.dtype, copy=False), caches, out=g[:self.net.size])
        if self.dist.shared_size:
            g[self.net.size:] = dp[1].sum(axis=0)
        return g

    def jvp(self, caches, v: np.ndarray):
        """J v: per-state tangents of the distribution parameters along the θ-direction v."""
        return self.dist.tangent(self.net.jvp(v[:self.net.size], caches), v[self.net.size:])

    # -- acting ---------------------------------------------------------------------------------
    def actor(self):
        """π_θ at the current θ, for a sampler's steps (θ is fixed while a batch is collected):
        ``act(x, noise) -> (p, a, log π(a))`` for preprocessed observations ``x`` and noise from
        ``dist.noise``. What is the same at every step (θ's shared part, the Gaussian's σ) is
        computed once here; the same numbers as :meth:`params` and ``dist.sample_logp``."""
        shared = self.shared.copy()
        sample = self.dist.sampler(shared)

        def act(x, noise):
            y = self.net(x)
            return (self.dist.params(y, shared),) + sample(y, noise)
        return act

    def act(self, obs: np.ndarray, rng: np.random.Generator | None, deterministic: bool = False,
            noise: np.ndarray | None = None):
        """Actions and their log-probabilities for a batch of observations; the random numbers
        come from ``rng`` or, drawn beforehand with ``dist.noise``, from ``noise``."""
        p, _ = self.params(self.preprocess(obs), caches=False)
        if deterministic:
            a = self.dist.mode(p)
            return a, self.dist.logp(p, a)
        return self.dist.sample_logp(p, rng, noise)


def single_path_objective(logp_old_n: np.ndarray, adv_n: np.ndarray, n_total: int | None = None):
    """Surrogate of eq. (14) with q = π_old: L(θ) = (1/N) Σ_n π_θ(a_n|s_n)/π_old(a_n|s_n) · A_n,
    N = ``n_total`` (the states of all ranks; default: these).

    Returns Φ(logp_n) -> (this rank's part of L, ∂L/∂logp_n)."""
    n = len(adv_n) if n_total is None else n_total

    def objective(logp_n):
        ratio_n = np.exp(logp_n - logp_old_n)
        return np.sum(ratio_n * adv_n) / n, ratio_n * adv_n / n
    return objective


@dataclass
class Surrogate:
    """What one TRPO step optimizes (paper eq. 14): the objective ``objective(logp_n) ->
    (L, ∂L/∂logp_n)`` over log π_θ(act_n | obs_n), subject to the mean KL over ``kl_obs``.
    With several ranks each holds its part: L is the sum of the ranks' objectives."""

    obs: np.ndarray           # (n,) + obs_shape: the states of the surrogate's pairs
    act: np.ndarray           # (n,) + act_shape
    objective: Callable
    kl_obs: np.ndarray        # the states over which D̄_KL is bounded and F is taken
    kl_p_old: object = None   # π_old's parameters at kl_obs if the sampler kept them (else computed)


class TRPOBatch:
    """A policy bound to a :class:`Surrogate` at θ_old: the pieces of the TRPO step.

    fvp_fraction: F on a random subset of the KL states (paper App. C.1 suggests 10% of the data; this code's Atari entry uses 0.1).
    chunk: at most this many states per network pass, so that memory stays bounded for large
    image batches (default: all states in one pass). The Fisher states keep their forward caches
    at θ_old (every F v reuses them); the surrogate's gradient recomputes its forward pass.
    comm: the ranks that hold the other parts of the batch; L, g, F v and the line search's
    values are sums over them (:mod:`trpo_np.parallel`), so every rank takes the same step.
    ent_coef: c of an entropy bonus, optimized as L(θ) + c·H̄(θ) with H̄ the mean entropy of π_θ
    over the surrogate's states (not in the paper, whose objective is L alone: the default c = 0;
    OpenAI baselines' TRPO has the same option). The line search then asks this sum to improve.
    ``loss_and_grad`` and ``fvp`` are derivatives at θ_old: they raise if the policy's θ has
    been moved (by ``evaluate``) and not put back.
    """

    def __init__(self, policy: Policy, surrogate: Surrogate, damping: float = 0.1, fvp_fraction: float = 1.0,
                 rng: np.random.Generator | None = None, chunk: int | None = None, comm: Comm = Comm(),
                 ent_coef: float = 0.0):
        self.policy, self.damping, self.comm, self.ent_coef = policy, damping, comm, float(ent_coef)
        self.obs, self.act, self.objective = surrogate.obs, surrogate.act, surrogate.objective
        self.kl_obs = surrogate.kl_obs
        self.chunk = int(chunk) if chunk else max(len(self.obs), len(self.kl_obs), 1)
        self.theta_old = policy.theta.copy()
        # At θ_old: π_old on the KL states (from the sampler where it kept them) and log π_old(a|s).
        kept = surrogate.kl_p_old
        self.p_old = self._params(self.kl_obs) if kept is None else kept
        p_obs = self.p_old if self.kl_obs is self.obs else self._params(self.obs)
        self.logp_old = policy.dist.logp(p_obs, self.act)
        n = len(self.kl_obs)
        if fvp_fraction < 1.0:
            if rng is None:
                raise ValueError("TRPOBatch: fvp_fraction < 1 needs an rng to choose the Fisher states")
            idx = np.sort(rng.choice(n, size=min(n, max(1, int(round(fvp_fraction * n)))), replace=False))
            self.f_obs = self.kl_obs[idx]
        else:
            self.f_obs = self.kl_obs
        self.f_chunks = list(self._passes(self.f_obs))  # (slice, p_old, caches at θ_old) per chunk
        self.n_kl, self.n_f = int(comm.sum(len(self.kl_obs))), int(comm.sum(len(self.f_obs)))  # of all ranks
        if self.ent_coef:  # the bonus is a mean over the surrogate's states (of all ranks)
            self.n_obs = self.n_kl if self.kl_obs is self.obs else int(comm.sum(len(self.obs)))

    def _passes(self, obs, caches: bool = True):
        """(slice, distribution parameters, caches) per chunk of ``obs`` at the policy's θ (one
        empty pass for no states: a rank may hold none of the vine's rollout set)."""
        for i in range(0, max(len(obs), 1), self.chunk):
            sl = slice(i, min(i + self.chunk, len(obs)))
            p, cache = self.policy.params(self.policy.preprocess(obs[sl]), caches)
            yield sl, p, cache

    def _params(self, obs):
        parts = [p for _, p, _ in self._passes(obs, caches=False)]
        return type(parts[0]).join(parts)

    def _check_theta_old(self, what: str) -> None:
        if not np.array_equal(self.policy.theta, self.theta_old):
            raise RuntimeError(f"TRPOBatch.{what} is taken at θ_old, but the policy's θ was moved; "
                               "call evaluate(batch.theta_old) first")

    def loss_and_grad(self):
        """L(θ_old) and g = ∇_θ L at θ_old (Jᵀ ∂L/∂p, one backward pass per chunk)."""
        self._check_theta_old("loss_and_grad")
        pol = self.policy
        L, dlogp_n = self.objective(self.logp_old)
        c, h = self.ent_coef, 0.0
        g = np.zeros(pol.size, dtype=pol.dtype)
        for sl, p, caches in self._passes(self.obs):
            dp = pol.dist.dlogp(p, self.act[sl], dlogp_n[sl])
            if c:  # + c·H̄: its cotangent, c/N per state
                dh = pol.dist.dentropy(p, np.full(sl.stop - sl.start, c / self.n_obs, dtype=dlogp_n.dtype))
                dp = type(dp)(*(a + b for a, b in zip(dp, dh)))
                h += float(np.sum(pol.dist.entropy(p)))
            g += pol.vjp(caches, dp)
        if c:
            L = L + c * h / self.n_obs
        return self.comm.sum(L), self.comm.sum(g)

    def fvp(self, v: np.ndarray) -> np.ndarray:
        """(F + damping·I) v with F = (1/N) Σ_n J_nᵀ M_n J_n at θ_old (forward-over-reverse, App. C)."""
        self._check_theta_old("fvp")
        pol = self.policy
        n = self.n_f
        jmj = 0.0
        for _, p, caches in self.f_chunks:
            Mu = pol.dist.fisher(p, pol.jvp(caches, v))            # M J v
            jmj = jmj + pol.vjp(caches, type(Mu)(*(m / n for m in Mu)))  # (1/N) Jᵀ M J v
        return self.damping * v + self.comm.sum(jmj)

    def evaluate(self, theta: np.ndarray):
        """Set θ, return (L(θ), mean KL(π_old ‖ π_θ), mean entropy) on this batch."""
        pol = self.policy
        pol.theta[:] = theta
        p = self._params(self.obs)
        L, _ = self.objective(pol.dist.logp(p, self.act))
        if self.ent_coef:
            L = L + self.ent_coef * float(np.sum(pol.dist.entropy(p))) / self.n_obs
        if self.kl_obs is not self.obs:
            p = self._params(self.kl_obs)
        # one collective for the three sums (their common dtype: the same bits as three)
        L, kl, entropy = self.comm.sum(np.array([L, np.sum(pol.dist.kl(self.p_old, p)), np.sum(pol.dist.entropy(p))]))
        return float(L), float(kl / self.n_kl), float(entropy / self.n_kl)  # D̄_KL(θ_old, θ), eq. (12)
