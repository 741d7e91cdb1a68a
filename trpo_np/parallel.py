"""Data parallelism over MPI ranks: one design for sampling and the update, one machine or many.

``mpiexec -n N python run.py ...`` (or ``python run.py --ranks N``, which starts exactly that)
runs N copies of the same program. The run's ``num_envs`` env copies are split into N contiguous
blocks (:func:`split`); each rank steps its block and keeps its part of the batch. Every rank
holds the same θ, V, normalizers and generators, and the update is data-parallel: each quantity
that is a sum over states is summed over the ranks (:meth:`Comm.sum`):

- the surrogate L and its gradient g, every F v of conjugate gradient (and so xᵀFx), each
  line-search trial's (L, KL, entropy) (:class:`trpo_np.policy.TRPOBatch`);
- the advantage and value-target moments, each value-fit minibatch gradient
  (:mod:`trpo_np.value`), the normalizers' moments (:mod:`trpo_np.normalize`);
- the episode statistics and evaluation returns (:meth:`Comm.gather`).

So every rank takes the same step, and nothing but these sums crosses between ranks: θ is never
sent. The one-process run uses :class:`Comm`, whose reductions are the identity, and a run with
N = 1 is that run.

Reproducible for (seed, N): a sum is gathered to every rank (``Allgather``) and added in rank
order, not left to the MPI library's reduction order, so every rank computes the same bits and
the same seed and rank count give the same run. Runs with different N differ by rounding: the
policy's matrix products on blocks of different sizes round differently (and MuJoCo amplifies
it), and each value-fit minibatch takes a slice of every rank's data (:mod:`trpo_np.value`), so
they are different draws from the same distribution of runs. The env copies themselves do not
depend on N: copy i is reset with the env seed (derived from ``--seed``) + i, and the action noise of every step is drawn
for all copies on every rank from the same generator, each rank using its block's rows.

References:
    Dalcin & Fang (2021), mpi4py: Status update after 12 years of development.
    OpenAI baselines ``trpo_mpi`` and Spinning Up's TRPO distribute TRPO the same way
    (every rank samples; gradients and Fisher-vector products are averaged).
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import numpy as np


def split(num_envs: int, ranks: int) -> list[tuple[int, int]]:
    """Contiguous blocks [a, b) of env copies, as even as possible, one per rank."""
    bounds = np.linspace(0, num_envs, ranks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds, bounds[1:])]


class Comm:
    """One process: rank 0 of 1, every reduction the identity."""

    rank, size = 0, 1
    seconds = 0.0  # wall-clock time spent in collectives

    def sum(self, x):
        """Σ over ranks of ``x`` (an array or a scalar), added in rank order; same dtype."""
        return x

    def gather(self, items: list) -> list:
        """The lists of all ranks, concatenated in rank order (on every rank)."""
        return list(items)

    def bcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        return obj

    def abort(self, code: int) -> None:
        """End every rank now (an error on one rank must not leave the others in a collective)."""


def _rank_order_sum(parts: np.ndarray) -> np.ndarray:
    """parts[0] + parts[1] + ... in this order: the same bits on every rank, whatever MPI does."""
    out = parts[0].copy()
    for r in range(1, len(parts)):
        out = out + parts[r]
    return out


class MPIComm(Comm):
    """N ranks of an ``MPI.COMM_WORLD`` (mpi4py)."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.seconds = 0.0

    # ``sum`` sends one Allgather (each rank receives (P − 1)·m extra bytes, the machine moves
    # P²·m) unless that extra exceeds SCATTER_BYTES; then a reduce-scatter (Alltoallv, each rank
    # adds one block in rank order) and an Allgatherv (each rank receives about 2·m bytes). Chosen
    # from bench/results/comm-sum.md (16 cores): Allgather is faster below it (P = 2, 200 kB: 107
    # against 152 µs; P = 8, 20 kB: 102 against 123 µs), the reduce-scatter above (P = 16, 20 kB:
    # 165 against 202 µs; P = 16, 2 MB: 2.4 against 23.7 ms).
    SCATTER_BYTES = 256 * 1024

    @classmethod
    def scatters(cls, values: int, nbytes: int, ranks: int) -> bool:
        """Whether ``sum`` of an array of ``values`` (``nbytes``) over ``ranks`` ranks takes the
        reduce-scatter path."""
        return values >= 4 * ranks and nbytes * (ranks - 1) > cls.SCATTER_BYTES

    def sum(self, x):
        t0 = time.perf_counter()
        a = np.require(np.asarray(x), requirements="C")  # 0-d stays 0-d
        if self.scatters(a.size, a.nbytes, self.size):
            out = self._sum_scattered(a)
        else:
            parts = np.empty((self.size,) + a.shape, dtype=a.dtype)
            self.comm.Allgather(a, parts)
            out = _rank_order_sum(parts)
        self.seconds += time.perf_counter() - t0
        return out

    def _sum_scattered(self, a: np.ndarray) -> np.ndarray:
        """The same bits as Allgather + rank-order sum: rank r receives block r of every rank's
        ``a`` (Alltoallv), adds the blocks in rank order, and the summed blocks are gathered."""
        flat = a.reshape(-1)
        blocks = split(flat.size, self.size)
        counts = [b - lo for lo, b in blocks]
        displs = [lo for lo, _ in blocks]
        mine = counts[self.rank]
        recv = np.empty((self.size, mine), dtype=a.dtype)
        self.comm.Alltoallv([flat, (counts, displs)], [recv, ([mine] * self.size, [mine * r for r in range(self.size)])])
        out = np.empty_like(flat)
        self.comm.Allgatherv(_rank_order_sum(recv), [out, (counts, displs)])
        return out.reshape(a.shape)

    def gather(self, items: list) -> list:
        t0 = time.perf_counter()
        out = [x for part in self.comm.allgather(list(items)) for x in part]
        self.seconds += time.perf_counter() - t0
        return out

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def abort(self, code: int) -> None:
        """End every rank with exit status ``code``. The line the caller printed is in the pipe to
        mpiexec's proxy; MPI_Abort has mpiexec kill the proxies, and one killed before it read
        the pipe loses the line: a moment's wait lets it be forwarded first."""
        sys.stdout.flush()
        sys.stderr.flush()
        if self.size > 1:
            time.sleep(0.5)
        self.comm.Abort(code)


