"""Fault injection: kills and signals at chosen points of an iteration, torn and corrupt files,
concurrent runs, faulty environments, a full disk. Each test asserts the exit status, the one
line on stderr and that the run directory is intact (it resumes)."""

import csv
import fcntl
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import faulty_envs  # noqa: F401  (registers the faulty envs)
from trpo_np import cli as run
from trpo_np.rundir import WALL_CLOCK, load_checkpoint

train = importlib.import_module("trpo_np.train")  # the module (trpo_np.train is the API's function)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = True
except ImportError:
    HAVE_MPI = False
CARTPOLE = ["--env", "CartPole-v1", "--batch-steps", "200", "--num-envs", "2", "--eval-every", "0", "--seed", "2",
            "--quiet"]


def rows(out):
    with open(os.path.join(out, "progress.csv"), newline="") as f:
        return list(csv.DictReader(f))


def progress(out):
    """progress.csv without the wall-clock columns."""
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows(out)]


def child(point, iteration, argv, timeout=120):
    """run.py ARGV in a child process, with the fault POINT at ITERATION (tests/fault_child.py)."""
    return subprocess.run([sys.executable, "-m", "tests.fault_child", point, str(iteration)] + argv,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def one_line(err):
    """The stderr of a run that failed: exactly one line ``run.py: error: ...`` (or the
    interruption's line), no traceback. The emulator's banner (ALE prints it on stderr) aside."""
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith(("A.L.E: ", "[Powered by Stella]"))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_kill_around_the_checkpoint_loses_no_progress_row(tmp_path, capsys):
    """The row of an iteration is written before its checkpoint, and --resume truncates
    progress.csv to the checkpoint: a SIGKILL just before or just after the checkpoint of
    iteration 2 leaves rows 1, 2, 3 after the resume."""
    for point in ("kill-before-checkpoint", "kill-after-checkpoint"):
        out = str(tmp_path / point)
        r = child(point, 2, CARTPOLE + ["--steps", "800", "--out", out])
        assert r.returncode == -9, r.stderr
        assert run.main(["--resume", out, "--quiet"]) == 0
        assert "ended without finishing (killed or crashed)" in capsys.readouterr().out  # the lock was stale
        assert [x["iteration"] for x in rows(out)] == ["1", "2", "3"], point
        assert not [f for f in os.listdir(out) if "tmp" in f]


def test_resume_drops_a_torn_last_row(tmp_path):
    out = str(tmp_path / "torn")
    assert run.main(CARTPOLE + ["--steps", "600", "--out", out]) == 0
    path = os.path.join(out, "progress.csv")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[:text.rindex("\n", 0, -1) + 12])  # the last row cut after 11 characters
    assert run.main(["--resume", out, "--steps", "800", "--quiet"]) == 0
    got = rows(out)
    assert [x["iteration"] for x in got] == ["1", "3"]
    assert all(x["kl"] not in ("", None) for x in got)


def test_a_run_directory_is_locked_while_a_process_trains_in_it(tmp_path, capsys):
    out = str(tmp_path / "locked")
    assert run.main(CARTPOLE + ["--steps", "200", "--out", out]) == 0
    before = {f: open(os.path.join(out, f), "rb").read() for f in ("config.json", "progress.csv", "checkpoint.npz")}
    capsys.readouterr()
    with open(os.path.join(out, ".lock"), "a") as f:  # another process holds the run
        fcntl.flock(f, fcntl.LOCK_EX)
        assert run.main(["--resume", out, "--steps", "400", "--quiet"]) == 2
        assert "is in use by another process" in one_line(capsys.readouterr().err)
    assert {f: open(os.path.join(out, f), "rb").read() for f in before} == before
    assert run.main(["--resume", out, "--steps", "400", "--quiet"]) == 0  # released: it continues


