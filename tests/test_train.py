"""End to end: learning on CartPole, run.py train/resume/eval, reproducibility and bad input."""

import csv
import os

import numpy as np
import pytest

from trpo_np import cli as run
from trpo_np.config import Config
from trpo_np.evaluation import evaluate
from trpo_np.rundir import WALL_CLOCK
from trpo_np.train import Trainer
from tests import faulty_envs  # noqa: F401  (registers NaNAfter-v0)


def read_rows(path):
    with open(os.path.join(path, "progress.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_single_path_learns_cartpole():
    """Seeded learning test: deterministic return >= 475 (the env's 'solved' level) on CartPole-v1."""
    cfg = Config(env="CartPole-v1", steps=150_000, batch_steps=2048, num_envs=8, eval_every=0, seed=1)
    trainer = Trainer(cfg, run_dir=None, quiet=True)
    trainer.train()
    returns = evaluate(cfg, trainer.policy, trainer.obs_rms, 10, seed=123)
    assert np.mean(returns) >= 475, returns


def test_run_py_trains_resumes_and_evaluates_hopper(tmp_path, capsys):
    out = str(tmp_path / "hop")
    args = ["--env", "Hopper-v4", "--steps", "1536", "--batch-steps", "512", "--num-envs", "2",
            "--eval-every", "512", "--seed", "3", "--out", out]
    assert run.main(args) == 0
    assert sorted(os.listdir(out)) == [".lock", "checkpoint.npz", "config.json", "monitor.csv", "progress.csv",
                                       "versions.json"]
    rows = read_rows(out)
    # the first 512 steps give the normalizers their first statistics (Trainer.start_normalizers)
    assert [r["iteration"] for r in rows] == ["1", "2"] and rows[-1]["env_steps"] == "1536"
    assert rows[0]["eval_return_mean"] != ""
    assert "it    2 | steps     1,536" in capsys.readouterr().out
    assert run.main(["--resume", out, "--steps", "2048"]) == 0
    rows = read_rows(out)
    assert [r["env_steps"] for r in rows] == ["1024", "1536", "2048"]
    assert run.main(["--eval", os.path.join(out, "checkpoint.npz"), "--episodes", "2"]) == 0
    assert "Hopper-v4: 2 deterministic episodes" in capsys.readouterr().out


def test_same_seed_gives_identical_progress(tmp_path):
    def progress(name):
        out = str(tmp_path / name)
        assert run.main(["--env", "Pendulum-v1", "--steps", "1600", "--batch-steps", "400", "--num-envs", "2",
                         "--eval-every", "800", "--seed", "5", "--out", out, "--quiet"]) == 0
        return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in read_rows(out)]

    a, b = progress("a"), progress("b")
    assert a == b and len(a) == 3
    assert a[-1]["kl"] != "" and float(a[-1]["kl"]) > 0


def test_different_seeds_differ(tmp_path):
    rows = []
    for s in (0, 1):
        out = str(tmp_path / f"s{s}")
        assert run.main(["--env", "CartPole-v1", "--steps", "400", "--batch-steps", "400", "--eval-every", "0",
                         "--seed", str(s), "--out", out, "--quiet"]) == 0
        rows.append(read_rows(out)[0])
    assert rows[0]["kl"] != rows[1]["kl"] and rows[0]["ep_return_mean"] != rows[1]["ep_return_mean"]


@pytest.mark.parametrize("argv,message", [
    (["--env", "NoSuchEnv-v0"], "unknown environment id 'NoSuchEnv-v0'"),
    (["--env", "ALE/Pongg-v5"], "Pongg"),
    (["--env", "ALE/Pong-v4"], "unknown Atari environment 'ALE/Pong-v4'"),
    (["--env", "Blackjack-v1"], "unsupported observation space"),
    (["--env", "CartPole-v1", "--batch-steps", "0"], "--batch-steps must be positive"),
    (["--env", "CartPole-v1", "--max-kl", "-0.01"], "--max-kl must be positive"),
    (["--env", "CartPole-v1", "--steps", "-5"], "--steps must be positive"),
    (["--env", "CartPole-v1", "--gamma", "1.5"], "--gamma must be in"),
    (["--env", "CartPole-v1", "--hidden", "64,x"], "--hidden must be comma-separated"),
    (["--env", "CartPole-v1", "--frame-size", "42"], "Atari ids only"),
    (["--env", "CartPole-v1", "--video", "a.mp4"], "--video goes with --eval"),
    (["--env", "CartPole-v1", "--method", "vine", "--vine-states", "0"], "--vine-states must be positive"),
    (["--env", "CartPole-v1", "--fvp-fraction", "0"], "--fvp-fraction must be in (0, 1]"),
    (["--env", "CartPole-v1", "--backtrack-coef", "1"], "--backtrack-coef must be in (0, 1)"),
    (["--env", "CartPole-v1", "--ranks", "0"], "--ranks must be between 1 and --num-envs"),
    (["--env", "CartPole-v1", "--num-envs", "2", "--ranks", "3"], "--ranks must be between 1 and --num-envs"),
    (["--env", ""], "--env must name an environment"),
    (["--env", "ALE/Pong-v5", "--sticky-actions", "-1"], "--sticky-actions must be a probability"),
    (["--env", "ALE/Pong-v5", "--sticky-actions", "2"], "--sticky-actions must be a probability"),
    (["--env", "ALE/Pong-v5", "--sticky-actions", "nan"], "--sticky-actions must be a probability"),
    (["--env", "CartPole-v1", "--damping", "inf"], "--damping must be finite"),
    (["--env", "CartPole-v1", "--vf-lr", "inf"], "--vf-lr must be finite"),
    (["--env", "CartPole-v1", "--ent-coef", "-0.01"], "--ent-coef must be finite and >= 0"),
    (["--env", "CartPole-v1", "--seed", "-1"], "--seed must be a non-negative integer"),
    (["--env", "CartPole-v1", "--train-horizon", "-1"], "--train-horizon must be a non-negative integer"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path):
    out = str(tmp_path / "never")
    assert run.main(argv + ["--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("run.py: error:") and message in err and "\n" not in err
    assert not os.path.exists(out)  # nothing written


def test_existing_out_dir_and_foreign_checkpoints(tmp_path, capsys):
    out = str(tmp_path / "cp")
    assert run.main(["--env", "CartPole-v1", "--steps", "200", "--batch-steps", "200", "--eval-every", "0",
                     "--out", out, "--quiet"]) == 0
    before = open(os.path.join(out, "progress.csv")).read()
    capsys.readouterr()
    # an existing run directory is never written over
    assert run.main(["--env", "CartPole-v1", "--out", out]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert open(os.path.join(out, "progress.csv")).read() == before
    # evaluating a checkpoint on another env
    assert run.main(["--eval", os.path.join(out, "checkpoint.npz"), "--env", "Acrobot-v1"]) == 2
    assert "trained on CartPole-v1, not Acrobot-v1" in capsys.readouterr().err
    # a checkpoint with another network shape
    cfg = Config(env="CartPole-v1", hidden=(8,))
    with pytest.raises(ValueError, match="has networks"):
        Trainer(cfg).load(os.path.join(out, "checkpoint.npz"))
    # not a checkpoint at all
    bogus = tmp_path / "bogus.npz"
    bogus.write_text("hello")
    assert run.main(["--eval", str(bogus)]) == 2
    assert "not a trpo_np checkpoint" in capsys.readouterr().err
    # resume of something that is not a run, and resume with changed settings
    assert run.main(["--resume", str(tmp_path)]) == 2
    assert "not a trpo_np run directory" in capsys.readouterr().err
    assert run.main(["--resume", out, "--max-kl", "0.05"]) == 2
    assert "only --steps may change" in capsys.readouterr().err


def test_run_py_atari_one_iteration_checkpoint_and_eval(tmp_path, capsys):
    """ALE/Pong-v5 gets the Atari defaults (paper CNN on 42×42×4 frames, Fisher sub-sampling)."""
    out = str(tmp_path / "pong")
    assert run.main(["--env", "ALE/Pong-v5", "--steps", "256", "--batch-steps", "256", "--num-envs", "2",
                     "--eval-every", "0", "--out", out]) == 0
    rows = read_rows(out)
    assert len(rows) == 1 and rows[0]["env_steps"] == "256" and float(rows[0]["kl"]) > 0
    cfg = run.build_config(run.parse_args(["--env", "ALE/Pong-v5"]))
    assert cfg.fvp_fraction == 0.1 and cfg.atari == {"frame_size": 42}
    assert run.main(["--eval", os.path.join(out, "checkpoint.npz"), "--episodes", "1"]) == 0
    assert "ALE/Pong-v5: 1 deterministic episodes" in capsys.readouterr().out


def test_vine_defaults_size_the_batch_for_the_branches():
    cfg = run.build_config(run.parse_args(["--env", "CartPole-v1", "--method", "vine"]))
    assert (cfg.vine_states, cfg.vine_actions, cfg.vine_horizon) == (125, 4, 6)
    assert cfg.batch_steps == 125 * 4 * 6 + 2500
    atari = run.build_config(run.parse_args(["--env", "ALE/Breakout-v5", "--method", "vine"]))
    assert (atari.vine_states, atari.vine_horizon) == (50, 25)  # its entry: as measured
    assert atari.batch_steps == 50 * 4 * 25 + 2500
    assert run.build_config(run.parse_args(["--method", "vine", "--batch-steps", "9000"])).batch_steps == 9000


def test_nan_observations_stop_training_with_a_clear_error(tmp_path, capsys):
    out = str(tmp_path / "nan")
    # 12 steps for the normalizers, then iteration 2 meets the NaN of step 30
    assert run.main(["--env", "NaNAfter-v0", "--steps", "400", "--batch-steps", "12", "--num-envs", "1",
                     "--eval-every", "0", "--out", out, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "non-finite value (NaN or inf)" in err and "holds iteration 1" in err
    assert len(read_rows(out)) == 1  # the completed iteration is saved


def test_normalizers_start_from_a_first_batch():
    """Seeded: before the first update the normalizers hold the statistics of one batch of π_old
    (counted in the env steps), so the first update sees normalized observations and the reward
    scale does not jump at iteration 2 (it went 1.0 -> 0.08 on Hopper when it started at 1)."""
    cfg = Config(env="Hopper-v4", steps=4 * 512, batch_steps=512, num_envs=2, eval_every=0, seed=0)
    trainer = Trainer(cfg, run_dir=None, quiet=True)
    seen, update = [], trainer.update

    def record(batch):
        seen.append((batch.paths.reward_scale, batch.paths.flat(batch.paths.obs_te).copy(), trainer.obs_rms.count))
        return update(batch)

    trainer.update = record
    trainer.train()
    assert trainer.env_steps == 4 * 512 and len(seen) == 3  # the first batch's steps count
    scales = [s for s, _, _ in seen]
    assert seen[0][2] == 512 and scales[0] < 0.5  # statistics of one batch; the raw scale would be 1
    assert all(0.5 < b / a < 2 for a, b in zip(scales, scales[1:])), scales  # no jump: was 0.08
    obs = seen[0][1]
    assert np.abs(obs.mean(axis=0)).max() < 1 and np.all(obs.std(axis=0) > 0.3) and np.all(obs.std(axis=0) < 2)
    assert trainer.vf.unit == scales[-1]  # V is in the current reward unit (single path as the vine)


def test_train_horizon_cuts_training_episodes_not_evaluations(monkeypatch):
    """--train-horizon N: the training copies' episodes end after N steps as a truncation (so GAE
    bootstraps them with V), never as a termination; an evaluation plays the env's own limit
    (Pendulum: 200 steps, no terminal states)."""
    import gymnasium as gym
    from trpo_np import evaluation

    cfg = run.build_config(run.parse_args(["--env", "Pendulum-v1", "--train-horizon", "7", "--num-envs", "2"]))
    trainer = Trainer(cfg, run_dir=None, quiet=True)
    sampler = trainer.make_sampler()
    paths = sampler.sample(64).paths
    sampler.close()
    t = np.arange(32)[:, None]
    assert np.array_equal(paths.truncated_te, np.broadcast_to((t + 1) % 7 == 0, (32, 2)))
    assert not paths.terminated_te.any() and [n for _, n in paths.episodes] == [7] * 8

    class CountSteps(gym.Wrapper):
        steps = 0

        def step(self, action):
            CountSteps.steps += 1
            return super().step(action)

    make_env = evaluation.make_env
    monkeypatch.setattr(evaluation, "make_env", lambda *a, **k: CountSteps(make_env(*a, **k)))
    evaluate(cfg, trainer.policy, trainer.obs_rms, 1, seed=0)
    assert CountSteps.steps == 200
