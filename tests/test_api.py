"""The Python API: trpo_np.train, trpo_np.load and Agent.predict / evaluate."""

import importlib
import os

import gymnasium as gym
import numpy as np
import pytest

import trpo_np
from trpo_np import evaluation
from trpo_np.nn import ShapeError


class Recorder(gym.Wrapper):
    """Records (observation, action) of every step: the state the agent saw and what it chose."""

    def __init__(self, env, seen):
        super().__init__(env)
        self.seen = seen

    def reset(self, **kwargs):
        self.obs, info = self.env.reset(**kwargs)
        return self.obs, info

    def step(self, action):
        self.seen.append((self.obs.copy(), np.copy(action)))
        self.obs, *rest = self.env.step(action)
        return (self.obs, *rest)


def test_predict_on_raw_observations_equals_the_trainers_evaluation(tmp_path, monkeypatch):
    run = trpo_np.train("CartPole-v1", steps=6144, seed=2, out=str(tmp_path / "cp"), quiet=True,
                        batch_steps=2048, eval_every=0)
    assert run.stats["env_steps"] == 6144 and len(run.final_returns) == 10
    assert {"config.json", "progress.csv", "monitor.csv", "versions.json", "checkpoint.npz"} <= set(
        os.listdir(run.run_dir))
    agent = trpo_np.load(run.run_dir)

    seen = []  # the states and actions of the trainer's own deterministic evaluation
    make_env = evaluation.make_env
    monkeypatch.setattr(evaluation, "make_env", lambda *a, **k: Recorder(make_env(*a, **k), seen))
    returns = run.trainer.evaluate(3, seed=11)
    obs_n = np.stack([o for o, _ in seen])
    act_n = np.array([a for _, a in seen])
    assert len(seen) == sum(returns)  # CartPole: reward 1 a step
    assert set(act_n.tolist()) == {0, 1}

    single = [agent.predict(o) for o in obs_n]  # one raw observation at a time
    assert all(np.shape(a) == () for a in single)
    assert np.array_equal(single, act_n)
    assert np.array_equal(agent.predict(obs_n), act_n)  # a batch
    # Not a vacuous check: without the saved normalizer the policy chooses otherwise on some states.
    unnormalized, _ = agent.policy.act(obs_n, None, deterministic=True)
    assert (unnormalized != act_n).any()
    # the checkpoint file itself loads the same agent
    assert np.array_equal(trpo_np.load(os.path.join(run.run_dir, "checkpoint.npz")).predict(obs_n), act_n)

    with pytest.raises(ShapeError, match=r"an observation has shape \(4,\)"):
        agent.predict(np.zeros(5))
    # train() released the run directory's lock: the run can be continued in this process
    trainer = importlib.import_module("trpo_np.train").resume_run(run.run_dir, 8192, quiet=True)
    trainer.close()


def test_continuous_actions_are_clipped_and_shaped_like_the_action_space(tmp_path):
    run = trpo_np.train("Pendulum-v1", steps=400, seed=0, out=str(tmp_path / "pend"), quiet=True,
                        batch_steps=400, num_envs=2, eval_every=0, eval_episodes=1)
    agent = run.agent
    env = agent.make_env()
    obs, _ = env.reset(seed=0)
    a = agent.predict(obs)
    assert a.shape == env.action_space.shape == (1,)
    obs_n = np.stack([env.observation_space.sample() for _ in range(64)])
    agent.policy.theta[-1] = 3.0  # log-std: wide samples, so that some fall outside [-2, 2]
    samples = agent.predict(obs_n, deterministic=False)
    assert samples.shape == (64, 1) and np.all(np.abs(samples) <= 2.0) and np.any(np.abs(samples) == 2.0)
    # deterministic episodes do not depend on the log-std: the saved agent plays them the same
    assert agent.evaluate(episodes=1, seed=3) == trpo_np.load(run.run_dir).evaluate(episodes=1, seed=3)


def test_unknown_setting_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="unknown setting.*max_kll"):
        trpo_np.train("CartPole-v1", steps=100, out=str(tmp_path / "x"), max_kll=0.1)
    assert not os.path.exists(tmp_path / "x")