def mean_var(x: np.ndarray, comm: Comm) -> tuple:
    """(mean, variance) of the values of ``x`` on every rank, in ``x``'s dtype, by the same two
    passes as ``x.mean()`` and ``x.var()`` (equal to them on one rank)."""
    n = int(comm.sum(x.size))
    mean = comm.sum(np.sum(x)) / n
    d = x - mean
    return mean, comm.sum(np.sum(d * d)) / n


def launched_ranks() -> int:
    """The number of ranks this process was started with by mpiexec (1 without it)."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def world() -> Comm:
    """The communicator of this process: :class:`MPIComm` under ``mpiexec -n N`` with N > 1,
    else the one-process :class:`Comm`."""
    if launched_ranks() <= 1:
        return Comm()
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError(f"started by mpiexec with {launched_ranks()} ranks, but mpi4py is not installed "
                           f"({e}); pip install -e \".[mpi]\"") from e
    return MPIComm(MPI.COMM_WORLD)


def find_mpiexec() -> str | None:
    """The mpiexec of this Python environment (the mpich wheel installs it beside python), else PATH's."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec")


def mpiexec_command(ranks: int, argv: list[str]) -> list[str]:
    """``mpiexec -n ranks <this python> argv...``: how ``--ranks N`` starts the run on this machine."""
    exe = find_mpiexec()
    if exe is None:
        raise RuntimeError("--ranks needs MPI: pip install -e \".[mpi]\" (mpi4py and mpich) and make sure "
                           "mpiexec is on PATH")
    try:
        import mpi4py  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"--ranks needs mpi4py ({e}): pip install -e \".[mpi]\"") from e
    return [exe, "-n", str(ranks), sys.executable] + argv
