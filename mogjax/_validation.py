"""Host-side checks at the public boundary: clear errors before any compute.

Everything here runs eagerly on concrete values (never inside ``jit``) and raises
``ValueError`` or ``TypeError`` naming the argument and what was wrong with it, in
scikit-learn's wording where scikit-learn has one.
"""

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mogjax import gaussian as gs
from mogjax._typing import Array
from mogjax.init import canonical_init
from mogjax.mixture import MixtureParams


def float_dtype(dtype=None):
    """The dtype computations run in: float32 by default, float64 with x64 enabled.

    A float32 input stays float32 even when x64 is enabled (as scikit-learn keeps
    float32); anything else becomes JAX's default float.
    """
    if dtype is not None and np.dtype(dtype) == np.float32:
        return jnp.float32
    return jnp.result_type(float)


def _is_sparse(x) -> bool:
    """A SciPy sparse matrix or array (without importing SciPy)."""
    return type(x).__module__.startswith("scipy.sparse")


def check_data(x, name: str = "X", *, n_features: int | None = None) -> Array:
    """Validate a data matrix and return it as a JAX float array of shape (n, d).

    Accepts what ``np.asarray`` makes a 2-D array of numbers: NumPy and JAX arrays,
    lists, pandas DataFrames, object arrays holding numbers. The dtype is
    ``float_dtype``'s. Errors name the problem, with scikit-learn's words where it
    has them: a sparse matrix, strings or objects that are not numbers
    (``TypeError``); complex values, a rank other than 2, no rows or no columns,
    NaN or infinity, a feature count other than ``n_features`` (``ValueError``).
    """
    if _is_sparse(x):
        raise TypeError(
            f"{name} is a sparse matrix ({type(x).__name__}), but dense data is "
            f"required: pass {name}.toarray()")
    if isinstance(x, jax.Array):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}") from err
    dtype = np.dtype(arr.dtype)
    if dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {dtype}")
    if dtype.kind == "O":  # numbers held as Python objects, as scikit-learn takes them
        missing = [i for i, value in enumerate(arr.flat) if value is None]
        if missing:  # NumPy would make None a NaN
            at = tuple(int(i) for i in np.unravel_index(missing[0], arr.shape))
            raise TypeError(f"{name} must hold numbers only (numeric): None at {at}")
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{name} must hold numbers only (numeric): {err}") from err
        dtype = arr.dtype
    if dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be numeric (bool, integer or float), got dtype {dtype}"
            + (" (strings)" if dtype.kind in "US" else "")
        )
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), got "
            f"{arr.ndim}-D with shape {tuple(arr.shape)}. Reshape your data: "
            "x.reshape(-1, 1) if it has a single feature, x.reshape(1, -1) if it is a "
            "single sample"
        )
    shape = f"shape={tuple(arr.shape)}"
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no rows: found array with 0 sample(s) ({shape}) "
                         "while a minimum of 1 is required.")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no columns: found array with 0 feature(s) ({shape}) "
                         "while a minimum of 1 is required.")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features, but the model was fitted with "
            f"{n_features} features"
        )
    target = float_dtype(dtype)
    if isinstance(arr, jax.Array):
        out = arr.astype(target)
        finite = jnp.isfinite(out)
        all_finite = bool(jnp.all(finite))
    else:  # checked on the host: no compiled program per shape
        arr = np.asarray(arr, dtype=target)
        finite = np.isfinite(arr)
        all_finite = bool(finite.all())
        out = jnp.asarray(arr)
    if not all_finite:
        finite = np.asarray(finite)
        bad = np.argwhere(~finite)[0]
        what = "NaN" if np.isnan(np.asarray(out)[bad[0], bad[1]]) else "infinity"
        raise ValueError(
            f"{name} contains {what} (first at row {bad[0]}, column {bad[1]}); "
            "remove or impute non-finite values"
        )
    return out


