"""Sampling on several processes (trpo_np.parallel) against the one-process sampler."""

import multiprocessing as mp

import gymnasium as gym
import numpy as np
import pytest

from trpo_np.distributions import Categorical, DiagGaussian
from trpo_np.config import Config
from trpo_np.envs import VectorEnv
from trpo_np.normalize import RewardScaler
from trpo_np.parallel import ParallelSampler, split
from trpo_np.samplers import SinglePathSampler
from trpo_np.train import Trainer

gym.register("TrpoNpShortCartPole-v1", entry_point="gymnasium.envs.classic_control.cartpole:CartPoleEnv",
             max_episode_steps=25)


@pytest.mark.parametrize("dist", [DiagGaussian(3), Categorical(4)])
def test_noise_drawn_at_once_equals_noise_drawn_step_by_step(dist):
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    at_once = dist.noise(a, (7, 4))
    steps = np.stack([dist.noise(b, (4,)) for _ in range(7)])
    np.testing.assert_array_equal(at_once, steps)


def test_split_is_contiguous_and_even():
    assert split(4, 2) == [(0, 2), (2, 4)]
    assert split(5, 2) == [(0, 2), (2, 5)] or split(5, 2) == [(0, 3), (3, 5)]
    assert split(3, 8) == [(0, 1), (1, 2), (2, 3)]  # never more processes than copies
    assert split(6, 1) == [(0, 6)]


def samplers(env_id, num_envs, processes):
    """A one-process and a parallel sampler over the same seeded copies, the same policy and
    normalizers, and equal action generators."""
    cfg = Config(env=env_id, num_envs=num_envs, seed=3)
    tr = Trainer(cfg, None, quiet=True)
    tr.obs_rms.update(np.random.default_rng(0).normal(0.1, 2.0, (50,) + tr.obs_rms.mean.shape))
    tr.reward_scaler.rms.update(np.random.default_rng(1).normal(0, 3.0, 50))
    scaler_one = tr.reward_scaler
    scaler_par = RewardScaler(num_envs, cfg.gamma)  # its own running returns, the same statistics
    scaler_par.rms = scaler_one.rms
    one = SinglePathSampler(VectorEnv(env_id, num_envs), tr.policy, np.random.default_rng(9), 11, tr.obs_rms,
                            scaler_one)
    par = ParallelSampler(env_id, num_envs, processes, tr.policy, np.random.default_rng(9), 11, tr.obs_rms,
                          scaler_par)
    return tr, one, par, scaler_one, scaler_par


def test_parallel_batch_is_the_one_process_batch():
    """CartPole with episodes of at most 25 steps, 5 copies in 2 processes (blocks of 2 and 3),
    2 batches: the joined batch has the same observations, actions, rewards, ends, truncation bootstraps and
    episodes as the one-process batch (the actions are discrete, so the policy's rounding on
    blocks does not change them); log-probabilities agree to rounding; the reward scaler's
    running returns and recorded returns too."""
    tr, one, par, scaler_one, scaler_par = samplers("TrpoNpShortCartPole-v1", 5, 2)
    try:
        for _ in range(2):
            b1, b2 = one.sample(200).paths, par.sample(200).paths
            assert b1.obs_te.shape == b2.obs_te.shape == (40, 5, 4)
            for name in ("obs_te", "act_te", "rew_te", "terminated_te", "truncated_te", "last_obs_e", "raw_obs"):
                np.testing.assert_array_equal(getattr(b1, name), getattr(b2, name), err_msg=name)
            order1 = np.lexsort(b1.final_idx[::-1])  # truncations in (t, e) order; blocks list them by block
            order2 = np.lexsort(b2.final_idx[::-1])
            np.testing.assert_array_equal(np.stack(b1.final_idx)[:, order1], np.stack(b2.final_idx)[:, order2])
            np.testing.assert_array_equal(b1.final_obs[order1], b2.final_obs[order2])
            assert len(b1.final_obs) > 0 and b1.terminated_te.any()  # both kinds of episode end were covered
            assert sorted(b1.episodes) == sorted(b2.episodes) and b1.episodes
            np.testing.assert_allclose(b1.logp_te, b2.logp_te, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(scaler_one.ret, scaler_par.ret)
            np.testing.assert_allclose(np.concatenate(scaler_one.seen), np.concatenate(scaler_par.seen))
            scaler_one.seen, scaler_par.seen = [], []
            # the workers must act with the new θ and normalize with the new statistics
            tr.policy.theta += 0.05 * np.random.default_rng(2).standard_normal(tr.policy.size).astype(
                tr.policy.dtype)
            tr.obs_rms.update(np.random.default_rng(3).normal(-0.2, 0.5, (20, 4)))
            scaler_one.rms.update(np.random.default_rng(4).normal(1.0, 9.0, 20))
    finally:
        one.close()
        par.close()


def test_parallel_hopper_batch_agrees_with_the_one_process_batch():
    """Continuous actions: equal up to the rounding of the policy on blocks (a short batch, before
    MuJoCo's sensitivity amplifies it)."""
    tr, one, par, _, _ = samplers("Hopper-v4", 4, 2)
    try:
        b1, b2 = one.sample(40).paths, par.sample(40).paths
        np.testing.assert_allclose(b1.act_te, b2.act_te, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b1.obs_te, b2.obs_te, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(b1.rew_te, b2.rew_te, rtol=1e-3, atol=1e-4)
    finally:
        one.close()
        par.close()


def test_workers_exit_on_close_and_report_their_errors():
    with pytest.raises(ValueError, match="unknown environment id"):
        ParallelSampler("NoSuchEnv-v0", 2, 2, None, None, 0)
    tr, one, par, _, _ = samplers("CartPole-v1", 3, 3)
    one.close()
    procs = list(par.procs)
    assert len(procs) == 2 and all(p.is_alive() for p in procs)
    par.close()
    assert not any(p.is_alive() for p in procs) and not mp.active_children()
