"""The command line's subcommands, --env-kwargs, monitor.csv, versions.json, videos and BLAS threads."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import trpo_np
from trpo_np import cli, evaluation
from trpo_np.envs import EnvError
from tests.test_api import Recorder


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_monitor(run_dir):
    with open(os.path.join(run_dir, "monitor.csv"), newline="") as f:
        header = json.loads(f.readline()[1:])
        return header, list(csv.DictReader(f))


def test_env_kwargs_saved_in_config_and_applied_on_resume_and_eval(tmp_path, capsys, monkeypatch):
    """Pendulum never terminates: every episode lasts max_episode_steps (200 by default, 15 here)."""
    out = str(tmp_path / "pend")
    assert cli.main(["train", "--env", "Pendulum-v1", "--env-kwargs", "max_episode_steps=15", "g=9.0", "--steps",
                     "120", "--batch-steps", "60", "--num-envs", "2", "--eval-every", "0", "--out", out, "--quiet"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["env_kwargs"] == {"max_episode_steps": 15, "g": 9.0}
    assert cli.main(["--resume", out, "--steps", "240", "--quiet"]) == 0
    progress = read_csv(os.path.join(out, "progress.csv"))
    header, episodes = read_monitor(out)
    assert progress[-1]["env_steps"] == "240" and len(episodes) == 240 // 15
    assert {e["l"] for e in episodes} == {"15"}

    seen = []  # the evaluation's env, through the eval subcommand: the same options
    make_env = evaluation.make_env
    monkeypatch.setattr(evaluation, "make_env", lambda *a, **k: Recorder(make_env(*a, **k), seen))
    capsys.readouterr()
    assert cli.main(["eval", out, "--episodes", "2"]) == 0
    assert "Pendulum-v1: 2 deterministic episodes" in capsys.readouterr().out
    assert len(seen) == 2 * 15

    # one JSON object works too; bad input is one line
    assert cli.parse_env_kwargs(['{"g": 9.0, "max_episode_steps": 15}']) == {"g": 9.0, "max_episode_steps": 15}
    assert cli.parse_env_kwargs(["render_mode_x=abc"]) == {"render_mode_x": "abc"}
    for bad, message in [(["nokey"], "key=value"), (["no_such_option=1"], "does not take --env-kwargs"),
                         (['{"g": 9'], "not a JSON object")]:
        assert cli.main(["--env", "Pendulum-v1", "--env-kwargs", *bad, "--out", str(tmp_path / "no")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("run.py: error:") and message in err and "\n" not in err
    assert not os.path.exists(tmp_path / "no")


def test_monitor_csv_has_every_episode_in_the_baselines_format(tmp_path):
    out = str(tmp_path / "cp")
    assert cli.main(["--env", "CartPole-v1", "--steps", "1200", "--batch-steps", "400", "--eval-every", "0",
                     "--seed", "4", "--out", out, "--quiet"]) == 0
    with open(os.path.join(out, "monitor.csv")) as f:
        first, second = f.readline(), f.readline()
    assert first.startswith("#") and second.strip() == "r,l,t"
    header, episodes = read_monitor(out)
    assert header["env_id"] == "CartPole-v1" and header["t_start"] > 1.6e9
    progress = read_csv(os.path.join(out, "progress.csv"))
    counts = [int(r["episodes"]) for r in progress]
    assert len(episodes) == sum(counts) > 20
    t = [float(e["t"]) for e in episodes]
    assert t == sorted(t) and t[0] >= 0
    i = 0
    for row, n in zip(progress, counts):  # each iteration's rows give its mean return and length
        mine = episodes[i:i + n]
        i += n
        assert np.mean([float(e["r"]) for e in mine]) == pytest.approx(float(row["ep_return_mean"]), rel=1e-5)
        assert np.mean([int(e["l"]) for e in mine]) == pytest.approx(float(row["ep_len_mean"]), rel=1e-5)
        assert all(float(e["r"]) == int(e["l"]) for e in mine)  # CartPole: reward 1 a step

    with open(os.path.join(out, "versions.json")) as f:
        versions = json.load(f)
    assert len(versions) == 1 and versions[0]["trpo_np"] == trpo_np.__version__
    assert versions[0]["from_iteration"] == 0 and versions[0]["libraries"]["numpy"] == np.__version__


def test_subcommands_version_and_eval_of_a_run_directory(tmp_path, capsys):
    out = str(tmp_path / "cp")
    assert cli.main(["train", "--env", "CartPole-v1", "--steps", "400", "--batch-steps", "400",
                     "--eval-every", "0", "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", out, "--episodes", "2", "--seed", "1"]) == 0
    by_subcommand = capsys.readouterr().out
    assert cli.main(["--eval", os.path.join(out, "checkpoint.npz"), "--episodes", "2", "--seed", "1"]) == 0
    assert capsys.readouterr().out == by_subcommand and "CartPole-v1: 2 deterministic episodes" in by_subcommand
    assert cli.main(["eval", out, "--env", "Acrobot-v1"]) == 2
    assert "trained on CartPole-v1, not Acrobot-v1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"trpo_np {trpo_np.__version__}"
    # python -m trpo_np is the same program
    proc = subprocess.run([sys.executable, "-m", "trpo_np", "eval", out, "--episodes", "2", "--seed", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == by_subcommand, proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("pygame") is not None, reason="pygame is installed: CartPole renders")
def test_video_of_an_env_without_its_render_package_is_one_line(tmp_path, capsys):
    out = str(tmp_path / "cp")
    assert cli.main(["--env", "CartPole-v1", "--steps", "200", "--batch-steps", "200", "--eval-every", "0",
                     "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", out, "--episodes", "1", "--video", str(tmp_path / "cp.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("run.py: error: CartPole-v1 cannot render a video") and "pygame" in err and "\n" not in err
    with pytest.raises(EnvError, match="pygame"):
        trpo_np.load(out).evaluate(episodes=1, video=str(tmp_path / "api.mp4"))


@pytest.mark.parametrize("name", ["a.mp4", "a.webm"])
def test_video_writer_picks_a_codec_and_writes_frames(tmp_path, name):
    path = str(tmp_path / name)
    writer, codec = evaluation.open_video(path, 30.0, (64, 48))
    assert codec in evaluation.CODECS[os.path.splitext(name)[1]]
    rng = np.random.default_rng(0)
    for _ in range(5):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3)
    with pytest.raises(ValueError, match=".mp4 or .webm"):
        evaluation.open_video(str(tmp_path / "a.avi"), 30.0, (64, 48))


def test_blas_threads_set_before_numpy_unless_given():
    def env_after_import(code, **env):
        base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                  "MKL_NUM_THREADS")}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={**base, **env}, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    show = "import os; print(os.environ.get('OPENBLAS_NUM_THREADS'), trpo_np.BLAS_SET_TOO_LATE)"
    assert env_after_import("import trpo_np; " + show) == ["1", "False"]
    assert env_after_import("import trpo_np; " + show, OPENBLAS_NUM_THREADS="2") == ["2", "False"]  # the opt-out
    assert env_after_import("import numpy, trpo_np; " + show) == ["None", "True"]  # too late: train() warns


def test_module_colon_env_id_imports_the_module_that_registers_it():
    from trpo_np.config import Config
    from trpo_np.envs import make_env
    from trpo_np.rundir import default_run_dir

    env = make_env("tests.faulty_envs:NaNAfter-v0")  # registered when tests.faulty_envs is imported
    assert env.spec.id == "NaNAfter-v0"
    env.close()
    assert os.path.basename(default_run_dir(Config(env="tests.faulty_envs:NaNAfter-v0"))).startswith(
        "tests.faulty_envs_NaNAfter-v0-s0-")
