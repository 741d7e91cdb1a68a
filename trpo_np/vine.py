"""The vine sampler (paper Sec. 5.2, App. B): Q̂(s, a) from branched rollouts with common random numbers.

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
   with τ = T, or the step of a time-limit truncation. The bootstrap term (on by default;
   ``bootstrap=False`` gives the plain T-step return the paper uses) makes Q̂ an estimate of
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

The mean KL and the Fisher-vector product are taken over the N rollout-set states; the step is
the same CG + line search as single path (:func:`trpo_np.optim.trpo_step`). The value function
is fitted on the trunk to GAE(γ, λ) λ-returns, exactly as in single path.

Rewards: with ``cfg.scale_reward`` the trunk updates the trainer's running return-std scaler
(:class:`trpo_np.envs.RewardScaler`), and every reward of the batch, trunk and branches alike,
is divided by the scale frozen at the start of the batch, so Q̂, the λ-returns and V share one
unit inside a batch (V's predictions are rescaled when the scale moves between batches).
Without it, raw (Atari: clipped) rewards are used.

Env-step budget: ``sample(steps)`` spends ``steps`` env steps in all: the branches take at most
N·K·T (less when branches terminate early), the trunk the rest, but at least
``max(2N, MIN_TRUNK_STEPS)`` steps, rounded up to a multiple of ``num_envs``. Branch steps are
reported separately (``batch.branch_steps``) and count toward the run's total.

Simulator state protocol (:func:`get_env_state` / :func:`set_env_state`), tried in this order:
MuJoCo and Atari through :mod:`trpo_np.envs`; an env whose ``unwrapped`` has ``get_state()``
and ``set_state(state)`` methods (the state must include the env's RNG and be restorable into
another copy of the env); classic control (``unwrapped.state``, plus the env's ``np_random``
state and ``steps_beyond_terminated``/``last_u`` where present). For the last two the
TimeLimit counter is saved as well.

References:
    Schulman et al. (2015), Trust Region Policy Optimization, arXiv 1502.05477, Sec. 5.2,
    eq. (15)-(16), App. B, Table 2.
    Glasserman (2004), Monte Carlo Methods in Financial Engineering, Sec. 4.2 (common random numbers).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from . import envs as envs_mod
from .distributions import Categorical
from .optim import trpo_step
from .policy import Policy, TRPOBatch
from .samplers import Batch
from .value import explained_variance, gae

MIN_TRUNK_STEPS = 512     # the trunk also feeds the value fit: never less than this per batch
MAX_BRANCH_ENVS = 128     # branch env copies stepped in lockstep (vector observations)
MAX_BRANCH_ENVS_IMAGE = 16


# -- simulator state ---------------------------------------------------------------------------
_CLASSIC_EXTRA = ("steps_beyond_terminated", "last_u")


def state_kind(env) -> str | None:
    """'sim' (MuJoCo/Atari), 'method' (own get_state/set_state), 'classic' (``unwrapped.state``) or None."""
    if envs_mod.supports_state(env):
        return "sim"
    u = env.unwrapped
    if callable(getattr(u, "get_state", None)) and callable(getattr(u, "set_state", None)):
        return "method"
    if hasattr(u, "state") and hasattr(u, "np_random"):
        return "classic"
    return None


def get_env_state(env, kind: str | None = None):
    """A snapshot from which :func:`set_env_state` replays ``env`` (or a copy made the same way)."""
    kind = kind or state_kind(env)
    if kind == "sim":
        return envs_mod.get_state(env)
    u = env.unwrapped
    tl = envs_mod._time_limit(env)
    elapsed = None if tl is None else tl._elapsed_steps
    if kind == "method":
        return {"env": u.get_state(), "elapsed": elapsed}
    if kind == "classic":
        return {"state": copy.deepcopy(u.state), "rng": copy.deepcopy(u.np_random.bit_generator.state),
                "extra": {k: copy.deepcopy(getattr(u, k)) for k in _CLASSIC_EXTRA if hasattr(u, k)},
                "elapsed": elapsed}
    raise envs_mod.EnvError(f"{_env_name(env)}: no simulator state save/restore")


def set_env_state(env, state, kind: str | None = None) -> None:
    kind = kind or state_kind(env)
    if kind == "sim":
        envs_mod.set_state(env, state)
        return
    u = env.unwrapped
    if kind == "method":
        u.set_state(state["env"])
    elif kind == "classic":
        u.state = copy.deepcopy(state["state"])
        u.np_random.bit_generator.state = copy.deepcopy(state["rng"])
        for k, v in state["extra"].items():
            setattr(u, k, copy.deepcopy(v))
    else:
        raise envs_mod.EnvError(f"{_env_name(env)}: no simulator state save/restore")
    tl = envs_mod._time_limit(env)
    if tl is not None and state["elapsed"] is not None:
        tl._elapsed_steps = state["elapsed"]


def check_env(env, env_id: str | None = None) -> str:
    """The state kind of ``env``; raises EnvError (one line) when the vine method cannot use it."""
    kind = state_kind(env)
    if kind is None:
        raise envs_mod.EnvError(
            f"{env_id or _env_name(env)}: --method vine needs simulator state save/restore (MuJoCo, Atari, "
            "classic control with env.unwrapped.state, or an env with get_state()/set_state()); "
            "this environment has none, use --method single")
    return kind


def _env_name(env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


# -- π_old with given noise (common random numbers) ---------------------------------------------
def draw_noise(dist, rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Noise for ``shape`` = (..., ) action draws: standard normals (..., dim) for a Gaussian,
    uniforms (...,) for a categorical's inverse CDF."""
    if isinstance(dist, Categorical):
        return rng.random(shape)
    return rng.standard_normal(shape + (dist.dim,))


