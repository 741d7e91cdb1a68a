#!/usr/bin/env python
"""Why a TRPO step fails its line search: the surrogate and the KL along the step, against the
models the step was built from (the linear model gᵀs of the surrogate, the quadratic ½ sᵀFs = δ
of the KL), on fresh batches of a run's last checkpoint.

For the step s = β x (x from CG, β scaled to the KL bound δ, as ``optim.trpo_step``) and points
θ_old + α s, it prints per α:

- slope = (L(α) − L(0)) / (α gᵀs): 1 where the linear model holds, negative where the surrogate
  falls although gᵀs > 0;
- curve = KL(α) / (α² δ): 1 where the quadratic model holds.

The line search (``optim.line_search``) tries α = 0.8^k, k < 10, so a step is lost when every
α ≥ 0.13 has slope ≤ 0 or curve > 1/α². For a CNN policy it also reports what the networks see:
the share of input pixels that are 0, the share of first-layer outputs that equal the layer's
bias (windows of zeros: every such position of a channel has the same pre-activation, so a step
that moves the bias across 0 switches that ReLU on or off at all of them at once, a kink the
gradient at θ_old does not see), and the step's norm per layer beside the parameters' norm.

    python bench/linesearch.py RUN_DIR --batches 3

Reads the run directory only; writes bench/results/linesearch-<env>-<run directory's name>.md.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import machine, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402

ALPHAS = (1e-3, 1e-2, 0.05, 0.134, 0.41, 1.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory (its checkpoint.npz and config.json are read)")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--seed", type=int, default=12345, help="seed of the fresh env copies and the Fisher states")
    args = p.parse_args()

    from trpo_np.nn import Conv2d
    from trpo_np.optim import conjugate_gradient
    from trpo_np.rundir import load_config, read_progress
    from trpo_np.train import Trainer

    cfg = load_config(args.run)
    cfg.seed = args.seed
    tr = Trainer(cfg, None, quiet=True)
    meta = tr.load(os.path.join(args.run, "checkpoint.npz"))
    rows = read_progress(os.path.join(args.run, "progress.csv"), meta["iteration"])
    rejected = sum(r["accepted"] != "1" for r in rows)
    sampler = tr.make_sampler()
    lines = [f"# Line search along the TRPO step, {cfg.env}", "",
             f"{machine()}. Command: `python bench/linesearch.py {args.run} --batches {args.batches}` (seed "
             f"{args.seed}): the run's last checkpoint (iteration {rows[-1]['iteration']}, "
             f"{int(float(rows[-1]['env_steps'])):,} env steps; {rejected} of its {len(rows)} iterations took no "
             f"step), fresh batches of {cfg.batch_steps:,} steps, its settings (δ = {cfg.max_kl}, damping "
             f"{cfg.damping}, F on {cfg.fvp_fraction:.0%} of the states).", "",
             "slope = (L(α) − L(0)) / (α gᵀs): 1 where the surrogate is linear; curve = KL(α) / (α² δ): 1 where "
             "the KL is quadratic. The line search tries α = 0.8^k ≥ 0.134.", "",
             "| batch | " + " | ".join(f"α = {a:g}: slope, curve" for a in ALPHAS) + " |",
             "|---" * (len(ALPHAS) + 1) + "|"]
    tb = None
    for b in range(args.batches):
        batch = sampler.sample(cfg.batch_steps)
        tb, _, _ = tr.trpo_batch(batch, rng=np.random.default_rng(args.seed + b))
        L0, g = tb.loss_and_grad()
        x, _, _ = conjugate_gradient(tb.fvp, g, cfg.cg_iters, cfg.cg_tol)
        s = np.sqrt(2.0 * cfg.max_kl / float(x @ tb.fvp(x))) * x
        gs, theta_old = float(g @ s), tb.theta_old.copy()
        cells = []
        for a in ALPHAS:
            L, kl, _ = tb.evaluate(theta_old + a * s)
            cells.append(f"{(L - L0) / (a * gs):+.2f}, {kl / (a * a * cfg.max_kl):.1f}")
        tb.evaluate(theta_old)
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    sampler.close()

    net = tr.policy.net
    if isinstance(net.layers[0], Conv2d) and tb is not None:
        x0 = tr.policy.preprocess(tb.obs[:1000])
        z1 = net.layers[0].apply(x0, net.w[0])
        same = np.mean(np.isclose(z1, net.w[0][1], rtol=0, atol=1e-6))
        lines += ["", f"What the CNN sees (1,000 states of the last batch): {np.mean(x0 == 0):.0%} of the input "
                  f"pixels are 0; {same:.0%} of the first layer's outputs equal the layer's bias (windows of zeros)."]
        sv = net.views(s[:net.size])
        lines += ["", "| layer | step ‖s_W‖ | ‖W‖ | step ‖s_b‖ | ‖b‖ |", "|---|---|---|---|---|"]
        for layer, step, w in zip(net.layers, sv, net.w):
            if step:
                lines.append(f"| {layer!r} | {np.linalg.norm(step[0]):.3g} | {np.linalg.norm(w[0]):.3g} | "
                             f"{np.linalg.norm(step[1]):.3g} | {np.linalg.norm(w[1]):.3g} |")
    write_result(f"linesearch-{cfg.env.replace('/', '_')}-{os.path.basename(os.path.normpath(args.run))}.md", lines)


if __name__ == "__main__":
    main()
