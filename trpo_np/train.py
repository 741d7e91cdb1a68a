"""The training loop: sample → advantages → TRPO step → value fit → log and checkpoint.

One iteration (paper Sec. 6, "practical algorithm"), :meth:`Trainer.train`:
1. collect a batch with π_old (single path: :mod:`trpo_np.samplers`; vine: :mod:`trpo_np.vine`);
2. GAE advantages of the batch's paths with the current value function;
3. one TRPO step (:func:`trpo_np.optim.trpo_step`) on the batch's surrogate with the KL bound δ;
4. fit the value function to the λ-returns;
5. fold the batch into the normalizers, log a row, write the checkpoint.
Steps 2-4 are :meth:`Trainer.update`, the same for both samplers. Before the first iteration the
normalizers take their first statistics from one batch of π_old (:meth:`Trainer.start_normalizers`).

Reproducibility: every random stream of a run is a child of one ``np.random.SeedSequence(seed)``
(:class:`RunSeeds`); nothing uses the global ``np.random``.
"""

from __future__ import annotations

import os
import signal
import time

import gymnasium as gym
import numpy as np

from . import simstate
from .atari import is_atari_id
from .config import DTYPES, Config
from .distributions import Categorical, DiagGaussian
from .envs import VectorEnv, check_spaces, is_image_space, make_env
from .evaluation import evaluate
from .nn import atari_cnn, mlp
from .normalize import RewardScaler, RunningMeanStd
from .optim import trpo_step
from .parallel import Comm, split
from .policy import Policy, TRPOBatch
from .rundir import (ProgressLog, RunError, RunLock, create_run_dir, load_checkpoint, load_config, record_versions,
                     save_checkpoint, write_json)
