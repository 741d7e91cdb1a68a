"""Samplers: collect the data of one TRPO iteration.

Single path (paper Sec. 5.1): run the current policy π_old in ``num_envs`` copies of the
environment for a fixed number of steps; every visited (s_n, a_n) enters the surrogate with its
advantage. The policy is evaluated once per step for all copies.

Gymnasium semantics: ``terminated`` ends the return; ``truncated`` (time limit) does not, and the
value of the final observation is used to bootstrap (see :func:`trpo_np.value.gae`). The vector
env resets finished copies in the same step and puts the final observation in
``info["final_obs"]``.

Every sampler returns a batch with the same interface for the update: ``batch.paths`` (the
trajectories of π_old, in (time, env) layout: the value fit, the normalizers and the episode
statistics read them), ``batch.surrogate(adv_n)`` (what the TRPO step optimizes, given GAE
advantages of the paths) and ``batch.branch_steps`` (env steps spent beside the paths: the
vine's branches, 0 here).

References:
    Schulman et al. (2015), Trust Region Policy Optimization, arXiv 1502.05477, Sec. 5.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from . import simstate
from .envs import VectorEnv
from .normalize import RewardScaler, RunningMeanStd
from .parallel import Comm, mean_var
from .policy import Policy, Surrogate, single_path_objective


@dataclass
class Paths:
    """Transitions in (time, env) layout, observations already normalized for the networks."""

    obs_te: np.ndarray          # (T, E) + obs_shape
    act_te: np.ndarray          # (T, E) + act_shape
    logp_te: np.ndarray         # (T, E) log π_old(a|s)
    rew_te: np.ndarray          # (T, E) rewards used for learning (scaled or clipped)
    terminated_te: np.ndarray   # (T, E) bool
    truncated_te: np.ndarray    # (T, E) bool
    last_obs_e: np.ndarray      # (E,) + obs_shape: observation after the last step
    final_obs: np.ndarray       # (m,) + obs_shape: final observations of truncated episodes
    final_idx: tuple            # (t_m, e_m) of those truncations
    raw_obs: np.ndarray | None  # (T·E, obs_dim) raw observations for the normalizer, or None
    episodes: list = field(default_factory=list)  # (return, length) of episodes that ended
    # The scale the rewards were multiplied by (frozen for the batch): GAE and the vine's Q̂ use V
    # converted to it (ValueFunction.rescale); None: no reward scaling.
    reward_scale: float | None = None
    # π_old's distribution parameters at obs_te's states, rows t·E + e, kept from acting: the
    # update then needs no forward pass at θ_old on them (see policy.Surrogate.kl_p_old).
    p_old: object = None

    @property
    def steps(self) -> int:
        return self.rew_te.size

    def flat(self, x_te: np.ndarray) -> np.ndarray:
        """(T, E, ...) -> (T·E, ...), row t·E + e."""
        return x_te.reshape((-1,) + x_te.shape[2:])


@dataclass
class SinglePathBatch:
    """Single path (Sec. 5.1): every visited (s_n, a_n) enters the surrogate with its advantage."""

    paths: Paths
    branch_steps: int = 0

    def surrogate(self, adv_n: np.ndarray, comm: Comm = Comm()) -> Surrogate:
        """Eq. (14) with q = π_old over all steps, advantages standardized over the batch (of
        all ranks)."""
        mean, var = mean_var(adv_n, comm)
        adv_n = (adv_n - mean) / (np.sqrt(var) + 1e-8)
        obs_n = self.paths.flat(self.paths.obs_te)
        objective = single_path_objective(self.paths.logp_te.reshape(-1), adv_n, int(comm.sum(adv_n.size)))
        return Surrogate(obs_n, self.paths.flat(self.paths.act_te), objective, kl_obs=obs_n,
                         kl_p_old=self.paths.p_old)


class SinglePathSampler:
    """Keeps the vector env running across iterations (episodes continue over batch borders).

    ``venv`` holds copies first, first + 1, ... of the run's ``num_envs_total`` (several ranks:
    each steps its block). Copy i is reset with ``seed`` (derived from the run's ``--seed``) + i, and the action noise of each step is
    drawn for all copies from ``rng`` and this block's rows taken, so a copy's random numbers do
    not depend on how the copies are split."""

    def __init__(self, venv: VectorEnv, policy: Policy, rng: np.random.Generator,
                 seed: int, obs_rms: RunningMeanStd | None = None, reward_scaler: RewardScaler | None = None,
                 first: int = 0, num_envs_total: int | None = None):
        self.venv, self.policy, self.rng = venv, policy, rng
        self.obs_rms, self.reward_scaler = obs_rms, reward_scaler
        self.num_envs = venv.num_envs
        self.first, self.num_envs_total = first, num_envs_total or venv.num_envs
        space = venv.single_action_space
        self.clip = (space.low, space.high) if isinstance(space, gym.spaces.Box) else None
        self.obs, _ = venv.reset(seed=seed + first)  # copy i gets seed + i
        self.ep_ret = np.zeros(self.num_envs)
        self.ep_len = np.zeros(self.num_envs, dtype=np.int64)

    def close(self) -> None:
        self.venv.close()

    def state(self) -> list[dict]:
        """What continues this block's episodes exactly, per copy: the simulator state (None if
        the env cannot save it), the current observation, the episode's return and length so far."""
        return [{"env": simstate.checkpoint_state(env), "obs": self.obs[i], "ep_ret": float(self.ep_ret[i]),
                 "ep_len": int(self.ep_len[i])} for i, env in enumerate(self.venv.envs)]

    def restore(self, copies: list[dict]) -> None:
        """Continue from :meth:`state` (of the same copies)."""
        for i, (env, c) in enumerate(zip(self.venv.envs, copies)):
            simstate.restore_checkpoint_state(env, c["env"])
            self.obs[i], self.ep_ret[i], self.ep_len[i] = c["obs"], c["ep_ret"], c["ep_len"]

    def normalize(self, obs):
        if self.obs_rms is None:
            return obs
        return self.obs_rms.normalize(obs, self.policy.dtype)

    def clip_actions(self):
        """``clip(a)``: actions into a Box space's bounds (np.clip without its wrapper's overhead), or
        unchanged for a discrete space."""
        if self.clip is None:
            return lambda act: act
        low, high = self.clip
        return lambda act: np.minimum(np.maximum(act, low), high)

    def sample(self, steps: int) -> SinglePathBatch:
        return SinglePathBatch(self.paths(steps))

    def paths(self, steps: int, on_step=None) -> Paths:
        """About ``steps`` env steps of all copies (rounded up to a multiple of num_envs_total);
        this block's part. ``on_step(t, obs_n)``, if given, is called before the policy acts at
        step t (the vine sampler saves simulator states there)."""
        E, a = self.num_envs, self.first
        T = -(-steps // self.num_envs_total)  # ceil: every copy runs the same number of steps
        scale = None if self.reward_scaler is None else self.reward_scaler.scale()  # frozen for the batch
        pol = self.policy
        # θ and the normalizers are fixed while a batch is collected: what every step would
        # recompute from them is computed once (this work beside the env was ~1/5 of a 4-copy
        # Hopper step: bench/README.md, "Speed").
        act_fn, clip = pol.actor(), self.clip_actions()
        normalize = self.normalize if self.obs_rms is None else self.obs_rms.normalizer(pol.dtype)
        obs_n = normalize(self.obs)
        obs_te = np.empty((T,) + obs_n.shape, dtype=obs_n.dtype)
        raw = np.empty((T,) + self.obs.shape, dtype=self.obs.dtype) if self.obs_rms is not None else None
        act_te = logp_te = None
        rew_te = np.empty((T, E), dtype=pol.dtype)
        term_te = np.zeros((T, E), dtype=bool)
        trunc_te = np.zeros((T, E), dtype=bool)
        final_obs, final_t, final_e, episodes, p_t = [], [], [], [], []
        for t in range(T):
            if on_step is not None:
                on_step(t, obs_n)
            obs_te[t] = obs_n
            if raw is not None:
                raw[t] = self.obs
            noise = pol.dist.noise(self.rng, (self.num_envs_total,))[a:a + E]  # every copy's, this block's rows
            p, act, logp = act_fn(pol.preprocess(obs_n), noise)
            p_t.append(p)
            if act_te is None:
                act_te = np.empty((T,) + act.shape, dtype=act.dtype)
                logp_te = np.empty((T, E), dtype=logp.dtype)
            act_te[t], logp_te[t] = act, logp
            self.obs, rew, term, trunc, info = self.venv.step(clip(act))
            done = term | trunc
            self.ep_ret += info["raw_reward"]
            self.ep_len += 1
            if self.reward_scaler is not None:
                rew = self.reward_scaler(rew, done)
            rew_te[t], term_te[t], trunc_te[t] = rew, term, trunc
            if done.any():
                for e in np.flatnonzero(done):
                    if trunc[e] and not term[e]:
                        final_obs.append(info["final_obs"][e])
                        final_t.append(t)
                        final_e.append(e)
                over = info["game_over"]  # whole episodes (Atari --life-loss: whole games) are logged
                episodes += [(float(self.ep_ret[e]), int(self.ep_len[e])) for e in np.flatnonzero(over)]
                self.ep_ret[over] = 0.0
                self.ep_len[over] = 0
            obs_n = normalize(self.obs)
        final = (normalize(np.stack(final_obs)) if final_obs
                 else np.zeros((0,) + obs_n.shape[1:], dtype=obs_n.dtype))
        return Paths(obs_te, act_te, logp_te, rew_te, term_te, trunc_te, obs_n, final,
                     (np.array(final_t, dtype=np.intp), np.array(final_e, dtype=np.intp)),
                     None if raw is None else raw.reshape((T * E,) + raw.shape[2:]), episodes, scale,
                     p_old=type(p_t[0]).join(p_t))
