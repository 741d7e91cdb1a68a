"""Tests for trpo_np.atari: preprocessing against a by-hand pipeline, seeding, rewards, state restore."""
import functools
import pickle

import cv2
import gymnasium as gym
import numpy as np
import pytest

from trpo_np.atari import get_state, is_atari_id, make_atari_env, set_state

PONG = "ALE/Pong-v5"


def rollout(env, actions):
    """Step env through actions; return stacked obs, rewards, terminated, truncated."""
    steps = [env.step(int(a))[:4] for a in actions]
    obs, rew, term, trunc = zip(*steps)
    return np.stack(obs), np.array(rew), np.array(term), np.array(trunc)


def assert_same_rollout(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("frame_size, stack", [(42, 4), (84, 2)])
def test_observation_shape_dtype_and_space(frame_size, stack):
    env = make_atari_env(PONG, frame_size=frame_size, stack=stack)
    assert env.observation_space.shape == (frame_size, frame_size, stack)
    assert env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    obs2 = env.step(0)[0]
    for o in (obs, obs2):
        assert o.shape == (frame_size, frame_size, stack) and o.dtype == np.uint8
        assert o.flags.c_contiguous and env.observation_space.contains(o)


def test_frame_stack_order_oldest_to_newest():
    env = make_atari_env(PONG)
    prev, _ = env.reset(seed=1)
    for k in range(1, 4):  # reset pads the stack with the first frame
        np.testing.assert_array_equal(prev[..., k], prev[..., 0])
    rng = np.random.default_rng(0)
    newest_changed = 0
    for _ in range(30):
        obs = env.step(int(rng.integers(env.action_space.n)))[0]
        np.testing.assert_array_equal(obs[..., :-1], prev[..., 1:])  # channels shift by one
        newest_changed += not np.array_equal(obs[..., -1], prev[..., -1])
        prev = obs
    assert newest_changed > 10  # the newest frame really is new


def test_preprocessed_frame_is_resized_max_of_last_two_raw_frames():
    frame_size, skip = 42, 4
    env = make_atari_env(PONG, frame_size=frame_size, frame_skip=skip, noop_max=0)
    raw = gym.make(PONG, frameskip=1, repeat_action_probability=0.0,
                   full_action_space=False, obs_type="grayscale")
    env.reset(seed=3)
    raw.reset(seed=3)
    for _ in range(skip):  # PressFire: Pong's second action is FIRE, pressed once after a reset
        raw.step(1)
    actions = np.random.default_rng(3).integers(env.action_space.n, size=60)
    max_mattered = 0
    for a in actions:
        newest = env.step(int(a))[0][..., -1]
        frames = [raw.step(int(a))[0] for _ in range(skip)]
        pooled = np.maximum(frames[-2], frames[-1])
        expected = cv2.resize(pooled, (frame_size, frame_size), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(newest, expected)
        last_only = cv2.resize(frames[-1], (frame_size, frame_size), interpolation=cv2.INTER_AREA)
        max_mattered += not np.array_equal(newest, last_only)
    assert max_mattered > 0  # the ball moves, so the max over two frames is visible


def test_same_seed_same_trajectory_and_seeds_vary_noops():
    actions = np.random.default_rng(4).integers(6, size=80)
    runs = []
    for _ in range(2):
        env = make_atari_env(PONG)
        first, _ = env.reset(seed=7)
        runs.append((first, *rollout(env, actions)))
    assert_same_rollout(runs[0], runs[1])

    env = make_atari_env(PONG)
    frames = {env.reset(seed=s)[1]["episode_frame_number"] for s in range(6)}
    noops = {n - 4 for n in frames}  # after the noops, PressFire's FIRE takes one step of 4 frames
    assert len(noops) > 1 and all(1 <= n <= 30 for n in noops)  # noop starts differ with the seed


def test_sticky_actions_change_the_trajectory():
    actions = np.random.default_rng(5).integers(6, size=60)
    obs = {}
    for p in (0.0, 0.25):
        env = make_atari_env(PONG, sticky_actions=p)
        env.reset(seed=2)
        obs[p] = rollout(env, actions)[0]
    assert not np.array_equal(obs[0.0], obs[0.25])


def test_reward_clipping_and_raw_reward():
    steps = 150  # SpaceInvaders gives 5..30 points per alien, so clipping is visible
    env = make_atari_env("ALE/SpaceInvaders-v5", max_episode_steps=steps)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    rewards, raw, truncated = [], [], False
    for t in range(steps):
        _, r, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        rewards.append(r)
        raw.append(info["raw_reward"])
        assert not terminated and truncated == (t == steps - 1)  # limit counts agent steps
    rewards, raw = np.array(rewards), np.array(raw)
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(rewards, np.sign(raw))
    assert raw.max() > 1  # a raw reward really was clipped

    env = make_atari_env("ALE/SpaceInvaders-v5", clip_rewards=False, max_episode_steps=steps)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    unclipped = [env.step(int(rng.integers(env.action_space.n)))[1] for _ in range(steps)]
    np.testing.assert_array_equal(unclipped, raw)


def test_life_loss_ends_learning_episode_but_not_the_game():
    env = make_atari_env("ALE/Breakout-v5", terminal_on_life_loss=True)
    _, info = env.reset(seed=0)
    assert info["lives"] == 5
    rng = np.random.default_rng(0)
    lives_seen = []
    while True:
        _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        if env.unwrapped.ale.game_over():
            assert terminated and not truncated
            break
        if terminated or truncated:  # a life lost: reset continues the same game
            assert terminated and not truncated
            frame = env.unwrapped.ale.getEpisodeFrameNumber()
            _, info = env.reset()
            assert env.unwrapped.ale.getEpisodeFrameNumber() == frame
            lives_seen.append(info["lives"])
    assert lives_seen == [4, 3, 2, 1]


@pytest.mark.parametrize("bad_id", ["ALE/Pongg-v5", "ALE/Pong-v99", "Pongg-v5", "CartPole-v1"])
def test_unknown_id_raises_value_error_naming_it(bad_id):
    with pytest.raises(ValueError, match=bad_id.replace("/", ".")):
        make_atari_env(bad_id)


def test_is_atari_id():
    assert is_atari_id(PONG) and is_atari_id("PongNoFrameskip-v4")
    assert not is_atari_id("CartPole-v1")


@pytest.mark.parametrize("game, kwargs", [
    (PONG, dict(sticky_actions=0.0)),
    (PONG, dict(sticky_actions=0.25)),
    ("ALE/Breakout-v5", dict(sticky_actions=0.25, terminal_on_life_loss=True)),
])
def test_restore_replays_identically(game, kwargs):
    env = make_atari_env(game, max_episode_steps=1000, **kwargs)
    other = make_atari_env(game, max_episode_steps=1000, **kwargs)
    env.reset(seed=11)
    other.reset(seed=99)
    rng = np.random.default_rng(11)
    n = env.action_space.n
    for _ in range(8):  # several save points: a sticky first frame after restore must come up
        rollout(env, rng.integers(n, size=10))
        state = pickle.loads(pickle.dumps(get_state(env)))  # workers receive states pickled
        actions = rng.integers(n, size=25)
        first = rollout(env, actions)
        rollout(env, rng.integers(n, size=3))  # move away, with other actions
        set_state(env, state)
        assert_same_rollout(rollout(env, actions), first)
        set_state(env, state)  # a state can be restored more than once
        assert_same_rollout(rollout(env, actions), first)
        set_state(other, state)  # and into another env made the same way
        assert_same_rollout(rollout(other, actions), first)


def play(env, n):
    """n NOOP steps: truncated flags, raw rewards, and the info of the last step."""
    steps = [env.step(0) for _ in range(n)]
    return (np.array([s[3] for s in steps]), np.array([s[4]["raw_reward"] for s in steps]),
            steps[-1][4])


def test_restore_keeps_time_limit_and_rewards():
    # Pong with NOOPs: the opponent scores (raw reward -1) at agent steps 58 and 93 (seed 0)
    env = make_atari_env(PONG, max_episode_steps=100)
    env.reset(seed=0)
    _, raw_before, _ = play(env, 70)
    state = get_state(env)
    trunc, raw_after, info = play(env, 30)
    assert trunc[-1] and not trunc[:-1].any()
    assert raw_before.sum() != 0 and raw_after.sum() != 0  # points scored before and after the save
    set_state(env, state)
    trunc, raw_again, info = play(env, 30)
    assert trunc[-1] and not trunc[:-1].any()  # the step count was restored: 30 more steps
    np.testing.assert_array_equal(raw_again, raw_after)  # the same points at the same steps


@pytest.mark.parametrize("vector_cls", [gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv])
def test_vector_envs(vector_cls):
    factory = functools.partial(make_atari_env, PONG, max_episode_steps=20)
    envs = vector_cls([factory, factory])
    try:
        obs, _ = envs.reset(seed=[0, 1])
        assert obs.shape == (2, 42, 42, 4) and obs.dtype == np.uint8
        for _ in range(20):
            obs, rew, term, trunc, info = envs.step(np.array([0, 1]))
        assert obs.shape == (2, 42, 42, 4) and rew.shape == (2,)
        assert trunc.all() and "raw_reward" in info
    finally:
        envs.close()


def test_fire_is_pressed_at_reset_and_after_a_lost_life():
    """Breakout needs FIRE to serve: a policy that only plays NOOP still ends the game (five lost
    lives) long before the time limit, instead of waiting with the ball out of play."""
    env = make_atari_env("ALE/Breakout-v5")
    env.reset(seed=0)
    for t in range(3000):
        _, _, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            break
    assert terminated and not truncated and t < 3000 and env.unwrapped.ale.lives() == 0


def test_life_loss_episodes_are_logged_and_evaluated_as_whole_games():
    """With --life-loss a lost life ends the learning episode but not the game: VectorEnv marks
    only the game's end as game_over, and the evaluation plays whole games (the same returns as
    without --life-loss)."""
    from trpo_np.config import Config
    from trpo_np.envs import VectorEnv
    from trpo_np.evaluation import evaluate
    from trpo_np.train import Trainer

    venv = VectorEnv("ALE/Breakout-v5", 1, terminal_on_life_loss=True, max_episode_steps=5000)
    venv.reset(seed=0)
    ends = []
    while not ends or not ends[-1]:
        _, _, term, trunc, info = venv.step(np.zeros(1, dtype=int))
        if term[0] or trunc[0]:
            ends.append(bool(info["game_over"][0]))
    venv.close()
    assert ends == [False, False, False, False, True]
    cfg = Config.for_env("ALE/Breakout-v5")
    tr = Trainer(cfg, None, quiet=True)
    whole = evaluate(cfg, tr.policy, None, 2, seed=7)
    cfg.atari["terminal_on_life_loss"] = True
    assert evaluate(cfg, tr.policy, None, 2, seed=7) == whole
