"""MPI: the ranks' sums equal the one-process computation, runs with 2 ranks are reproducible,
resume, and end cleanly on an error in one rank. Each check launches ``mpiexec -n 2`` with a
hard time limit (a hang fails the test instead of blocking the suite)."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from trpo_np import cli as run
from trpo_np.distributions import Categorical, DiagGaussian
from trpo_np.parallel import find_mpiexec, split
from trpo_np.rundir import WALL_CLOCK

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import mpi4py  # noqa: F401  (the test extra installs it; without it these tests are skipped)
    HAVE_MPI = True
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs the mpi extra: pip install -e '.[mpi]'")


@pytest.mark.parametrize("dist", [DiagGaussian(3), Categorical(4)])
def test_noise_drawn_at_once_equals_noise_drawn_step_by_step(dist):
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    at_once = dist.noise(a, (7, 4))
    steps = np.stack([dist.noise(b, (4,)) for _ in range(7)])
    np.testing.assert_array_equal(at_once, steps)


def test_split_is_contiguous_and_even():
    assert split(4, 2) == [(0, 2), (2, 4)]
    assert split(5, 2) in ([(0, 2), (2, 5)], [(0, 3), (3, 5)])
    assert split(3, 3) == [(0, 1), (1, 2), (2, 3)]
    assert split(6, 1) == [(0, 6)]


@needs_mpi
@pytest.mark.parametrize("check", ["trpo_batch_sums", "sums", "normalizer", "vine_batch"])
def test_two_ranks_compute_the_one_process_values(check):
    """Sums are in rank order (both algorithms); g, F v, the line search's values, the value fit
    and the normalizer from 2 ranks equal the one-process values on the joined data (float64, to
    rounding); a 2-rank vine batch is the 1-rank batch (tests/mpi_checks.py)."""
    out = subprocess.run([find_mpiexec(), "-n", "2", sys.executable, os.path.join(ROOT, "tests", "mpi_checks.py"), check],
                         capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0 and f"ok {check}" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


def progress(path):
    with open(os.path.join(path, "progress.csv"), newline="") as f:
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in csv.DictReader(f)]


@needs_mpi
def test_two_rank_run_is_reproducible_agrees_with_one_rank_and_resumes(tmp_path):
    """The same seed and rank count give the same progress.csv; the first iteration of the 2-rank
    run is the 1-rank run's (the copies and their noise do not depend on the split; discrete
    actions, so the same episodes) up to rounding. Later iterations differ: the value fit's
    minibatches are drawn per rank, so V takes other Adam steps. The 2-rank run resumes."""
    rows = {}
    for name, ranks in (("one", "1"), ("two", "2"), ("two_again", "2")):
        out = str(tmp_path / name)
        assert run.main(["--env", "CartPole-v1", "--steps", "1200", "--batch-steps", "400", "--num-envs", "2",
                         "--eval-every", "400", "--seed", "4", "--out", out, "--quiet", "--ranks", ranks]) == 0
        rows[name] = progress(out)
    assert rows["two"] == rows["two_again"] and len(rows["two"]) == 2
    a, b = rows["one"][0], rows["two"][0]
    assert (a["episodes"], a["ep_return_mean"], a["accepted"]) == (b["episodes"], b["ep_return_mean"], b["accepted"])
    for k in ("kl", "surr_improve", "expected_improve", "vf_explained_var"):
        assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-4), k
    with open(os.path.join(tmp_path, "two", "config.json")) as f:
        assert '"ranks": 2' in f.read()
    assert run.main(["--resume", str(tmp_path / "two"), "--steps", "1600", "--quiet"]) == 0  # starts 2 ranks again
    # the first 400 steps give the normalizers their first statistics (Trainer.start_normalizers)
    assert [r["env_steps"] for r in progress(str(tmp_path / "two"))] == ["800", "1200", "1600"]


@needs_mpi
def test_an_error_on_one_rank_ends_every_rank_with_one_line(tmp_path, capfd):
    """NaN observations in the copy of rank 1 only: that rank prints the usual line, every rank
    ends (no hang in a collective), the exit status is 1 and the completed iteration is saved."""
    out = str(tmp_path / "nan")
    code = run.main(["--env", "tests.faulty_envs:NaNOnOneRank-v0", "--steps", "400", "--batch-steps", "24",
                     "--num-envs", "2", "--ranks", "2", "--eval-every", "0", "--seed", "1", "--out", out, "--quiet"])
    err = capfd.readouterr().err
    assert code == 1, err
    ours = [line for line in err.splitlines() if line.startswith("run.py: error:")]
    assert len(ours) == 1 and "non-finite value (NaN or inf)" in ours[0] and "holds iteration 1" in ours[0], err
    assert len(progress(out)) == 1


@needs_mpi
def test_a_setup_error_under_mpi_is_one_line_and_ends_every_rank(tmp_path, capfd):
    """Met by every rank (here: a non-empty --out): rank 0 says it once, exit status 2, no hang."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    code = run.main(["--env", "CartPole-v1", "--ranks", "2", "--out", str(tmp_path / "taken"), "--quiet"])
    err = capfd.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("run.py: error:")]
    assert code == 2 and len(ours) == 1 and "exists and is not empty" in ours[0], err


def test_the_launcher_passes_on_stderr_written_after_mpiexec_ends(capfd):
    """A line a child of mpiexec writes after mpiexec itself exited (an aborting rank's last
    words, forwarded late by its proxy) still reaches our stderr before ``launch`` returns."""
    code = run.launch(["sh", "-c", "(sleep 0.5; echo 'late line' >&2) & exit 1"])
    assert code == 1
    assert "late line" in capfd.readouterr().err
