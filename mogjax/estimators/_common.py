"""What both estimators share: scikit-learn's bookkeeping around mogjax's data
checks, ``random_state``, and the working precision (``dtype``)."""

import contextlib
from numbers import Integral

import jax
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import validate_data

from mogjax import _validation as v

# Constraints in scikit-learn's parameter-validation language (its error wording).
# random_state: scikit-learn's, but any non-negative int (not only < 2**32), and a
# NumPy Generator too.
RANDOM_STATE = [
    Interval(Integral, 0, None, closed="left"), np.random.RandomState,
    np.random.Generator, None,
]
DTYPE = [None, StrOptions({"float32", "float64"}), Options(type, {np.float32, np.float64})]

def dtype_name(dtype) -> str | None:
    """``None``, ``"float32"`` or ``"float64"`` from an estimator's ``dtype``."""
    return None if dtype is None else np.dtype(dtype).name


def precision(dtype):
    """The context an estimator computes in: ``jax.enable_x64`` for ``"float64"``."""
    return jax.enable_x64(True) if dtype_name(dtype) == "float64" else contextlib.nullcontext()


def check_X(estimator, X, *, reset: bool):
    """``X`` as a JAX array in the estimator's precision; call inside ``precision``.

    mogjax's checks first (``check_data``: its messages carry scikit-learn's words
    where scikit-learn's checks look for them), then scikit-learn's bookkeeping:
    ``n_features_in_`` and ``feature_names_in_`` set (``reset``) or compared.
    """
    x = v.check_data(X)
    validate_data(estimator, X, reset=reset, skip_check_array=True)
    if dtype_name(estimator.dtype) == "float32":
        x = x.astype(np.float32)
    return x


def seed_from(random_state) -> int:
    """An integer seed for the functional core from scikit-learn's ``random_state``.

    An int (any size) is the seed itself, so ``random_state=s`` fits as
    ``fit_em(..., seed=s)``; ``None`` and a ``RandomState`` draw one through
    scikit-learn's ``check_random_state`` (so ``np.random.seed`` and a shared
    ``RandomState`` behave as in scikit-learn: every fit draws anew); a NumPy
    ``Generator`` draws one too.
    """
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    return int(random_state)


def key_from(random_state) -> jax.Array:
    """A JAX key from ``random_state`` (as ``seed_from``)."""
    return v.split_keys(seed_from(random_state), 1)[0]
