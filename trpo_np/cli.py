"""The command line: train, resume, evaluate or plot (``python run.py``, ``python -m trpo_np``,
the ``trpo-np`` console script: the same program).

    python run.py --env Hopper-v4                      # train with the defaults (1M steps)
    python run.py --resume runs/Hopper-v4-s0-...       # continue an interrupted run
    python run.py --eval runs/.../checkpoint.npz --episodes 10 --video hopper.mp4
    python -m trpo_np train --env Hopper-v4            # the same, with subcommands
    python -m trpo_np eval runs/hopper --episodes 10   # a run directory or a checkpoint
    python -m trpo_np plot runs/hopper-s* --out hopper.png

The subcommand word is optional: without one, the flags train (or --resume, --eval) as before.

Some envs get settings of their own from the table in trpo_np/settings.py (Atari ids: CNN policy,
larger batches, Fisher sub-sampling; Swimmer: γ = 0.9999; ...); a flag overrides the table, and
the run prints which entry it used.
Every fault is one line ``run.py: error: ...`` on stderr. Exit status: 0 done, 2 bad input or
setup (nothing written), 1 a failure during training, 130 Ctrl-C (SIGINT), 143 SIGTERM; the
run directory then holds the last completed iteration (README, "Faults").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings

# Single-threaded BLAS is set by trpo_np/__init__.py, which runs before this module and numpy.

# gymnasium flags the v4 MuJoCo tasks as out of date; they are the versions the literature reports.
warnings.filterwarnings("ignore", message=".*is out of date.*")


SUBCOMMANDS = ("train", "eval", "plot")


def _prog(command: str = "") -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "run.py"
    prog = "python -m trpo_np" if prog == "__main__.py" else prog
    return f"{prog} {command}".strip()


def parse_args(argv=None):
    from trpo_np import __version__
    from trpo_np.settings import TABLE

    *names, last = TABLE
    p = argparse.ArgumentParser(prog=_prog(), description="Trust Region Policy Optimization (Schulman et al. 2015) "
                                f"in NumPy. Defaults are for MuJoCo; {', '.join(names)} and {last} get their entry "
                                "of trpo_np/settings.py (a flag overrides it). Subcommands: "
                                "[train] (these flags; the word is optional), eval CHECKPOINT, plot RUN... "
                                "(each with --help).")
    a = p.add_argument
    a("--version", action="version", version=f"trpo_np {__version__}")
    a("--env", help="gymnasium id, e.g. Hopper-v4, CartPole-v1, ALE/Pong-v5, or module:Env-v0 for an env that "
      "the module registers when imported (default Hopper-v4)")
    a("--env-kwargs", nargs="+", metavar="K=V", help="keyword arguments of gym.make, as key=value words (values "
      "read as JSON) or one JSON object; saved in config.json, used again by --resume and --eval")
    a("--method", choices=["single", "vine"], help="sampler: single path or vine (default single)")
    a("--steps", type=int, help="total env steps, trunk and vine branches (default 1,000,000; Atari 10M; CartPole "
      "100,000; InvertedPendulum 200,000)")
    a("--batch-steps", type=int, help="env steps per iteration (default 2048; Atari 5,000; vine N·K·T + 2,500)")
    a("--num-envs", type=int, help="env copies stepped together (default 4; Atari 8)")
    a("--ranks", type=int, help="split the run over N MPI ranks on this machine (starts mpiexec -n N; needs "
      "pip install -e '.[mpi]'); for several machines start mpiexec -n N python run.py yourself (default 1)")
    a("--max-kl", type=float, help="δ, the bound on the mean KL per update (default 0.01; Ant 0.02; Walker2d 0.02 "
      "with the vine)")
    a("--cg-iters", type=int, help="conjugate gradient iterations (default 10; Swimmer, Walker2d, Ant 25)")
    a("--damping", type=float, help="λ added to the Fisher matrix (default 0.1)")
    a("--ent-coef", type=float, help="entropy bonus c: the step optimizes L + c·(mean entropy); not in the "
      "paper (default 0; Swimmer 0.01 with single path)")
    a("--backtrack-coef", type=float, help="line-search shrink factor (default 0.8)")
    a("--max-backtracks", type=int, help="line-search trials (default 10)")
    a("--fvp-fraction", type=float, help="fraction of states used for F v (default 1; Atari 0.1)")
    a("--train-horizon", type=int, help="cut training episodes after N steps (a time limit: bootstrapped with V), "
      "for more episode starts per batch; evaluations play the env's own limit (default 0: the env's limit; "
      "InvertedDoublePendulum 200)")
    a("--gamma", type=float, help="discount γ (default 0.99; Hopper 0.995, Swimmer 0.9999)")
    a("--lam", type=float, help="GAE λ (default 0.95)")
    a("--hidden", type=str, help="hidden layer sizes, comma separated (default 64,64)")
    a("--activation", choices=["tanh", "relu"], help="MLP activation (default tanh)")
    a("--log-std-init", type=float, help="initial log-std of a Gaussian policy (default 0: σ = 1; Ant, Humanoid -1)")
    a("--cnn", choices=["paper", "nature"], help="Atari network (default paper)")
    a("--vf-epochs", type=int, help="value-function Adam epochs per iteration (default 10; Swimmer, Walker2d, "
      "Ant 20; Atari 1)")
    a("--vf-lr", type=float, help="value-function Adam step size (default 1e-3)")
    a("--vf-minibatch", type=int, help="value-function minibatch, states of all ranks together (default 128; "
      "Atari 256); scale it with --batch-steps when adding ranks, so the number of Adam steps stays put")
    a("--no-obs-norm", dest="normalize_obs", action="store_false", default=None, help="no observation normalization")
    a("--no-reward-scale", dest="scale_reward", action="store_false", default=None, help="no reward scaling")
    a("--vine-states", type=int, help="vine: rollout-set size N per iteration (default 125; Swimmer, Atari 50)")
    a("--vine-actions", type=int, help="vine: actions K per state (default 4; all for small discrete spaces)")
    a("--vine-horizon", type=int, help="vine: branch length T, then bootstrapped with V (default 6; Swimmer, Atari 25)")
    a("--frame-size", type=int, help="Atari: frames are resized to S×S (default 42)")
    a("--sticky-actions", type=float, help="Atari: repeat-action probability (default 0)")
    a("--life-loss", action="store_true", default=None, help="Atari: a lost life ends the learning episode")
    a("--eval-every", type=int, help="env steps between deterministic evaluations, 0 for none (default 50,000; "
      "Atari 250,000; CartPole, InvertedPendulum 10,000)")
    a("--dtype", choices=["float32", "float64"], help="training dtype (default float32)")
    a("--seed", type=int, help="seeds policy init, sampling and the environments (default 0)")
    a("--out", help="run directory (default runs/ENV-sSEED-TIME); must not exist or be empty")
    a("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    a("--eval", metavar="CHECKPOINT", help="evaluate a checkpoint (deterministic actions) and exit")
    a("--episodes", type=int, default=10, help="episodes for --eval (default 10)")
    a("--video", metavar="FILE.mp4", help="with --eval: write the first episode as .mp4 or .webm (MuJoCo needs "
      "MUJOCO_GL=egl headless)")
    a("--quiet", action="store_true", help="no per-iteration lines")
    return p.parse_args(argv)


def build_config(args):
    from trpo_np.atari import is_atari_id
    from trpo_np.config import Config, make_config

    env = Config.env if args.env is None else args.env
    names = ["method", "steps", "batch_steps", "num_envs", "ranks", "max_kl", "cg_iters", "damping", "ent_coef",
             "backtrack_coef", "max_backtracks", "fvp_fraction", "train_horizon", "gamma", "lam", "activation",
             "log_std_init", "cnn", "vf_epochs", "vf_lr", "vf_minibatch", "normalize_obs", "scale_reward",
             "vine_states", "vine_actions", "vine_horizon", "eval_every", "dtype", "seed"]
    env_kwargs = parse_env_kwargs(args.env_kwargs) if args.env_kwargs else None
    cfg = make_config(env, env_kwargs=env_kwargs, **{name: getattr(args, name) for name in names})
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


def parse_env_kwargs(items: list[str]) -> dict:
    """``--env-kwargs`` as a dict: one JSON object (``'{"g": 2.0}'``) or ``key=value`` words whose
    values are read as JSON where they parse (``g=2.0 max_episode_steps=50``), else as strings."""
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        try:
            kwargs = json.loads(items[0])
        except json.JSONDecodeError as e:
            raise ValueError(f"--env-kwargs: not a JSON object: {items[0]!r} ({e})") from e
        if not isinstance(kwargs, dict):
            raise ValueError(f"--env-kwargs: not a JSON object: {items[0]!r}")
        return kwargs
    kwargs = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--env-kwargs takes key=value words or one JSON object, got {item!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def parse_eval_args(argv):
    """``eval CHECKPOINT``: the arguments of ``--eval CHECKPOINT``."""
    p = argparse.ArgumentParser(prog=_prog("eval"), description="Deterministic episodes of a trained agent.")
    a = p.add_argument
    a("eval", metavar="CHECKPOINT", help="a run directory or its checkpoint.npz")
    a("--episodes", type=int, default=10, help="episodes (default 10)")
    a("--video", metavar="FILE", help="write the first episode as .mp4 or .webm (MuJoCo needs MUJOCO_GL=egl headless)")
    a("--seed", type=int, help="episode i starts from reset(seed=SEED+i) (default: the run's final-evaluation seed)")
    a("--env", help="check that the checkpoint was trained on this env")
    return p.parse_args(argv)


def plot_main(argv) -> int:
    """``plot RUN...``: learning curves into a PNG (trpo_np/plot.py)."""
    from trpo_np.plot import plot_runs

    p = argparse.ArgumentParser(prog=_prog("plot"), description="Evaluation and training return against env "
                                "steps; runs of the same env and method are drawn as mean ± std across them. "
                                "Needs matplotlib (pip install \"trpo_np[plot]\").")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or CSV files with env_steps and "
                   "eval_return_mean columns (progress.csv, bench/results/curves/*.csv)")
    p.add_argument("--out", help="the PNG to write (default RUN/curves.png for one run directory, else curves.png)")
    p.add_argument("--title", help="figure title (default: the runs' names)")
    args = p.parse_args(argv)
    out = args.out or (os.path.join(args.runs[0], "curves.png") if len(args.runs) == 1 and os.path.isdir(args.runs[0])
                       else "curves.png")
    try:
        plot_runs(args.runs, out, args.title)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    """Train, resume, evaluate or plot; returns the exit status. Under ``mpiexec -n N`` every
    rank runs this; rank 0 prints and writes the run directory."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    if command == "plot":
        return plot_main(argv[1:])
    if command == "eval":
        args = parse_eval_args(argv[1:])
    else:
        argv = argv[1:] if command == "train" else argv
        args = parse_args(argv)
    import gymnasium as gym

    warnings.filterwarnings("ignore", message=".*is out of date.*")  # again: importing gymnasium resets it
    from trpo_np import parallel
    from trpo_np.envs import EnvError
    from trpo_np.nn import ShapeError
    from trpo_np.config import SAMPLERS
    from trpo_np.rundir import RunError, default_run_dir, load_config
    from trpo_np.settings import describe
    from trpo_np.train import resume_run, start_run  # (trpo_np.train is the API's function)

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
            code = launch(parallel.mpiexec_command(ranks, ["-m", "trpo_np"] + argv))
            if code in (0, 1, 2, 130, 143):  # the ranks said what happened
                return code
            run_dir = args.resume or args.out
            print(f"run.py: error: an MPI rank ended abnormally (mpiexec exit status {code}); the checkpoint is the "
                  "last complete one" + (f", continue with: python run.py --resume {run_dir}" if run_dir else ""),
                  file=sys.stderr)
            return 1
        if args.resume:
            trainer = resume_run(args.resume, args.steps, args.quiet, comm)
            run_dir = args.resume
            if trainer.env_steps >= trainer.cfg.steps:
                trainer.close()
                say(f"{run_dir}: already at {trainer.env_steps:,} of {trainer.cfg.steps:,} steps; "
                    "raise --steps to continue", flush=True)
                return 0
            if trainer.lock is not None and trainer.lock.stale_pid:
                say(f"note: the last process that trained in {run_dir} (pid {trainer.lock.stale_pid}) ended "
                    "without finishing (killed or crashed)", flush=True)
            if trainer.iteration and trainer.resume_copies is None:
                say(f"note: the checkpoint holds no simulator state of the {trainer.cfg.env} copies (the env cannot "
                    "save it): their episodes in progress restart, so the resumed run is not the uninterrupted one",
                    flush=True)
            say(f"resuming {run_dir} at iteration {trainer.iteration}, {trainer.env_steps:,} env steps", flush=True)
        else:
            run_dir = args.out or comm.bcast(default_run_dir(cfg))
            trainer = start_run(cfg, run_dir, args.quiet, comm)
            ranks = f", {comm.size} ranks" if comm.size > 1 else ""
            say(describe(cfg))
            say(f"training {cfg.env} ({SAMPLERS[cfg.method]}, {cfg.steps:,} steps, seed {cfg.seed}{ranks}) -> {run_dir}",
                flush=True)
    except KeyboardInterrupt:
        print("run.py: interrupted before training started; run the same command again", file=sys.stderr)
        return 130
    except (ValueError, EnvError, RunError, ShapeError, RuntimeError, OSError, gym.error.Error) as e:
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
        return train_and_report(trainer, run_dir, comm, say)
    finally:
        trainer.close()


