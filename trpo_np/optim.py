"""The TRPO step: conjugate gradient, step scaling to the KL bound, backtracking line search.

The step approximately solves (paper eq. 12-14, Sec. 6, App. C)

    maximize_θ  L_θold(θ)   subject to   D̄_KL(θ_old, θ) <= δ

by linearizing L (gradient g) and taking the quadratic model of the KL, ½ sᵀ F s:

1. search direction x ≈ F⁻¹ g by conjugate gradient, using only products F v;
2. full step s = β x with β = sqrt(2δ / xᵀ F x), so that ½ sᵀ F s = δ (App. C);
3. backtracking line search on θ_old + α^k s, accepting the first point whose *measured* mean KL
   is <= δ and whose surrogate improved (App. C; Spinning Up's test). When no point passes,
   θ stays θ_old.

Also: Adam, used to fit the value function.

References:
    Schulman et al. (2015), Trust Region Policy Optimization, arXiv 1502.05477, App. C.
    Nocedal & Wright (2006), Numerical Optimization, Alg. 5.2 (conjugate gradient).
    Kingma & Ba (2015), Adam, arXiv 1412.6980.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def conjugate_gradient(Avp: Callable[[np.ndarray], np.ndarray], b: np.ndarray, iters: int = 10,
                       tol: float = 1e-10):
    """Solve A x = b for symmetric positive-definite A given only products A v.

    Stops after ``iters`` iterations or when ‖r‖² < tol·‖b‖². The tolerance is relative, so the
    iterations do not depend on the scale of b: the TRPO step rescales x to the KL bound anyway,
    and the vine's gradient (Q̂ differences, not standardized) can be 1e-6 where single path's is
    1. (An absolute 1e-10 stopped CG before its first iteration in 53 of 140 vine iterations on
    Breakout.) Returns (x, ‖r‖ at exit, iterations).
    """
    x = np.zeros_like(b)
    r = b.copy()  # r = b − A x with x = 0
    p = r.copy()
    rr = float(r @ r)
    stop = tol * rr
    k = 0
    for k in range(1, iters + 1):
        if rr <= stop:
            k -= 1
            break
        Ap = Avp(p)
        pAp = float(p @ Ap)
        if not np.isfinite(pAp) or pAp <= 0:  # A not positive definite along p: keep what we have
            k -= 1
            break
        alpha = rr / pAp
        x += alpha * p
        r -= alpha * Ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, float(np.sqrt(rr)), k


def line_search(evaluate: Callable[[np.ndarray], tuple], theta_old: np.ndarray, full_step: np.ndarray,
                L_old: float, max_kl: float, backtrack_coef: float = 0.8, max_backtracks: int = 10):
    """Backtracking line search of paper App. C on θ_old + coef^k · full_step, k = 0..max_backtracks−1.

    ``evaluate(theta) -> (L, kl, entropy)`` must set the policy's θ. Accepts the first point with
    kl <= max_kl and L > L_old. Returns (theta, accepted, backtracks, L, kl, entropy), where on
    failure theta is θ_old and the policy has been set back to it. A non-finite L or KL at a
    trial point sets θ_old back and raises ValueError.
    """
    for k in range(max_backtracks):
        theta = theta_old + (backtrack_coef ** k) * full_step
        L, kl, ent = evaluate(theta)
        if not (np.isfinite(L) and np.isfinite(kl)):
            evaluate(theta_old)
            raise ValueError(f"line search: non-finite surrogate or KL (L = {L}, KL = {kl}) at trial {k}")
        if kl <= max_kl and L > L_old:
            return theta, True, k, L, kl, ent
    L, kl, ent = evaluate(theta_old)  # restore θ_old
    return theta_old.copy(), False, max_backtracks, L, kl, ent


def trpo_step(batch, max_kl: float = 0.01, cg_iters: int = 10, cg_tol: float = 1e-10,
              backtrack_coef: float = 0.8, max_backtracks: int = 10) -> dict:
    """One TRPO update on a :class:`~trpo_np.policy.TRPOBatch` (or anything with the same
    ``loss_and_grad``, ``fvp``, ``evaluate`` and ``theta_old``). Updates the policy's θ in place
    and returns a stats dict; never prints. A non-finite surrogate, gradient, xᵀFx or line-search
    value raises ValueError: θ is left at θ_old."""
    theta_old = batch.theta_old
    L_old, g = batch.loss_and_grad()
    stats = dict(surr_before=float(L_old), surr_after=float(L_old), expected_improve=0.0,
                 kl=0.0, entropy=float("nan"), backtracks=0, cg_residual=0.0, cg_iters=0,
                 step_norm=0.0, accepted=False, reason="")
    g_norm = float(np.linalg.norm(g))

    def no_step(reason):  # θ stays θ_old; its entropy is still reported
        stats.update(reason=reason, entropy=float(batch.evaluate(theta_old)[2]))
        return stats

    if not (np.isfinite(g_norm) and np.isfinite(L_old)):
        raise ValueError(f"TRPO step: non-finite surrogate or gradient (L = {L_old}, |g| = {g_norm})")
    if g_norm == 0.0:  # e.g. a vine batch whose Q̂ are equal within every state
        return no_step("zero gradient")
    x, res, k = conjugate_gradient(batch.fvp, g, cg_iters, cg_tol)  # x ≈ F⁻¹ g
    stats.update(cg_residual=res / g_norm, cg_iters=k)
    xFx = float(x @ batch.fvp(x))
    if not np.isfinite(xFx):
        raise ValueError(f"TRPO step: non-finite xᵀFx ({xFx}) from the Fisher-vector product")
    if k == 0 or xFx <= 0:
        return no_step(f"non-positive or non-finite xᵀFx ({xFx:.3g})")
    beta = np.sqrt(2.0 * max_kl / xFx)  # β = sqrt(2δ / xᵀFx): ½ (βx)ᵀ F (βx) = δ
    full_step = beta * x
    stats["expected_improve"] = float(g @ full_step)  # first-order model gᵀ s
    theta, ok, nb, L, kl, ent = line_search(batch.evaluate, theta_old, full_step, L_old, max_kl,
                                            backtrack_coef, max_backtracks)
    stats.update(surr_after=float(L), kl=float(kl), entropy=float(ent), backtracks=nb, accepted=ok,
                 step_norm=float(np.linalg.norm(theta - theta_old)),
                 reason="" if ok else "line search found no step within the KL bound that improves the surrogate")
    return stats


class Adam:
    """Adam on a flat parameter vector (updated in place)."""

    def __init__(self, size: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, dtype=np.float64):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = np.zeros(size, dtype=dtype)
        self.v = np.zeros(size, dtype=dtype)
        self.t = 0

    def step(self, theta: np.ndarray, grad: np.ndarray) -> None:
        self.t += 1
        self.m *= self.beta1
        self.m += (1 - self.beta1) * grad
        self.v *= self.beta2
        self.v += (1 - self.beta2) * grad * grad
        lr = self.lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        theta -= (lr * self.m / (np.sqrt(self.v) + self.eps)).astype(theta.dtype, copy=False)

    def state(self) -> dict:
        return {"m": self.m, "v": self.v, "t": np.array(self.t)}

    def load(self, state: dict) -> None:
        self.m[:], self.v[:], self.t = state["m"], state["v"], int(state["t"])
