"""Atari environments for TRPO: the ALE through gymnasium, with DQN-style preprocessing.

The agent acts every k = frame_skip raw frames f (the action is repeated on each of them),
sees a stack of the last `stack` preprocessed frames, and learns from clipped rewards
(Mnih et al. 2015, Methods "Preprocessing" and "Training details"):

    x_t = resize(max(gray(f_{kt-1}), gray(f_{kt})))     # max of the last two raw frames removes sprite flicker
    o_t = [x_{t-3}, x_{t-2}, x_{t-1}, x_t]               # (H, W, stack) uint8, channels last, oldest -> newest
    r_t = sum of the k raw frame rewards,   learning reward sign(r_t)

resize is cv2.INTER_AREA to frame_size x frame_size. After a reset the stack is padded with
x_0 (all channels equal), and each game starts after a uniform 1..noop_max number of NOOP frames.
gymnasium's AtariPreprocessing (noop starts, frame skip, max-pool, gray, resize) and
FrameStackObservation do most of this; the wrappers here add the rest:

- ChannelsLast: FrameStackObservation gives (stack, H, W); the agent gets (H, W, stack).
- PressFire: in games whose second action is FIRE (Breakout, ...), FIRE is pressed after a reset
  and after each lost life, as a human presses it to serve: otherwise a deterministic policy
  that never chooses FIRE waits until the time limit (27,000 steps) with the ball not in play.
- ClipReward: the learning reward is sign(r); info["raw_reward"] = r every step.
- EpisodicLife (terminal_on_life_loss=True): a lost life ends the learning episode
  (terminated=True) but not the game: the following reset() only starts a new learning
  episode from the current frame, unless the game is over. info["life_lost"] says that an
  episode ended by a lost life only, so that scores can still be summed over whole games. (AtariPreprocessing's own flag would restart the game at every lost life.)
- StickyActions (sticky_actions=p > 0): each raw frame repeats the previous frame's action
  with probability p (Machado et al. 2018, Sec. 5). ALE has this built in, but its
  cloneState(include_rng=True) does not save the previous action, so a restored emulator does
  not replay; here ALE's own repeat_action_probability is 0 and the wrapper keeps the previous
  action and its np.random.Generator, both part of get_state().
- Time limit: a TimeLimit of max_episode_steps *agent* steps (27000 = 108k frames) wraps the
  preprocessing, so it counts decisions, not frames, and ignores the noop frames. ALE's own
  frame limit is switched off (max_num_frames_per_episode=0). (gym.make(max_episode_steps=n)
  would put the TimeLimit under the frame skip here and count raw frames.)

On the step where the game is over, AtariPreprocessing stops the frame skip early and returns the
previous observation again; that observation is never bootstrapped from (terminated=True).

Schulman et al. (2015), Sec. 8.2 ("Playing Games from Images"), train TRPO policies on seven
Atari games from screen images, with a small convolutional network (two conv layers of 16
channels with stride 2, then a 20-unit fully connected layer, Fig. 3). frame_size=42 is this
project's default (a quarter of DQN's 84 x 84 pixels; an iteration measured 2.7x cheaper).

get_state / set_state save and restore the whole simulator (ALE state with its RNG, and every
wrapper's state) for the vine method (Schulman et al. 2015, Sec. 5.2).

References:
    Mnih et al. (2015). Human-level control through deep reinforcement learning. Nature 518.
    Machado et al. (2018). Revisiting the Arcade Learning Environment. JAIR 61.
    Schulman et al. (2015). Trust Region Policy Optimization. arXiv:1502.05477.
"""
from __future__ import annotations

import copy
import difflib
from collections import deque
from dataclasses import dataclass
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from ale_py import roms
from gymnasium.spaces import Box
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TimeLimit
from gymnasium.wrappers.common import OrderEnforcing

_STICKY_STREAM = 0x571C  # mixed with the reset seed, so sticky draws are independent of noop draws


def is_atari_id(env_id: str) -> bool:
    """True for "ALE/<Game>-v5" ids, and for other ids that ale-py registers (e.g. "PongNoFrameskip-v4")."""
    if env_id.startswith("ALE/"):
        return True
    gym.register_envs(ale_py)
    spec = gym.registry.get(env_id)
    return spec is not None and str(spec.entry_point).startswith("ale_py")


def make_atari_env(
    env_id: str,
    *,
    frame_size: int = 42,
    frame_skip: int = 4,
    stack: int = 4,
    noop_max: int = 30,
    sticky_actions: float = 0.0,
    terminal_on_life_loss: bool = False,
    clip_rewards: bool = True,
    max_episode_steps: int | None = 27000,
    render_mode: str | None = None,
    env_kwargs: dict | None = None,
) -> gym.Env:
    """Atari env whose observations are (frame_size, frame_size, stack) uint8, newest frame last.

    Rewards are sign(r) when clip_rewards (raw r in info["raw_reward"]). max_episode_steps counts agent steps
    (None: no limit at all). env_kwargs: more keyword arguments of ALE's gym.make (e.g. mode,
    difficulty). Raises ValueError for an id that ale-py does not provide.
    Safe as a factory for gymnasium.vector.SyncVectorEnv / AsyncVectorEnv.
    """
    _check_atari_id(env_id)
    env = gym.make(
        env_id,
        frameskip=1,                       # AtariPreprocessing repeats the action
        repeat_action_probability=0.0,     # sticky actions: StickyActions below
        full_action_space=False,
        obs_type="grayscale",              # AtariPreprocessing reads ALE's gray screen itself
        max_num_frames_per_episode=0,      # 0 = no ALE frame limit; TimeLimit below counts agent steps
        render_mode=render_mode,
        **(env_kwargs or {}),
    )
    if sticky_actions > 0:
        env = StickyActions(env, sticky_actions)
    env = AtariPreprocessing(env, noop_max=noop_max, frame_skip=frame_skip,
                             screen_size=frame_size, terminal_on_life_loss=False)
    if "FIRE" in env.unwrapped.get_action_meanings()[1:2]:
        env = PressFire(env)                   # below the time limit: a FIRE press is no decision
    if max_episode_steps is not None:
        env = TimeLimit(env, max_episode_steps)
    env = ClipReward(env, clip_rewards)
    if terminal_on_life_loss:
        env = EpisodicLife(env)
    env = FrameStackObservation(env, stack)   # pads with the reset frame
    return ChannelsLast(env)


def _check_atari_id(env_id: str) -> None:
    """Raise ValueError unless env_id is a registered ale-py env whose ROM is present."""
    gym.register_envs(ale_py)

    def hint():  # only on the error paths: difflib over ~100 ids is not free
        known = sorted(i for i in gym.registry if i.startswith("ALE/"))
        examples = difflib.get_close_matches(env_id, known, n=3) or ["ALE/Pong-v5", "ALE/Breakout-v5"]
        return f"ale-py knows e.g. {', '.join(examples)}, ... ({len(known)} ALE/ ids)"

    if not is_atari_id(env_id):
        raise ValueError(f"not an Atari environment id {env_id!r}; {hint()}")
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as err:  # NameNotFound, VersionNotFound, DeprecatedEnv (ALE/Pong-v4), ...
        raise ValueError(f"unknown Atari environment {env_id!r} ({err}); {hint()}") from err
    try:
        rom_path = roms.get_rom_path(spec.kwargs["game"])   # None: a ROM ale-py does not support
    except OSError as err:  # ROM directory or file missing, bad hash
        raise ValueError(f"no usable ROM for Atari environment {env_id!r}: {err}") from err
    if rom_path is None or not rom_path.is_file():
        raise ValueError(f"no ROM for Atari environment {env_id!r} in ale-py {ale_py.__version__}")


class StickyActions(gym.Wrapper):
    """Each raw frame repeats the previous frame's action with probability p (Machado et al. 2018)."""

    def __init__(self, env: gym.Env, p: float):
        super().__init__(env)
        self.p = p
        self.rng = np.random.default_rng()  # reseeded by reset(seed=...)
        self.last_action = 0                 # NOOP, as after an ALE reset

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng([_STICKY_STREAM, seed])
        self.last_action = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        if self.rng.random() >= self.p:  # the new action gets through with probability 1 - p
            self.last_action = int(action)
        return self.env.step(self.last_action)

    def save(self):
        return self.last_action, copy.deepcopy(self.rng.bit_generator.state)

    def restore(self, saved) -> None:
        self.last_action, rng_state = saved
        self.rng.bit_generator.state = copy.deepcopy(rng_state)


