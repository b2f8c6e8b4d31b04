"""Host-side checks of ``fit_variational``'s arguments: clear errors before any compute.

Everything here runs eagerly on concrete values (never inside ``jit``) and raises
``ValueError`` or ``TypeError`` naming the argument, in scikit-learn's wording where
``BayesianGaussianMixture`` has one.
"""

import math
import numbers

import jax
import numpy as np

from mogjax._typing import Array
from mogjax._validation import check_choice, check_int, split_keys  # noqa: F401 (re-exported)
from mogjax._validation import check_data as check_data_matrix
from mogjax.posterior import VariationalPosterior


def check_real(value, name: str, low: float = 0.0, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value) or value < low or (low_open and value == low):
        bound = ">" if low_open else ">="
        raise ValueError(f"Invalid value for {name!r}: {value}; it must be a finite "
                         f"number {bound} {low:g}")
    return float(value)


def check_array(value, name: str, shape: tuple, dtype) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinity")
    return arr.astype(dtype)


def check_data(x, name: str = "X", *, min_samples: int = 1, n_features=None) -> Array:
    """``v.check_data``, and at least ``min_samples`` rows."""
    out = check_data_matrix(x, name, n_features=n_features)
    if out.shape[0] < min_samples:
        raise ValueError(f"{name} has {out.shape[0]} row(s); at least {min_samples} rows are "
                         "required")
    return out


def check_prior(covariance_type: str, d: int, *, weight_concentration=None,
                mean_precision=None, mean=None, degrees_of_freedom=None,
                covariance=None) -> dict:
    """The given prior values checked as scikit-learn does (``None``: default)."""
    given = {}
    if weight_concentration is not None:
        given["weight_concentration"] = check_real(
            weight_concentration, "weight_concentration_prior", 0.0, low_open=True)
    if mean_precision is not None:
        given["mean_precision"] = check_real(mean_precision, "mean_precision_prior", 0.0,
                                              low_open=True)
    if mean is not None:
        given["mean"] = check_array(mean, "mean_prior", (d,), np.float64)
    if degrees_of_freedom is not None:
        given["degrees_of_freedom"] = check_real(degrees_of_freedom, "degrees_of_freedom_prior",
                                                  0.0, low_open=True)
        if degrees_of_freedom <= d - 1:
            raise ValueError(f"The parameter 'degrees_of_freedom_prior' should be greater "
                             f"than {d - 1}, but got {degrees_of_freedom:.3f}.")
    if covariance is not None:
        name = f"{covariance_type} covariance_prior"
        if covariance_type == "spherical":
            given["covariance"] = check_real(covariance, name, 0.0, low_open=True)
        else:
            shape = (d,) if covariance_type == "diag" else (d, d)
            cov = check_array(covariance, name, shape, np.float64)
            if covariance_type == "diag" and np.any(cov <= 0):
                raise ValueError(f"'{name}' should be positive")
            if covariance_type != "diag" and not (
                    np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)):
                raise ValueError(f"'{name}' should be symmetric, positive-definite")
            given["covariance"] = cov
    return given


def check_start(init_params, n: int, k: int, d: int, covariance_type: str,
                 weight_prior: str):
    """Responsibilities (n, k) as NumPy, or a ``VariationalPosterior`` of matching shape."""
    if isinstance(init_params, VariationalPosterior):
        if (init_params.covariance_type, init_params.weight_prior) != (covariance_type,
                                                                        weight_prior):
            raise ValueError(
                f"init_params is a {init_params.covariance_type!r} posterior under the "
                f"{init_params.weight_prior!r} prior, but the fit asks for "
                f"{covariance_type!r} and {weight_prior!r}")
        if init_params.means.shape != (k, d):
            raise ValueError(f"init_params has means of shape {init_params.means.shape}, "
                             f"expected {(k, d)}")
        if not all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(init_params)):
            raise ValueError("init_params contains NaN or infinity")
        return init_params
    resp = check_array(init_params, "init_params (responsibilities)", (n, k), np.float64)
    if np.any(resp < 0) or not np.allclose(resp.sum(axis=1), 1.0, rtol=0, atol=1e-6):
        raise ValueError("init_params (responsibilities) must be non-negative with rows "
                         "summing to 1")
    return resp
