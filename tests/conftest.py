"""Single-threaded BLAS for the tests, as run.py sets for training (see run.py): the networks are
small and BLAS threads only add synchronization. Must run before numpy is imported."""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
