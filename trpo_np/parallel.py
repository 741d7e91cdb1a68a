"""Sampling on every core (``--async``): the env copies are split into contiguous blocks, one
per process; each process runs the single-path sampler over its block with the current policy,
and the main process, which samples the first block itself, joins the blocks into one batch.

Processes meet once per iteration, not once per step: the main process sends each worker θ, the
frozen normalizer statistics and the action noise of its block, and receives its block's batch.
A step-by-step exchange (actions out, observations back, the policy evaluated in the main process
for all copies) came first: a pipe round trip cost 60-140 µs on the 2-core machine, about a
Hopper-v4 step, and it trained Hopper at 4,591 steps/s against 6,412 in one process (commit
cb6f75c, bench/results/throughput-4envs.md). Here every process evaluates the policy for its own
copies.

Seeding: copy i is seeded with seed + i, and the action noise is drawn in the main process, all
copies at once, as the one-process sampler draws it step by step, so both give each copy the
same random numbers. What differs is rounding: each process evaluates the policy on its own
block, and a matrix product's rows are not bit-identical for different batch sizes. So a batch
agrees with the one-process batch up to rounding (tests/test_parallel.py), a run with the same
seed and ``processes`` is the same run, but over a run with continuous actions the differences
grow (MuJoCo is chaotic): an ``--async`` run is another draw from the same distribution of
runs, not the one-process run (bench/results/learning-Hopper-v4-single-async.md).
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import time
import traceback

import numpy as np

from .envs import VectorEnv
from .normalize import RewardScaler
from .samplers import Paths, SinglePathBatch, SinglePathSampler


def split(num_envs: int, processes: int) -> list[tuple[int, int]]:
    """Contiguous blocks [a, b) of env copies, as even as possible, one per process."""
    processes = max(1, min(processes, num_envs))
    bounds = np.linspace(0, num_envs, processes + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds, bounds[1:])]


def _block_scaler(scaler: RewardScaler | None, a: int, b: int) -> RewardScaler | None:
    """A reward scaler for copies [a, b): the running returns of those copies, and the whole
    run's return statistics (the same object in the main process; sent to the workers)."""
    if scaler is None:
        return None
    s = RewardScaler(b - a, scaler.gamma)
    s.rms, s.ret = scaler.rms, scaler.ret[a:b].copy()
    return s


def _block_result(batch: Paths, scaler: RewardScaler | None):
    """A block's paths with its copies' running returns and the returns recorded while sampling
    (T, copies), which the block's scaler then forgets."""
    if scaler is None:
        return batch, None, None
    seen, scaler.seen = np.stack(scaler.seen), []
    return batch, scaler.ret, seen


def _worker(conn, inherited, env_id, env_kwargs, a, b, seed, policy, obs_rms, scaler) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    for c in inherited:  # the main process's pipe ends: closed here, so that its exit reads as EOF
        c.close()
    sampler = None
    try:
        try:
            sampler = SinglePathSampler(VectorEnv(env_id, b - a, **env_kwargs), policy, None, seed + a,
                                        obs_rms, scaler)
            reply = ("ok", None)
        except BaseException as e:
            reply = _error(e)
        while True:
            conn.send(reply)
            if reply[0] == "error":
                break
            cmd, data = conn.recv()
            if cmd == "close":
                break
            try:
                theta, obs_stats, ret_var, noise_te = data
                policy.theta[:] = theta
                if obs_rms is not None:
                    obs_rms.mean, obs_rms.var = obs_stats
                if scaler is not None:
                    scaler.rms.var = ret_var
                reply = ("ok", _block_result(sampler.paths(len(noise_te) * (b - a), noise_te=noise_te), scaler))
            except BaseException as e:
                reply = _error(e)
    except (EOFError, OSError):  # the pipe: the main process is gone or closing
        pass
    finally:
        if sampler is not None:
            sampler.close()
        conn.close()


def _error(e: BaseException):
    """An error reply: the exception itself where it can be pickled, and its traceback."""
    try:
        pickle.dumps(e)
    except Exception:
        e = None
    return "error", (e, traceback.format_exc())


class WorkerError(RuntimeError):
    """A worker process failed; the message has its traceback."""