def sample_with_noise(dist, p, noise: np.ndarray) -> np.ndarray:
    """The action ``dist.sample(p, rng)`` would draw if its random numbers were ``noise``."""
    if isinstance(dist, Categorical):
        cdf = np.cumsum(dist.probs(p), axis=1)
        u = noise.reshape(-1, 1) * cdf[:, -1:]
        return np.minimum((u > cdf).sum(axis=1), dist.n - 1)
    m, logstd = p
    return m + np.exp(logstd) * noise.astype(m.dtype, copy=False)  # a = m + σ ε


def rollout_branches(envs, states_b, act_b, noise_b, policy: Policy, horizon: int, gamma: float,
                     normalize=None, vf=None, reward_scale: float = 1.0, vf_scale: float = 1.0,
                     kind: str | None = None):
    """Q̂ of B branches, stepped in lockstep: branch b restores ``states_b[b]`` into ``envs[b]``,
    takes ``act_b[b]``, then follows π_old, drawing its action at step t = 1..T−1 with the
    random numbers ``noise_b[b, t − 1]``.

    noise_b: (B, T−1) (categorical) or (B, T−1, dim) (Gaussian), from :func:`draw_noise`;
    rows that share a state and a noise row are common-random-number branches.
    normalize: raw observations -> policy inputs (None: identity). vf: ValueFunction to
    bootstrap γ^τ V(s_τ) at the horizon and at time-limit truncations (None: no bootstrap);
    its predictions are multiplied by ``vf_scale``. Rewards are multiplied by ``reward_scale``.
    Returns (q_b: (B,) float64, env steps taken).
    """
    B = len(act_b)
    kind = kind or state_kind(envs[0])
    space = envs[0].action_space
    clip = (space.low, space.high) if isinstance(space, gym.spaces.Box) else None
    for b in range(B):
        set_env_state(envs[b], states_b[b], kind)
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
        p, _ = policy.params(policy.preprocess(x))
        act[idx] = sample_with_noise(policy.dist, p, noise_b[idx, t])  # action of step t + 1
    if vf is not None and boot_idx:
        x = np.stack(boot_obs)
        v = vf.predict(x if normalize is None else normalize(x)).astype(np.float64)
        q_b[boot_idx] += np.array(boot_disc) * vf_scale * v
    return q_b, steps


