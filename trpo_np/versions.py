"""What produced a run: trpo_np's version, its git commit (for a source checkout) and the versions
of Python and the libraries, saved in the run directory's versions.json."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata

from . import __version__

# distributions whose version can change a run's numbers (mpi4py and mpich: only for --ranks)
LIBRARIES = ("numpy", "gymnasium", "mujoco", "ale-py", "opencv-python", "mpi4py", "mpich")


def git_commit(path: str = os.path.dirname(os.path.abspath(__file__))) -> dict | None:
    """{"commit": sha, "dirty": bool} of the source checkout that holds the package at ``path``;
    None for an installed copy (no git, or not a checkout of this project)."""
    root = os.path.dirname(path)

    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or os.path.realpath(top.stdout.strip()) != os.path.realpath(root):
            return None  # e.g. site-packages, or a folder inside some other repository
        sha = git("rev-parse", "HEAD").stdout.strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": dirty} if sha else None


def versions() -> dict:
    """trpo_np's version, git commit (or None), Python, the platform and the library versions
    (None: not installed)."""
    libs = {}
    for name in LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    return {"trpo_np": __version__, "git": git_commit(), "python": sys.version.split()[0],
            "platform": platform.platform(), "libraries": libs,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
