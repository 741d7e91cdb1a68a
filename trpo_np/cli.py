"""The command line: train, resume or evaluate a TRPO agent (``python run.py`` / ``python -m trpo_np``).

    python run.py --env Hopper-v4                      # train with the defaults (1M steps)
    python run.py --resume runs/Hopper-v4-s0-...       # continue an interrupted run
    python run.py --eval runs/.../checkpoint.npz --episodes 10 --video hopper.mp4

Some envs get settings of their own from the table in trpo_np/settings.py (Atari ids: CNN policy,
larger batches, Fisher sub-sampling; Swimmer: γ = 0.9999; ...); a flag overrides the table, and
the run prints which entry it used.
Bad input prints one line ``run.py: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

# The networks here are small (64-unit layers, 8-state sampling batches): multi-threaded BLAS
# costs more in synchronization than it gains, and with the simulator in the same process (or
# several runs side by side) it was measured 6x slower end to end on a 2-core machine.
# Set OPENBLAS_NUM_THREADS yourself to override.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# gymnasium flags the v4 MuJoCo tasks as out of date; they are the versions the literature reports.
warnings.filterwarnings("ignore", message=".*is out of date.*")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Trust Region Policy Optimization (Schulman et al. 2015) in NumPy. "
                                "Defaults are for MuJoCo; Atari, Swimmer, Ant and CartPole get "
                                "their entry of trpo_np/settings.py; a flag overrides it.")
    a = p.add_argument
    a("--env", help="gymnasium id, e.g. Hopper-v4, CartPole-v1, ALE/Pong-v5 (default Hopper-v4)")
    a("--method", choices=["single", "vine"], help="sampler: single path or vine (default single)")
    a("--steps", type=int, help="total env steps, trunk and vine branches (default 1,000,000; Atari 10M)")
    a("--batch-steps", type=int, help="env steps per iteration (default 2048; Atari 5,000; vine N·K·T + 2,500)")
    a("--num-envs", type=int, help="env copies stepped together (default 4; Atari 8)")
    a("--ranks", type=int, help="split the run over N MPI ranks on this machine (starts mpiexec -n N; needs "
      "pip install -e '.[mpi]'); for several machines start mpiexec -n N python run.py yourself (default 1)")
    a("--max-kl", type=float, help="δ, the bound on the mean KL per update (default 0.01)")
    a("--cg-iters", type=int, help="conjugate gradient iterations (default 10)")
    a("--damping", type=float, help="λ added to the Fisher matrix (default 0.1)")
    a("--backtrack-coef", type=float, help="line-search shrink factor (default 0.8)")
    a("--max-backtracks", type=int, help="line-search trials (default 10)")
    a("--fvp-fraction", type=float, help="fraction of states used for F v (default 1; Atari 0.1)")
    a("--gamma", type=float, help="discount γ (default 0.99)")
    a("--lam", type=float, help="GAE λ (default 0.95)")
    a("--hidden", type=str, help="hidden layer sizes, comma separated (default 64,64)")
    a("--activation", choices=["tanh", "relu"], help="MLP activation (default tanh)")
    a("--log-std-init", type=float, help="initial log-std of a Gaussian policy (default 0: σ = 1; Ant -1)")
    a("--cnn", choices=["paper", "nature"], help="Atari network (default paper)")
    a("--vf-epochs", type=int, help="value-function Adam epochs per iteration (default 10)")
    a("--vf-lr", type=float, help="value-function Adam step size (default 1e-3)")
    a("--no-obs-norm", dest="normalize_obs", action="store_false", default=None, help="no observation normalization")
    a("--no-reward-scale", dest="scale_reward", action="store_false", default=None, help="no reward scaling")
    a("--vine-states", type=int, help="vine: rollout-set size N per iteration (default 50)")
    a("--vine-actions", type=int, help="vine: actions K per state (default 4; all for small discrete spaces)")
    a("--vine-horizon", type=int, help="vine: branch length T, then bootstrapped with V (default 25)")
    a("--frame-size", type=int, help="Atari: frames are resized to S×S (default 42)")
    a("--sticky-actions", type=float, help="Atari: repeat-action probability (default 0)")
    a("--life-loss", action="store_true", default=None, help="Atari: a lost life ends the learning episode")
    a("--eval-every", type=int, help="env steps between deterministic evaluations, 0 for none (default 50,000)")
    a("--dtype", choices=["float32", "float64"], help="training dtype (default float32)")
    a("--seed", type=int, help="seeds policy init, sampling and the environments (default 0)")
    a("--out", help="run directory (default runs/ENV-sSEED-TIME); must not exist or be empty")
    a("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    a("--eval", metavar="CHECKPOINT", help="evaluate a checkpoint (deterministic actions) and exit")
    a("--episodes", type=int, default=10, help="episodes for --eval (default 10)")
    a("--video", metavar="FILE.mp4", help="with --eval: write the first episode as mp4 (MuJoCo needs MUJOCO_GL=egl headless)")
    a("--quiet", action="store_true", help="no per-iteration lines")
    return p.parse_args(argv)


def build_config(args):
    from trpo_np.atari import is_atari_id
    from trpo_np.config import Config

    env = args.env or Config.env
    cfg = Config.for_env(env)
    for name in ["method", "steps", "batch_steps", "num_envs", "ranks", "max_kl", "cg_iters", "damping",
                 "backtrack_coef", "max_backtracks", "fvp_fraction", "gamma", "lam", "activation", "log_std_init", "cnn",
                 "vf_epochs", "vf_lr", "normalize_obs", "scale_reward", "vine_states", "vine_actions",
                 "vine_horizon", "eval_every", "dtype", "seed"]:
        v = getattr(args, name)
        if v is not None:
            setattr(cfg, name, v)
    if cfg.method == "vine" and args.batch_steps is None:
        # vine: N·K·T branch steps plus a trunk of 2,500 steps per iteration (see trpo_np/vine.py)
        cfg.batch_steps = cfg.vine_states * cfg.vine_actions * cfg.vine_horizon + 2500
    if args.hidden is not None:
        try:
            cfg.hidden = tuple(int(h) for h in args.hidden.split(","))
        except ValueError:
            raise ValueError(f"--hidden must be comma-separated integers such as 64,64, got {args.hidden!r}")
    if is_atari_id(env):
        for flag, key in [("frame_size", "frame_size"), ("sticky_actions", "sticky_actions"),
                          ("life_loss", "terminal_on_life_loss")]:
            if getattr(args, flag) is not None:
                cfg.atari[key] = getattr(args, flag)
    elif any(getattr(args, f) is not None for f in ("frame_size", "sticky_actions", "life_loss")):
        raise ValueError(f"--frame-size, --sticky-actions and --life-loss apply to Atari ids only, not {env}")
    cfg.validate()
    return cfg


def main(argv=None) -> int:
    """Train, resume or evaluate; returns the exit status. Under ``mpiexec -n N`` every rank runs
    this; rank 0 prints and writes the run directory."""
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    from trpo_np import parallel, train
    from trpo_np.envs import EnvError
    from trpo_np.nn import ShapeError
    from trpo_np.rundir import RunError, default_run_dir, load_config
    from trpo_np.settings import describe

    try:
        comm = parallel.world()
    except RuntimeError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    say = print if comm.rank == 0 else (lambda *a, **k: None)
    try:
        if args.eval:
            return evaluate_checkpoint(args)
        if args.video:
            raise ValueError("--video goes with --eval CHECKPOINT")
        if args.episodes is not None and args.episodes <= 0:
            raise ValueError(f"--episodes must be positive, got {args.episodes}")
        if args.resume:
            given = [k for k, v in vars(args).items() if v is not None and k not in
                     ("resume", "steps", "quiet", "episodes")]
            if given:
                raise ValueError(f"--resume continues a run with its saved config.json; only --steps may "
                                 f"change, not {', '.join('--' + g.replace('_', '-') for g in given)}")
            ranks = load_config(args.resume).ranks
        else:
            cfg = build_config(args)  # checked here, before mpiexec starts the ranks
            ranks = cfg.ranks if args.ranks is not None else comm.size
            cfg.ranks = ranks
        if ranks > 1 and comm.size == 1:  # --ranks N (or resuming an N-rank run): start the N ranks
            return launch(parallel.mpiexec_command(ranks, ["-m", "trpo_np"] + argv))
        if args.resume:
            trainer = train.resume_run(args.resume, args.steps, args.quiet, comm)
            run_dir = args.resume
            if trainer.env_steps >= trainer.cfg.steps:
                say(f"{run_dir}: already at {trainer.env_steps:,} of {trainer.cfg.steps:,} steps; "
                    "raise --steps to continue", flush=True)
                return 0
            say(f"resuming {run_dir} at iteration {trainer.iteration}, {trainer.env_steps:,} env steps", flush=True)
        else:
            run_dir = args.out or comm.bcast(default_run_dir(cfg))
            trainer = train.start_run(cfg, run_dir, args.quiet, comm)
            ranks = f", {comm.size} ranks" if comm.size > 1 else ""
            say(describe(cfg))
            say(f"training {cfg.env} ({cfg.method} path, {cfg.steps:,} steps, seed {cfg.seed}{ranks}) -> {run_dir}",
                flush=True)
    except (ValueError, EnvError, RunError, ShapeError, RuntimeError) as e:
        if comm.size == 1:
            print(f"run.py: error: {e}", file=sys.stderr)
            return 2
        # Every rank usually meets the same error here: rank 0 says it and ends all ranks. An error
        # of one other rank alone is said by that rank after a moment, so that no rank waits forever.
        if comm.rank > 0:
            import time
            time.sleep(2)
        print(f"run.py: error: {e}" + (f" (rank {comm.rank})" if comm.rank else ""), file=sys.stderr, flush=True)
        comm.abort(2)
        return 2
    try:
        last = trainer.train()
        rets = trainer.evaluate(trainer.cfg.eval_episodes, trainer.seeds.env_seed("final_eval"))
    except KeyboardInterrupt:
        say(f"\ninterrupted at iteration {trainer.iteration}; the checkpoint in {run_dir} is complete. "
            f"Continue with: python run.py --resume {run_dir}", file=sys.stderr)
        return 130
    except Exception as e:  # e.g. NaN observations: one line, and no rank left waiting in a collective
        where = f" on rank {comm.rank}" if comm.size > 1 else ""
        kind = "" if isinstance(e, (ValueError, ShapeError)) else f"{type(e).__name__}: "
        print(f"run.py: error: {kind}{e} (at iteration {trainer.iteration + 1}{where}; the checkpoint in {run_dir} "
              f"holds iteration {trainer.iteration})", file=sys.stderr, flush=True)
        comm.abort(1)
        return 1
    say(f"done: {trainer.env_steps:,} env steps in {last.get('elapsed', 0):.0f} s; final deterministic "
        f"evaluation over {len(rets)} episodes: {sum(rets) / len(rets):.1f}; run directory {run_dir}")
    return 0


def launch(command: list[str]) -> int:
    """Run ``command`` (mpiexec with the ranks) and return its exit status; Ctrl-C reaches the
    ranks, which finish their checkpoint, and we wait for them."""
    import subprocess

    proc = subprocess.Popen(command)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def evaluate_checkpoint(args) -> int:
    import numpy as np
    from trpo_np.config import Config
    from trpo_np.evaluation import evaluate
    from trpo_np.rundir import RunError, load_checkpoint
    from trpo_np.train import Trainer

    _, meta = load_checkpoint(args.eval)
    cfg = Config.from_json(meta["config"])
    cfg.ranks = 1  # an evaluation runs in one process
    if args.env and args.env != cfg.env:
        raise RunError(f"checkpoint {args.eval!r} was trained on {cfg.env}, not {args.env}")
    if args.episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {args.episodes}")
    if args.video:
        if not args.video.endswith(".mp4"):
            raise ValueError(f"--video must name an .mp4 file, got {args.video!r}")
        os.makedirs(os.path.dirname(os.path.abspath(args.video)), exist_ok=True)
    trainer = Trainer(cfg, run_dir=None, quiet=True)
    trainer.load(args.eval, weights_only=True)
    seed = trainer.seeds.env_seed("final_eval") if args.seed is None else args.seed
    try:
        rets = evaluate(cfg, trainer.policy, trainer.obs_rms, args.episodes, seed=seed, video=args.video)
    except Exception as e:  # rendering back ends fail in many ways; say what to do
        if args.video and ("GL" in str(e) or "render" in str(e).lower() or isinstance(e, RuntimeError)):
            raise RunError(f"could not render a video ({e.__class__.__name__}: {e}); on a headless machine set "
                           "MUJOCO_GL=egl (or MUJOCO_GL=osmesa)") from e
        raise
    print(f"{cfg.env}: {len(rets)} deterministic episodes, return {np.mean(rets):.1f} ± {np.std(rets):.1f} "
          f"(min {np.min(rets):.1f}, max {np.max(rets):.1f})" + (f"; video {args.video}" if args.video else ""))
    return 0

