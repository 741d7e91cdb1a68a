"""trpo_np.envs.VectorEnv against gymnasium's SyncVectorEnv (same-step autoreset)."""

import gymnasium as gym
import numpy as np
import pytest

from trpo_np.envs import VectorEnv, make_env

gym.register("TrpoNpShortCartPole-v0", entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv",
             max_episode_steps=15)


@pytest.mark.parametrize("env_id", ["Hopper-v4", "TrpoNpShortCartPole-v0"])
def test_vector_env_steps_as_gymnasium_sync_vector_env(env_id):
    """Same seeds and actions: the same observations, rewards, terminations, truncations (the
    short CartPole truncates every 15 steps) and final observations."""
    n, steps = 3, 60
    ours = VectorEnv(env_id, n)
    ref = gym.vector.SyncVectorEnv([lambda: make_env(env_id) for _ in range(n)],
                                   autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    space = ours.single_action_space
    assert space == ref.single_action_space and ours.single_observation_space == ref.single_observation_space
    np.testing.assert_array_equal(ours.reset(seed=7)[0], ref.reset(seed=7)[0])
    rng = np.random.default_rng(0)
    ended = {"term": 0, "trunc": 0}
    for _ in range(steps):
        act = (rng.integers(0, space.n, n) if isinstance(space, gym.spaces.Discrete)
               else rng.uniform(space.low, space.high, (n,) + space.shape).astype(space.dtype))
        o1, r1, te1, tr1, i1 = ours.step(act)
        o2, r2, te2, tr2, i2 = ref.step(act)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(te1, te2)
        np.testing.assert_array_equal(tr1, tr2)
        np.testing.assert_array_equal(i1["raw_reward"], r1)
        for e in np.flatnonzero(te1 | tr1):
            np.testing.assert_array_equal(i1["final_obs"][e], i2["final_obs"][e])
        ended["term"] += int(te1.sum())
        ended["trunc"] += int((tr1 & ~te1).sum())
    ours.close()
    ref.close()
    if env_id.startswith("TrpoNp"):
        assert ended["trunc"] > 0  # the comparison covered truncations too
    assert ended["term"] + ended["trunc"] > 0


def test_vector_env_reports_unknown_ids_clearly():
    with pytest.raises(ValueError, match="unknown environment id 'NoSuchEnv-v0'"):
        VectorEnv("NoSuchEnv-v0", 2)
