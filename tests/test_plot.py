"""Learning-curve plots (trpo_np/plot.py, ``python -m trpo_np plot``)."""

import os
import struct
import sys

import numpy as np
import pytest

from trpo_np import cli
from trpo_np.plot import mean_std, plot_runs, read_curve

pytest.importorskip("matplotlib")  # the "plot" extra; CI installs it with the "test" extra


def write_curve(path, steps, eval_returns, train_returns):
    with open(path, "w") as f:
        f.write("env_steps,eval_return_mean,ep_return_mean\n")
        for s, e, t in zip(steps, eval_returns, train_returns):
            f.write(f"{s},{'' if e is None else e},{t}\n")


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_mean_std_across_runs_on_the_common_steps():
    a = (np.array([0.0, 10, 20, 30]), np.array([0.0, 1, 2, 3]))
    b = (np.array([0.0, 10, 20]), np.array([2.0, 3, 4]))
    x, mean, std = mean_std([a, b])
    assert np.array_equal(x, [0, 10, 20]) and np.allclose(mean, [1, 2, 3]) and np.allclose(std, [1, 1, 1])
    c = (np.array([5.0, 25]), np.array([0.0, 2]))  # other steps: interpolated
    x, mean, _ = mean_std([a, c])
    assert np.array_equal(x, [10, 20]) and np.allclose(mean, [(1 + 0.5) / 2, (2 + 1.5) / 2])


def test_plot_of_runs_and_csv_files_is_a_png_with_the_curves(tmp_path, capsys):
    rng = np.random.default_rng(0)
    steps = np.arange(1, 21) * 1000
    files = []
    for s in range(3):  # three seeds of one method: one line with a band
        path = tmp_path / f"Toy-v0-single-s{s}.csv"
        ret = np.linspace(0, 100, 20) + rng.normal(0, 10, 20)
        write_curve(path, steps, [r if i % 5 == 4 else None for i, r in enumerate(ret)], ret)
        files.append(str(path))
    assert read_curve(files[0]).name == "Toy-v0-single" and len(read_curve(files[0]).eval_steps) == 4
    run_dir = str(tmp_path / "cp")  # and a real run directory, named by its config.json
    assert cli.main(["--env", "CartPole-v1", "--steps", "1200", "--batch-steps", "400", "--eval-every", "400",
                     "--out", run_dir, "--quiet"]) == 0
    assert read_curve(run_dir).name == "CartPole-v1 single"
    out = str(tmp_path / "fig" / "curves.png")
    capsys.readouterr()
    assert cli.main(["plot", *files, run_dir, "--out", out]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"

    assert png_size(out) == (1100, 420)  # figsize 11 x 4.2 inches at 100 dpi
    import matplotlib.image

    img = matplotlib.image.imread(out)[..., :3]
    assert img.shape == (420, 1100, 3)
    assert (img.min(axis=2) < 0.9).mean() > 0.02  # not blank: axes, text and curves
    for rgb in [(0.122, 0.467, 0.706), (1.0, 0.498, 0.055)]:  # tab:blue (the seeds), tab:orange (the run)
        assert (np.abs(img - rgb).max(axis=2) < 0.02).sum() > 100, rgb

    assert cli.main(["plot", str(tmp_path / "missing")]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def test_plot_without_matplotlib_is_one_line(tmp_path, monkeypatch, capsys):
    write_curve(tmp_path / "a.csv", [1, 2], [1.0, 2.0], [1.0, 2.0])
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(RuntimeError, match="needs matplotlib"):
        plot_runs([str(tmp_path / "a.csv")], str(tmp_path / "a.png"))
    assert cli.main(["plot", str(tmp_path / "a.csv"), "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("run.py: error: plotting needs matplotlib") and "\n" not in err
    assert not os.path.exists(tmp_path / "a.png")
