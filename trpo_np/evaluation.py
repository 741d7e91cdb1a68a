"""Deterministic evaluation of a policy (the reported metric), optionally written as a video."""

from __future__ import annotations

import contextlib
import os
import sys

import gymnasium as gym
import numpy as np

from .config import Config
from .envs import EnvError, make_env
from .policy import Policy

# Video codecs by file extension, the first that this OpenCV build can encode wins. H.264 ('avc1')
# plays in every browser, but the opencv-python wheels ship no H.264 encoder (licensing), so the
# next is VP9 in MP4 ('vp09'), which Chrome, Firefox and Edge play; it is slow to encode (about
# 0.1-0.2 s per 480x480 frame measured on a 2-core machine). 'mp4v' (MPEG-4 Part 2, 3.5 ms a
# frame) plays in desktop players only. WebM with VP8 plays in every major browser and encodes
# fast (24 ms a frame): ask for it with a .webm file name.
CODECS = {".mp4": ("avc1", "vp09", "mp4v"), ".webm": ("VP80",)}


def evaluate(cfg: Config, policy: Policy, obs_rms, episodes: int, seed: int, video: str | None = None,
             ranks: tuple[int, int] = (0, 1)) -> list[float]:
    """Deterministic (mean-action / argmax) episodes on a separate env copy with the frozen
    normalizer; raw (unscaled, unclipped) returns of whole episodes (Atari: whole games, also
    when training ends learning episodes at a lost life). Episode i starts from ``reset(seed=seed + i)``.
    ``ranks = (rank, size)``: play only the episodes i with i mod size = rank (the trainer joins
    the ranks' returns). Optionally writes the first episode as .mp4 or .webm."""
    atari = {k: v for k, v in cfg.atari.items() if k != "terminal_on_life_loss"}  # play whole games
    env = make_env(cfg.env, render_mode="rgb_array" if video else None, env_kwargs=cfg.env_kwargs, **atari)
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

    try:
        frame = env.render()
    except gym.error.DependencyNotInstalled as e:  # e.g. classic control without pygame
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EnvError(f"{env.spec.id if env.spec else 'the environment'} cannot render a video: {first_line}") from e
    if frame is None:
        raise RuntimeError("the environment rendered no frame; set MUJOCO_GL=egl (or osmesa) on a headless machine")
    if writer is None:
        h, w = frame.shape[:2]
        writer, _ = open_video(path, float(env.metadata.get("render_fps") or 30), (w, h))
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return writer


def open_video(path: str, fps: float, size: tuple[int, int]):
    """-> (cv2.VideoWriter, codec): the first codec of :data:`CODECS` for the file's extension
    that this OpenCV build opens."""
    import cv2

    ext = os.path.splitext(path)[1].lower()
    if ext not in CODECS:
        raise ValueError(f"--video must name an .mp4 or .webm file, got {path!r}")
    for codec in CODECS[ext]:
        with _stderr_silenced():  # FFMPEG reports a missing encoder on stderr: here a probe, not an error
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, size)
        if writer.isOpened():
            return writer, codec
    raise RuntimeError(f"OpenCV could not open {path!r} for writing with any of {', '.join(CODECS[ext])}")


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 to /dev/null (OpenCV and FFMPEG write there from C, past sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
