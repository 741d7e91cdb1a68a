"""Environments that fail on purpose, registered on import; ids ``tests.faulty_envs:NAME`` work in
any process started from the repository root (the MPI ranks too)."""

import gymnasium as gym
import numpy as np


class NaNAfter(gym.Env):
    """A 2-D observation env that emits NaN observations from step 30 on (with ``odd_seeds_only``:
    only in copies first reset with an odd seed, so that one of two MPI ranks fails)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None, odd_seeds_only=False):
        self.render_mode, self.odd_seeds_only, self.fails = render_mode, odd_seeds_only, not odd_seeds_only

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None and self.odd_seeds_only:
            self.fails = seed % 2 == 1
        self.t = 0
        return np.zeros(2), {}

    def step(self, action):
        self.t += 1
        obs = np.full(2, np.nan) if self.fails and self.t >= 30 else self.np_random.standard_normal(2)
        return obs, 1.0, False, self.t >= 200, {}


gym.register("NaNAfter-v0", entry_point=NaNAfter)
gym.register("NaNOnOneRank-v0", entry_point=NaNAfter, kwargs={"odd_seeds_only": True})


class Faulty(gym.Env):
    """A 3-D observation env with a fault from step ``after`` on (counted over the env's whole
    life, across episodes of 50 steps): ``obs`` (an observation of ``value``), ``reward`` (a
    reward of ``value``), ``step`` or ``reset`` (raises RuntimeError), ``shape`` (an observation
    of the wrong shape). Discrete actions; a state for the vine (``unwrapped.state``)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None, fault="obs", value=np.inf, after=50):
        self.render_mode, self.fault, self.value, self.after = render_mode, fault, value, after
        self.total = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.fault == "reset" and self.total >= self.after:
            raise RuntimeError("the simulator failed to reset")
        self.t, self.state = 0, self.np_random.standard_normal(3)
        return self.state.copy(), {}

    def step(self, action):
        self.t += 1
        self.total += 1
        self.state = 0.9 * self.state + self.np_random.standard_normal(3) * 0.1 + (action - 0.5) * 0.1
        obs, rew = self.state.copy(), float(-abs(self.state[0]))
        if self.total >= self.after:
            if self.fault == "obs":
                obs[1] = self.value
            elif self.fault == "reward":
                rew = self.value
            elif self.fault == "step":
                raise RuntimeError("the simulator diverged")
            elif self.fault == "shape":
                obs = np.zeros(4)
        return obs, rew, False, self.t >= 50, {}


for _name, _kwargs in {"InfObs": dict(fault="obs"), "InfObsLate": dict(fault="obs", after=600), "NaNReward": dict(fault="reward", value=np.nan),
                       "InfReward": dict(fault="reward"), "RaiseInStep": dict(fault="step"),
                       "RaiseInReset": dict(fault="reset"), "WrongShape": dict(fault="shape")}.items():
    gym.register(f"{_name}After-v0", entry_point=Faulty, kwargs=_kwargs)
