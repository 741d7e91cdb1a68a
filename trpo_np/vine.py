"""The vine sampler (paper Sec. 5.2): Q̂(s, a) from branched rollouts with common random numbers.

One iteration:

1. *Trunk*: run π_old in ``num_envs`` copies of the environment (episodes continue across
   iterations, as in the single-path sampler). Before the trunk starts, N of its (step, copy)
   slots are drawn uniformly without replacement; at those slots the simulator state is saved.
   These N states s_n are the *rollout set*.
2. *Actions*: at each s_n, K actions a_nk:
   - discrete with n_actions <= K: every action (K = n_actions), for eq. (15);
   - discrete with n_actions > K: K distinct actions drawn uniformly (Atari, as in the paper),
     sampling density q = uniform, for eq. (16);
   - continuous: K actions drawn from π_old(·|s_n), q = π_old, for eq. (16).
3. *Branches*: from each (s_n, a_nk), restore s_n, take a_nk, then follow π_old for the rest of
   a horizon of T steps. The K branches of one state use *common random numbers*: the same
   restored simulator state (so the same env randomness: MuJoCo is deterministic, Atari and the
   classic-control fallback carry their RNG in the state) and the same pre-drawn noise sequence
   for π_old's actions at steps 1..T−1 (standard normals for a Gaussian, uniforms for the
   inverse CDF of a categorical): the branches differ only through a_nk. So the noise of
   Q̂(s, a) − Q̂(s, a') is much smaller than that of two independent estimates.
4. *Estimate*:  Q̂_nk = Σ_{t<τ} γ^t r_t + [not terminated] γ^τ V(s_τ),
   with τ = T, or the step of a time-limit truncation. The bootstrap term (the paper uses the
   plain T-step return; ``rollout_branches(vf=None)`` gives it) makes Q̂ an estimate of
   Q^π(s, a) when V = V^π; with V ≠ V^π its error is shared by branches that end in similar
   states, and common random numbers keep them close.

Surrogates over the pairs (s_n, a_nk), flattened row-major (n, k) -> n·K + k:

- enumerated discrete actions, eq. (15), with a state baseline b_n = mean_k Q̂_nk
  (Σ_k π_θ(a_k|s) = 1, so b_n changes L by a constant and not its gradient):
      L(θ) = (1/N) Σ_n Σ_k π_θ(a_k|s_n) (Q̂_nk − b_n)
- sampled actions, eq. (16), self-normalized importance sampling with r_nk = π_θ(a_k|s_n) / q(a_k|s_n):
      L(θ) = (1/N) Σ_n Σ_k r_nk (Q̂_nk − b_n) / Σ_k r_nk
  (the ratio Σ r Q / Σ r is invariant to the baseline; at θ = θ_old its gradient is the
  leave-the-mean-out score-function estimate).

The differences Q̂_nk − b_n enter both divided by their root mean square over the batch
(:func:`standardized_differences`), as single path standardizes its advantages: the step does not
change, and an entropy bonus weighs the same against either sampler's surrogate.

The mean KL and the Fisher-vector product are taken over the trunk's states: the on-policy
states of π_old (the rollout set is drawn from them), many more than the N rollout states (2,500
against 125 by default, 50 on Swimmer and Atari, where with ``fvp_fraction`` 0.1 F would see 5
states otherwise), so the trust region and F are measured where the policy acts. The step is the
trainer's, the same as for single path. The trunk is the batch's ``paths``: the value function is
fitted on it to GAE(γ, λ) λ-returns, exactly as in single path.

Rewards: with a reward scaler (:class:`trpo_np.normalize.RewardScaler`) the trunk feeds it
(the trainer folds the batch into it afterwards), and every reward of the batch, trunk and
branches alike, is multiplied by the scale frozen at the start of the batch, so Q̂, the
λ-returns and V share one unit inside a batch (V's predictions are converted to it by
:meth:`trpo_np.value.ValueFunction.rescale`). Without it, raw (Atari: clipped) rewards are used.

Env-step budget: ``sample(steps)`` spends ``steps`` env steps in all: the branches take at most
N·K·T (less when branches terminate early), the trunk the rest, but at least
``max(2N, MIN_TRUNK_STEPS)`` steps, rounded up to a multiple of ``num_envs``. A budget below
N·K·T + MIN_TRUNK_STEPS (the last iteration of a run) gets a smaller rollout set, n states with
n·K·T <= steps − MIN_TRUNK_STEPS (at least 1), so a run ends at most MIN_TRUNK_STEPS + K·T steps
past its budget. Branch steps are reported separately (``batch.branch_steps``) and count toward
the run's total.

Simulator state: :func:`trpo_np.simstate.get_state` / :func:`trpo_np.simstate.set_state` (MuJoCo,
Atari, classic control, or an env with its own ``get_state``/``set_state``).

References:
    Schulman et al. (2015), Trust Region Policy Optimization, arXiv 1502.05477, Sec. 5.2,
    eq. (15)-(16), Table 2 (vine parameters).
    Glasserman (2004), Monte Carlo Methods in Financial Engineering, Sec. 4.2 (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from . import simstate
from .envs import VectorEnv, is_image_space
from .normalize import RewardScaler, RunningMeanStd
from .parallel import Comm, mean_var
from .policy import Policy, Surrogate
from .samplers import Paths, SinglePathSampler
from .value import ValueFunction

MIN_TRUNK_STEPS = 512     # the trunk also feeds the value fit: never less than this per batch
MAX_BRANCH_ENVS = 128     # branch env copies stepped in lockstep (vector observations)
MAX_BRANCH_ENVS_IMAGE = 16


def rollout_branches(envs, states_b, act_b, noise_b, policy: Policy, horizon: int, gamma: float,
                     normalize=None, vf=None, reward_scale: float = 1.0, vf_scale: float = 1.0,
                     kind: str | None = None):
    """Q̂ of B branches, stepped in lockstep: branch b restores ``states_b[b]`` into ``envs[b]``,
    takes ``act_b[b]``, then follows π_old, drawing its action at step t = 1..T−1 with the
    random numbers ``noise_b[b, t − 1]``.

    noise_b: (B, T−1) (categorical) or (B, T−1, dim) (Gaussian), from ``policy.dist.noise``;
    rows that share a state and a noise row are common-random-number branches.
    normalize: raw observations -> policy inputs (None: identity). vf: ValueFunction to
    bootstrap γ^τ V(s_τ) at the horizon and at time-limit truncations (None: no bootstrap);
    its predictions are multiplied by ``vf_scale``. Rewards are multiplied by ``reward_scale``.
    Returns (q_b: (B,) float64, env steps taken).
    """
    B = len(act_b)
    kind = kind or simstate.check_state_support(envs[0])
    space = envs[0].action_space
    clip = (space.low, space.high) if isinstance(space, gym.spaces.Box) else None
    for b in range(B):
        simstate.set_state(envs[b], states_b[b], kind)
    q_b = np.zeros(B)
    alive = np.ones(B, dtype=bool)
    obs_b = np.zeros((B,) + envs[0].observation_space.shape, dtype=envs[0].observation_space.dtype)
    boot_idx, boot_obs, boot_disc = [], [], []
    act = np.array(act_b)  # the action each branch takes next
    steps = 0
    for t in range(horizon):
        disc = gamma ** t
        for b in np.flatnonzero(alive):
            a = np.clip(act[b], *clip) if clip is not None else act[b]
            obs, r, term, trunc, _ = envs[b].step(a)
            steps += 1
            if not (np.isfinite(r) and (obs.dtype.kind != "f" or np.isfinite(obs).all())):
                raise ValueError(f"vine: a branch's step() returned a non-finite value (NaN or inf) in its "
                                 f"{'reward' if not np.isfinite(r) else 'observation'}")
            q_b[b] += disc * reward_scale * float(r)  # Σ_t γ^t r_t
            if term:
                alive[b] = False  # true terminal state: value 0
            elif trunc or t == horizon - 1:
                alive[b] = False  # horizon or time limit: bootstrap with γ^(t+1) V(s_{t+1})
                boot_idx.append(b)
                boot_obs.append(obs)
                boot_disc.append(gamma ** (t + 1))
            else:
                obs_b[b] = obs
        if t == horizon - 1 or not alive.any():
            break
        idx = np.flatnonzero(alive)
        x = obs_b[idx] if normalize is None else normalize(obs_b[idx])
        p, _ = policy.params(policy.preprocess(x), caches=False)
        act[idx] = policy.dist.from_noise(p, noise_b[idx, t])  # action of step t + 1
    if vf is not None and boot_idx:
        x = np.stack(boot_obs)
        v = vf.predict(x if normalize is None else normalize(x)).astype(np.float64)
        q_b[boot_idx] += np.array(boot_disc) * vf_scale * v
    return q_b, steps


# -- surrogates ---------------------------------------------------------------------------------
def standardized_differences(q_nk: np.ndarray, comm: Comm = Comm()) -> np.ndarray:
    """(Q̂_nk − b_n) / s with b_n = mean_k Q̂_nk and s the root mean square of these differences
    over the batch (all ranks): the vine's counterpart of single path's standardized advantages.

    Neither the baseline nor a positive scale changes the step (the direction F⁻¹g is rescaled to
    the KL bound, and the line search asks only for L > L_old), but the scale sets the weight of
    an entropy bonus c·H̄ against L: with it, c means the same for both samplers. Differences of
    Q̂ under common random numbers are small in the reward unit (on Swimmer-v4 a bonus of 0.01
    against raw differences held every vine seed at 208-240; bench/README.md)."""
    adv = q_nk - q_nk.mean(axis=1, keepdims=True)
    _, var = mean_var(adv, comm)  # the mean is 0 up to rounding: var is the mean square
    return adv / (np.sqrt(var) + 1e-8)


def vine_discrete_objective(q_nk: np.ndarray, n_total: int | None = None):
    """Eq. (15) over enumerated actions: L = (1/N) Σ_n Σ_k π_θ(a_k|s_n) (Q̂_nk − b_n).

    q_nk: (n, K) with a_k the k-th action of the action space; b_n = mean_k Q̂_nk; N = ``n_total``,
    the rollout states of all ranks (default n). Returns Φ(logp) -> (this rank's part of L,
    ∂L/∂logp) over logp: (n·K,) row-major."""
    n, K = q_nk.shape
    N = n if n_total is None else n_total
    adv_nk = q_nk - q_nk.mean(axis=1, keepdims=True)

    def objective(logp):
        pi_nk = np.exp(logp.reshape(n, K))
        w_nk = pi_nk * adv_nk / N  # ∂L/∂logπ = π ∂L/∂π
        return float(w_nk.sum()), w_nk.reshape(-1)
    return objective


def vine_continuous_objective(logq_nk: np.ndarray, q_nk: np.ndarray, n_total: int | None = None):
    """Eq. (16), self-normalized importance sampling over sampled actions:
    L = (1/N) Σ_n Σ_k r_nk Q̂_nk / Σ_k r_nk,  r_nk = π_θ(a_k|s_n) / q(a_k|s_n).

    logq_nk: (n, K) log-density of the sampling distribution (π_old, or log(1/n) for uniform
    discrete actions); q_nk: (n, K); N = ``n_total`` (default n). Returns Φ(logp) -> (this
    rank's part of L, ∂L/∂logp) over logp: (n·K,)."""
    n, K = q_nk.shape
    N = n if n_total is None else n_total
    adv_nk = q_nk - q_nk.mean(axis=1, keepdims=True)  # a per-state shift leaves L's gradient unchanged

    def objective(logp):
        z = logp.reshape(n, K) - logq_nk  # log r
        z = z - z.max(axis=1, keepdims=True)
        w_nk = np.exp(z)
        w_nk /= w_nk.sum(axis=1, keepdims=True)  # r_nk / Σ_k r_nk
        L_n = np.sum(w_nk * adv_nk, axis=1)
        dlogp = w_nk * (adv_nk - L_n[:, None]) / N  # ∂(Σ w A)/∂logp_k = w_k (A_k − L_n)
        return float(L_n.sum() / N), dlogp.reshape(-1)
    return objective


# -- the sampler --------------------------------------------------------------------------------
@dataclass
class VineBatch:
    """A trunk (the paths, for the value fit) plus the rollout set and its Q̂."""

    paths: Paths
    obs_n: np.ndarray       # (N,) + obs_shape: rollout-set states, normalized
    act_nk: np.ndarray      # (N, K) or (N, K, dim): the actions branched on
    logq_nk: np.ndarray     # (N, K): log-density they were drawn with (0 when enumerated)
    q_nk: np.ndarray        # (N, K): Q̂(s_n, a_nk) in the batch's reward unit
    enumerated: bool        # actions are all of a discrete space (eq. 15), else sampled (eq. 16)
    branch_steps: int

    def surrogate(self, adv_n: np.ndarray | None = None, comm: Comm = Comm()) -> Surrogate:
        """Eq. (15) or (16) over the pairs (s_n, a_nk), row n·K + k, with the KL and F over the
        trunk's states (of all ranks), which include the rollout set. The trunk's advantages are
        not used: Q̂ takes their place."""
        N, K = self.q_nk.shape
        N_total = int(comm.sum(N))
        obs = np.repeat(self.obs_n, K, axis=0)
        act = self.act_nk.reshape((N * K,) + self.act_nk.shape[2:])
        adv_nk = standardized_differences(self.q_nk, comm)
        if self.enumerated:
            objective = vine_discrete_objective(adv_nk, N_total)
        else:
            objective = vine_continuous_objective(self.logq_nk, adv_nk, N_total)
        return Surrogate(obs, act, objective, kl_obs=self.paths.flat(self.paths.obs_te), kl_p_old=self.paths.p_old)


class VineSampler:
    """Vine batches from explicit parts: the trunk's env copies ``venv`` (copies first, first + 1,
    ... of ``num_envs_total``, reset with ``seed`` + copy), ``make_env`` for the branch copies
    (reset with ``branch_seed``), π_old, V (to bootstrap the branches), the normalizers and the
    generator ``rng`` of all sampling noise. N = ``states``, K = ``actions``, T = ``horizon``.

    With several ranks, the rollout set is drawn over all copies' trunk steps alike on every
    rank; each rank branches from the states its copies visited. Every random number (the
    rollout slots, the K actions, the branch noise) is drawn for the whole rollout set on every
    rank, each rank using its rows, so the batch does not depend on how the copies are split.
    """

    def __init__(self, venv: VectorEnv, make_env, policy: Policy, vf: ValueFunction, rng: np.random.Generator,
                 seed: int, branch_seed: int, obs_rms: RunningMeanStd | None, reward_scaler: RewardScaler | None,
                 gamma: float, states: int, actions: int, horizon: int, first: int = 0,
                 num_envs_total: int | None = None):
        self.venv, self.policy, self.vf, self.rng, self.reward_scaler = venv, policy, vf, rng, reward_scaler
        self.gamma, self.N, self.T = gamma, states, horizon
        self.num_envs, self.first = venv.num_envs, first
        self.num_envs_total = num_envs_total or venv.num_envs
        self.branch_envs = []
        try:
            # the trunk: the single-path sampler, whose simulator states we save at the rollout set
            self.trunk_sampler = SinglePathSampler(venv, policy, rng, seed, obs_rms, reward_scaler, first,
                                                   self.num_envs_total)
            self.kind = simstate.check_state_support(venv.envs[0])  # after the reset
            space = venv.single_action_space
            self.discrete = isinstance(space, gym.spaces.Discrete)
            self.n_actions = int(space.n) if self.discrete else None
            self.enumerate = self.discrete and self.n_actions <= actions
            self.K = self.n_actions if self.enumerate else actions
            cap = MAX_BRANCH_ENVS_IMAGE if is_image_space(venv.single_observation_space) else MAX_BRANCH_ENVS
            self.states_per_group = max(1, cap // self.K)
            self.branch_envs = [make_env() for _ in range(min(states, self.states_per_group) * self.K)]
        except BaseException:
            self.close()
            raise
        for i, env in enumerate(self.branch_envs):  # OrderEnforcing: a reset before the first step
            env.reset(seed=branch_seed + i)

    def close(self) -> None:
        self.venv.close()
        for env in self.branch_envs:
            env.close()
        self.branch_envs = []

    def state(self) -> list[dict]:
        """The trunk's copies (:meth:`SinglePathSampler.state`); a branch starts from a restored
        state, so the branch copies carry nothing across iterations."""
        return self.trunk_sampler.state()

    def restore(self, copies: list[dict]) -> None:
        self.trunk_sampler.restore(copies)

    def split(self, steps: int) -> tuple[int, int]:
        """(trunk steps, rollout states n) for a per-iteration budget of ``steps`` (all ranks):
        n = N, or fewer where N·K·T branch steps and the smallest trunk exceed the budget."""
        KT = self.K * self.T
        n = self.N if steps >= self.N * KT + MIN_TRUNK_STEPS else max(1, (steps - MIN_TRUNK_STEPS) // KT)
        trunk = max(steps - n * KT, 2 * n, MIN_TRUNK_STEPS)
        return -(-trunk // self.num_envs_total) * self.num_envs_total, n

    # -- sampling -------------------------------------------------------------------------------
    def sample(self, steps: int) -> VineBatch:
        trunk_steps, n = self.split(steps)
        E, a = self.num_envs_total, self.first
        Tt = trunk_steps // E
        N = min(n, Tt * E)
        slots = np.sort(self.rng.choice(Tt * E, size=N, replace=False))  # rollout set: (t, e) = divmod(i, E)
        mine = np.flatnonzero((slots % E >= a) & (slots % E < a + self.num_envs))  # rows of this block's states
        trunk, states, obs_n = self._trunk(Tt, slots[mine])
        scale = 1.0 if trunk.reward_scale is None else trunk.reward_scale  # the trunk's frozen scale
        act_nk, logq_nk = self._actions(obs_n, N, mine)
        q_nk, branch_steps = self._branches(states, act_nk, scale, N, mine)
        return VineBatch(trunk, obs_n, act_nk, logq_nk, q_nk, self.enumerate, branch_steps)

    def _trunk(self, T: int, slots: np.ndarray):
        """π_old in this block's env copies for T steps (the single-path sampler, whose rewards
        carry the same frozen scale); saves the simulator state at this block's rollout slots."""
        E, a = self.num_envs_total, self.first
        save_at = {}
        for i in slots:
            save_at.setdefault(int(i) // E, []).append(int(i) % E - a)
        states, obs_saved = [], []

        def save(t, obs_n):
            for e in save_at.get(t, ()):
                states.append(simstate.get_state(self.venv.envs[e], self.kind))
                obs_saved.append(obs_n[e])

        trunk = self.trunk_sampler.paths(T * E, on_step=save)
        obs_n = np.stack(obs_saved) if obs_saved else np.zeros((0,) + trunk.obs_te.shape[2:], trunk.obs_te.dtype)
        return trunk, states, obs_n

    def _actions(self, obs_n: np.ndarray, N: int, mine: np.ndarray):
        """The K actions at this rank's rollout states (rows ``mine`` of N) and their log sampling
        density (0 if enumerated)."""
        n, K = len(obs_n), self.K
        if self.enumerate:  # eq. (15): every action
            return np.tile(np.arange(K), (n, 1)), np.zeros((n, K))
        if self.discrete:  # K distinct actions, uniform (paper, Atari)
            act_nk = np.argsort(self.rng.random((N, self.n_actions)), axis=1)[mine, :K]
            return act_nk, np.full((n, K), -np.log(self.n_actions))
        noise = self.policy.dist.noise(self.rng, (N, K))
        noise = noise.reshape((N * K,) + noise.shape[2:])
        rows = (mine[:, None] * K + np.arange(K)).reshape(-1)
        act, logp = self.policy.act(np.repeat(obs_n, K, axis=0), None, noise=noise[rows])  # a_k ~ π_old(·|s_n)
        return act.reshape((n, K) + act.shape[1:]), logp.reshape(n, K).astype(np.float64)

    def _branches(self, states: list, act_nk: np.ndarray, scale: float, N: int, mine: np.ndarray):
        """Q̂_nk for every (s_n, a_nk) of this rank, states_per_group rollout states at a time,
        with the rewards multiplied by the trunk's frozen ``scale``; the K branches of a state
        share one noise sequence (common random numbers)."""
        dist = self.policy.dist
        K, T = self.K, self.T
        q_nk = np.zeros((len(mine), K))
        total = 0
        for n0 in range(0, N, self.states_per_group):
            G = min(N, n0 + self.states_per_group) - n0
            noise_g = dist.noise(self.rng, (G, T - 1))  # the group's noise, drawn on every rank
            rows = np.flatnonzero((mine >= n0) & (mine < n0 + G))  # this rank's states in the group
            if len(rows) == 0:
                continue
            noise = np.repeat(noise_g[mine[rows] - n0], K, axis=0)
            states_b = [states[r] for r in rows for _ in range(K)]
            act_b = act_nk[rows].reshape((len(rows) * K,) + act_nk.shape[2:])
            q_b, steps = rollout_branches(self.branch_envs, states_b, act_b, noise, self.policy, T, self.gamma,
                                          self.trunk_sampler.normalize, self.vf, scale, self.vf.rescale(scale),
                                          self.kind)
            q_nk[rows] = q_b.reshape(len(rows), K)
            total += steps
        return q_nk, total
