"""The per-environment settings table: matching by name, flags over the table, the printed line."""

import json
import os

import pytest

from trpo_np import cli as run
from trpo_np.config import Config
from trpo_np.settings import TABLE, VINE_TABLE, describe, env_settings, table_name


def test_entries_match_every_version_of_a_name():
    assert table_name("Swimmer-v4") == table_name("Swimmer-v5") == "Swimmer"
    assert table_name("ALE/Pong-v5") == table_name("PongNoFrameskip-v4") == "Atari"
    for env in ("Swimmer-v4", "Swimmer-v5"):
        assert Config.for_env(env).gamma == 0.9999
    for env in ("Ant-v4", "Ant-v5"):
        cfg = Config.for_env(env)
        assert all(getattr(cfg, k) == v for k, v in TABLE["Ant"][0].items())
    assert Config.for_env("HalfCheetah-v5") == Config(env="HalfCheetah-v5")  # no entry: the defaults
    assert env_settings("Pendulum-v1") == {}  # part of a name (InvertedPendulum) is another name
    assert Config.for_env("InvertedPendulum-v5").steps == 200_000
    pong = Config.for_env("ALE/Pong-v5")
    assert pong.fvp_fraction == 0.1 and pong.atari == {"frame_size": 42} and pong.batch_steps == 5000
    assert pong.damping == 0.1 == Config.for_env("Hopper-v4").damping  # one CG damping (bench/README: Atari settings)


def test_entries_hold_config_fields_that_validate():
    fields = set(Config.__dataclass_fields__)
    for name, (settings, reason) in list(TABLE.items()) + list(VINE_TABLE.items()):
        assert set(settings) <= fields and reason, name
    for env in ("Swimmer-v4", "Walker2d-v5", "Ant-v4", "CartPole-v1", "ALE/Breakout-v5"):
        Config.for_env(env).validate()


def test_a_flag_overrides_the_table_and_the_line_says_so():
    cfg = run.build_config(run.parse_args(["--env", "Swimmer-v4", "--gamma", "0.99", "--cg-iters", "12"]))
    assert cfg.gamma == 0.99 and cfg.cg_iters == 12
    assert describe(cfg) == ("settings: entry 'Swimmer' of trpo_np/settings.py: gamma=0.9999 (flag: 0.99), "
                             "cg_iters=25 (flag: 12), vf_epochs=20, ent_coef=0.01, vine_states=50, vine_horizon=25")
    cfg = run.build_config(run.parse_args(["--env", "Swimmer-v5"]))
    assert describe(cfg) == ("settings: entry 'Swimmer' of trpo_np/settings.py: gamma=0.9999, cg_iters=25, vf_epochs=20, "
                             "ent_coef=0.01, vine_states=50, vine_horizon=25")
    cfg = run.build_config(run.parse_args(["--env", "ALE/Pong-v5", "--sticky-actions", "0.25"]))
    assert describe(cfg).endswith("atari={'frame_size': 42}, vine_states=50, vine_horizon=25") and "flag" not in describe(cfg)
    assert "no entry for HalfCheetah-v4" in describe(run.build_config(run.parse_args(["--env", "HalfCheetah-v4"])))


def test_run_py_prints_the_entry_and_saves_it_in_config_json(tmp_path, capsys):
    out = str(tmp_path / "swim")
    assert run.main(["--env", "Swimmer-v4", "--steps", "256", "--batch-steps", "128", "--num-envs", "2",
                     "--eval-every", "0", "--quiet", "--out", out]) == 0
    assert "settings: entry 'Swimmer' of trpo_np/settings.py: gamma=0.9999" in capsys.readouterr().out
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["gamma"] == 0.9999


def test_log_std_init_sets_the_gaussian_sigma_and_a_flag_overrides_it():
    from trpo_np.train import Trainer

    assert Config.for_env("Ant-v5").log_std_init == -1.0
    trainer = Trainer(Config.for_env("Ant-v4"), run_dir=None, quiet=True)
    assert (trainer.policy.shared == -1.0).all() and len(trainer.policy.shared) == 8
    cfg = run.build_config(run.parse_args(["--env", "Ant-v4", "--log-std-init", "-0.5"]))
    assert cfg.log_std_init == -0.5 and "log_std_init=-1.0 (flag: -0.5)" in describe(cfg)


