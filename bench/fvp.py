#!/usr/bin/env python
"""Time a surrogate gradient and a Fisher-vector product, and their ratio.

Cases: a 64-64 tanh MLP Gaussian policy (Hopper-sized: 11 inputs, 3 actions) on 5,000 states,
and the paper's Atari CNN (42×42×4 frames, 6 actions) on 1,000 states, in float32 and float64.

- gradient: a forward pass at θ plus the backward pass of the surrogate (what ``loss_and_grad``
  costs when θ has changed, e.g. a new batch);
- F v: one product inside conjugate gradient, where the forward cache at θ_old is reused
  (one jvp pass + closed-form M + one backward pass); "F v + forward" also times the forward.

Target (issue 2): F v <= 1.5x a gradient evaluation. Medians of ``--repeats`` timings.
Writes bench/results/fvp.md.

    python bench/fvp.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import machine, median_time, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()  # as in training

import numpy as np  # noqa: E402

from trpo_np.distributions import Categorical, DiagGaussian  # noqa: E402
from trpo_np.nn import atari_cnn, mlp  # noqa: E402
from trpo_np.policy import Policy, Surrogate, TRPOBatch, single_path_objective  # noqa: E402


def case(name, dtype, repeats):
    rng = np.random.default_rng(0)
    if name == "mlp":
        pol = Policy(mlp(11, (64, 64), 3, dtype=dtype).init(rng), DiagGaussian(3))
        obs = rng.standard_normal((5000, 11))
    else:
        pol = Policy(atari_cnn((42, 42, 4), 6, dtype=dtype).init(rng), Categorical(6), obs_scale=1 / 255)
        obs = rng.integers(0, 256, size=(1000, 42, 42, 4), dtype=np.uint8)
    act, logp = pol.act(obs, rng)
    adv = rng.standard_normal(len(obs))
    batch = TRPOBatch(pol, Surrogate(obs, act, single_path_objective(logp, adv), kl_obs=obs))
    v = rng.standard_normal(pol.size).astype(pol.dtype)

    def grad():  # forward at θ + backward of the surrogate
        p, caches = pol.params(pol.preprocess(obs))
        _, dlogp = batch.objective(pol.dist.logp(p, act))
        pol.vjp(caches, pol.dist.dlogp(p, act, dlogp))

    def fvp_with_forward():
        TRPOBatch(pol, Surrogate(obs, act, batch.objective, kl_obs=obs)).fvp(v)

    t_g = median_time(grad, repeats)
    t_f = median_time(lambda: batch.fvp(v), repeats)
    t_ff = median_time(fvp_with_forward, max(3, repeats // 3))
    return dict(case=name, dtype=np.dtype(dtype).name, n=len(obs), params=pol.size,
                grad_ms=1e3 * t_g, fvp_ms=1e3 * t_f, fvp_fwd_ms=1e3 * t_ff, ratio=t_f / t_g)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    rows = [case(c, d, args.repeats) for c in ("mlp", "cnn") for d in (np.float32, np.float64)]
    lines = ["# Gradient vs Fisher-vector product", "",
             f"{machine()}. Command: `python bench/fvp.py`. Medians of {args.repeats} runs.", "",
             "| policy | dtype | states | parameters | gradient (ms) | F v (ms) | F v incl. forward (ms) | F v / gradient |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = "64-64 tanh MLP, Gaussian" if r["case"] == "mlp" else "paper CNN 42×42×4, categorical"
        lines.append(f"| {label} | {r['dtype']} | {r['n']:,} | {r['params']:,} | {r['grad_ms']:.2f} | "
                     f"{r['fvp_ms']:.2f} | {r['fvp_fwd_ms']:.2f} | {r['ratio']:.2f} |")
    write_result("fvp.md", lines)


if __name__ == "__main__":
    main()