def check_int(value, name: str, minimum: int) -> int:
    """An integer >= ``minimum`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"Invalid value for {name!r}: {value}; it must be >= {minimum}")
    return int(value)


def check_nonnegative(value, name: str) -> float:
    """A finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"Invalid value for {name!r}: {value}; it must be a finite number >= 0")
    return float(value)


def check_positive(value, name: str) -> float:
    """A finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"Invalid value for {name!r}: {value!r}; it must be a real number > 0")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid value for {name!r}: {value}; it must be a finite number > 0")
    return float(value)


def check_in_range(value, name: str, low: float, high: float, low_open: bool) -> float:
    """A real number in ``(low, high]`` (``low_open``) or ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    bad = value <= low if low_open else value < low
    if bad or value > high or not np.isfinite(value):
        span = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ValueError(f"Invalid value for {name!r}: {value}; it must be in {span}")
    return float(value)


def split_keys(seed, n: int) -> Array:
    """``n`` JAX keys from ``seed``: a JAX key, or an integer >= 0 of any size.

    An integer below ``2**32`` gives ``jax.random.split(jax.random.key(seed), n)``;
    every further 32 bits of a larger one are folded in (``jax.random.fold_in``), so
    seeds of any size give distinct keys, with or without x64.
    """
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return jax.random.split(seed, n)
    if isinstance(seed, np.integer):
        seed = int(seed)
    seed = check_int(seed, "seed", 0)
    key = jax.random.key(seed & 0xFFFFFFFF)
    seed >>= 32
    while seed:
        key = jax.random.fold_in(key, seed & 0xFFFFFFFF)
        seed >>= 32
    return jax.random.split(key, n)


class FitSettings(NamedTuple):
    """A fit's common arguments, checked (every EM flavour takes the same ones)."""

    k: int
    init: str
    max_iter: int
    n_init: int
    tol: float
    reg_covar: float


def check_k(k, init_params) -> int:
    """``k`` (>= 1), taken from ``init_params`` when it is a ``MixtureParams``."""
    if isinstance(init_params, MixtureParams) and k is None:
        k = init_params.n_components
    if k is None:
        raise ValueError("k (the number of components) is required unless init_params is given")
    return check_int(k, "k", 1)


def check_fit_settings(
    k, init_params, covariance_type: str, init: str, max_iter, n_init, tol, reg_covar
) -> FitSettings:
    """Check the arguments every fit shares; ``k`` may come from ``init_params``."""
    k = check_k(k, init_params)
    gs.check_covariance_type(covariance_type)
    return FitSettings(
        k=k, init=canonical_init(init),
        max_iter=check_int(max_iter, "max_iter", 0), n_init=check_int(n_init, "n_init", 1),
        tol=check_nonnegative(tol, "tol"), reg_covar=check_nonnegative(reg_covar, "reg_covar"),
    )


def check_user_init(init_params, k: int, n_features: int, covariance_type: str) -> dict:
    """User-given initial values as a dict of NumPy arrays (scikit-learn's shapes).

    ``init_params`` is a ``MixtureParams`` or a mapping with any of ``weights``,
    ``means``, ``precisions``.
    """
    if init_params is None:
        return {}
    if isinstance(init_params, MixtureParams):
        if init_params.covariance_type != covariance_type:
            raise ValueError(
                f"init_params has covariance_type {init_params.covariance_type!r}, "
                f"but the fit asks for {covariance_type!r}"
            )
        given = {"weights": init_params.weights, "means": init_params.means}
        if covariance_type != "identity":
            given["precisions"] = init_params.precisions
    else:
        unknown = set(init_params) - {"weights", "means", "precisions"}
        if unknown:
            raise ValueError(f"Unknown keys in init_params: {sorted(unknown)}; "
                             "expected 'weights', 'means', 'precisions'")
        given = {key: val for key, val in init_params.items() if val is not None}
    out = {}
    if "weights" in given:
        out["weights"] = check_weights(given["weights"], k)
    if "means" in given:
        out["means"] = check_means(given["means"], k, n_features)
    if "precisions" in given:
        out["precisions"] = check_precisions(given["precisions"], covariance_type, k, n_features)
    return out


