#!/usr/bin/env python
"""trpo_np vs sb3-contrib's TRPO (PyTorch) on Hopper-v4, same budget and matched settings.

Matched: 4 env copies × 512 steps = 2,048 steps per iteration, 64-64 tanh policy and value
networks, δ = 0.01, 10 CG iterations, damping 0.1, line search ×0.8 up to 10 times, γ = 0.99,
GAE λ = 0.95, value fit with Adam (lr 1e-3, minibatch 128, 10 epochs), observation and reward
normalization. trpo_np runs twice: in one process, and with one MPI rank per core (``--ranks``,
trpo_np.parallel; wall time of the whole ``mpiexec`` run, start-up included). sb3-contrib runs with its
default DummyVecEnv (copies in its own process) and, with ``--sb3-subproc``, also with
SubprocVecEnv (a process per copy). All run one after the other, each alone, so that the
timings are comparable; each is followed by a 10-episode deterministic evaluation with frozen
observation statistics.

sb3-contrib and torch are optional and used only here:

    pip install torch==2.13.0 sb3-contrib      # on this machine: the CPU wheel on disk
    python bench/compare_sb3.py --steps 1000000 --seed 0

Without them the script says so and exits 0. Writes bench/results/compare_sb3-torch<threads>.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import machine, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402


def run_trpo_np(env_id, steps, seed, ranks=1):
    """Train with run.py (--ranks: under mpiexec), then the 10-episode final evaluation of its
    checkpoint. Returns (wall seconds of training, env steps, returns)."""
    import subprocess
    import tempfile

    from trpo_np.config import Config
    from trpo_np.evaluation import evaluate
    from trpo_np.train import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "--env", env_id, "--steps", str(steps),
                        "--num-envs", "4", "--batch-steps", "2048", "--eval-every", "0", "--seed", str(seed),
                        "--gamma", "0.99",  # as sb3's run below (Hopper's entry has 0.995)
                        "--ranks", str(ranks), "--out", out, "--quiet"], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0  # includes the final evaluation run.py makes (about 1 s)
        tr = Trainer(Config(env=env_id, num_envs=4, seed=seed), run_dir=None, quiet=True)
        meta = tr.load(os.path.join(out, "checkpoint.npz"), weights_only=True)
        return wall, meta["env_steps"], evaluate(tr.cfg, tr.policy, tr.obs_rms, 10, seed=tr.seeds.env_seed("final_eval"))


def run_sb3(env_id, steps, seed, torch_threads, subproc=False):
    import gymnasium as gym
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    if torch_threads:
        torch.set_num_threads(torch_threads)
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    venv = VecNormalize(make_vec_env(env_id, n_envs=4, seed=seed,
                                     vec_env_cls=SubprocVecEnv if subproc else DummyVecEnv), gamma=0.99)
    model = TRPO("MlpPolicy", venv, n_steps=512, batch_size=128, gamma=0.99, gae_lambda=0.95,
                 cg_max_steps=10, cg_damping=0.1, line_search_shrinking_factor=0.8, line_search_max_iter=10,
                 n_critic_updates=10, learning_rate=1e-3, target_kl=0.01, normalize_advantage=True,
                 policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh),
                 seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - t0
    from trpo_np.train import RunSeeds

    env = gym.make(env_id)
    returns = []
    eval_seed = RunSeeds(seed).env_seed("final_eval")  # the episodes trpo_np's final evaluation plays
    for ep in range(10):
        obs, _ = env.reset(seed=eval_seed + ep)
        done, total = False, 0.0
        while not done:
            a, _ = model.predict(venv.normalize_obs(obs[None]), deterministic=True)
            obs, r, term, trunc, _ = env.step(a[0])
            total += r
            done = term or trunc
        returns.append(total)
    venv.close()
    return wall, model.num_timesteps, returns, torch.__version__, torch.get_num_threads()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Hopper-v4")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    p.add_argument("--sb3-subproc", action="store_true", help="also run sb3-contrib with SubprocVecEnv")
    args = p.parse_args()
    try:
        import sb3_contrib
        import torch  # noqa: F401
    except ImportError as e:
        print(f"skipped: {e.name} is not installed; install the optional comparison with\n"
              "    pip install torch==2.13.0 sb3-contrib")
        return 0

    w_np, n_np, r_np = run_trpo_np(args.env, args.steps, args.seed)
    print(f"trpo_np: {n_np:,} steps in {w_np:.0f} s = {n_np / w_np:,.0f} steps/s; eval {np.mean(r_np):.1f}", flush=True)
    ranks = min(os.cpu_count() or 1, 4)
    w_as, n_as, r_as = run_trpo_np(args.env, args.steps, args.seed, ranks)
    print(f"trpo_np --ranks {ranks}: {n_as:,} steps in {w_as:.0f} s = {n_as / w_as:,.0f} steps/s; "
          f"eval {np.mean(r_as):.1f}", flush=True)
    w_sb, n_sb, r_sb, tv, tt = run_sb3(args.env, args.steps, args.seed, args.torch_threads)
    print(f"sb3-contrib: {n_sb:,} steps in {w_sb:.0f} s = {n_sb / w_sb:,.0f} steps/s; eval {np.mean(r_sb):.1f}", flush=True)
    rows = [("trpo_np", w_np, n_np, r_np),
            (f"trpo_np --ranks {ranks} (MPI)", w_as, n_as, r_as),
            ("sb3-contrib TRPO (DummyVecEnv)", w_sb, n_sb, r_sb)]
    if args.sb3_subproc:
        w_sp, n_sp, r_sp, _, _ = run_sb3(args.env, args.steps, args.seed, args.torch_threads, subproc=True)
        print(f"sb3-contrib SubprocVecEnv: {n_sp:,} steps in {w_sp:.0f} s = {n_sp / w_sp:,.0f} steps/s; "
              f"eval {np.mean(r_sp):.1f}", flush=True)
        rows.append(("sb3-contrib TRPO (SubprocVecEnv, 4 processes)", w_sp, n_sp, r_sp))
    sb3_best = max(n / w for name, w, n, _ in rows if name.startswith("sb3"))
    lines = [f"# trpo_np vs sb3-contrib TRPO, {args.env}, {args.steps:,} steps, seed {args.seed}", "",
             f"{machine()}; one after the other. "
             f"sb3-contrib {sb3_contrib.__version__}, torch {tv} ({tt} threads); trpo_np with single-threaded BLAS. "
             f"Command: `python bench/compare_sb3.py --steps {args.steps} --seed {args.seed}"
             f"{f' --torch-threads {args.torch_threads}' if args.torch_threads else ''}"
             f"{' --sb3-subproc' if args.sb3_subproc else ''}`", "",
             "| library | wall time (s) | env steps/s | vs the faster sb3-contrib | final deterministic eval (10 ep.) |",
             "|---|---|---|---|---|"]
    for name, w, n, r in rows:
        lines.append(f"| {name} | {w:.0f} | {n / w:,.0f} | {(n / w) / sb3_best:.2f}x | "
                     f"{np.mean(r):.1f} ± {np.std(r):.1f} |")
    write_result(f"compare_sb3-torch{tt}{'-subproc' if args.sb3_subproc else ''}.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