def test_the_vine_runs_without_a_table_entropy_bonus_unless_given():
    """Swimmer's entry has an entropy bonus, measured with single path; the vine runs without it
    unless --ent-coef is given (on Swimmer it did not help the vine), and the line says so."""
    single = run.build_config(run.parse_args(["--env", "Swimmer-v4"]))
    vine = run.build_config(run.parse_args(["--env", "Swimmer-v4", "--method", "vine"]))
    flag = run.build_config(run.parse_args(["--env", "Swimmer-v4", "--method", "vine", "--ent-coef", "0.02"]))
    assert (single.ent_coef, vine.ent_coef, flag.ent_coef) == (0.01, 0.0, 0.02)
    assert describe(vine).endswith("ent_coef=0.01 (vine: 0.0), vine_states=50, vine_horizon=25")
    assert describe(flag).endswith("ent_coef=0.01 (vine: 0.0) (flag: 0.02), vine_states=50, vine_horizon=25")
    # Swimmer's vine (N = 50, T = 25) sets its batch by the vine's rule: N·K·T + 2,500
    assert (vine.vine_states, vine.vine_horizon) == (50, 25)
    assert (vine.batch_steps, single.batch_steps) == (50 * 4 * 25 + 2500, 2048)
    # the vine's batch rule (N·K·T + 2,500) over Atari's 5,000 steps is the method's, not a flag
    atari = describe(run.build_config(run.parse_args(["--env", "ALE/Breakout-v5", "--method", "vine"])))
    assert "batch_steps=5000 (vine: 7500)," in atari and "flag" not in atari


def test_the_vine_table_applies_to_the_vine_alone_and_a_flag_overrides_it():
    """Walker2d's vine runs with δ = 0.02 (settings.VINE_TABLE), its single path with the
    default 0.01; a flag wins over both, and the printed line says which applies."""
    single = run.build_config(run.parse_args(["--env", "Walker2d-v4"]))
    vine = run.build_config(run.parse_args(["--env", "Walker2d-v5", "--method", "vine"]))
    flag = run.build_config(run.parse_args(["--env", "Walker2d-v4", "--method", "vine", "--max-kl", "0.01"]))
    assert (single.max_kl, vine.max_kl, flag.max_kl) == (0.01, 0.02, 0.01)
    assert (vine.cg_iters, vine.vf_epochs) == (25, 20)  # the entry itself still applies
    assert "max_kl" not in describe(single)
    assert describe(vine).endswith("cg_iters=25, vf_epochs=20, max_kl=0.02 (vine)")
    assert describe(flag).endswith("max_kl=0.02 (vine) (flag: 0.01)")
    assert run.build_config(run.parse_args(["--env", "Hopper-v4", "--method", "vine"])).max_kl == 0.01


def test_the_help_names_every_entry_and_the_values_it_sets(capsys):
    """run.py --help: the description lists every entry; each flag whose default an entry changes
    names the entry beside the default, so the help cannot fall behind the table."""
    with pytest.raises(SystemExit):
        run.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    description, options = text.split("get their entry")[0], text.split("options:")[1]
    defaults = Config()
    for name, (settings, _) in TABLE.items():
        assert name in description, name
        for key, value in settings.items():
            flag = f" --{key.replace('_', '-')} "
            if key == "atari" or value == getattr(defaults, key) or flag not in options:
                continue  # Atari's frame size: --frame-size states it; a default value; no flag (eval_episodes)
            help_text = options.split(flag, 1)[1].split(" --", 1)[0]
            assert name in help_text, (name, flag, help_text)
    for name, (settings, _) in VINE_TABLE.items():
        for key in settings:
            help_text = options.split(f" --{key.replace('_', '-')} ", 1)[1].split(" --", 1)[0]
            assert name in help_text and "vine" in help_text, (name, key, help_text)
