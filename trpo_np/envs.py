"""Environments: construction and validation, vectorization, observation/reward normalization,
and simulator state save/restore for the vine sampler.

Observation normalization keeps running mean and variance of raw observations (Chan et al.'s
parallel update); the policy and value see ``clip((o − μ) / sqrt(σ² + ε), ±10)``. The statistics
are updated from each sampled batch *after* the update, so they are frozen while a batch is
collected and optimized, and saved with checkpoints. Optional reward scaling divides rewards by
the running standard deviation of the discounted return (as in OpenAI baselines' VecNormalize).

Simulator state (for the vine method): MuJoCo (qpos, qvel, act, ctrl, time, warm-start
accelerations), Atari (:mod:`trpo_np.atari`), classic control (``unwrapped.state`` and the
env's RNG) or an env's own ``get_state``/``set_state``, with the TimeLimit counter: restoring it
and replaying the same actions reproduces the same observations and rewards.

References:
    Chan, Golub & LeVeque (1979), Updating formulae and a pairwise algorithm for computing
    sample variances.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np

from . import atari


class EnvError(ValueError):
    """A user-facing problem with an environment id or space."""


def make_env(env_id: str, render_mode: str | None = None, **atari_kwargs) -> gym.Env:
    """gym.make with clear errors; Atari ids (``ALE/...``) get the DQN preprocessing."""
    if atari.is_atari_id(env_id):
        return atari.make_atari_env(env_id, render_mode=render_mode, **atari_kwargs)
    try:
        env = gym.make(env_id, render_mode=render_mode)
    except gym.error.Error as e:
        raise EnvError(f"unknown environment id {env_id!r} ({e.__class__.__name__}: {e})") from e
    except ImportError as e:  # e.g. MuJoCo or Box2D missing
        raise EnvError(f"environment {env_id!r} needs a package that is not installed: {e}") from e
    check_spaces(env_id, env.observation_space, env.action_space)
    return env


def check_spaces(env_id: str, obs_space, act_space) -> None:
    if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)) or (
            isinstance(act_space, gym.spaces.Box) and len(act_space.shape) != 1):
        raise EnvError(f"{env_id}: unsupported action space {act_space}; "
                       "trpo_np supports Box (1-D, Gaussian policy) and Discrete (categorical)")
    if not isinstance(obs_space, gym.spaces.Box):
        raise EnvError(f"{env_id}: unsupported observation space {obs_space}; trpo_np supports Box")


def is_image_space(space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


def make_vector_env(env_id: str, num_envs: int, **kwargs) -> "VectorEnv":
    """num_envs copies stepped in this process, autoreset in the same step (the final observation
    is in info["final_obs"]). Sampling on several cores: :mod:`trpo_np.parallel`."""
    return VectorEnv(env_id, num_envs, **kwargs)


class VectorEnv:
    """``num_envs`` copies stepped one after another in this process, as gymnasium's
    ``SyncVectorEnv`` with same-step autoreset does, without its bookkeeping (info dicts, space
    iteration: about 15% of a Hopper-v4 step). A copy whose episode ends is reset in the same
    ``step``; its reset observation is returned and the episode's last observation is in
    ``info["final_obs"]`` (rows valid where an episode ended). ``info["raw_reward"]`` is the env's
    own ``info["raw_reward"]`` where it reports one (the Atari wrappers, whose rewards are
    clipped), else the reward. ``reset(seed=s)`` gives copy i the seed s + i.
    tests/test_envs.py checks all of it against ``SyncVectorEnv``."""

    def __init__(self, env_id: str, num_envs: int, **kwargs):
        self.envs = []
        try:
            for _ in range(num_envs):
                self.envs.append(make_env(env_id, **kwargs))
        except BaseException:
            self.close()
            raise
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space

    def _empty_obs(self):
        space = self.single_observation_space
        return np.zeros((self.num_envs,) + space.shape, space.dtype)

    def reset(self, seed: int | None = None):
        obs = self._empty_obs()
        for i, env in enumerate(self.envs):
            obs[i] = env.reset(seed=None if seed is None else seed + i)[0]
        return obs, {}

    def step(self, actions):
        n = self.num_envs
        obs, final = self._empty_obs(), self._empty_obs()
        rew, raw, term, trunc = np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        for i, env in enumerate(self.envs):
            o, r, te, tr, info = env.step(actions[i])
            rew[i], term[i], trunc[i] = r, te, tr
            raw[i] = info.get("raw_reward", r)
            if te or tr:
                final[i] = o
                o = env.reset()[0]
            obs[i] = o
        return obs, rew, term, trunc, {"final_obs": final, "raw_reward": raw}

    def close(self) -> None:
        for env in self.envs:
            env.close()


class RunningMeanStd:
    """Running mean and variance over the leading axis of batches, for observations or returns."""

    def __init__(self, shape=(), clip: float = 10.0, eps: float = 1e-8):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 0.0
        self.clip, self.eps = clip, eps

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        if n == 0:
            return
        b_mean, b_var = x.mean(axis=0), x.var(axis=0)
        tot = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * n / tot
        self.var = (self.var * self.count + b_var * n + delta ** 2 * self.count * n / tot) / tot
        self.count = tot

    def normalize(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        z = (x - self.mean) * (1.0 / np.sqrt(self.var + self.eps))
        return np.clip(z, -self.clip, self.clip, out=z).astype(dtype, copy=False)

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

    def __call__(self, rew_e: np.ndarray, done_e: np.ndarray) -> np.ndarray:
        self.ret = self.ret * self.gamma + rew_e
        self.seen.append(self.ret)
        self.ret = np.where(done_e, 0.0, self.ret)
        return rew_e / np.sqrt(self.rms.var + 1e-8)

    def update(self) -> None:
        """Fold the returns seen since the last update into the statistics."""
        if self.seen:
            self.rms.update(np.concatenate(self.seen))
            self.seen = []


# -- simulator state for the vine method -----------------------------------------------------
_CLASSIC_EXTRA = ("steps_beyond_terminated", "last_u")


def _time_limit(env):
    e = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, gym.wrappers.TimeLimit):
            return e
        e = e.env
    return None


def _env_name(env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


def state_kind(env) -> str | None:
    """How ``env``'s simulator state is saved: 'atari' (ALE and our wrappers), 'mujoco',
    'method' (the env's own ``get_state()``/``set_state(s)``, which must include its RNG),
    'classic' (classic control: ``unwrapped.state`` and its ``np_random``), or None.
    Call after the first reset (Pendulum creates ``state`` in reset)."""
    u = env.unwrapped
    if hasattr(u, "ale"):
        return "atari"
    if hasattr(u, "data") and hasattr(u, "model"):
        return "mujoco"
    if callable(getattr(u, "get_state", None)) and callable(getattr(u, "set_state", None)):
        return "method"
    if hasattr(u, "state") and hasattr(u, "np_random"):
        return "classic"
    return None


def check_state_support(env, env_id: str | None = None) -> str:
    """``state_kind(env)``, or a one-line EnvError when the vine method cannot restore it."""
    kind = state_kind(env)
    if kind is None:
        raise EnvError(f"{env_id or _env_name(env)}: --method vine needs simulator state save/restore (MuJoCo, "
                       "Atari, classic control with env.unwrapped.state, or an env with get_state()/set_state()); "
                       "this environment has none, use --method single")
    return kind


def get_state(env, kind: str | None = None):
    """A snapshot from which :func:`set_state` replays ``env`` (or a copy made the same way)
    exactly: the same actions give the same observations, rewards and done flags.

    MuJoCo: qpos, qvel, act, ctrl, warm-start accelerations, simulation time (together
    MuJoCo's integration state for these models) and the TimeLimit counter."""
    kind = kind or check_state_support(env)
    if kind == "atari":
        return atari.get_state(env)
    u = env.unwrapped
    tl = _time_limit(env)
    elapsed = None if tl is None else tl._elapsed_steps
    if kind == "mujoco":
        d = u.data
        return {"qpos": d.qpos.copy(), "qvel": d.qvel.copy(), "act": d.act.copy(), "time": float(d.time),
                "qacc_warmstart": d.qacc_warmstart.copy(), "ctrl": d.ctrl.copy(), "elapsed": elapsed}
    if kind == "method":
        return {"env": u.get_state(), "elapsed": elapsed}
    return {"state": copy.deepcopy(u.state), "rng": copy.deepcopy(u.np_random.bit_generator.state),
            "extra": {k: copy.deepcopy(getattr(u, k)) for k in _CLASSIC_EXTRA if hasattr(u, k)},
            "elapsed": elapsed}


def set_state(env, state, kind: str | None = None) -> None:
    kind = kind or check_state_support(env)
    if kind == "atari":
        atari.set_state(env, state)
        return
    u = env.unwrapped
    if kind == "mujoco":
        import mujoco

        d = u.data
        d.qpos[:], d.qvel[:], d.act[:] = state["qpos"], state["qvel"], state["act"]
        d.qacc_warmstart[:], d.ctrl[:] = state["qacc_warmstart"], state["ctrl"]
        d.time = state["time"]
        mujoco.mj_forward(u.model, d)
    elif kind == "method":
        u.set_state(state["env"])
    else:
        u.state = copy.deepcopy(state["state"])
        u.np_random.bit_generator.state = copy.deepcopy(state["rng"])
        for k, v in state["extra"].items():
            setattr(u, k, copy.deepcopy(v))
    tl = _time_limit(env)
    if tl is not None and state["elapsed"] is not None:
        tl._elapsed_steps = state["elapsed"]