def test_two_runs_started_into_one_directory_at_once(tmp_path):
    """One of them trains, the other one says why not; the directory is the winner's alone."""
    out = str(tmp_path / "both")
    procs = [subprocess.Popen([sys.executable, "run.py"] + CARTPOLE + ["--steps", "600", "--seed", str(s), "--out", out],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (7, 8)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    line = one_line(next(err for code, err in results if code == 2))
    assert "in use by another process" in line or "exists and is not empty" in line
    winner = 7 + [code for code, _ in results].index(0)
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["seed"] == winner
    assert [x["iteration"] for x in rows(out)] == ["1", "2"]
    assert run.main(["--eval", os.path.join(out, "checkpoint.npz"), "--episodes", "1"]) == 0


def test_interrupted_before_the_first_checkpoint_starts_again(tmp_path):
    """Ctrl-C or SIGTERM in iteration 1: the line says how to start again, and both that command
    (--resume) and the first command itself (the same --out) work."""
    for sig, code in (("SIGINT", 130), ("SIGTERM", 143)):
        out = str(tmp_path / sig)
        r = child(sig, 1, CARTPOLE + ["--steps", "600", "--out", out])
        assert r.returncode == code, r.stderr
        line = one_line(r.stderr)
        assert "no iteration was completed" in line and f"python run.py --resume {out}" in line
        assert "checkpoint.npz" not in os.listdir(out)
        assert run.main(["--resume", out, "--quiet"] if sig == "SIGINT" else CARTPOLE + ["--steps", "600", "--out", out]) == 0
        assert [x["iteration"] for x in rows(out)] == ["1", "2"]


def test_sigterm_stops_with_the_resume_hint(tmp_path):
    out = str(tmp_path / "term")
    r = child("SIGTERM", 2, CARTPOLE + ["--steps", "800", "--out", out])
    assert r.returncode == 143, r.stderr
    line = one_line(r.stderr)
    assert "terminated (SIGTERM)" in line and "holds iteration 1" in line and f"--resume {out}" in line
    assert run.main(["--resume", out, "--quiet"]) == 0
    assert [x["iteration"] for x in rows(out)] == ["1", "2", "3"]


def test_resume_with_fewer_steps_than_done_changes_nothing(tmp_path, capsys):
    out = str(tmp_path / "steps")
    assert run.main(CARTPOLE + ["--steps", "400", "--out", out]) == 0
    config = open(os.path.join(out, "config.json")).read()
    capsys.readouterr()
    assert run.main(["--resume", out, "--steps", "100"]) == 2
    assert "--steps 100 is not more than the 400 env steps" in one_line(capsys.readouterr().err)
    assert open(os.path.join(out, "config.json")).read() == config


def env_fault_run(tmp_path, capsys, env, method="single"):
    out = str(tmp_path / env.split(":")[-1])
    code = run.main(["--env", f"tests.faulty_envs:{env}", "--steps", "2000", "--batch-steps", "40", "--num-envs", "2",
                     "--eval-every", "0", "--method", method, "--out", out, "--quiet"] +
                    (["--vine-states", "4", "--vine-horizon", "3"] if method == "vine" else []))
    return code, one_line(capsys.readouterr().err), out


@pytest.mark.parametrize("env,message", [
    ("InfObsAfter-v0", "step() of env copy 0 returned a non-finite value (NaN or inf) in its observation"),
    ("NaNRewardAfter-v0", "step() of env copy 0 returned a non-finite value (NaN or inf) as its reward (nan)"),
    ("InfRewardAfter-v0", "step() of env copy 0 returned a non-finite value (NaN or inf) as its reward (inf)"),
    ("RaiseInStepAfter-v0", "step() of env copy 0 raised RuntimeError: the simulator diverged"),
    ("RaiseInResetAfter-v0", "reset() of env copy 0 raised RuntimeError: the simulator failed to reset"),
    ("WrongShapeAfter-v0", "step() of env copy 0 returned an observation of shape (4,)"),
])
def test_a_faulty_environment_stops_the_run_with_one_line_and_the_last_good_checkpoint(tmp_path, capsys, env,
                                                                                       message):
    """The fault comes at step 50 of each copy (reset: the end of the first episode, step 50): 20
    steps a copy start the normalizers, 20 more are iteration 1, so it comes in iteration 2: exit
    1, one line naming the call and the copy, and the last checkpoint is finite and resumes (to
    the same fault)."""
    code, line, out = env_fault_run(tmp_path, capsys, env)
    done = 1
    assert code == 1 and message in line and f"holds iteration {done}" in line, line
    arrays, meta = load_checkpoint(os.path.join(out, "checkpoint.npz"))
    assert meta["iteration"] == done and all(np.isfinite(v).all() for v in arrays.values())
    assert len(rows(out)) == done and not [f for f in os.listdir(out) if "tmp" in f]
    assert run.main(["--resume", out, "--quiet"]) == 1
    assert message in one_line(capsys.readouterr().err)


def test_a_faulty_environment_under_the_vine(tmp_path, capsys):
    """The trunk of 512 steps (256 a copy) starts the normalizers, then iteration 1 runs: the fault
    (step 600 of a copy) comes in iteration 2."""
    code, line, out = env_fault_run(tmp_path, capsys, "InfObsLateAfter-v0", method="vine")
    assert code == 1 and "non-finite value (NaN or inf) in its observation" in line and "holds iteration 1" in line
    arrays, _ = load_checkpoint(os.path.join(out, "checkpoint.npz"))
    assert all(np.isfinite(v).all() for v in arrays.values())


def test_a_non_finite_state_is_never_saved(tmp_path, capsys):
    """Whatever makes the networks or the statistics non-finite (here: the value network's
    parameters, after iteration 1), the run stops with one line and the last checkpoint stays."""
    out = str(tmp_path / "nan_state")
    assert run.main(CARTPOLE + ["--steps", "200", "--out", out]) == 0
    before = open(os.path.join(out, "checkpoint.npz"), "rb").read()
    trainer = train.resume_run(out, 600, quiet=True)
    try:
        trainer.vf.net.theta[0] = np.inf
        with pytest.raises(ValueError, match="non-finite"):
            trainer.train()
    finally:
        trainer.close()
    assert open(os.path.join(out, "checkpoint.npz"), "rb").read() == before
    trainer = train.resume_run(out, 600, quiet=True)
    try:
        trainer.obs_rms.var[0] = np.inf
        with pytest.raises(ValueError, match="non-finite values .* in obs_var"):
            trainer.save(os.path.join(out, "checkpoint.npz"))
    finally:
        trainer.close()
    assert open(os.path.join(out, "checkpoint.npz"), "rb").read() == before


def test_an_env_whose_package_is_missing_is_refused_up_front(tmp_path, capsys):
    try:
        import Box2D  # noqa: F401
        pytest.skip("Box2D is installed")
    except ImportError:
        pass
    out = str(tmp_path / "never")
    assert run.main(["--env", "LunarLander-v3", "--steps", "200", "--batch-steps", "200", "--eval-every", "0",
                     "--out", out]) == 2
    assert "needs a package that is not installed" in one_line(capsys.readouterr().err)
    assert not os.path.exists(out)


def test_an_env_that_needs_older_packages_names_its_newer_version(tmp_path, capsys):
    from trpo_np.envs import newest_version

    assert newest_version("Pusher-v4") == "Pusher-v5" and newest_version("ALE/Pong-v5") == "ALE/Pong-v5"
    import mujoco

    if int(mujoco.__version__.split(".")[0]) < 3:
        pytest.skip("Pusher-v4 runs with mujoco < 3")
    out = str(tmp_path / "never")
    assert run.main(["--env", "Pusher-v4", "--steps", "200", "--eval-every", "0", "--out", out]) == 2
    err = one_line(capsys.readouterr().err)
    assert "does not run with the installed packages" in err and err.endswith("try --env Pusher-v5")
    assert not os.path.exists(out)


def test_unusable_out_directories_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "under", "/proc/trpo_np_test/run"):
        assert run.main(CARTPOLE + ["--out", str(out)]) == 2
        line = one_line(capsys.readouterr().err)
        assert "exists and is not empty" in line or "cannot create the run directory" in line, line
    assert (tmp_path / "file").read_text() == "x"


def test_damaged_checkpoints_and_configs_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run.main(CARTPOLE + ["--steps", "200", "--out", out]) == 0
    ckpt, config = os.path.join(out, "checkpoint.npz"), os.path.join(out, "config.json")
    good_ckpt, good_config = open(ckpt, "rb").read(), open(config).read()
    capsys.readouterr()
    for damaged in (good_ckpt[:len(good_ckpt) // 2], good_ckpt[:100], good_ckpt[:-300] + bytes(300)):
        with open(ckpt, "wb") as f:
            f.write(damaged)
        for argv in (["--eval", ckpt], ["--resume", out, "--steps", "400"]):
            assert run.main(argv) == 2, argv
            assert "is not a trpo_np checkpoint or is damaged" in one_line(capsys.readouterr().err)
    with open(ckpt, "wb") as f:
        f.write(good_ckpt)
    for damaged in (good_config[:20], "[1, 2]", '{"env": "CartPole-v1", "hidden": 3}'):
        with open(config, "w") as f:
            f.write(damaged)
        assert run.main(["--resume", out, "--steps", "400"]) == 2
        assert "config.json' is damaged" in one_line(capsys.readouterr().err)
    with open(config, "w") as f:
        f.write(good_config)
    assert run.main(["--eval", ckpt, "--seed", "-1"]) == 2
    assert "--seed must be a non-negative integer" in one_line(capsys.readouterr().err)
    (tmp_path / "file").write_text("x")
    assert run.main(["--eval", ckpt, "--video", str(tmp_path / "file" / "v.mp4")]) == 2
    assert "cannot write the video file" in one_line(capsys.readouterr().err)
    assert run.main(["--resume", out, "--steps", "400", "--quiet"]) == 0  # the directory is intact


def test_a_video_without_a_rendering_back_end_is_one_line(tmp_path):
    """MUJOCO_GL=osmesa on a machine without the OSMesa library (or any back end that fails)."""
    out = str(tmp_path / "hop")
    assert run.main(["--env", "Hopper-v4", "--steps", "64", "--batch-steps", "64", "--num-envs", "1",
                     "--eval-every", "0", "--out", out, "--quiet"]) == 0
    env = dict(os.environ, MUJOCO_GL="osmesa", PYOPENGL_PLATFORM="osmesa")
    r = subprocess.run([sys.executable, "run.py", "--eval", os.path.join(out, "checkpoint.npz"), "--episodes", "1",
                        "--video", str(tmp_path / "v.mp4")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    if r.returncode == 0:
        pytest.skip("OSMesa is installed here: the video was written")
    line = one_line(r.stderr)
    assert r.returncode == 2 and "MUJOCO_GL=egl" in line, line
    assert not os.path.exists(tmp_path / "v.mp4")


def test_a_full_disk_keeps_the_last_checkpoint(tmp_path, capsys):
    """A 1 MB tmpfs (needs mount rights; skipped elsewhere), filled up after iteration 1: the
    checkpoint of iteration 2 cannot be written. One line, exit 1, the checkpoint of iteration 1
    and no temporary file; with space again, --resume continues."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        out = str(disk / "run")
        assert run.main(CARTPOLE + ["--steps", "200", "--out", out]) == 0
        before = open(os.path.join(out, "checkpoint.npz"), "rb").read()
        st = os.statvfs(str(disk))
        with open(disk / "filler", "wb") as f:
            f.write(bytes(st.f_bavail * st.f_frsize - 8192))
        capsys.readouterr()
        assert run.main(["--resume", out, "--steps", "400", "--quiet"]) == 1
        line = one_line(capsys.readouterr().err)
        assert "No space left on device" in line and "holds iteration 1" in line, line
        assert open(os.path.join(out, "checkpoint.npz"), "rb").read() == before
        assert sorted(os.listdir(out)) == [".lock", "checkpoint.npz", "config.json", "monitor.csv", "progress.csv",
                                           "versions.json"]
        os.remove(disk / "filler")
        assert run.main(["--resume", out, "--steps", "400", "--quiet"]) == 0
        assert [x["iteration"] for x in rows(out)] == ["1", "2"]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.parametrize("env,extra", [
    ("CartPole-v1", []),
    ("CartPole-v1", ["--method", "vine", "--vine-states", "8", "--vine-horizon", "5", "--batch-steps", "600"]),
    ("Hopper-v4", []),
    ("Pendulum-v1", ["--method", "vine", "--vine-states", "6", "--vine-horizon", "5", "--batch-steps", "600"]),
    ("ALE/Pong-v5", ["--batch-steps", "128", "--sticky-actions", "0.25"]),
])
def test_a_resumed_run_is_the_uninterrupted_run(tmp_path, env, extra):
    """Ctrl-C in iteration 2 of 3 (the checkpoint holds iteration 1), then --resume: progress.csv
    is the uninterrupted run's, bit for bit (wall-clock columns aside): the env copies' simulator
    states and generators, the episodes in progress, the running returns and V's reward unit are
    in the checkpoint. Single path and vine; classic control, MuJoCo and Atari."""
    argv = ["--env", env, "--batch-steps", "200", "--num-envs", "2", "--eval-every", "0", "--seed", "3",
            "--quiet"] + extra
    # one batch starts the normalizers (single path: a whole batch; vine: its trunk), then 3 iterations
    steps = str(4 * int(argv[len(argv) - 1 - argv[::-1].index("--batch-steps") + 1]))
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    assert run.main(argv + ["--steps", steps, "--out", whole]) == 0
    r = child("SIGINT", 2, argv + ["--steps", steps, "--out", part])
    assert r.returncode == 130 and "holds iteration 1" in one_line(r.stderr), r.stderr
    assert run.main(["--resume", part, "--quiet"]) == 0
    assert len(progress(whole)) >= 3 and progress(part) == progress(whole)


@pytest.mark.skipif(not HAVE_MPI, reason="needs the mpi extra: pip install -e '.[mpi]'")
def test_a_resumed_two_rank_run_is_the_uninterrupted_run(tmp_path):
    """Rank 0 saves the env copies of both ranks; on resume each rank takes its block back."""
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    argv = CARTPOLE + ["--ranks", "2"]
    assert run.main(argv + ["--steps", "800", "--out", whole]) == 0
    assert run.main(argv + ["--steps", "600", "--out", part]) == 0
    assert run.main(["--resume", part, "--steps", "800", "--quiet"]) == 0
    assert len(progress(whole)) == 3 and progress(part) == progress(whole)


def test_the_vine_stays_near_its_budget(tmp_path):
    """The last iteration gets a smaller rollout set: at most MIN_TRUNK_STEPS + K·T steps past
    --steps (before: a whole N·K·T of branches past it)."""
    out = str(tmp_path / "vine")
    assert run.main(["--env", "CartPole-v1", "--method", "vine", "--vine-states", "50", "--vine-horizon", "10",
                     "--batch-steps", "1600", "--steps", "2000", "--num-envs", "2", "--eval-every", "0", "--out", out,
                     "--quiet"]) == 0
    last = rows(out)[-1]
    assert 2000 <= int(last["env_steps"]) <= 2000 + 512 + 2 * 10


def test_the_final_evaluation_is_the_last_iterations(tmp_path, monkeypatch, capsys):
    calls = []
    evaluate = train.Trainer.evaluate
    monkeypatch.setattr(train.Trainer, "evaluate", lambda self, *a: calls.append(a) or evaluate(self, *a))
    out = str(tmp_path / "eval")
    assert run.main(CARTPOLE + ["--steps", "400", "--eval-every", "400", "--out", out]) == 0
    assert len(calls) == 1
    mean = float(rows(out)[-1]["eval_return_mean"])
    assert f"final deterministic evaluation over 10 episodes: {mean:.1f}" in capsys.readouterr().out


def test_eval_of_the_final_checkpoint_replays_the_reported_final_evaluation(tmp_path, capsys):
    """The last iteration's evaluation uses the run's final-evaluation seed, as `eval` does by
    default, so evaluating the finished run gives the figure in its last progress row (a
    periodic evaluation's seed would give other episodes)."""
    out = str(tmp_path / "final")
    assert run.main(CARTPOLE + ["--steps", "600", "--eval-every", "200", "--out", out]) == 0
    evals = [float(r["eval_return_mean"]) for r in rows(out) if r["eval_return_mean"]]
    assert len(evals) == 2
    capsys.readouterr()
    assert run.main(["eval", out, "--episodes", "10"]) == 0
    assert f"return {evals[-1]:.1f} ± " in capsys.readouterr().out
    assert run.main(["eval", out, "--episodes", "10", "--seed", "12345"]) == 0
    assert f"return {evals[-1]:.1f} ± " not in capsys.readouterr().out  # another seed, other episodes