# -- surrogates ---------------------------------------------------------------------------------
def vine_discrete_objective(q_nk: np.ndarray, baseline_n: np.ndarray | None = None):
    """Eq. (15) over enumerated actions: L = (1/N) Σ_n Σ_k π_θ(a_k|s_n) (Q̂_nk − b_n).

    q_nk: (N, K) with a_k the k-th action of the action space; b_n = mean_k Q̂_nk unless given
    (e.g. V(s_n)). Returns Φ(logp) -> (L, ∂L/∂logp) over logp: (N·K,) row-major."""
    N, K = q_nk.shape
    adv_nk = q_nk - (q_nk.mean(axis=1, keepdims=True) if baseline_n is None else baseline_n[:, None])

    def objective(logp):
        pi_nk = np.exp(logp.reshape(N, K))
        w_nk = pi_nk * adv_nk / N  # ∂L/∂logπ = π ∂L/∂π
        return float(w_nk.sum()), w_nk.reshape(-1)
    return objective


def vine_continuous_objective(logq_nk: np.ndarray, q_nk: np.ndarray):
    """Eq. (16), self-normalized importance sampling over sampled actions:
    L = (1/N) Σ_n Σ_k r_nk Q̂_nk / Σ_k r_nk,  r_nk = π_θ(a_k|s_n) / q(a_k|s_n).

    logq_nk: (N, K) log-density of the sampling distribution (π_old, or log(1/n) for uniform
    discrete actions); q_nk: (N, K). Returns Φ(logp) -> (L, ∂L/∂logp) over logp: (N·K,)."""
    N, K = q_nk.shape
    adv_nk = q_nk - q_nk.mean(axis=1, keepdims=True)  # a per-state shift leaves L's gradient unchanged

    def objective(logp):
        z = logp.reshape(N, K) - logq_nk  # log r
        z = z - z.max(axis=1, keepdims=True)
        w_nk = np.exp(z)
        w_nk /= w_nk.sum(axis=1, keepdims=True)  # r_nk / Σ_k r_nk
        L_n = np.sum(w_nk * adv_nk, axis=1)
        dlogp = w_nk * (adv_nk - L_n[:, None]) / N  # ∂(Σ w A)/∂logp_k = w_k (A_k − L_n)
        return float(L_n.mean()), dlogp.reshape(-1)
    return objective


# -- the sampler --------------------------------------------------------------------------------
@dataclass
class VineBatch:
    """A trunk (single-path layout, for the value fit) plus the rollout set and its Q̂."""

    trunk: Batch
    obs_n: np.ndarray       # (N,) + obs_shape: rollout-set states, normalized
    act_nk: np.ndarray      # (N, K) or (N, K, dim): the actions branched on
    logq_nk: np.ndarray     # (N, K): log-density they were drawn with (0 when enumerated)
    q_nk: np.ndarray        # (N, K): Q̂(s_n, a_nk) in the batch's reward unit
    enumerated: bool        # actions are all of a discrete space (eq. 15), else sampled (eq. 16)
    branch_steps: int
    reward_scale: float
    info: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.trunk.steps

    @property
    def episodes(self) -> list:
        return self.trunk.episodes

    @property
    def raw_obs(self):
        return self.trunk.raw_obs


