#!/usr/bin/env python
"""The Atari update: one TRPO step + value fit on a Pong batch, for several chunk sizes (states
per network pass), each in a fresh process: wall, user and system seconds, the process's peak
memory, and the effective GFLOP/s beside a float32 GEMM (2048³) measured in the same run.

FLOPs are counted from the layer shapes: a forward pass costs 2·MACs; a backward pass twice that
(the weight gradient and the input gradient, none for the first layer's input); a jvp about one
forward pass. The update makes (single path: π_old's outputs come from the sampler, no θ_old
pass): π forward + backward (g), π forward per line search trial, on the Fisher states (``fvp_fraction``) one forward plus (CG iterations + 1) × (jvp
+ backward), V forward (GAE) and per value epoch V forward + backward.

    python bench/atari_update.py --env ALE/Pong-v5 --steps 20000 --chunks 256 512 1024 4096

Writes bench/results/atari-update.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import machine, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402


def forward_flops(net) -> tuple[float, float]:
    """(MFLOP of one forward pass per state, of it in the first layer)."""
    from trpo_np.nn import Conv2d, Dense

    flops, first = 0.0, None
    for layer in net.layers:
        if isinstance(layer, Dense):
            f = 2.0 * layer.in_shape[0] * layer.units
        elif isinstance(layer, Conv2d):
            f = 2.0 * layer.out_hw[0] * layer.out_hw[1] * layer.param_shapes[0][0] * layer.channels
        else:
            continue
        first = f if first is None else first
        flops += f
    return flops / 1e6, first / 1e6


def one(env_id: str, steps: int, chunk: int) -> dict:
    """Sample a seeded batch, time one update with ``chunk`` (in this process)."""
    from trpo_np import cli as run
    from trpo_np.train import Trainer

    cfg = run.build_config(run.parse_args(["--env", env_id]))
    cfg.chunk = chunk
    tr = Trainer(cfg, None, quiet=True)
    sampler = tr.make_sampler()
    batch = sampler.sample(steps)
    sampler.close()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    stats = tr.update(batch)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    fp, fp1 = forward_flops(tr.policy.net)
    fv, fv1 = forward_flops(tr.vf.net)
    n, nf = batch.paths.steps, max(1, round(cfg.fvp_fraction * batch.paths.steps))
    cg = stats["cg_iters"] + 1
    policy = n * ((3 * fp - 2 * fp1) + fp * (1 + stats["backtracks"])) + nf * (fp + cg * (fp + 3 * fp - 2 * fp1))
    value = n * (fv + cfg.vf_epochs * (fv + 3 * fv - 2 * fv1))
    return dict(chunk=chunk, steps=n, wall=wall, user=r1.ru_utime - r0.ru_utime, sys=r1.ru_stime - r0.ru_stime,
                rss_gb=r1.ru_maxrss / 1e6, gflop=(policy + value) / 1e3, kl=stats["kl"],
                backtracks=stats["backtracks"])


def gemm_rate(n: int = 2048, repeats: int = 5) -> float:
    a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
    a @ b
    t = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n ** 3 / t / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--chunks", type=int, nargs="+", default=[256, 512, 1024, 4096])
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure this chunk here
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.env, args.steps, args.one)))
        return
    rows = []
    for c in args.chunks:
        out = subprocess.run([sys.executable, __file__, "--env", args.env, "--steps", str(args.steps), "--one", str(c)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"chunk {c}: wall {r['wall']:.1f} s (user {r['user']:.1f}, sys {r['sys']:.1f}), peak {r['rss_gb']:.2f} GB, "
              f"{r['gflop'] / r['wall']:.1f} GFLOP/s", flush=True)
    gemm = gemm_rate()
    lines = [f"# The Atari update, {args.env}, {rows[0]['steps']:,}-step batch", "",
             f"{machine()}. Command: `python bench/atari_update.py --env {args.env} --steps {args.steps} --chunks "
             f"{' '.join(map(str, args.chunks))}`. Each chunk size in a fresh process (the same seeded batch); one "
             f"TRPO step (F on 10% of the states) and one value epoch, run.py's Atari defaults. Float32 GEMM "
             f"2048³ in this run: **{gemm:.0f} GFLOP/s** (one thread).", "",
             "| chunk (states per pass) | wall (s) | user (s) | system (s) | peak memory of the process | GFLOP | "
             "effective GFLOP/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['chunk']:,} | {r['wall']:.1f} | {r['user']:.1f} | {r['sys']:.1f} | {r['rss_gb']:.2f} GB | "
                     f"{r['gflop']:.0f} | {r['gflop'] / r['wall']:.1f} |")
    write_result("atari-update.md", lines)


if __name__ == "__main__":
    main()
