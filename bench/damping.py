#!/usr/bin/env python
"""How much of the TRPO step is the natural gradient: CG on (F + λI) x = g for several dampings λ.

The step direction is x ≈ (F + λI)⁻¹ g (paper App. C; λ is ``--damping``). When λ is large beside
F's eigenvalues along the directions g spans, x is nearly g / λ: the step is a plain gradient
step scaled to the KL bound, not the natural gradient. This measures it on a batch of a training
run: after ``--iters`` updates with the defaults, one more batch, and for each λ:

- CG iterations used (of ``cg_iters``, relative tolerance ``cg_tol``),
- cos(x, g): 1 means the step direction is the gradient's,
- xᵀFx / xᵀ(F + λI)x: the share of the step's quadratic model that is F (the KL), the rest is λ,
- the first-order improvement gᵀs of the step s = β x scaled to the KL bound (with F alone),
  relative to λ = the largest one listed;

and F's Rayleigh quotient vᵀFv / vᵀv along g and along random directions, to compare with λ.

    python bench/damping.py --env ALE/Pong-v5 --iters 5 --dampings 0.1 0.01 0.001
    python bench/damping.py --env Hopper-v4 --iters 5 --dampings 0.1 0.01 0.001

Writes bench/results/damping-<env>.md.
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="ALE/Pong-v5")
    p.add_argument("--iters", type=int, default=5, help="updates with the defaults before the measured batch")
    p.add_argument("--dampings", type=float, nargs="+", default=[0.1, 0.01, 0.001])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from trpo_np import cli
    from trpo_np.optim import conjugate_gradient
    from trpo_np.train import Trainer

    cfg = cli.build_config(cli.parse_args(["--env", args.env, "--seed", str(args.seed)]))
    tr = Trainer(cfg, None, quiet=True)
    sampler = tr.make_sampler()
    tr.start_normalizers(sampler)
    for _ in range(args.iters):
        tr.update(sampler.sample(cfg.batch_steps))
    batch = sampler.sample(cfg.batch_steps)
    sampler.close()
    tb, _, _ = tr.trpo_batch(batch, damping=0.0, rng=np.random.default_rng(args.seed))
    _, g = tb.loss_and_grad()
    dtype = g.dtype

    def rayleigh(v):
        v = (v / np.linalg.norm(v)).astype(dtype)
        return float(v @ tb.fvp(v))

    rng = np.random.default_rng(args.seed)
    r_g = rayleigh(g)
    r_rand = [rayleigh(rng.standard_normal(g.size)) for _ in range(5)]
    rows = []
    for lam in args.dampings:
        x, _, k = conjugate_gradient(lambda v, lam=lam: tb.fvp(v) + lam * v, g, cfg.cg_iters, cfg.cg_tol)
        Fx = tb.fvp(x)
        xFx = float(x @ Fx)
        beta = np.sqrt(2 * cfg.max_kl / xFx)  # the step's KL under F alone: δ
        rows.append(dict(lam=lam, iters=k, cos=float(x @ g / np.linalg.norm(x) / np.linalg.norm(g)),
                         share=xFx / (xFx + lam * float(x @ x)), gain=float(g @ (beta * x))))
    ref = rows[0]["gain"]
    lines = [f"# Damping and the TRPO step direction, {args.env}", "",
             f"{machine()}. Command: `python bench/damping.py --env {args.env} --iters {args.iters} --dampings "
             f"{' '.join(map(str, args.dampings))}` (seed {args.seed}): {args.iters} updates with the defaults "
             f"({cfg.batch_steps:,} steps each), then one more batch; F on {cfg.fvp_fraction:.0%} of its states; "
             f"{cfg.cg_iters} CG iterations at most.", "",
             f"F's Rayleigh quotient vᵀFv / vᵀv: along g **{r_g:.3g}**; along 5 random directions "
             f"{min(r_rand):.2g} to {max(r_rand):.2g}.", "",
             "| damping λ | CG iterations | cos(x, g) | xᵀFx / xᵀ(F + λI)x | gᵀs at the KL bound (relative to the first row) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['lam']:g} | {r['iters']} | {r['cos']:.3f} | {r['share']:.3f} | {r['gain'] / ref:.2f} |")
    slug = args.env.replace("/", "_")
    write_result(f"damping-{slug}.md", lines)


if __name__ == "__main__":
    main()
