"""``python -m sparsecoding ...`` (see :mod:`sparsecoding.cli`)."""

import os
import sys

# One BLAS/OpenMP thread per process: MPI ranks supply the parallelism, and the
# E-step's many small matrix products only lose from thread hand-offs.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from .cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
