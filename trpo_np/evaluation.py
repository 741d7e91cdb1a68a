"""Deterministic evaluation of a policy (the reported metric), optionally written as a video."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from .config import Config
from .envs import make_env
from .policy import Policy
from .rundir import RunError


def evaluate(cfg: Config, policy: Policy, obs_rms, episodes: int, seed: int, video: str | None = None,
             ranks: tuple[int, int] = (0, 1)) -> list[float]:
    """Deterministic (mean-action / argmax) episodes on a separate env copy with the frozen
    normalizer; raw (unscaled, unclipped) returns of whole episodes (Atari: whole games, also
    when training ends learning episodes at a lost life). Episode i starts from ``reset(seed=seed + i)``.
    ``ranks = (rank, size)``: play only the episodes i with i mod size = rank (the trainer joins
    the ranks' returns). Optionally writes the first episode as mp4."""
    atari = {k: v for k, v in cfg.atari.items() if k != "terminal_on_life_loss"}  # play whole games
    env = make_env(cfg.env, render_mode="rgb_array" if video else None, **atari)
    clip = (env.action_space.low, env.action_space.high) if isinstance(env.action_space, gym.spaces.Box) else None
    writer, returns = None, []
    try:
        for ep in range(ranks[0], episodes, ranks[1]):
            obs, _ = env.reset(seed=seed + ep)
            total, done = 0.0, False
            while not done:
                x = obs[None] if obs_rms is None else obs_rms.normalize(obs[None], policy.dtype)
                a, _ = policy.act(x, None, deterministic=True)
                a = np.clip(a[0], *clip) if clip is not None else a[0]
                obs, r, term, trunc, info = env.step(a)
                total += info.get("raw_reward", r)
                done = term or trunc
                if video and ep == 0:
                    writer = _write_frame(writer, env, video)
            returns.append(float(total))
    finally:
        if writer is not None:
            writer.release()
        env.close()
    return returns


def _write_frame(writer, env, path):
    import cv2

    frame = env.render()
    if frame is None:
        raise RuntimeError("the environment rendered no frame; set MUJOCO_GL=egl (or osmesa) on a headless machine")
    if writer is None:
        h, w = frame.shape[:2]
        fps = float(env.metadata.get("render_fps") or 30)
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise RunError(f"OpenCV could not open {path!r} for writing (mp4v)")
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return writer
