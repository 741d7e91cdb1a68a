"""Run settings: :class:`Config` (saved as ``config.json``) and its validation.

Defaults are for MuJoCo; ``Config.for_env(env_id)`` applies the env's entry of the settings
table (:mod:`trpo_np.settings`: Atari, Swimmer, Ant, ...) over them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

from .settings import env_settings, vine_settings

DTYPES = {"float32": np.float32, "float64": np.float64}
SAMPLERS = {"single": "single path", "vine": "vine"}  # --method -> the paper's name (Sec. 5.1, 5.2)


@dataclass
class Config:
    """All settings of a run; saved as config.json. Defaults are the MuJoCo defaults."""

    env: str = "Hopper-v4"
    steps: int = 1_000_000              # total env steps (trunk + vine branches)
    batch_steps: int = 2048             # env steps per iteration
    num_envs: int = 4
    ranks: int = 1                      # MPI ranks the run is split over (trpo_np.parallel)
    max_kl: float = 0.01                # δ
    cg_iters: int = 10
    cg_tol: float = 1e-10               # CG stops when ‖r‖² < cg_tol·‖g‖² (relative)
    damping: float = 0.1
    ent_coef: float = 0.0               # c of an entropy bonus L + c·H̄ (not in the paper: 0)
    backtrack_coef: float = 0.8
    max_backtracks: int = 10
    fvp_fraction: float = 1.0           # fraction of states used for F v (paper App. C.1 suggests 0.1; the Atari entry uses it)
    chunk: int = 0                      # states per network pass in the update (0: all; images: 256)
    train_horizon: int = 0              # training episodes are cut after this many steps (truncated:
                                        # bootstrapped with V, as any time limit); 0: the env's own
                                        # limit. Evaluations always play the env's own limit
    gamma: float = 0.99
    lam: float = 0.95
    hidden: tuple = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0           # initial log-std ℓ of a Gaussian policy (σ = e^ℓ)
    cnn: str = "paper"                  # Atari: "paper" or "nature"
    vf_lr: float = 1e-3
    vf_epochs: int = 10
    vf_minibatch: int = 128
    normalize_obs: bool = True
    scale_reward: bool = True
    eval_every: int = 50_000            # env steps between deterministic evaluations (0: never)
    eval_episodes: int = 10
    seed: int = 0
    dtype: str = "float32"
    method: str = "single"              # "single" (single path) or "vine"
    vine_states: int = 125             # N: rollout-set states per iteration
    vine_actions: int = 4              # K: actions per state (all actions of a small discrete space)
    vine_horizon: int = 6              # T: branch length (then bootstrapped with V). N·K = 500 Q̂
                                       # per batch (the paper's Table 2: 500-2,500) from N·K·T =
                                       # 3,000 branch steps: on Hopper-v4, 10 seeds, 3,337.9 against
                                       # 3,036.2 for N = 50, T = 12 (bench/README.md, "Vine vs single
                                       # path"); the Swimmer and Atari entries keep N = 50, T = 25,
                                       # as measured
    atari: dict = field(default_factory=dict)  # frame_size, frame_skip, ... for make_atari_env
    env_kwargs: dict = field(default_factory=dict)  # keyword arguments of gym.make(env, **env_kwargs)

    def validate(self) -> None:
        positive = ["steps", "batch_steps", "num_envs", "max_kl", "cg_iters", "max_backtracks",
                    "vf_epochs", "vf_minibatch", "eval_episodes", "vine_states", "vine_actions", "vine_horizon"]
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
        for name in ["damping", "ent_coef", "cg_tol", "eval_every", "vf_lr"]:
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be finite and >= 0, got {v}")
        for name in ["train_horizon", "seed"]:
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a non-negative integer, got {v}")
        if not self.atari.get("frame_size", 1) > 0:
            raise ValueError(f"--frame-size must be positive, got {self.atari['frame_size']}")
        sticky = self.atari.get("sticky_actions", 0.0)
        if not 0 <= sticky <= 1:
            raise ValueError(f"--sticky-actions must be a probability in [0, 1], got {sticky}")
        if not self.env:
            raise ValueError("--env must name an environment, got ''")
        for name in ["gamma", "lam", "backtrack_coef", "fvp_fraction"]:
            v = getattr(self, name)
            if not 0 < v <= 1 or (name == "backtrack_coef" and v == 1):
                raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1{')' if name == 'backtrack_coef' else ']'}, got {v}")
        if not np.isfinite(self.log_std_init):
            raise ValueError(f"--log-std-init must be finite, got {self.log_std_init}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"--hidden must be positive layer sizes, got {self.hidden}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.method not in SAMPLERS:
            raise ValueError(f"--method must be 'single' or 'vine', got {self.method!r}")
        if not isinstance(self.env_kwargs, dict) or not all(isinstance(k, str) for k in self.env_kwargs):
            raise ValueError(f"--env-kwargs must be a mapping of names to values, got {self.env_kwargs!r}")
        try:
            json.dumps(self.env_kwargs)  # saved in config.json
        except TypeError as e:
            raise ValueError(f"--env-kwargs must be JSON values (numbers, strings, lists, ...): {e}") from e
        if not (isinstance(self.ranks, int) and 1 <= self.ranks <= self.num_envs):
            raise ValueError(f"--ranks must be between 1 and --num-envs ({self.num_envs}): each rank steps at "
                             f"least one env copy; got {self.ranks}")

    @classmethod
    def for_env(cls, env: str) -> "Config":
        """The defaults for ``env``: the MuJoCo defaults with the env's entry of the settings
        table (:mod:`trpo_np.settings`) applied over them."""
        return cls(env=env, **env_settings(env))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Config":
        d = dict(d)
        d["hidden"] = tuple(d["hidden"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def make_config(env: str | None = None, **settings) -> Config:
    """The settings of a new run, as the command line and :func:`trpo_np.train` build them: the
    defaults for ``env`` (:meth:`Config.for_env`), then ``settings`` (Config field names; None
    keeps the default; ``atari`` entries are added to the Atari defaults). The vine takes the env's
    vine-only settings (:data:`trpo_np.settings.VINE_TABLE`) unless given; its batch is
    sized for its branches (N·K·T + 2,500 trunk steps) unless ``batch_steps`` is given, and has
    no entropy bonus unless ``ent_coef`` is given.
    Not validated here: :meth:`Config.validate` (the Trainer calls it)."""
    cfg = Config.for_env(Config.env if env is None else env)  # "" is refused by validate()
    names = {f.name for f in dataclasses.fields(Config)} - {"env"}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}; the settings are: {', '.join(sorted(names))}")
    for name, v in settings.items():
        if v is None:
            continue
        if name == "atari":
            v = {**cfg.atari, **v}
        elif name == "hidden":
            v = tuple(v)
        setattr(cfg, name, v)
    if cfg.method == "vine":  # the vine's own settings for this env (settings.VINE_TABLE), unless given
        for name, v in vine_settings(cfg.env).items():
            if settings.get(name) is None:
                setattr(cfg, name, v)
    if cfg.method == "vine" and settings.get("batch_steps") is None:
        # vine: N·K·T branch steps plus a trunk of 2,500 steps per iteration (see trpo_np/vine.py)
        cfg.batch_steps = cfg.vine_states * cfg.vine_actions * cfg.vine_horizon + 2500
    if cfg.method == "vine" and settings.get("ent_coef") is None:
        # A table's entropy bonus was measured with single path. On Swimmer the entry's bonus did
        # not help the vine: 229.5 ± 11.2 against its raw Q̂ differences, 291.2 ± 87.3 against
        # standardized ones (one seed held at ~120), 329.1 ± 24.6 without a bonus (5 seeds,
        # bench/README.md, "Vine vs single path"): the vine runs without one.
        cfg.ent_coef = 0.0
    return cfg