class PressFire(gym.Wrapper):
    """FIRE (action 1) after reset and after each lost life that does not end the game."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:  # (a game over within one step: start again, no FIRE)
            obs, info = self.env.reset(options=options)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if lives < self.lives and not (terminated or truncated):  # serve again
            obs, r, terminated, truncated, info = self.env.step(1)
            reward += r
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def save(self):
        return self.lives

    def restore(self, saved) -> None:
        self.lives = saved


class ClipReward(gym.Wrapper):
    """Learning reward sign(r) (or r); the raw reward in info["raw_reward"]."""

    def __init__(self, env: gym.Env, clip_rewards: bool):
        super().__init__(env)
        self.clip_rewards = clip_rewards

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["raw_reward"] = reward
        if self.clip_rewards:
            reward = float(np.sign(reward))  # Mnih et al. 2015: clip rewards to {-1, 0, 1}
        return obs, reward, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """terminated=True when a life is lost; reset() restarts the game only once it is over."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True
        self.last_obs = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:  # a new learning episode in the same game, from the current frame
            obs, info = self.last_obs, {}
        self.lives = self.env.unwrapped.ale.lives()
        self.game_over = False
        info["lives"] = self.lives
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        life_lost = 0 < lives < self.lives and not self.game_over  # at 0 lives the game itself ends
        self.lives, self.last_obs = lives, obs
        info["life_lost"] = life_lost
        return obs, reward, terminated or life_lost, truncated, info

    def save(self):
        last_obs = None if self.last_obs is None else self.last_obs.copy()
        return self.lives, self.game_over, last_obs

    def restore(self, saved) -> None:
        self.lives, self.game_over, last_obs = saved
        self.last_obs = None if last_obs is None else last_obs.copy()


class ChannelsLast(gym.ObservationWrapper):
    """(stack, H, W) frame stacks -> contiguous (H, W, stack), oldest frame first."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        k, h, w = env.observation_space.shape
        self.observation_space = Box(0, 255, (h, w, k), np.uint8)

    def observation(self, obs_khw: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(obs_khw, 0, -1))


# ---------------------------------------------------------------- simulator state (vine method)

@dataclass(frozen=True)
class AtariState:
    """Everything that decides an env's future: ALE emulator + RNG, base env generator, wrappers.

    Picklable, and reusable: set_state copies out of it.
    """

    ale: ale_py.ALEState
    np_random: dict             # bit-generator state of env.unwrapped.np_random (noops at reset)
    wrappers: tuple[Any, ...]   # one entry per wrapper, outermost first (None: stateless)


def get_state(env: gym.Env) -> AtariState:
    """Snapshot of an env made by make_atari_env."""
    base = env.unwrapped
    return AtariState(
        ale=base.ale.cloneState(include_rng=True),
        np_random=copy.deepcopy(base.np_random.bit_generator.state),
        wrappers=tuple(_save_wrapper(w) for w in _wrappers(env)),
    )


def set_state(env: gym.Env, state: AtariState) -> None:
    """Put env (the same one, or another made with the same arguments) back into state."""
    chain = _wrappers(env)
    if len(chain) != len(state.wrappers):
        raise ValueError(f"state has {len(state.wrappers)} wrappers, env has {len(chain)}; "
                         "make both envs with the same make_atari_env arguments")
    base = env.unwrapped
    base.ale.restoreState(state.ale)
    base.np_random.bit_generator.state = copy.deepcopy(state.np_random)
    for wrapper, saved in zip(chain, state.wrappers):
        _restore_wrapper(wrapper, saved)


def _wrappers(env: gym.Env) -> list[gym.Wrapper]:
    """The wrapper chain, outermost first."""
    chain = []
    while isinstance(env, gym.Wrapper):
        chain.append(env)
        env = env.env
    return chain


def _save_wrapper(w: gym.Wrapper):
    if isinstance(w, (StickyActions, PressFire, EpisodicLife)):
        return w.save()
    if isinstance(w, AtariPreprocessing):  # obs_buffer holds the frames of the last step
        return [buf.copy() for buf in w.obs_buffer], w.lives, w.game_over
    if isinstance(w, FrameStackObservation):
        return [frame.copy() for frame in w.obs_queue]
    if isinstance(w, TimeLimit):
        return w._elapsed_steps
    if isinstance(w, OrderEnforcing):
        return w._has_reset
    return None  # ChannelsLast, ClipReward, PassiveEnvChecker: nothing that changes the future


def _restore_wrapper(w: gym.Wrapper, saved) -> None:
    if isinstance(w, (StickyActions, PressFire, EpisodicLife)):
        w.restore(saved)
    elif isinstance(w, AtariPreprocessing):
        buffers, w.lives, w.game_over = saved
        for buf, saved_buf in zip(w.obs_buffer, buffers):
            np.copyto(buf, saved_buf)  # AtariPreprocessing writes into these in place
    elif isinstance(w, FrameStackObservation):
        w.obs_queue = deque((frame.copy() for frame in saved), maxlen=w.stack_size)
    elif isinstance(w, TimeLimit):
        w._elapsed_steps = saved
    elif isinstance(w, OrderEnforcing):
        w._has_reset = saved
