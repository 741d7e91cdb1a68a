"""The training loop: sample → advantages → TRPO step → value fit → log and checkpoint.

One iteration (paper Sec. 6, "practical algorithm"):
1. collect a batch with π_old (single path: :mod:`trpo_np.samplers`; vine: :mod:`trpo_np.vine`);
2. GAE advantages from the current value function, standardized;
3. one TRPO step (:func:`trpo_np.optim.trpo_step`) on the surrogate with the KL bound δ;
4. fit the value function to the λ-returns;
5. update the observation normalizer with the batch, log a row, write the checkpoint.

Reproducibility: ``seed`` spawns independent generators (``np.random.SeedSequence.spawn``) for
the network initialization, the action noise, the value-fit shuffling, the Fisher sub-sampling
and the environment seeds; nothing uses the global ``np.random``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from . import envs as envs_mod
from .distributions import Categorical, DiagGaussian
from .logger import ProgressLog, RunError, load_checkpoint, save_checkpoint, write_json
from .nn import atari_cnn, mlp
from .optim import trpo_step
from .policy import Policy, TRPOBatch, single_path_objective
from .samplers import SinglePathSampler
from .value import ValueFunction, batch_gae, explained_variance

DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass
class Config:
    """All settings of a run; saved as config.json. Defaults are the MuJoCo defaults."""

    env: str = "Hopper-v4"
    steps: int = 1_000_000              # total env steps (trunk + vine branches)
    batch_steps: int = 2048             # env steps per iteration
    num_envs: int = 4
    asynchronous: bool = False          # sample in several processes (trpo_np.parallel)
    processes: int = 0                  # with asynchronous: processes, this one included (0: one per core)
    max_kl: float = 0.01                # δ
    cg_iters: int = 10
    cg_tol: float = 1e-10
    damping: float = 0.1
    backtrack_coef: float = 0.8
    max_backtracks: int = 10
    fvp_fraction: float = 1.0           # fraction of states used for F v (paper App. C: 0.1 on Atari)
    chunk: int = 0                      # states per network pass in the update (0: all; images: 16384)
    gamma: float = 0.99
    lam: float = 0.95
    hidden: tuple = (64, 64)
    activation: str = "tanh"
    cnn: str = "paper"                  # Atari: "paper" or "nature"
    vf_lr: float = 1e-3
    vf_epochs: int = 10
    vf_minibatch: int = 128
    normalize_obs: bool = True
    scale_reward: bool = True
    eval_every: int = 50_000            # env steps between deterministic evaluations (0: never)
    eval_episodes: int = 10
    seed: int = 0
    dtype: str = "float32"
    method: str = "single"              # "single" (single path) or "vine"
    vine_states: int = 50              # N: rollout-set states per iteration
    vine_actions: int = 4              # K: actions per state (all actions of a small discrete space)
    vine_horizon: int = 25             # T: branch length (then bootstrapped with V)
    atari: dict = field(default_factory=dict)  # frame_size, frame_skip, ... for make_atari_env

    def validate(self) -> None:
        positive = ["steps", "batch_steps", "num_envs", "max_kl", "cg_iters", "max_backtracks",
                    "vf_epochs", "vf_minibatch", "eval_episodes", "vine_states", "vine_actions", "vine_horizon"]
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
        for name in ["damping", "cg_tol", "eval_every", "vf_lr"]:
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ["gamma", "lam", "backtrack_coef", "fvp_fraction"]:
            v = getattr(self, name)
            if not 0 < v <= 1 or (name == "backtrack_coef" and v == 1):
                raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1{')' if name == 'backtrack_coef' else ']'}, got {v}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"--hidden must be positive layer sizes, got {self.hidden}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.method not in ("single", "vine"):
            raise ValueError(f"--method must be 'single' or 'vine', got {self.method!r}")
        if not (isinstance(self.processes, int) and self.processes >= 0):
            raise ValueError(f"--processes must be a positive integer, got {self.processes}")
        if self.asynchronous and self.method == "vine":
            raise ValueError("--async applies to the single-path method; the vine sampler runs in one process")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Config":
        d = dict(d)
        d["hidden"] = tuple(d["hidden"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# -- construction ------------------------------------------------------------------------------
def make_spaces(cfg: Config):
    """The env's spaces; for the vine method also checks that its state can be restored, so that
    a bad combination fails before a run directory is written."""
    env = envs_mod.make_env(cfg.env, **cfg.atari)
    try:
        if cfg.method == "vine":
            env.reset(seed=0)  # some classic-control envs create their state in reset
            envs_mod.check_state_support(env, cfg.env)
        return env.observation_space, env.action_space
    finally:
        env.close()


def build_networks(cfg: Config, obs_space, act_space, rng: np.random.Generator):
    """Policy and value function for these spaces (MLP for vectors, CNN for image stacks)."""
    dtype = DTYPES[cfg.dtype]
    image = envs_mod.is_image_space(obs_space)
    if isinstance(act_space, gym.spaces.Box):
        dist, out = DiagGaussian(act_space.shape[0]), act_space.shape[0]
    else:
        dist, out = Categorical(int(act_space.n)), int(act_space.n)
    if image:
        pnet = atari_cnn(obs_space.shape, out, cfg.cnn, out_gain=0.01, dtype=dtype).init(rng)
        vnet = atari_cnn(obs_space.shape, 1, cfg.cnn, out_gain=1.0, dtype=dtype).init(rng)
        scale = 1.0 / 255.0
    else:
        obs_dim = int(np.prod(obs_space.shape))
        pnet = mlp(obs_dim, cfg.hidden, out, cfg.activation, out_gain=0.01, dtype=dtype).init(rng)
        vnet = mlp(obs_dim, cfg.hidden, 1, cfg.activation, out_gain=1.0, dtype=dtype).init(rng)
        scale = 1.0
    policy = Policy(pnet, dist, obs_scale=scale)
    vf = ValueFunction(vnet, lr=cfg.vf_lr, epochs=cfg.vf_epochs, minibatch=cfg.vf_minibatch, obs_scale=scale)
    return policy, vf


def net_signature(policy: Policy, vf: ValueFunction) -> dict:
    return {"obs_shape": list(policy.obs_shape), "policy_size": policy.size, "value_size": vf.net.size,
            "layers": [repr(l) for l in policy.net.layers]}


class Trainer:
    """Holds everything a run needs; ``train()`` runs iterations until ``cfg.steps``."""

    def __init__(self, cfg: Config, run_dir: str | None = None, quiet: bool = False):
        cfg.validate()
        if cfg.asynchronous and not cfg.processes:  # fixed here and saved: the run depends on it
            cfg.processes = min(os.cpu_count() or 1, cfg.num_envs)
        self.cfg, self.run_dir, self.quiet = cfg, run_dir, quiet
        ss = np.random.SeedSequence(cfg.seed)
        init_ss, act_ss, vf_ss, fvp_ss, env_ss = ss.spawn(5)
        self.rng_act, self.rng_vf, self.rng_fvp = (np.random.default_rng(s) for s in (act_ss, vf_ss, fvp_ss))
        self.env_seed = int(env_ss.generate_state(1)[0] % 2**31)
        obs_space, act_space = make_spaces(cfg)
        envs_mod.check_spaces(cfg.env, obs_space, act_space)
        self.image = envs_mod.is_image_space(obs_space)
        # Image batches go through the update in chunks: at most ~3 GB of im2col columns at once.
        self.chunk = cfg.chunk or (16384 if self.image else None)
        self.policy, self.vf = build_networks(cfg, obs_space, act_space, np.random.default_rng(init_ss))
        use_norm = cfg.normalize_obs and not self.image
        self.obs_rms = envs_mod.RunningMeanStd(obs_space.shape) if use_norm else None
        self.reward_scaler = envs_mod.RewardScaler(cfg.num_envs, cfg.gamma) if cfg.scale_reward and not self.image else None
        self.iteration, self.env_steps, self.trunk_steps, self.branch_steps = 0, 0, 0, 0
        self.elapsed = self.eval_time = 0.0  # wall-clock seconds of the run, and of it in evaluations
        self.sampler = None

    # -- state ---------------------------------------------------------------------------------
    def meta(self) -> dict:
        return {"env": self.cfg.env, "iteration": self.iteration, "env_steps": self.env_steps,
                "trunk_steps": self.trunk_steps, "branch_steps": self.branch_steps, "elapsed": self.elapsed,
                "eval_time": self.eval_time,
                "net": net_signature(self.policy, self.vf), "config": self.cfg.to_json(),
                "rng": {k: getattr(self, k).bit_generator.state for k in ("rng_act", "rng_vf", "rng_fvp")}}

    def save(self, path: str) -> None:
        arrays = {"policy_theta": self.policy.theta, "value_theta": self.vf.net.theta,
                  **{f"adam_{k}": v for k, v in self.vf.adam.state().items()}}
        if self.obs_rms is not None:
            arrays.update(self.obs_rms.state("obs"))
        if self.reward_scaler is not None:
            arrays.update(self.reward_scaler.rms.state("ret"))
            arrays["ret_running"] = self.reward_scaler.ret
        save_checkpoint(path, arrays, self.meta())

    def load(self, path: str, weights_only: bool = False) -> dict:
        arrays, meta = load_checkpoint(path)
        if meta["env"] != self.cfg.env:
            raise RunError(f"checkpoint {path!r} is for {meta['env']}, not {self.cfg.env}")
        sig = net_signature(self.policy, self.vf)
        if meta["net"] != sig:
            raise RunError(f"checkpoint {path!r} has networks {meta['net']['layers']} "
                           f"({meta['net']['policy_size']} policy parameters), this run builds {sig['layers']} "
                           f"({sig['policy_size']})")
        self.policy.theta[:] = arrays["policy_theta"]
        self.vf.net.theta[:] = arrays["value_theta"]
        if self.obs_rms is not None:
            self.obs_rms.load(arrays, "obs")
        if weights_only:
            return meta
        self.vf.adam.load({k[5:]: arrays[k] for k in arrays if k.startswith("adam_")})
        if self.reward_scaler is not None:
            self.reward_scaler.rms.load(arrays, "ret")
            self.reward_scaler.ret[:] = arrays["ret_running"]
        for k, st in meta["rng"].items():
            getattr(self, k).bit_generator.state = st
        self.iteration, self.env_steps = meta["iteration"], meta["env_steps"]
        self.trunk_steps, self.branch_steps, self.elapsed = meta["trunk_steps"], meta["branch_steps"], meta["elapsed"]
        self.eval_time = meta["eval_time"]
        return meta

    # -- loop ----------------------------------------------------------------------------------
    def _make_sampler(self):
        cfg = self.cfg
        # A resumed run reseeds its envs from (seed, iteration): episodes in progress restart.
        seed = self.env_seed + 1_000_003 * self.iteration
        if cfg.method == "vine":
            from .vine import VineSampler
            self.sampler = VineSampler(self, seed)
            return
        if cfg.asynchronous and cfg.processes > 1:
            from .parallel import ParallelSampler
            self.sampler = ParallelSampler(cfg.env, cfg.num_envs, cfg.processes, self.policy, self.rng_act, seed,
                                           self.obs_rms, self.reward_scaler, cfg.atari, self.vf)
            return
        venv = envs_mod.make_vector_env(cfg.env, cfg.num_envs, **cfg.atari)
        self.sampler = SinglePathSampler(venv, self.policy, self.rng_act, seed, self.obs_rms, self.reward_scaler)

    def single_path_update(self, batch) -> dict:
        """Advantages, TRPO step and value fit for a single-path batch."""
        cfg = self.cfg
        T, E = batch.rew_te.shape
        obs = batch.obs_te.reshape((T * E,) + batch.obs_te.shape[2:])
        adv_te, ret_te, val_te = batch_gae(self.vf, batch, cfg.gamma, cfg.lam)
        adv = adv_te.reshape(-1)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        act = batch.act_te.reshape((T * E,) + batch.act_te.shape[2:])
        ret = ret_te.reshape(-1)
        # The value fit and the TRPO step are independent given the advantages: with --async the
        # fit runs in a worker process meanwhile.
        fit_elsewhere = hasattr(self.sampler, "start_value_fit") and self.sampler.start_value_fit(
            self.vf, obs, ret, self.rng_vf)
        tb = TRPOBatch(self.policy, obs, act, single_path_objective(batch.logp_te.reshape(-1), adv),
                       damping=cfg.damping, fvp_fraction=cfg.fvp_fraction, rng=self.rng_fvp, chunk=self.chunk)
        stats = trpo_step(tb, cfg.max_kl, cfg.cg_iters, cfg.cg_tol, cfg.backtrack_coef, cfg.max_backtracks)
        stats["vf_explained_var"] = explained_variance(val_te.reshape(-1), ret)  # of V before the fit
        stats.update(self.sampler.finish_value_fit(self.vf, self.rng_vf) if fit_elsewhere
                     else self.vf.fit(obs, ret, self.rng_vf))
        return stats

    def evaluate(self, episodes: int, seed: int, video: str | None = None) -> list[float]:
        return evaluate(self.cfg, self.policy, self.obs_rms, episodes, seed, video)

    def train(self) -> dict:
        cfg = self.cfg
        self._make_sampler()
        log = ProgressLog(self.run_dir, self.iteration if self.iteration else None, self.quiet) if self.run_dir else None
        next_eval = (self.env_steps // cfg.eval_every + 1) * cfg.eval_every if cfg.eval_every else None
        last = {}
        try:
            while self.env_steps < cfg.steps:
                t0 = time.perf_counter()
                batch = self.sampler.sample(min(cfg.batch_steps, cfg.steps - self.env_steps))
                t1 = time.perf_counter()
                stats = (self.sampler.update(self, batch) if cfg.method == "vine" else self.single_path_update(batch))
                if self.obs_rms is not None and batch.raw_obs is not None:
                    self.obs_rms.update(batch.raw_obs)
                if self.reward_scaler is not None:
                    self.reward_scaler.update()
                t2 = time.perf_counter()
                self.iteration += 1
                trunk, branch = batch.steps, getattr(batch, "branch_steps", 0)
                self.trunk_steps += trunk
                self.branch_steps += branch
                self.env_steps += trunk + branch
                eval_mean = eval_std = float("nan")
                if next_eval is not None and (self.env_steps >= next_eval or self.env_steps >= cfg.steps):
                    t_eval = time.perf_counter()
                    rets = self.evaluate(cfg.eval_episodes, seed=self.env_seed + 7 + self.iteration)
                    eval_mean, eval_std = float(np.mean(rets)), float(np.std(rets))
                    self.eval_time += time.perf_counter() - t_eval
                    next_eval = (self.env_steps // cfg.eval_every + 1) * cfg.eval_every
                self.elapsed += time.perf_counter() - t0
                rets = [r for r, _ in batch.episodes]
                last = dict(iteration=self.iteration, env_steps=self.env_steps, trunk_steps=self.trunk_steps,
                            branch_steps=self.branch_steps, episodes=len(rets),
                            ep_return_mean=float(np.mean(rets)) if rets else float("nan"),
                            ep_len_mean=float(np.mean([l for _, l in batch.episodes])) if rets else float("nan"),
                            kl=stats["kl"], entropy=stats["entropy"],
                            surr_improve=stats["surr_after"] - stats["surr_before"],
                            expected_improve=stats["expected_improve"], backtracks=stats["backtracks"],
                            accepted=int(stats["accepted"]), cg_residual=stats["cg_residual"],
                            vf_explained_var=stats["vf_explained_var"], vf_loss=stats["vf_loss"],
                            eval_return_mean=eval_mean, eval_return_std=eval_std,
                            steps_per_s=(trunk + branch) / (t2 - t0), time_sample=t1 - t0, time_update=t2 - t1,
                            eval_time=self.eval_time, elapsed=self.elapsed)
                if self.run_dir:
                    self.save(os.path.join(self.run_dir, "checkpoint.npz"))
                if log:
                    log.log(last)
        finally:
            if log:
                log.close()
            self.sampler.close()
        return last


def evaluate(cfg: Config, policy: Policy, obs_rms, episodes: int, seed: int, video: str | None = None) -> list[float]:
    """Deterministic (mean-action / argmax) episodes on a separate env copy with the frozen
    normalizer; raw (unscaled, unclipped) returns. Optionally writes the first episode as mp4."""
    env = envs_mod.make_env(cfg.env, render_mode="rgb_array" if video else None, **cfg.atari)
    clip = (env.action_space.low, env.action_space.high) if isinstance(env.action_space, gym.spaces.Box) else None
    writer, returns = None, []
    try:
        for ep in range(episodes):
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
            raise RuntimeError(f"OpenCV could not open {path!r} for writing (mp4v)")
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return writer


def run_dir_for(cfg: Config) -> str:
    return os.path.join("runs", f"{cfg.env.replace('/', '_')}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def load_config(run_dir: str) -> Config:
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise RunError(f"{run_dir!r} is not a trpo_np run directory (no config.json)")
    with open(path) as f:
        return Config.from_json(json.load(f))


def start_run(cfg: Config, run_dir: str, quiet: bool = False) -> Trainer:
    """A new run in ``run_dir`` (must not exist or be empty)."""
    if os.path.exists(run_dir) and os.listdir(run_dir):
        raise RunError(f"output directory {run_dir!r} exists and is not empty; use --resume {run_dir} to "
                       "continue that run, or choose another --out")
    trainer = Trainer(cfg, run_dir, quiet)  # validates before anything is written
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "config.json"), cfg.to_json())
    return trainer


def resume_run(run_dir: str, steps: int | None = None, quiet: bool = False) -> Trainer:
    cfg = load_config(run_dir)
    if steps is not None:
        cfg.steps = steps
    trainer = Trainer(cfg, run_dir, quiet)
    trainer.load(os.path.join(run_dir, "checkpoint.npz"))
    if steps is not None:
        write_json(os.path.join(run_dir, "config.json"), cfg.to_json())
    return trainer
