"""Environments: construction with clear errors, supported spaces, and ``num_envs`` copies
stepped together (:class:`VectorEnv`).

MuJoCo and classic-control ids go through ``gym.make``; Atari ids (``ALE/...``) get the DQN
preprocessing of :mod:`trpo_np.atari`. Normalization: :mod:`trpo_np.normalize`; simulator
state save/restore for the vine: :mod:`trpo_np.simstate`.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from . import atari


class EnvError(ValueError):
    """A user-facing problem with an environment id or space."""


def make_env(env_id: str, render_mode: str | None = None, env_kwargs: dict | None = None,
             **atari_kwargs) -> gym.Env:
    """gym.make with clear errors; Atari ids (``ALE/...``) get the DQN preprocessing.

    ``env_kwargs`` go to ``gym.make(env_id, **env_kwargs)`` (``--env-kwargs``). An id
    ``module:Env-v0`` imports ``module`` first (gymnasium's rule), which registers ``Env-v0``."""
    env_kwargs = env_kwargs or {}
    if atari.is_atari_id(env_id):
        return atari.make_atari_env(env_id, render_mode=render_mode, env_kwargs=env_kwargs, **atari_kwargs)
    try:
        env = gym.make(env_id, render_mode=render_mode, **env_kwargs)
    except gym.error.DependencyNotInstalled as e:  # e.g. Box2D
        raise EnvError(f"environment {env_id!r} needs a package that is not installed: {e}") from e
    except gym.error.Error as e:
        raise EnvError(f"unknown environment id {env_id!r} ({e.__class__.__name__}: {e})") from e
    except ImportError as e:  # e.g. MuJoCo or Box2D missing, or Pusher-v4 under mujoco >= 3
        newer = newest_version(env_id)
        if newer != env_id:
            raise EnvError(f"environment {env_id!r} does not run with the installed packages ({e}); "
                           f"try --env {newer}") from e
        raise EnvError(f"environment {env_id!r} needs a package that is not installed: {e}") from e
    except TypeError as e:
        if not env_kwargs:
            raise EnvError(f"environment {env_id!r} could not be created (TypeError: {e})") from e
        raise EnvError(f"{env_id} does not take --env-kwargs {env_kwargs} ({e})") from e
    except Exception as e:  # e.g. MUJOCO_GL=osmesa without the OSMesa library fails in the import
        gl = os.environ.get("MUJOCO_GL")
        hint = (f"; MUJOCO_GL={gl} is set: is its library installed? Try MUJOCO_GL=egl, or unset it to train"
                if gl else "")
        raise EnvError(f"environment {env_id!r} could not be created ({type(e).__name__}: {e}){hint}") from e
    check_spaces(env_id, env.observation_space, env.action_space)
    return env


def newest_version(env_id: str) -> str:
    """The registered id of ``env_id``'s name with the highest version (``Pusher-v4`` ->
    ``Pusher-v5``), or ``env_id`` itself."""
    ns, name, version = gym.envs.registration.parse_env_id(env_id)
    if version is None:
        return env_id
    versions = [spec.version for spec in gym.registry.values()
                if spec.namespace == ns and spec.name == name and spec.version is not None]
    best = max(versions, default=version)
    return env_id if best <= version else gym.envs.registration.get_env_id(ns, name, best)


def check_spaces(env_id: str, obs_space, act_space) -> None:
    if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)) or (
            isinstance(act_space, gym.spaces.Box) and len(act_space.shape) != 1):
        raise EnvError(f"{env_id}: unsupported action space {act_space}; "
                       "trpo_np supports Box (1-D, Gaussian policy) and Discrete (categorical)")
    if not isinstance(obs_space, gym.spaces.Box):
        raise EnvError(f"{env_id}: unsupported observation space {obs_space}; trpo_np supports Box")


def is_image_space(space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


class VectorEnv:
    """``num_envs`` copies stepped one after another in this process, as gymnasium's
    ``SyncVectorEnv`` with same-step autoreset does, without its bookkeeping (info dicts, space
    iteration: about 15% of a Hopper-v4 step). A copy whose episode ends is reset in the same
    ``step``; its reset observation is returned and the episode's last observation is in
    ``info["final_obs"]`` (rows valid where an episode ended). ``info["raw_reward"]`` is the env's
    own ``info["raw_reward"]`` where it reports one (the Atari wrappers, whose rewards are
    clipped), else the reward. ``info["game_over"]`` marks the episodes that really ended: all
    ends, except an Atari learning episode ended by a lost life only (``--life-loss``), whose game
    goes on. ``reset(seed=s)`` gives copy i the seed s + i.
    tests/test_envs.py checks all of it against ``SyncVectorEnv``. Sampling on several cores:
    :mod:`trpo_np.parallel`.

    Every observation and reward is checked as it arrives, before it reaches any statistic: a
    non-finite value (NaN or inf), an observation of the wrong shape or an exception of the env
    is an :class:`EnvError` that names the copy and the call."""

    def __init__(self, env_id: str, num_envs: int, **kwargs):
        self.env_id = env_id
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
            obs[i] = self._reset(i, None if seed is None else seed + i)
        return obs, {}

    def step(self, actions):
        n = self.num_envs
        obs, final = self._empty_obs(), self._empty_obs()
        rew, raw, term, trunc = np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        game_over = np.zeros(n, bool)
        for i, env in enumerate(self.envs):
            try:
                o, r, te, tr, info = env.step(actions[i])
            except Exception as e:
                raise EnvError(f"{self.env_id}: step() of env copy {i} raised {type(e).__name__}: {e}") from e
            rew[i], term[i], trunc[i] = r, te, tr
            raw[i] = info.get("raw_reward", r)
            o = self._check_shape(o, i, "step()")
            if te or tr:
                game_over[i] = not info.get("life_lost", False)
                final[i] = o
                o = self._reset(i)
            obs[i] = o
        if not np.isfinite(raw).all() or not np.isfinite(rew).all():  # one test for all copies
            i = int(np.flatnonzero(~(np.isfinite(raw) & np.isfinite(rew)))[0])
            raise EnvError(f"{self.env_id}: step() of env copy {i} returned a non-finite value (NaN or inf) "
                           f"as its reward ({raw[i]})")
        self._check_finite(final, "step()")
        self._check_finite(obs, "step()")
        return obs, rew, term, trunc, {"final_obs": final, "raw_reward": raw, "game_over": game_over}

    def _reset(self, i: int, seed: int | None = None):
        try:
            o = self.envs[i].reset(seed=seed)[0]
        except Exception as e:
            raise EnvError(f"{self.env_id}: reset() of env copy {i} raised {type(e).__name__}: {e}") from e
        o = self._check_shape(o, i, "reset()")
        self._check_finite(o[None], "reset()", i)
        return o

    def _check_shape(self, o, i: int, call: str):
        o = np.asarray(o)
        if o.shape != self.single_observation_space.shape:
            raise EnvError(f"{self.env_id}: {call} of env copy {i} returned an observation of shape {o.shape}, "
                           f"not the observation space's {self.single_observation_space.shape}")
        return o

    def _check_finite(self, obs, call: str, first: int = 0) -> None:
        """obs: (copies,) + obs_shape, of copies first, first + 1, ..."""
        if obs.dtype.kind == "f" and not np.isfinite(obs).all():
            i, j = np.argwhere(~np.isfinite(obs.reshape(len(obs), -1)))[0]
            raise EnvError(f"{self.env_id}: {call} of env copy {first + i} returned a non-finite value (NaN or inf) "
                           f"in its observation (feature {j})")

    def close(self) -> None:
        for env in self.envs:
            env.close()
