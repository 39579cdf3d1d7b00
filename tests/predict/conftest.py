"""One OpenMP thread for scikit-learn's gradient boosting in tests: on a shared 2-core machine its
default (one busy-waiting thread per core) made one fit 20x slower when other processes ran."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before the OpenMP runtime starts

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_openmp_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield
