#!/usr/bin/env python
"""The return of uniform random actions: the floor a learning curve starts from.

Episode i starts from ``reset(seed=i)``; actions are ``action_space.sample()`` (seeded 0). Prints
mean ± std over the episodes for each env (MuJoCo and classic control; gymnasium's own episode
limits).

    python bench/random_return.py Reacher-v4 Pusher-v5 Humanoid-v4 --episodes 100
"""

from __future__ import annotations

import argparse
import warnings

import gymnasium as gym
import numpy as np


def random_return(env_id: str, episodes: int) -> tuple[float, float]:
    env = gym.make(env_id)
    env.action_space.seed(0)
    returns = []
    for i in range(episodes):
        env.reset(seed=i)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            total, done = total + float(r), term or trunc
        returns.append(total)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("envs", nargs="+")
    p.add_argument("--episodes", type=int, default=100)
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=".*is out of date.*")
    for env_id in args.envs:
        mean, std = random_return(env_id, args.episodes)
        print(f"{env_id}: uniform random actions, {args.episodes} episodes: {mean:.1f} ± {std:.1f}", flush=True)


if __name__ == "__main__":
    main()