def train_and_report(trainer, run_dir: str, comm, say) -> int:
    """Train to the end and print the final evaluation; an interruption or a failure is one line
    that says what the run directory holds (exit status 130 for SIGINT, 143 for SIGTERM, 1)."""
    from trpo_np.nn import ShapeError
    from trpo_np.train import Terminated

    def saved() -> str:
        if trainer.saved_iteration:
            return (f"the checkpoint in {run_dir} holds iteration {trainer.saved_iteration}; continue with: "
                    f"python run.py --resume {run_dir}")
        return f"no iteration was completed; start it again with: python run.py --resume {run_dir}"

    previous = None
    if comm.size == 1:  # SIGTERM stops the run as Ctrl-C does (several ranks: Trainer.train handles both)
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        last = trainer.train()
        rets = trainer.final_eval or trainer.evaluate(trainer.cfg.eval_episodes,
                                                      trainer.seeds.env_seed("final_eval"))
    except KeyboardInterrupt as e:
        term = isinstance(e, Terminated)
        say(f"\n{'terminated (SIGTERM)' if term else 'interrupted'} in iteration {(trainer.saved_iteration or 0) + 1}; "
            f"{saved()}", file=sys.stderr)
        return 143 if term else 130
    except Exception as e:  # e.g. NaN observations: one line, and no rank left waiting in a collective
        where = f" on rank {comm.rank}" if comm.size > 1 else ""
        kind = "" if isinstance(e, (ValueError, ShapeError)) else f"{type(e).__name__}: "
        msg = (str(e).strip().splitlines() or [""])[0]  # one line (MPI errors come with a whole stack)
        if type(e).__module__.startswith("mpi4py"):
            kind, msg = "", f"an MPI collective failed: another rank ended or cannot be reached ({msg})"
        print(f"run.py: error: {kind}{msg} (in iteration {(trainer.saved_iteration or 0) + 1}{where}; {saved()})",
              file=sys.stderr, flush=True)
        comm.abort(1)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    say(f"done: {trainer.env_steps:,} env steps in {last.get('elapsed', 0):.0f} s; final deterministic "
        f"evaluation over {len(rets)} episodes: {sum(rets) / len(rets):.1f}; run directory {run_dir}")
    return 0


