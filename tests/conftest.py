"""Single-threaded BLAS for the tests, as ``import trpo_np`` sets it (trpo_np/__init__.py): the
networks are small and BLAS threads only add synchronization. Must run before numpy is imported.

Also the ``rng`` fixture: a seeded np.random.Generator, new for every test."""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402  (after the BLAS settings above; numpy itself is imported in the fixture)


@pytest.fixture
def rng():
    """A seeded generator, fresh for each test: a test's random numbers do not depend on which
    other tests ran before it (or on their order)."""
    import numpy as np

    return np.random.default_rng(0)