from .samplers import SinglePathSampler
from .value import ValueFunction, explained_variance, paths_gae


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: the run stops with its last checkpoint complete."""


class RunSeeds:
    """The random streams of a run, all children of ``np.random.SeedSequence(seed)``: one per
    purpose, and one per (purpose, iteration) for seeds that a run draws again (the env copies
    when a run resumes, each periodic evaluation). Env copy i of a stream gets its seed + i."""

    STREAMS = ("init", "action", "value_fit", "fisher", "envs", "branch_envs", "eval", "final_eval")

    def __init__(self, seed: int):
        self.entropy = np.random.SeedSequence(seed).entropy

    def sequence(self, purpose: str, *key: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.entropy, spawn_key=(self.STREAMS.index(purpose),) + key)

    def generator(self, purpose: str) -> np.random.Generator:
        return np.random.default_rng(self.sequence(purpose))

    def env_seed(self, purpose: str, *key: int) -> int:
        """An int seed for ``env.reset(seed=...)``, below 2³¹ so that seed + copy index fits."""
        return int(self.sequence(purpose, *key).generate_state(1)[0] % 2**31)


# -- construction ------------------------------------------------------------------------------
# States per network pass for image batches (policy and value). Conv2d's passes run over blocks
# of BLOCK_BYTES of columns whatever the chunk (trpo_np/nn.py), so the chunk only bounds the
# other temporaries: a 5,000-step Pong update took the same CPU time with 128, 256 and 1,024
# states within the run-to-run noise, and 256 keeps the process smallest (0.20 vs 0.32 GB).
IMAGE_CHUNK = 256


def training_env(cfg: Config) -> dict:
    """make_env's keyword arguments for the training copies: the run's, with ``train_horizon`` as
    their time limit where it is set (gym.make's max_episode_steps; Atari: agent steps). Evaluations
    make their env without it (trpo_np/evaluation.py)."""
    kwargs = {"env_kwargs": dict(cfg.env_kwargs), **cfg.atari}
    if cfg.train_horizon:
        (kwargs if is_atari_id(cfg.env) else kwargs["env_kwargs"])["max_episode_steps"] = cfg.train_horizon
    return kwargs


def make_spaces(cfg: Config):
    """The env's spaces; for the vine method also checks that its state can be restored, so that
    a bad combination fails before a run directory is written."""
    env = make_env(cfg.env, env_kwargs=cfg.env_kwargs, **cfg.atari)
    try:
        if cfg.method == "vine":
            env.reset(seed=0)  # some classic-control envs create their state in reset
            simstate.check_state_support(env, cfg.env)
        return env.observation_space, env.action_space
    finally:
        env.close()


def build_networks(cfg: Config, obs_space, act_space, rng: np.random.Generator):
    """Policy and value function for these spaces (MLP for vectors, CNN for image stacks)."""
    dtype = DTYPES[cfg.dtype]
    image = is_image_space(obs_space)
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
    policy.shared[:] = cfg.log_std_init  # the Gaussian's initial log-std ℓ (empty for a categorical)
    vf = ValueFunction(vnet, lr=cfg.vf_lr, epochs=cfg.vf_epochs, minibatch=cfg.vf_minibatch, obs_scale=scale)
    return policy, vf


def net_signature(policy: Policy, vf: ValueFunction) -> dict:
    return {"obs_shape": list(policy.obs_shape), "policy_size": policy.size, "value_size": vf.net.size,
            "layers": [repr(l) for l in policy.net.layers]}


class Trainer:
    """Holds everything a run needs; ``train()`` runs iterations until ``cfg.steps``.

    With ``comm`` of N ranks (:mod:`trpo_np.parallel`), this is one rank: it steps its block of
    the env copies and holds the same networks, normalizers and generators as every other rank;
    rank 0 writes the run directory."""

    def __init__(self, cfg: Config, run_dir: str | None = None, quiet: bool = False, comm: Comm = Comm()):
        cfg.validate()
        if comm.size != cfg.ranks:
            raise ValueError(f"this run is configured for {cfg.ranks} rank(s) but was started with {comm.size}; "
                             f"start it with --ranks {cfg.ranks}")
        self.cfg, self.run_dir, self.quiet, self.comm = cfg, run_dir, quiet, comm
        self.first, last = split(cfg.num_envs, comm.size)[comm.rank]  # this rank's env copies [first, last)
        self.num_envs = last - self.first
        self.seeds = RunSeeds(cfg.seed)
        self.rng_act, self.rng_vf, self.rng_fvp = (self.seeds.generator(s) for s in ("action", "value_fit", "fisher"))
        obs_space, act_space = make_spaces(cfg)
        check_spaces(cfg.env, obs_space, act_space)
        self.observation_space, self.action_space = obs_space, act_space
        self.image = is_image_space(obs_space)
        # Image batches go through the networks in chunks of IMAGE_CHUNK states (measured, see there).
        self.chunk = cfg.chunk or (IMAGE_CHUNK if self.image else None)
        self.policy, self.vf = build_networks(cfg, obs_space, act_space, self.seeds.generator("init"))
        self.vf.chunk = self.chunk or self.vf.chunk
        use_norm = cfg.normalize_obs and not self.image
        self.obs_rms = RunningMeanStd(obs_space.shape) if use_norm else None
        self.reward_scaler = RewardScaler(self.num_envs, cfg.gamma) if cfg.scale_reward and not self.image else None
        self.iteration, self.env_steps, self.trunk_steps, self.branch_steps = 0, 0, 0, 0
        self.saved_iteration = None  # the iteration of the last checkpoint written or read (None: none)
        self.sampler = None  # while train() runs: its sampler, whose episodes in progress a checkpoint saves
        self.resume_copies = None  # this rank's env copies from the checkpoint, for the next make_sampler
        self.lock = None  # the run directory's RunLock (rank 0 of a run with a directory)
        self.elapsed = self.eval_time = 0.0  # wall-clock seconds of the run, and of it in evaluations

    # -- state ---------------------------------------------------------------------------------
    def meta(self) -> dict:
        return {"env": self.cfg.env, "iteration": self.iteration, "env_steps": self.env_steps,
                "trunk_steps": self.trunk_steps, "branch_steps": self.branch_steps, "elapsed": self.elapsed,
                "eval_time": self.eval_time, "vf_unit": self.vf.unit,
                "net": net_signature(self.policy, self.vf), "config": self.cfg.to_json(),
                "rng": {"rng_act": self.rng_act.bit_generator.state, "rng_vf": self.rng_vf.bit_generator.state,
                        "rng_fvp": self.rng_fvp.bit_generator.state}}

    def save(self, path: str) -> None:
        """Write the checkpoint (rank 0; every rank takes part: the running returns of all copies)."""
        arrays = {"policy_theta": self.policy.theta, "value_theta": self.vf.net.theta,
                  **{f"adam_{k}": v for k, v in self.vf.adam.state().items()}}
        if self.obs_rms is not None:
            arrays.update(self.obs_rms.state("obs"))
        if self.reward_scaler is not None:
            arrays.update(self.reward_scaler.rms.state("ret"))
            arrays["ret_running"] = np.array(self.comm.gather(list(self.reward_scaler.ret)))
        meta = self.meta()
        if self.sampler is not None:  # the episodes in progress, when every copy can save its simulator
            copies = self.comm.gather(self.sampler.state())
            if all(c["env"] is not None for c in copies):
                meta["sampler"] = simstate.encode(copies, arrays, "sampler")
        bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:  # the same on every rank
            raise ValueError(f"non-finite values (NaN or inf) in {', '.join(bad)}: this state is not saved, the "
                             "last checkpoint is kept")
        if self.comm.rank == 0:
            save_checkpoint(path, arrays, meta)
        self.saved_iteration = self.iteration

    def close(self) -> None:
        """Release the run directory's lock (the end of the process releases it too)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def load(self, path: str, weights_only: bool = False) -> dict:
        """Read the checkpoint on rank 0 and send it to every rank (no shared filesystem needed)."""
        arrays, meta = on_rank0(self.comm, load_checkpoint, path)
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
        # the episodes in progress continue where every env copy saved its simulator state; else
        # they restart (and so do their running returns)
        self.resume_copies = None
        if "sampler" in meta:
            try:
                self.resume_copies = simstate.decode(meta["sampler"], arrays)[self.first:self.first + self.num_envs]
            except Exception as e:
                raise RunError(f"checkpoint {path!r} is damaged: its env states cannot be read "
                               f"({type(e).__name__}: {e})") from e
        if self.reward_scaler is not None:
            self.reward_scaler.rms.load(arrays, "ret")
            if self.resume_copies is not None:
                self.reward_scaler.ret[:] = arrays["ret_running"][self.first:self.first + self.num_envs]
        self.rng_act.bit_generator.state = meta["rng"]["rng_act"]
        self.rng_vf.bit_generator.state = meta["rng"]["rng_vf"]
        self.rng_fvp.bit_generator.state = meta["rng"]["rng_fvp"]
        self.iteration, self.env_steps = meta["iteration"], meta["env_steps"]
        self.trunk_steps, self.branch_steps, self.elapsed = meta["trunk_steps"], meta["branch_steps"], meta["elapsed"]
        self.eval_time, self.vf.unit = meta["eval_time"], meta.get("vf_unit")
        self.saved_iteration = self.iteration
        return meta

    # -- one iteration -------------------------------------------------------------------------
    def make_sampler(self):
        """The sampler of ``cfg.method`` over fresh env copies, built from this run's parts."""
        cfg = self.cfg
        # A resumed run puts its copies back into their saved states; where the env could not
        # save them, it reseeds the copies from (seed, iteration) and episodes in progress restart.
        copies, self.resume_copies = self.resume_copies, None
        key = 0 if copies is not None else self.iteration
        seed = self.seeds.env_seed("envs", key)
        env_args = training_env(cfg)
        venv = VectorEnv(cfg.env, self.num_envs, **env_args)  # this rank's copies
        if cfg.method == "vine":
            from .vine import VineSampler
            sampler = VineSampler(venv, lambda: make_env(cfg.env, **env_args),
                                  self.policy, self.vf, self.rng_act, seed, self.seeds.env_seed("branch_envs", key),
                                  self.obs_rms, self.reward_scaler, cfg.gamma, cfg.vine_states, cfg.vine_actions,
                                  cfg.vine_horizon, self.first, cfg.num_envs)
        else:
            sampler = SinglePathSampler(venv, self.policy, self.rng_act, seed, self.obs_rms, self.reward_scaler,
                                        self.first, cfg.num_envs)
        if copies is not None:
            try:
                sampler.restore(copies)
            except BaseException:
                sampler.close()
                raise
        return sampler

    def trpo_batch(self, batch, damping: float | None = None, rng: np.random.Generator | None = None):
        """Steps 2-3 of an iteration: GAE over the batch and the :class:`TRPOBatch` of its surrogate
        at the policy's θ, with ``cfg.damping`` and the run's Fisher-state generator unless given
        (the diagnostics in bench/ pass their own). Returns (TRPOBatch, ret_te, val_te)."""
        cfg, comm = self.cfg, self.comm
        adv_te, ret_te, val_te = paths_gae(self.vf, batch.paths, cfg.gamma, cfg.lam)
        if not np.isfinite(ret_te).all():
            raise ValueError("non-finite value targets (λ-returns): V's predictions or the scaled rewards are NaN or inf")
        tb = TRPOBatch(self.policy, batch.surrogate(adv_te.reshape(-1), comm),
                       damping=cfg.damping if damping is None else damping, fvp_fraction=cfg.fvp_fraction,
                       rng=self.rng_fvp if rng is None else rng, chunk=self.chunk, comm=comm,
                       ent_coef=cfg.ent_coef)
        return tb, ret_te, val_te

    def update(self, batch) -> dict:
        """Steps 2-4 of an iteration on a batch of either sampler: GAE, TRPO step, value fit."""
        cfg, paths, comm = self.cfg, batch.paths, self.comm
        tb, ret_te, val_te = self.trpo_batch(batch)
        stats = trpo_step(tb, cfg.max_kl, cfg.cg_iters, cfg.cg_tol, cfg.backtrack_coef, cfg.max_backtracks)
        ret_n = ret_te.reshape(-1)
        stats["vf_explained_var"] = explained_variance(val_te.reshape(-1), ret_n, comm)  # of V before the fit
        stats.update(self.vf.fit(paths.flat(paths.obs_te), ret_n, self.rng_vf, paths.reward_scale, comm))
        if not np.isfinite(stats["vf_loss"]):
            raise ValueError(f"value fit: non-finite loss ({stats['vf_loss']})")
        return stats

    def start_normalizers(self, sampler) -> None:
        """Before the first update, π_old runs for one batch (single path: ``batch_steps``; vine:
        its trunk) and the normalizers take their first statistics from it: the first update
        already sees normalized observations, and the reward scale does not jump from 1 to the
        first batch's at iteration 2. These steps count toward ``cfg.steps``; nothing is learned
        from them."""
        cfg, comm = self.cfg, self.comm
        if self.obs_rms is None and self.reward_scaler is None:
            return
        trunk = sampler.trunk_sampler if cfg.method == "vine" else sampler
        steps = sampler.split(cfg.batch_steps)[0] if cfg.method == "vine" else cfg.batch_steps
        if steps >= cfg.steps:  # a run of one batch or less: nothing left to learn from
            return
        t0 = time.perf_counter()
        paths = trunk.paths(steps)
        self.first_episodes = paths.episodes  # logged with iteration 1's (progress.csv, monitor.csv)
        if self.obs_rms is not None:
            self.obs_rms.update(paths.raw_obs, comm)
        if self.reward_scaler is not None:
            self.reward_scaler.update(comm)
        steps = int(comm.sum(paths.steps))
        self.env_steps += steps
        self.trunk_steps += steps
        self.elapsed += time.perf_counter() - t0

    def evaluate(self, episodes: int, seed: int) -> list[float]:
        """Deterministic returns of ``episodes`` episodes (seed + i), split over the ranks."""
        mine = range(self.comm.rank, episodes, self.comm.size)
        rets = evaluate(self.cfg, self.policy, self.obs_rms, episodes, seed, ranks=(self.comm.rank, self.comm.size))
        return [r for _, r in sorted(self.comm.gather(list(zip(mine, rets))))]

    def train(self) -> dict:
        """Iterations until ``cfg.steps`` env steps; returns the last progress row."""
        cfg, comm = self.cfg, self.comm
        self.final_eval = None  # the returns of the evaluation in the last iteration, if it had one
        self.first_episodes = []  # episodes that ended in the batch that started the normalizers
        if comm.size > 1:  # Ctrl-C reaches every rank at a different point: stop together after a checkpoint
            self.interrupted = 0
            handlers = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        sampler = self.sampler = self.make_sampler()
        if self.env_steps == 0:
            self.start_normalizers(sampler)
        log = None
        if self.run_dir and comm.rank == 0:
            log = ProgressLog(self.run_dir, self.iteration if self.iteration else None, self.quiet, cfg.env)
        next_eval = (self.env_steps // cfg.eval_every + 1) * cfg.eval_every if cfg.eval_every else None
        row = {}
        try:
            while self.env_steps < cfg.steps:
                t0 = time.perf_counter()
                batch = sampler.sample(min(cfg.batch_steps, cfg.steps - self.env_steps))   # 1.
                t1 = time.perf_counter()
                stats = self.update(batch)                                                 # 2.-4.
                if self.obs_rms is not None and batch.paths.raw_obs is not None:           # 5.
                    self.obs_rms.update(batch.paths.raw_obs, comm)
                if self.reward_scaler is not None:
                    self.reward_scaler.update(comm)
                t2 = time.perf_counter()
                self.iteration += 1
                trunk, branch = int(comm.sum(batch.paths.steps)), int(comm.sum(batch.branch_steps))
                self.trunk_steps += trunk
                self.branch_steps += branch
                self.env_steps += trunk + branch
                eval_mean = eval_std = float("nan")
                if next_eval is not None and (self.env_steps >= next_eval or self.env_steps >= cfg.steps):
                    t_eval = time.perf_counter()
                    final = self.env_steps >= cfg.steps  # its own seed, which `run.py eval` replays
                    seed = self.seeds.env_seed("final_eval") if final else self.seeds.env_seed("eval", self.iteration)
                    rets = self.evaluate(cfg.eval_episodes, seed)
                    eval_mean, eval_std = float(np.mean(rets)), float(np.std(rets))
                    if final:
                        self.final_eval = rets
                    self.eval_time += time.perf_counter() - t_eval
                    next_eval = (self.env_steps // cfg.eval_every + 1) * cfg.eval_every
                episodes = comm.gather(self.first_episodes + batch.paths.episodes)
                self.first_episodes = []
                self.elapsed += time.perf_counter() - t0
                rets = [r for r, _ in episodes]
                row = dict(iteration=self.iteration, env_steps=self.env_steps, trunk_steps=self.trunk_steps,
                           branch_steps=self.branch_steps, episodes=len(rets),
                           ep_return_mean=float(np.mean(rets)) if rets else float("nan"),
                           ep_len_mean=float(np.mean([l for _, l in episodes])) if rets else float("nan"),
                           kl=stats["kl"], entropy=stats["entropy"],
                           surr_improve=stats["surr_after"] - stats["surr_before"],
                           expected_improve=stats["expected_improve"], backtracks=stats["backtracks"],
                           accepted=int(stats["accepted"]), cg_residual=stats["cg_residual"],
                           vf_explained_var=stats["vf_explained_var"], vf_loss=stats["vf_loss"],
                           eval_return_mean=eval_mean, eval_return_std=eval_std,
                           steps_per_s=(trunk + branch) / (t2 - t0), time_sample=t1 - t0, time_update=t2 - t1,
                           time_comm=comm.seconds, eval_time=self.eval_time, elapsed=self.elapsed,
                           eta=self.elapsed / self.env_steps * max(cfg.steps - self.env_steps, 0))  # printed only
                if log:  # the row first: a checkpoint is never ahead of progress.csv
                    log.log(row, episodes)
                if self.run_dir:
                    self.save(os.path.join(self.run_dir, "checkpoint.npz"))
                if comm.size > 1:  # the same answer on every rank
                    sigint, sigterm = comm.sum(np.array([self.interrupted == signal.SIGINT,
                                                         self.interrupted == signal.SIGTERM], dtype=np.int64))
                    if sigterm:
                        raise Terminated()
                    if sigint:
                        raise KeyboardInterrupt
        finally:
            if log:
                log.close()
            sampler.close()
            self.sampler = None
            if comm.size > 1:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
        return row

    def _request_stop(self, signum, frame) -> None:
        self.interrupted = int(signum)


def on_rank0(comm: Comm, fn, *args):
    """``fn(*args)`` on rank 0 only; its result, or the user-facing error it raised, on every rank."""
    try:
        out = fn(*args) if comm.rank == 0 else None
    except (RunError, ValueError) as e:
        out = e
    out = comm.bcast(out)
    if isinstance(out, Exception):
        raise out
    return out


def start_run(cfg: Config, run_dir: str, quiet: bool = False, comm: Comm = Comm()) -> Trainer:
    """A new run in ``run_dir`` (must not exist, be empty, or hold a run that ended before its
    first checkpoint), locked by rank 0 until ``trainer.close()``."""
    trainer = Trainer(cfg, run_dir, quiet, comm)  # validates before anything is written
    held = {}

    def create():
        held["lock"] = create_run_dir(run_dir, cfg)
    on_rank0(comm, create)
    trainer.lock = held.get("lock")
    return trainer


def resume_run(run_dir: str, steps: int | None = None, quiet: bool = False, comm: Comm = Comm()) -> Trainer:
    """The run in ``run_dir`` at its checkpoint (at its start if it ended before its first
    checkpoint), locked by rank 0 until ``trainer.close()``; ``steps`` raises its budget."""
    held = {}

    def lock_and_read():
        load_config(run_dir)  # a run directory, before a lock file is put into it
        held["lock"] = RunLock(run_dir)
        return load_config(run_dir)
    try:
        cfg = on_rank0(comm, lock_and_read)
        if steps is not None:
            cfg.steps = steps
        trainer = Trainer(cfg, run_dir, quiet, comm)
        trainer.lock = held.get("lock")
        path = os.path.join(run_dir, "checkpoint.npz")
        if on_rank0(comm, os.path.exists, path):
            trainer.load(path)
        if steps is not None:
            if steps <= trainer.env_steps:
                raise RunError(f"--steps {steps:,} is not more than the {trainer.env_steps:,} env steps that "
                               f"{run_dir!r} has done; give a larger --steps to continue")
            on_rank0(comm, write_json, os.path.join(run_dir, "config.json"), cfg.to_json())
        on_rank0(comm, record_versions, run_dir, trainer.iteration)
    except BaseException:
        if held.get("lock"):
            held["lock"].release()
        raise
    return trainer