class ParallelSampler:
    """The interface of :class:`trpo_np.samplers.SinglePathSampler` (``sample(steps)``,
    ``close()``) over ``num_envs`` copies in ``processes`` processes, this one included. The
    trainer's ``reward_scaler`` keeps the running returns of all copies and receives the
    returns seen, as with one process."""

    def __init__(self, env_id: str, num_envs: int, processes: int, policy, rng: np.random.Generator, seed: int,
                 obs_rms=None, reward_scaler: RewardScaler | None = None, env_kwargs: dict | None = None):
        self.blocks = split(num_envs, processes)
        self.num_envs, self.policy, self.rng = num_envs, policy, rng
        self.obs_rms, self.reward_scaler = obs_rms, reward_scaler
        self.procs, self.conns, self.local = [], [], None
        env_kwargs = env_kwargs or {}
        ctx = mp.get_context("fork")  # the workers start with a copy of the policy and normalizers
        try:
            for a, b in self.blocks[1:]:
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker, daemon=True,
                                   args=(child, list(self.conns) + [parent], env_id, env_kwargs, a, b, seed, policy,
                                         obs_rms, _block_scaler(reward_scaler, a, b)))
                proc.start()
                child.close()
                self.procs.append(proc)
                self.conns.append(parent)
            a, b = self.blocks[0]
            self.local = SinglePathSampler(VectorEnv(env_id, b - a, **env_kwargs), policy, None, seed + a,
                                           obs_rms, _block_scaler(reward_scaler, a, b))
            self._receive()  # the workers' envs are built
        except BaseException:
            self.close()
            raise

    def _receive(self, conns=None) -> list:
        out = []
        for conn in self.conns if conns is None else conns:
            try:
                status, data = conn.recv()
            except EOFError:
                status, data = "error", (None, "the worker process exited")
            if status == "error":
                self.close()
                exc, tb = data
                if isinstance(exc, Exception):
                    raise exc from WorkerError(f"in an env worker process:\n{tb}")
                raise WorkerError(f"an env worker process failed:\n{tb}")
            out.append(data)
        return out

    def sample(self, steps: int) -> SinglePathBatch:
        """About ``steps`` env steps (rounded up to a multiple of num_envs)."""
        T = -(-steps // self.num_envs)
        # the random numbers the single-process sampler would draw step by step, in that order
        noise_te = self.policy.dist.noise(self.rng, (T, self.num_envs))
        obs_stats = None if self.obs_rms is None else (self.obs_rms.mean, self.obs_rms.var)
        ret_var = None if self.reward_scaler is None else self.reward_scaler.rms.var
        for conn, (a, b) in zip(self.conns, self.blocks[1:]):
            conn.send(("sample", (self.policy.theta, obs_stats, ret_var, noise_te[:, a:b])))
        a, b = self.blocks[0]
        local = self.local.paths(T * (b - a), noise_te=noise_te[:, a:b])
        parts = [_block_result(local, self.local.reward_scaler)] + self._receive()
        if self.reward_scaler is not None:
            self.reward_scaler.ret = np.concatenate([ret for _, ret, _ in parts])
            self.reward_scaler.seen.append(np.concatenate([seen for _, _, seen in parts], axis=1).reshape(-1))
        return SinglePathBatch(join_paths([p[0] for p in parts], [a for a, _ in self.blocks]))

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except OSError:
                pass
        for proc, conn in zip(self.procs, self.conns):
            deadline = time.monotonic() + 10
            while proc.is_alive() and time.monotonic() < deadline:
                try:  # a batch still on its way (after Ctrl-C): read it so that the worker can exit
                    if conn.poll(0.05):
                        conn.recv()
                except (EOFError, OSError):
                    proc.join(timeout=1)
            if proc.is_alive():
                proc.terminate()
            proc.join()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        if self.local is not None:
            self.local.close()
            self.local = None


def join_paths(parts: list[Paths], starts: list[int]) -> Paths:
    """One (T, E) batch from blocks of copies: block k holds copies starts[k], starts[k] + 1, ..."""
    def cat(name, axis=1):
        return np.concatenate([getattr(p, name) for p in parts], axis=axis)

    T = parts[0].rew_te.shape[0]
    raw = None
    if parts[0].raw_obs is not None:
        raw = np.concatenate([p.raw_obs.reshape((T, -1) + p.raw_obs.shape[1:]) for p in parts], axis=1)
        raw = raw.reshape((-1,) + raw.shape[2:])
    final_idx = (np.concatenate([p.final_idx[0] for p in parts]),
                 np.concatenate([p.final_idx[1] + s for p, s in zip(parts, starts)]))
    return Paths(cat("obs_te"), cat("act_te"), cat("logp_te"), cat("rew_te"), cat("terminated_te"),
                 cat("truncated_te"), cat("last_obs_e", 0), cat("final_obs", 0), final_idx, raw,
                 [ep for p in parts for ep in p.episodes], parts[0].reward_scale)
