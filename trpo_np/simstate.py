"""Simulator state save/restore, for the vine sampler's branches (paper Sec. 5.2) and for
checkpoints (a resumed run continues the episodes in progress).

MuJoCo (qpos, qvel, act, ctrl, time, warm-start accelerations), Atari (:mod:`trpo_np.atari`),
classic control (``unwrapped.state`` and the env's RNG) or an env's own
``get_state``/``set_state``, with the TimeLimit counter: restoring a state and replaying the same
actions reproduces the same observations and rewards (tests/test_vine.py). A checkpoint adds the
env's own generator (:func:`checkpoint_state`: MuJoCo draws its reset noise from it) and stores
the states as arrays plus a JSON tree (:func:`encode`, :func:`decode`), no pickle.
"""

from __future__ import annotations

import copy

import ale_py
import gymnasium as gym
import numpy as np

from . import atari
from .envs import EnvError

_CLASSIC_EXTRA = ("steps_beyond_terminated", "last_u")


def _time_limit(env):
    e = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, gym.wrappers.TimeLimit):
            return e
        e = e.env
    return None


def _env_name(env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


def state_kind(env) -> str | None:
    """How ``env``'s simulator state is saved: 'atari' (ALE and our wrappers), 'mujoco',
    'method' (the env's own ``get_state()``/``set_state(s)``, which must include its RNG),
    'classic' (classic control: ``unwrapped.state`` and its ``np_random``), or None.
    Call after the first reset (Pendulum creates ``state`` in reset)."""
    u = env.unwrapped
    if hasattr(u, "ale"):
        return "atari"
    if hasattr(u, "data") and hasattr(u, "model"):
        return "mujoco"
    if callable(getattr(u, "get_state", None)) and callable(getattr(u, "set_state", None)):
        return "method"
    if hasattr(u, "state") and hasattr(u, "np_random"):
        return "classic"
    return None


def check_state_support(env, env_id: str | None = None) -> str:
    """``state_kind(env)``, or a one-line EnvError when the vine method cannot restore it."""
    kind = state_kind(env)
    if kind is None:
        raise EnvError(f"{env_id or _env_name(env)}: --method vine needs simulator state save/restore (MuJoCo, "
                       "Atari, classic control with env.unwrapped.state, or an env with get_state()/set_state()); "
                       "this environment has none, use --method single")
    return kind


def get_state(env, kind: str | None = None):
    """A snapshot from which :func:`set_state` replays ``env`` (or a copy made the same way)
    exactly: the same actions give the same observations, rewards and done flags.

    MuJoCo: qpos, qvel, act, ctrl, warm-start accelerations, simulation time (together
    MuJoCo's integration state for these models) and the TimeLimit counter."""
    kind = kind or check_state_support(env)
    if kind == "atari":
        return atari.get_state(env)
    u = env.unwrapped
    tl = _time_limit(env)
    elapsed = None if tl is None else tl._elapsed_steps
    if kind == "mujoco":
        d = u.data
        return {"qpos": d.qpos.copy(), "qvel": d.qvel.copy(), "act": d.act.copy(), "time": float(d.time),
                "qacc_warmstart": d.qacc_warmstart.copy(), "ctrl": d.ctrl.copy(), "elapsed": elapsed}
    if kind == "method":
        return {"env": u.get_state(), "elapsed": elapsed}
    return {"state": copy.deepcopy(u.state), "rng": copy.deepcopy(u.np_random.bit_generator.state),
            "extra": {k: copy.deepcopy(getattr(u, k)) for k in _CLASSIC_EXTRA if hasattr(u, k)},
            "elapsed": elapsed}


def set_state(env, state, kind: str | None = None) -> None:
    kind = kind or check_state_support(env)
    if kind == "atari":
        atari.set_state(env, state)
        return
    u = env.unwrapped
    if kind == "mujoco":
        import mujoco

        d = u.data
        d.qpos[:], d.qvel[:], d.act[:] = state["qpos"], state["qvel"], state["act"]
        d.qacc_warmstart[:], d.ctrl[:] = state["qacc_warmstart"], state["ctrl"]
        d.time = state["time"]
        mujoco.mj_forward(u.model, d)
    elif kind == "method":
        u.set_state(state["env"])
    else:
        u.state = copy.deepcopy(state["state"])
        u.np_random.bit_generator.state = copy.deepcopy(state["rng"])
        for k, v in state["extra"].items():
            setattr(u, k, copy.deepcopy(v))
    tl = _time_limit(env)
    if tl is not None and state["elapsed"] is not None:
        tl._elapsed_steps = state["elapsed"]


# -- checkpoints ---------------------------------------------------------------------------------
def checkpoint_state(env):
    """All that decides ``env``'s future, episode resets included: :func:`get_state` and the env's
    own generator; None if the env cannot save its state."""
    kind = state_kind(env)
    if kind is None:
        return None
    return {"kind": kind, "sim": get_state(env, kind),
            "np_random": copy.deepcopy(env.unwrapped.np_random.bit_generator.state)}


def restore_checkpoint_state(env, state) -> None:
    """Put ``env`` (made and reset like the saved one) back into a :func:`checkpoint_state`."""
    set_state(env, state["sim"], state["kind"])
    env.unwrapped.np_random.bit_generator.state = copy.deepcopy(state["np_random"])


def encode(obj, arrays: dict, prefix: str):
    """A JSON tree for ``obj`` (dicts with str keys, lists, tuples, arrays, numbers, ALE and Atari
    states); its arrays go into ``arrays`` as ``prefix_<n>``. :func:`decode` inverts it exactly."""
    if isinstance(obj, np.ndarray):
        name = f"{prefix}_{len(arrays)}"
        arrays[name] = obj.copy()
        return {"ndarray": name}
    if isinstance(obj, ale_py.ALEState):
        return {"ale": encode(np.frombuffer(obj.serialize(), np.uint8), arrays, prefix)["ndarray"]}
    if isinstance(obj, atari.AtariState):
        return {"atari": [encode(x, arrays, prefix) for x in (obj.ale, obj.np_random, obj.wrappers)]}
    if isinstance(obj, tuple):
        return {"tuple": [encode(x, arrays, prefix) for x in obj]}
    if isinstance(obj, list):
        return [encode(x, arrays, prefix) for x in obj]
    if isinstance(obj, dict):
        return {"dict": {str(k): encode(v, arrays, prefix) for k, v in obj.items()}}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def decode(tree, arrays: dict):
    if isinstance(tree, list):
        return [decode(x, arrays) for x in tree]
    if not isinstance(tree, dict):
        return tree
    (tag, v), = tree.items()
    if tag == "ndarray":
        return arrays[v].copy()
    if tag == "ale":
        return ale_py.ALEState(arrays[v].tobytes())
    if tag == "atari":
        return atari.AtariState(*(decode(x, arrays) for x in v))
    if tag == "tuple":
        return tuple(decode(x, arrays) for x in v)
    return {k: decode(x, arrays) for k, x in v.items()}
