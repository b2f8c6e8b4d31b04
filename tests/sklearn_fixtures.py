"""scikit-learn's global test fixtures (its ``sklearn/conftest.py``), for the
ported test files ``tests/test_sklearn_*.py``.

``global_dtype``: float64, and float32 when ``SKLEARN_RUN_FLOAT32_TESTS=1``.
``global_random_seed``: 42, or the seeds of ``SKLEARN_TESTS_GLOBAL_RANDOM_SEED``
(``"all"``, ``"N"`` or ``"N-M"``), as in scikit-learn.
"""

from os import environ

import numpy as np
import pytest

_SKIP32_MARK = pytest.mark.skipif(
    environ.get("SKLEARN_RUN_FLOAT32_TESTS", "0") != "1",
    reason="Set SKLEARN_RUN_FLOAT32_TESTS=1 to run float32 dtype tests",
)


def _random_seeds() -> list[int]:
    value = environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED")
    if value is None:
        return [42]
    if value == "all":
        return list(range(100))
    start, _, stop = value.partition("-")
    return list(range(int(start), int(stop or start) + 1))


@pytest.fixture(params=[pytest.param(np.float32, marks=_SKIP32_MARK), np.float64])
def global_dtype(request):
    yield request.param


@pytest.fixture(params=_random_seeds())
def global_random_seed(request):
    yield request.param
