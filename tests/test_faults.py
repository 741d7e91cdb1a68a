"""Fault injection: kills and signals at chosen points of an iteration, torn and corrupt files,
concurrent runs, faulty environments, a full disk. Each test asserts the exit status, the one
line on stderr and that the run directory is intact (it resumes)."""

import csv
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


def test_a_kill_around_the_checkpoint_loses_no_progress_row(tmp_path):
    """The row of an iteration is written before its checkpoint, and --resume truncates
    progress.csv to the checkpoint: a SIGKILL just before or just after the checkpoint of
    iteration 2 leaves rows 1, 2, 3 after the resume."""
    for point in ("kill-before-checkpoint", "kill-after-checkpoint"):
        out = str(tmp_path / point)
        r = child(point, 2, CARTPOLE + ["--steps", "600", "--out", out])
        assert r.returncode == -9, r.stderr
        assert run.main(["--resume", out, "--quiet"]) == 0
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