def check_sample_weight(sample_weight, n: int, dtype) -> Array | None:
    """Row weights (n,): finite, non-negative, not all zero; ``None`` stays ``None``."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, got dtype {w.dtype}")
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"sample_weight must have shape ({n},), one weight per row of X, "
                         f"got shape {w.shape}")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)):
        bad = int(np.argmax(~np.isfinite(w)))
        raise ValueError(f"sample_weight contains NaN or infinity (first at row {bad})")
    if np.any(w < 0):
        bad = int(np.argmax(w < 0))
        raise ValueError(f"sample_weight must be non-negative, got {w[bad]} at row {bad}")
    if not np.any(w > 0):
        raise ValueError("sample_weight is zero everywhere: at least one row must weigh > 0")
    return jnp.asarray(w, jax.dtypes.canonicalize_dtype(dtype))  # float32 unless x64


def check_stop_rule(patience, previous) -> tuple[int, float]:
    """``patience`` (an integer >= 1) and the value before the start (NaN for none)."""
    patience = check_int(patience, "patience", 1)
    if previous is None:
        return patience, float("nan")
    if isinstance(previous, bool) or not isinstance(previous, numbers.Real) or not np.isfinite(previous):
        raise ValueError(f"previous_log_likelihood must be a finite number or None, got {previous!r}")
    return patience, float(previous)


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"Invalid value for {name!r}: {value!r}; it must be one of {tuple(choices)}")
    return value


def check_enough_samples(n_samples: int, n_components: int) -> None:
    if n_samples < n_components:
        raise ValueError(
            f"Expected n_samples >= n_components but got n_components = "
            f"{n_components}, n_samples = {n_samples}"
        )


def _as_array(value, name: str, shape: tuple, dtype) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"'{name}' must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"The parameter '{name}' contains NaN or infinity")
    return arr


def check_weights(weights, n_components: int) -> np.ndarray:
    """Mixing weights: shape (k,), in [0, 1], summing to one (scikit-learn's checks)."""
    w = _as_array(weights, "weights", (n_components,), np.float64)
    if np.any(w < 0) or np.any(w > 1):
        raise ValueError(
            "The parameter 'weights' should be in the range [0, 1], but got "
            f"min value {w.min():.5f}, max value {w.max():.5f}"
        )
    if not np.isclose(w.sum(), 1.0, rtol=0, atol=1e-6):
        raise ValueError(
            f"The parameter 'weights' should be normalized, but got sum(weights) = {w.sum():.5f}"
        )
    return w


def check_means(means, n_components: int, n_features: int) -> np.ndarray:
    return _as_array(means, "means", (n_components, n_features), np.float64)


_PRECISION_SHAPES = {
    "full": lambda k, d: (k, d, d),
    "tied": lambda k, d: (d, d),
    "diag": lambda k, d: (k, d),
    "spherical": lambda k, d: (k,),
}


def check_precisions(precisions, covariance_type: str, n_components: int, n_features: int):
    """Precisions in scikit-learn's shapes: symmetric positive definite, or positive."""
    if covariance_type == "identity":
        raise ValueError(
            "'precisions' cannot be given with covariance_type='identity': the "
            "covariances are fixed to the identity"
        )
    shape = _PRECISION_SHAPES[covariance_type](n_components, n_features)
    p = _as_array(precisions, f"{covariance_type} precision", shape, np.float64)
    if covariance_type in ("full", "tied"):
        mats = p.reshape((-1, n_features, n_features))
        for mat in mats:
            if not np.allclose(mat, mat.T) or np.any(np.linalg.eigvalsh(mat) <= 0.0):
                raise ValueError(f"'{covariance_type} precision' should be symmetric, positive-definite")
    elif np.any(p <= 0.0):
        raise ValueError(f"'{covariance_type} precision' should be positive")
    return p
