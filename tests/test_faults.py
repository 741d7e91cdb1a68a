"""Fault injection: kills and signals at chosen points of an iteration, torn and corrupt files,
concurrent runs, faulty environments, a full disk. Each test asserts the exit status, the one
line on stderr and that the run directory is intact (it resumes)."""

import csv
import fcntl
import json
import os
import subprocess
import sys

from trpo_np import cli as run
from trpo_np.rundir import WALL_CLOCK

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    interruption's line), no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_kill_around_the_checkpoint_loses_no_progress_row(tmp_path, capsys):
    """The row of an iteration is written before its checkpoint, and --resume truncates
    progress.csv to the checkpoint: a SIGKILL just before or just after the checkpoint of
    iteration 2 leaves rows 1, 2, 3 after the resume."""
    for point in ("kill-before-checkpoint", "kill-after-checkpoint"):
        out = str(tmp_path / point)
        r = child(point, 2, CARTPOLE + ["--steps", "600", "--out", out])
        assert r.returncode == -9, r.stderr
        assert run.main(["--resume", out, "--quiet"]) == 0
        assert "ended without finishing (killed or crashed)" in capsys.readouterr().out  # the lock was stale
        assert [x["iteration"] for x in rows(out)] == ["1", "2", "3"], point
        assert not [f for f in os.listdir(out) if "tmp" in f]


def test_resume_drops_a_torn_last_row(tmp_path):
    out = str(tmp_path / "torn")
    assert run.main(CARTPOLE + ["--steps", "400", "--out", out]) == 0
    path = os.path.join(out, "progress.csv")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[:text.rindex("\n", 0, -1) + 12])  # the last row cut after 11 characters
    assert run.main(["--resume", out, "--steps", "600", "--quiet"]) == 0
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
    procs = [subprocess.Popen([sys.executable, "run.py"] + CARTPOLE + ["--steps", "400", "--seed", str(s), "--out", out],
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
        r = child(sig, 1, CARTPOLE + ["--steps", "400", "--out", out])
        assert r.returncode == code, r.stderr
        line = one_line(r.stderr)
        assert "no iteration was completed" in line and f"python run.py --resume {out}" in line
        assert "checkpoint.npz" not in os.listdir(out)
        assert run.main(["--resume", out, "--quiet"] if sig == "SIGINT" else CARTPOLE + ["--steps", "400", "--out", out]) == 0
        assert [x["iteration"] for x in rows(out)] == ["1", "2"]


def test_sigterm_stops_with_the_resume_hint(tmp_path):
    out = str(tmp_path / "term")
    r = child("SIGTERM", 2, CARTPOLE + ["--steps", "600", "--out", out])
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
