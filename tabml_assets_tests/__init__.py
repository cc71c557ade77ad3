"""tabml's tests. Imported before conftest.py and any test module, hence the setting below."""

import os

# One thread per OpenMP/BLAS pool, set before sklearn, numpy's BLAS or lightgbm load them, and
# inherited by every process a test starts (dagster dev, its run workers, an MLflow server).
# `make test` runs one pytest worker per core: pools sized to every core oversubscribe the
# machine, and OpenMP threads spin-waiting for a busy core made training a few hundred rows take
# twice the CPU. Results do not depend on it (HistGradientBoosting gives the same model whatever
# its thread count); a value already in the environment wins.
for _pool in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_pool, "1")