def _terminate(signum, frame):
    from trpo_np.train import Terminated

    raise Terminated()


def launch(command: list[str]) -> int:
    """Run ``command`` (mpiexec with the ranks) and return its exit status; Ctrl-C reaches the
    ranks, SIGTERM is passed on to mpiexec, they finish their checkpoint, and we wait for them.

    The ranks' stderr comes through a pipe that we read to its end: when a rank aborts, mpiexec
    can exit before its proxy has forwarded the rank's last line (the one that says what
    happened), and that line would otherwise arrive after we return, or be lost."""
    import select
    import subprocess
    import time

    sys.stderr.flush()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))  # to the ranks too
    fd, ended = proc.stderr.fileno(), None
    while True:
        try:
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:  # every writer (mpiexec, its proxies, the ranks) has closed it
                    break
                os.write(2, chunk)  # fd 2 itself: sys.stderr may be a wrapper without one
            elif proc.poll() is not None:
                ended = ended or time.monotonic()
                if time.monotonic() - ended > 10:  # a process mpiexec left behind holds the pipe open
                    break
        except KeyboardInterrupt:
            continue
    proc.stderr.close()
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def evaluate_checkpoint(args) -> int:
    import numpy as np
    from trpo_np.config import Config
    from trpo_np.envs import EnvError
    from trpo_np.evaluation import evaluate
    from trpo_np.rundir import RunError, checkpoint_path, load_checkpoint
    from trpo_np.train import Trainer

    args.eval = checkpoint_path(args.eval)  # a run directory: its checkpoint.npz
    _, meta = load_checkpoint(args.eval)
    try:
        cfg = Config.from_json(meta["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunError(f"checkpoint {args.eval!r} is damaged: its config cannot be read ({type(e).__name__}: {e})")
    cfg.ranks = 1  # an evaluation runs in one process
    if args.env and args.env != cfg.env:
        raise RunError(f"checkpoint {args.eval!r} was trained on {cfg.env}, not {args.env}")
    if args.episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {args.episodes}")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.video:
        if not args.video.endswith((".mp4", ".webm")):
            raise ValueError(f"--video must name an .mp4 or .webm file, got {args.video!r}")
        existed = os.path.exists(args.video)
        try:  # the file can be written: checked before any rendering
            os.makedirs(os.path.dirname(os.path.abspath(args.video)), exist_ok=True)
            open(args.video, "ab").close()
        except OSError as e:
            raise RunError(f"cannot write the video file {args.video!r}: {e.strerror or e}") from e
        if not existed:
            os.remove(args.video)
    trainer = Trainer(cfg, run_dir=None, quiet=True)
    trainer.load(args.eval, weights_only=True)
    seed = trainer.seeds.env_seed("final_eval") if args.seed is None else args.seed
    try:
        rets = evaluate(cfg, trainer.policy, trainer.obs_rms, args.episodes, seed=seed, video=args.video)
    except Exception as e:  # rendering back ends and envs fail in many ways: one line that says what to do
        if args.video and os.path.exists(args.video) and not os.path.getsize(args.video):
            os.remove(args.video)
        if isinstance(e, EnvError):  # e.g. the env's render package is missing: its own one line
            raise
        if isinstance(e, RunError) or not args.video:
            raise RunError(f"evaluation failed: {e}" if isinstance(e, ValueError) else
                           f"evaluation failed: {type(e).__name__}: {e}") from e
        raise RunError(f"could not render a video ({type(e).__name__}: {e}); on a headless machine set MUJOCO_GL=egl "
                       "(GPU) or MUJOCO_GL=osmesa (needs the OSMesa library)") from e
    print(f"{cfg.env}: {len(rets)} deterministic episodes, return {np.mean(rets):.1f} ± {np.std(rets):.1f} "
          f"(min {np.min(rets):.1f}, max {np.max(rets):.1f})" + (f"; video {args.video}" if args.video else ""))
    return 0

