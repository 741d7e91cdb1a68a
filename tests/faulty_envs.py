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
