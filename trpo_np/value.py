"""Value baseline V(s) and generalized advantage estimation.

Advantages (GAE(γ, λ), Schulman et al. 2016, eq. 16):

    δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)
    Â_t = δ_t + γλ (1 − done_t) Â_{t+1}

``terminated`` ends the return (the true terminal state has value 0); a time-limit truncation
does not: V(s_{t+1}) is then the value of the final observation, and only the recursion is cut
(done = terminated or truncated). The value targets are the λ-returns Â_t + V(s_t).

The value function is an MLP (or CNN for images) fitted each iteration by minimizing the mean
squared error to the λ-returns with Adam on shuffled minibatches for a fixed number of epochs.

Reward unit: with reward scaling, a batch's rewards are multiplied by a scale frozen for that
batch, and the scale moves between batches. V remembers the scale of the targets it was last
fitted to (``unit``); :meth:`ValueFunction.rescale` converts its predictions to another batch's
unit, so GAE and the vine's bootstrap use V in the rewards' current unit.

References:
    Schulman et al. (2016), High-dimensional continuous control using generalized advantage
    estimation, arXiv 1506.02438.
    Kingma & Ba (2015), Adam, arXiv 1412.6980.
"""

from __future__ import annotations

import numpy as np

from .nn import Sequential
from .optim import Adam
from .parallel import Comm, mean_var


def gae(rew_te, val_te, next_val_te, terminated_te, done_te, gamma: float, lam: float):
    """GAE over a (time, env) block of transitions.

    rew_te, val_te: rewards r_t and V(s_t); next_val_te: V(s_{t+1}) of the observation that
    followed each step (the final observation for a truncated episode); terminated_te, done_te:
    booleans. Returns (adv_te, ret_te) with ret = adv + V(s_t).
    """
    T = rew_te.shape[0]
    not_term = 1.0 - terminated_te.astype(rew_te.dtype)
    not_done = 1.0 - done_te.astype(rew_te.dtype)
    delta_te = rew_te + gamma * not_term * next_val_te - val_te  # TD residual δ_t
    adv_te = np.zeros_like(delta_te)
    last = np.zeros_like(delta_te[0])
    for t in range(T - 1, -1, -1):  # Â_t = δ_t + γλ Â_{t+1}, cut at episode ends
        last = delta_te[t] + gamma * lam * not_done[t] * last
        adv_te[t] = last
    return adv_te, adv_te + val_te


def paths_gae(vf, paths, gamma: float, lam: float):
    """GAE over :class:`~trpo_np.samplers.Paths` with value function ``vf``, in the paths'
    reward unit. V is evaluated once for all states, the states after the batch and the final
    observations of truncated episodes (which bootstrap). Returns (adv_te, ret_te, val_te)."""
    T, E = paths.rew_te.shape
    obs = paths.flat(paths.obs_te)
    v_all = vf.rescale(paths.reward_scale) * vf.predict(np.concatenate([obs, paths.last_obs_e, paths.final_obs]))
    val_te = v_all[:T * E].reshape(T, E)
    next_val_te = np.empty_like(val_te)
    next_val_te[:-1] = val_te[1:]
    next_val_te[-1] = v_all[T * E:T * E + E]
    next_val_te[paths.final_idx] = v_all[T * E + E:]  # V(final obs) bootstraps truncations
    done_te = paths.terminated_te | paths.truncated_te
    adv_te, ret_te = gae(paths.rew_te, val_te, next_val_te, paths.terminated_te, done_te, gamma, lam)
    return adv_te, ret_te, val_te


def explained_variance(pred_n, target_n, comm: Comm = Comm()) -> float:
    """1 − Var[target − pred] / Var[target] over the states of all ranks: 1 is perfect, 0 is no
    better than a constant."""
    var = mean_var(target_n, comm)[1]
    return float("nan") if var == 0 else float(1.0 - mean_var(target_n - pred_n, comm)[1] / var)


class ValueFunction:
    """V(s) = net(s); inputs are observations already normalized and cast by the caller."""

    def __init__(self, net: Sequential, lr: float = 1e-3, epochs: int = 10, minibatch: int = 128,
                 obs_scale: float = 1.0, chunk: int = 4096):
        if net.out_shape != (1,):
            raise ValueError(f"value network must output (1,), got {net.out_shape}")
        self.net, self.epochs, self.minibatch, self.obs_scale = net, int(epochs), int(minibatch), obs_scale
        self.chunk = int(chunk)  # states per pass in predict
        self.adam = Adam(net.size, lr=lr, dtype=net.dtype)
        self.unit = None  # reward scale of the targets of the last fit (None: unscaled or not fitted)

    def rescale(self, unit: float | None) -> float:
        """Factor that converts V's predictions to rewards scaled by ``unit``."""
        return 1.0 if unit is None or self.unit is None else unit / self.unit

    def _x(self, obs):
        if self.obs_scale != 1.0:  # cast and scale in one pass
            return np.multiply(obs, self.net.dtype.type(self.obs_scale), dtype=self.net.dtype)
        return obs.astype(self.net.dtype, copy=False)

    def predict(self, obs) -> np.ndarray:
        """V for a batch of observations (n,) + obs_shape, evaluated in chunks to bound memory."""
        c = self.chunk
        out = [self.net(self._x(obs[i:i + c]))[:, 0] for i in range(0, len(obs), c)]
        return np.concatenate(out) if out else np.zeros(0, dtype=self.net.dtype)

    def fit(self, obs, target_n, rng: np.random.Generator, unit: float | None = None,
            comm: Comm = Comm()) -> dict:
        """Minimize mean (V(s) − target)² by Adam over shuffled minibatches; the targets are in
        reward unit ``unit``. Returns the mean minibatch loss of the last epoch (no extra pass
        over the data).

        With several ranks, a minibatch is the union of one slice of each rank's data, sized in
        proportion to its share (``minibatch`` states in all), and its gradient the sum over the
        ranks: every rank takes the same Adam steps. The slice sizes follow from the ranks' data
        sizes alone, so they need no communication beyond that."""
        self.unit = unit
        n = len(obs)
        sizes = comm.gather([n])                              # every rank's number of states
        n_total = sum(sizes)
        mb = [-(-self.minibatch * m // n_total) for m in sizes]  # per-rank slice: minibatch·m/n, rounded up
        steps = max(-(-m // b) for m, b in zip(sizes, mb))   # minibatches per epoch, the same on every rank
        target_n = target_n.astype(self.net.dtype, copy=False)
        grad = np.zeros(self.net.size, dtype=self.net.dtype)
        mine = mb[comm.rank]
        for _ in range(self.epochs):
            perm = rng.permutation(n)
            sq_err = 0.0
            for k in range(steps):
                idx = perm[k * mine:(k + 1) * mine]
                count = sum(max(0, min(b, m - k * b)) for m, b in zip(sizes, mb))  # states in this minibatch
                y, caches = self.net.forward(self._x(obs[idx]))
                err = y[:, 0] - target_n[idx]
                sq_err += float(err @ err)
                self.net.backward(((2.0 / count) * err)[:, None], caches, out=grad)  # ∂ mean err² / ∂V
                self.adam.step(self.net.theta, comm.sum(grad))
        return {"vf_loss": float(comm.sum(sq_err)) / n_total}
