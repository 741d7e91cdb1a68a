"""Numerical derivative helpers for the tests: central differences in float64, relative error."""

import numpy as np

from trpo_np.policy import Surrogate, TRPOBatch


def rel_error(a, b) -> float:
    """max |a − b| / max(|a|, |b|, tiny): a scale-free error over the whole array."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-300))


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """∇f(x) of a scalar function by central differences; x is perturbed in place and restored."""
    g = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f(x)
        flat[i] = old - eps
        fm = f(x)
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def numerical_jvp(f, x: np.ndarray, v: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Directional derivative (f(x + εv) − f(x − εv)) / 2ε of an array-valued f."""
    return (np.asarray(f(x + eps * v)) - np.asarray(f(x - eps * v))) / (2 * eps)


def numerical_jacobian(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """J[i, j] = ∂f_i/∂x_j of a flat-vector function by central differences."""
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = 1.0
        cols.append(numerical_jvp(f, x, e, eps).reshape(-1))
    return np.stack(cols, axis=1)


def surrogate_gradient_check(batch):
    """The analytic gradient of a TRPOBatch's surrogate and its central difference in θ
    (evaluate() moves the policy's θ; it is put back)."""
    _, g = batch.loss_and_grad()
    theta = batch.policy.theta.copy()
    num = numerical_grad(lambda t: batch.evaluate(t)[0], theta.copy())
    batch.policy.theta[:] = theta
    return g, num


def make_trpo_batch(policy, obs, act, objective, kl_obs=None, **kwargs):
    """A TRPOBatch on the surrogate (obs, act, objective), with the KL over ``kl_obs`` (default obs)."""
    return TRPOBatch(policy, Surrogate(obs, act, objective, obs if kl_obs is None else kl_obs), **kwargs)


def mean_kl_grad(batch, theta):
    """∇_θ of the mean KL(π_old ‖ π_θ) over a TRPOBatch's Fisher states, from the exact KL
    derivative (an oracle for F v, which is its derivative in θ at θ_old); θ is put back."""
    pol = batch.policy
    saved = pol.theta.copy()
    pol.theta[:] = theta
    g = np.zeros(pol.size)
    n = len(batch.f_obs)
    for sl, p_old, _ in batch.f_chunks:
        p, caches = pol.params(pol.preprocess(batch.f_obs[sl]))
        g += pol.vjp(caches, pol.dist.dkl(p_old, p, np.full(sl.stop - sl.start, 1.0 / n)))
    pol.theta[:] = saved
    return g