class VineSampler:
    """Vine batches for :class:`trpo_np.train.Trainer` (``cfg.method == "vine"``).

    N = cfg.vine_states, K = cfg.vine_actions, T = cfg.vine_horizon; ``bootstrap``: add
    γ^τ V(s_τ) at the end of unterminated branches; ``crn``: common random numbers across the
    K branches of a state (False only for experiments: independent policy noise per branch).
    """

    def __init__(self, trainer, seed: int, bootstrap: bool = True, crn: bool = True,
                 branch_envs: int | None = None):
        cfg = trainer.cfg
        self.cfg, self.policy, self.vf, self.obs_rms = cfg, trainer.policy, trainer.vf, trainer.obs_rms
        self.rng = trainer.rng_act
        self.reward_scaler = trainer.reward_scaler
        self.bootstrap, self.crn = bootstrap, crn
        self.num_envs = cfg.num_envs
        self.envs = []
        try:
            for _ in range(cfg.num_envs):
                self.envs.append(envs_mod.make_env(cfg.env, **cfg.atari))
            self.kind = check_env(self.envs[0], cfg.env)
            space = self.envs[0].action_space
            self.discrete = isinstance(space, gym.spaces.Discrete)
            self.n_actions = int(space.n) if self.discrete else None
            self.clip = None if self.discrete else (space.low, space.high)
            K = cfg.vine_actions
            self.enumerate = self.discrete and self.n_actions <= K
            self.K = self.n_actions if self.enumerate else K
            image = envs_mod.is_image_space(self.envs[0].observation_space)
            cap = branch_envs or (MAX_BRANCH_ENVS_IMAGE if image else MAX_BRANCH_ENVS)
            self.states_per_group = max(1, cap // self.K)
            n_branch = min(cfg.vine_states, self.states_per_group) * self.K
            self.branch_envs = [envs_mod.make_env(cfg.env, **cfg.atari) for _ in range(n_branch)]
        except BaseException:
            self.close()
            raise
        self.obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)])
        for i, env in enumerate(self.branch_envs):  # OrderEnforcing: a reset before the first step
            env.reset(seed=seed + 100_003 + i)
        self.ep_ret = np.zeros(self.num_envs)
        self.ep_len = np.zeros(self.num_envs, dtype=np.int64)
        self.vf_scale = None  # reward scale V was last fitted in

    def close(self) -> None:
        for env in self.envs + getattr(self, "branch_envs", []):
            env.close()
        self.envs, self.branch_envs = [], []

    def normalize(self, obs):
        return obs if self.obs_rms is None else self.obs_rms.normalize(obs, self.policy.dtype)

    def split(self, steps: int) -> tuple[int, int]:
        """(trunk steps, branch budget N·K·T) for a per-iteration budget of ``steps``."""
        cfg = self.cfg
        branch = cfg.vine_states * self.K * cfg.vine_horizon
        trunk = max(steps - branch, 2 * cfg.vine_states, MIN_TRUNK_STEPS)
        return -(-trunk // self.num_envs) * self.num_envs, branch

    # -- sampling -------------------------------------------------------------------------------
    def sample(self, steps: int) -> VineBatch:
        cfg = self.cfg
        scaler = self.reward_scaler
        scale = 1.0 if scaler is None else float(1.0 / np.sqrt(scaler.rms.var + 1e-8))  # frozen for the batch
        trunk_steps, _ = self.split(steps)
        E = self.num_envs
        Tt = trunk_steps // E
        N = min(cfg.vine_states, Tt * E)
        slots = np.sort(self.rng.choice(Tt * E, size=N, replace=False))  # rollout set: (t, e) = divmod(i, E)
        trunk, states, obs_n = self._trunk(Tt, slots, scale)
        act_nk, logq_nk = self._actions(obs_n)
        q_nk, branch_steps = self._branches(states, act_nk, scale)
        return VineBatch(trunk, obs_n, act_nk, logq_nk, q_nk, self.enumerate, branch_steps, scale,
                         info=dict(vine_states=N, vine_actions=self.K))

    def _trunk(self, T: int, slots: np.ndarray, scale: float):
        """π_old in E env copies for T steps; saves the simulator state at the rollout-set slots."""
        pol, E, scaler = self.policy, self.num_envs, self.reward_scaler
        save_at = {}
        for i in slots:
            save_at.setdefault(int(i) // E, []).append(int(i) % E)
        states, obs_saved = [], []
        obs_n = self.normalize(self.obs)
        obs_te = np.empty((T,) + obs_n.shape, dtype=obs_n.dtype)
        raw = np.empty((T,) + self.obs.shape, dtype=self.obs.dtype) if self.obs_rms is not None else None
        act_te = logp_te = None
        rew_te = np.empty((T, E), dtype=pol.dtype)
        term_te = np.zeros((T, E), dtype=bool)
        trunc_te = np.zeros((T, E), dtype=bool)
        final_obs, final_t, final_e, episodes = [], [], [], []
        for t in range(T):
            for e in save_at.get(t, ()):
                states.append(get_env_state(self.envs[e], self.kind))
                obs_saved.append(obs_n[e])
            obs_te[t] = obs_n
            if raw is not None:
                raw[t] = self.obs
            act, logp = pol.act(obs_n, self.rng)
            if act_te is None:
                act_te = np.empty((T,) + act.shape, dtype=act.dtype)
                logp_te = np.empty((T, E), dtype=logp.dtype)
            act_te[t], logp_te[t] = act, logp
            rew, term, trunc = np.empty(E), np.zeros(E, bool), np.zeros(E, bool)
            raw_rew = np.empty(E)
            next_obs = np.empty_like(self.obs)
            for e, env in enumerate(self.envs):
                a = np.clip(act[e], *self.clip) if self.clip is not None else act[e]
                o, rew[e], term[e], trunc[e], info = env.step(a)
                raw_rew[e] = info.get("raw_reward", rew[e])
                if term[e] or trunc[e]:
                    if trunc[e] and not term[e]:
                        final_obs.append(o)
                        final_t.append(t)
                        final_e.append(e)
                    o, _ = env.reset()
                next_obs[e] = o
            done = term | trunc
            self.ep_ret += raw_rew
            self.ep_len += 1
            if scaler is not None:
                scaler(rew, done)  # update the running return std; this batch uses the frozen `scale`
            rew_te[t], term_te[t], trunc_te[t] = rew * scale, term, trunc
            for e in np.flatnonzero(done):
                episodes.append((float(self.ep_ret[e]), int(self.ep_len[e])))
            self.ep_ret[done] = 0.0
            self.ep_len[done] = 0
            self.obs = next_obs
            obs_n = self.normalize(self.obs)
        final = (self.normalize(np.stack(final_obs)) if final_obs
                 else np.zeros((0,) + obs_n.shape[1:], dtype=obs_n.dtype))
        trunk = Batch(obs_te, act_te, logp_te, rew_te, term_te, trunc_te, obs_n, final,
                      (np.array(final_t, dtype=np.intp), np.array(final_e, dtype=np.intp)),
                      None if raw is None else raw.reshape((T * E,) + raw.shape[2:]), episodes)
        return trunk, states, np.stack(obs_saved)

    def _actions(self, obs_n: np.ndarray):
        """The K actions at each rollout state and their log sampling density (0 if enumerated)."""
        N, K = len(obs_n), self.K
        if self.enumerate:  # eq. (15): every action
            return np.tile(np.arange(K), (N, 1)), np.zeros((N, K))
        if self.discrete:  # K distinct actions, uniform (paper, Atari)
            act_nk = np.argsort(self.rng.random((N, self.n_actions)), axis=1)[:, :K]
            return act_nk, np.full((N, K), -np.log(self.n_actions))
        act, logp = self.policy.act(np.repeat(obs_n, K, axis=0), self.rng)  # a_k ~ π_old(·|s_n)
        return act.reshape((N, K) + act.shape[1:]), logp.reshape(N, K).astype(np.float64)

    def _branches(self, states: list, act_nk: np.ndarray, scale: float):
        """Q̂_nk for every (s_n, a_nk), states_per_group rollout states at a time."""
        cfg, dist = self.cfg, self.policy.dist
        N, K, T = act_nk.shape[0], self.K, cfg.vine_horizon
        q_nk = np.zeros((N, K))
        vf_scale = 1.0 if self.vf_scale is None else scale / self.vf_scale
        total = 0
        for n0 in range(0, N, self.states_per_group):
            n1 = min(N, n0 + self.states_per_group)
            G = n1 - n0
            if self.crn:  # one noise sequence per state, shared by its K branches
                noise = np.repeat(draw_noise(dist, self.rng, (G, T - 1)), K, axis=0)
            else:
                noise = draw_noise(dist, self.rng, (G * K, T - 1))
            states_b = [states[n] for n in range(n0, n1) for _ in range(K)]
            act_b = act_nk[n0:n1].reshape((G * K,) + act_nk.shape[2:])
            q_b, steps = rollout_branches(self.branch_envs, states_b, act_b, noise, self.policy, T, cfg.gamma,
                                          self.normalize, self.vf if self.bootstrap else None, scale,
                                          vf_scale, self.kind)
            q_nk[n0:n1] = q_b.reshape(G, K)
            total += steps
        return q_nk, total

    # -- update ---------------------------------------------------------------------------------
    def update(self, trainer, batch: VineBatch) -> dict:
        """TRPO step on the vine surrogate (eq. 15 or 16), then the value fit on the trunk."""
        cfg = self.cfg
        N, K = batch.q_nk.shape
        obs = np.repeat(batch.obs_n, K, axis=0)  # pairs (s_n, a_nk), row n·K + k
        act = batch.act_nk.reshape((N * K,) + batch.act_nk.shape[2:])
        if batch.enumerated:
            objective = vine_discrete_objective(batch.q_nk)
        else:
            objective = vine_continuous_objective(batch.logq_nk, batch.q_nk)
        tb = TRPOBatch(self.policy, obs, act, objective, kl_obs=batch.obs_n, damping=cfg.damping,
                       fvp_fraction=cfg.fvp_fraction, rng=trainer.rng_fvp, chunk=getattr(trainer, "chunk", None))
        stats = trpo_step(tb, cfg.max_kl, cfg.cg_iters, cfg.cg_tol, cfg.backtrack_coef, cfg.max_backtracks)
        stats.update(self._fit_value(batch, trainer.rng_vf))
        stats.update(branch_steps=batch.branch_steps, vine_states=N, vine_actions=K,
                     q_mean=float(batch.q_nk.mean()), q_spread=float(batch.q_nk.std(axis=1).mean()))
        return stats

    def _fit_value(self, batch: VineBatch, rng: np.random.Generator) -> dict:
        """V on the trunk states to GAE(γ, λ) λ-returns, as in single path."""
        cfg, tr = self.cfg, batch.trunk
        T, E = tr.rew_te.shape
        obs = tr.obs_te.reshape((T * E,) + tr.obs_te.shape[2:])
        rescale = 1.0 if self.vf_scale is None else batch.reward_scale / self.vf_scale
        v_all = rescale * self.vf.predict(np.concatenate([obs, tr.last_obs_e, tr.final_obs]))
        val_te = v_all[:T * E].reshape(T, E)
        next_val_te = np.empty_like(val_te)
        next_val_te[:-1] = val_te[1:]
        next_val_te[-1] = v_all[T * E:T * E + E]
        next_val_te[tr.final_idx] = v_all[T * E + E:]  # V(final obs) bootstraps truncations
        _, ret_te = gae(tr.rew_te, val_te, next_val_te, tr.terminated_te, tr.terminated_te | tr.truncated_te,
                        cfg.gamma, cfg.lam)
        ret = ret_te.reshape(-1)
        stats = {"vf_explained_var": explained_variance(val_te.reshape(-1), ret)}
        stats.update(self.vf.fit(obs, ret, rng))
        self.vf_scale = batch.reward_scale
        return stats
