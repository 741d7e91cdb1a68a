"""The Python API: train a run, load a trained agent, act with it and evaluate it.

    import trpo_np
    run = trpo_np.train("Hopper-v4", steps=200_000, seed=0, out="runs/hopper")   # like run.py
    agent = trpo_np.load("runs/hopper")          # a run directory or a checkpoint.npz
    env = agent.make_env()                       # the env the agent was trained on (with its options)
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(agent.predict(obs))
    returns = agent.evaluate(episodes=10)        # deterministic episodes, the reported metric

:func:`train` uses the command line's defaults and checks (:func:`trpo_np.config.make_config`) and
writes the same run directory. :class:`Agent` applies the saved observation normalizer itself:
``predict`` takes raw observations, as the env returns them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from . import BLAS_SET_TOO_LATE, parallel
from .config import Config, make_config
from .envs import is_image_space, make_env
from .evaluation import evaluate
from .nn import ShapeError
from .normalize import RunningMeanStd
from .policy import Policy
from .rundir import RunError, checkpoint_path, default_run_dir, load_checkpoint
from .train import RunSeeds, Trainer, start_run

# gymnasium flags the v4 MuJoCo tasks as out of date; they are the versions the literature reports
# (the command line hides the warning too).
warnings.filterwarnings("ignore", message=".*is out of date.*")


class Agent:
    """A trained policy with its observation normalizer, and the spaces of its env.

    ``config`` is the run's :class:`~trpo_np.config.Config`; ``policy`` and ``obs_rms`` (None
    without normalization) are the trainer's objects."""

    def __init__(self, config: Config, policy: Policy, obs_rms: RunningMeanStd | None,
                 observation_space: gym.spaces.Box, action_space: gym.spaces.Space, seed: int | None = None):
        self.config, self.policy, self.obs_rms = config, policy, obs_rms
        self.observation_space, self.action_space = observation_space, action_space
        self.rng = np.random.default_rng(seed)  # for predict(deterministic=False)

    def predict(self, obs, deterministic: bool = True) -> np.ndarray:
        """The action for one raw observation (shape ``observation_space.shape``), or actions for
        a batch (n,) + that shape: the mean action (Gaussian) or the most probable one
        (categorical) when ``deterministic``, else a sample. Continuous actions are clipped to the
        action space's bounds, as the env receives them in training and evaluation.

        Returns an array shaped like the action space ((act_dim,) or a scalar int), with a
        leading batch axis for a batch. Atari: an observation is the (S, S, 4) uint8 stack of
        gray S×S frames (newest last) that :meth:`make_env` returns, not the raw screen."""
        obs = np.asarray(obs)
        shape = self.observation_space.shape
        single = obs.shape == shape
        if not single and obs.shape[1:] != shape:
            atari = (" (Atari: the preprocessed frame stack of agent.make_env(), not the raw screen)"
                     if is_image_space(self.observation_space) else "")
            raise ShapeError(f"predict: an observation has shape {shape}, a batch (n,) + {shape}; "
                             f"got {obs.shape}{atari}")
        x = obs[None] if single else obs
        if self.obs_rms is not None:
            x = self.obs_rms.normalize(x, self.policy.dtype)  # frozen statistics, as in evaluation
        act, _ = self.policy.act(x, self.rng, deterministic=deterministic)
        if isinstance(self.action_space, gym.spaces.Box):
            act = np.clip(act, self.action_space.low, self.action_space.high)
        return act[0] if single else act

    def evaluate(self, episodes: int = 10, seed: int | None = None, video: str | None = None) -> list[float]:
        """Returns of ``episodes`` deterministic episodes (episode i starts from reset(seed=seed+i);
        default: the seed of the run's final evaluation). ``video``: write the first episode to
        this .mp4 or .webm file (MuJoCo on a headless machine: MUJOCO_GL=egl)."""
        if episodes <= 0:
            raise ValueError(f"episodes must be positive, got {episodes}")
        seed = RunSeeds(self.config.seed).env_seed("final_eval") if seed is None else seed
        return evaluate(self.config, self.policy, self.obs_rms, episodes, seed, video=video)

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        """A new copy of the env the agent was trained on (its --env-kwargs and Atari preprocessing;
        Atari: whole games, as evaluated)."""
        atari = {k: v for k, v in self.config.atari.items() if k != "terminal_on_life_loss"}
        return make_env(self.config.env, render_mode=render_mode, env_kwargs=self.config.env_kwargs, **atari)


@dataclass
class Run:
    """A finished :func:`train`: where it was written, how it ended, and its agent."""

    run_dir: str                # config.json, progress.csv, monitor.csv, versions.json, checkpoint.npz
    stats: dict                 # the last iteration's row of progress.csv (as numbers)
    final_returns: list[float]  # the final deterministic evaluation (cfg.eval_episodes episodes)
    agent: Agent
    trainer: Trainer            # to inspect the run's parts (networks, normalizers, seeds)


def train(env: str = "Hopper-v4", steps: int | None = None, seed: int = 0, out: str | None = None,
          quiet: bool = False, **settings) -> Run:
    """Train a new run, as ``python run.py --env ENV --steps STEPS --seed SEED --out OUT`` does.

    settings: any :class:`~trpo_np.config.Config` field (``max_kl=0.02``, ``batch_steps=4096``,
    ``hidden=(32, 32)``, ``method="vine"``, ``env_kwargs={"g": 2.0}``, ...); unknown names raise
    TypeError. Defaults (and the Atari defaults for ALE ids) are the command line's. ``out``:
    the run directory, which must not exist or be empty (default ``runs/ENV-sSEED-TIME``).
    quiet: no per-iteration lines. Under ``mpiexec -n N`` every rank calls train (see README)."""
    if BLAS_SET_TOO_LATE:
        warnings.warn("numpy was imported before trpo_np without OPENBLAS_NUM_THREADS set: BLAS is "
                      "multi-threaded, which was measured slower for these small networks; import trpo_np "
                      "first or set OPENBLAS_NUM_THREADS=1 before numpy", RuntimeWarning, stacklevel=2)
    comm = parallel.world()
    cfg = make_config(env, steps=steps, seed=seed, ranks=comm.size, **settings)
    run_dir = out or comm.bcast(default_run_dir(cfg))
    trainer = start_run(cfg, run_dir, quiet, comm)
    try:
        stats = trainer.train()
        returns = trainer.final_eval or trainer.evaluate(cfg.eval_episodes, trainer.seeds.env_seed("final_eval"))
    finally:
        trainer.close()  # the run directory's lock
    agent = Agent(cfg, trainer.policy, trainer.obs_rms, trainer.observation_space, trainer.action_space, seed)
    return Run(run_dir, stats, returns, agent, trainer)


def load(path: str, seed: int | None = None) -> Agent:
    """The agent of a run directory (its checkpoint.npz) or of a checkpoint file: the policy and
    the observation normalizer of its last iteration. ``seed`` seeds ``predict(deterministic=False)``."""
    path = checkpoint_path(path)
    _, meta = load_checkpoint(path)
    if "config" not in meta:
        raise RunError(f"{path!r} is not a trpo_np checkpoint (no config)")
    cfg = Config.from_json(meta["config"])
    cfg.ranks = 1  # acting and evaluating run in one process
    trainer = Trainer(cfg, run_dir=None, quiet=True)
    trainer.load(path, weights_only=True)
    return Agent(cfg, trainer.policy, trainer.obs_rms, trainer.observation_space, trainer.action_space, seed)
