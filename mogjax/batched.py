"""Many seeds of one EM fit in one compiled program.

A sweep over seeds (and the restarts of each) with the same shapes does not need one
program per seed: ``fit_em_seeds`` ``vmap``s the whole compiled fit of ``fit_em``
over the seeds, so 32 seeds cost one compile and one pass of batched matrix
products instead of 32 of each (``benchmarks/sweeps.py``). Every seed's result is
the one ``fit_em(x, k, seed=s)`` gives, up to rounding; a seed whose fit met a
singular covariance is flagged in ``degenerate`` instead of raising, so the others
survive.
"""

import functools

import jax
import jax.numpy as jnp

from mogjax import _blocks
from mogjax import _validation as v
from mogjax._typing import ArrayLike
from mogjax.em import curve_capacity, fit_em_compiled, fit_missing_compiled, trimmed
from mogjax.missing import prepare_missing
from mogjax.results import FitResult


@functools.partial(
    jax.jit,
    static_argnames=("k", "covariance_type", "init", "capacity", "equal_weights",
                     "block_size"),
)
def _fit_seeds_compiled(x, keys, user_init, tol, reg_covar, patience, weight, max_iter,
                        **static) -> FitResult:
    """``keys``: (seeds, n_init). The best restart of every seed, stacked."""
    best_of = lambda seed_keys: fit_em_compiled(x, seed_keys, user_init, tol, reg_covar,
                                                 patience, jnp.nan, weight, max_iter,
                                                 **static)[0]
    return jax.vmap(best_of)(keys)


@functools.partial(
    jax.jit,
    static_argnames=("k", "covariance_type", "init", "capacity", "equal_weights",
                     "block_size"),
)
def _fit_seeds_missing(data, keys, user_init, tol, reg_covar, patience, weight, max_iter,
                       **static) -> FitResult:
    """``_fit_seeds_compiled`` for data with missing entries (``fit_missing_compiled``)."""
    best_of = lambda seed_keys: fit_missing_compiled(data, seed_keys, user_init, tol,
                                                     reg_covar, patience, jnp.nan, weight,
                                                     max_iter, verbose=0, **static)
    return jax.vmap(best_of)(keys)


def fit_em_seeds(
    x: ArrayLike,
    k: int | None = None,
    seeds=(0,),
    *,
    covariance_type: str = "full",
    init: str = "kmeans++",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    init_params=None,
    equal_weights: bool = False,
    block_size: int | None = None,
    patience: int = 1,
    sample_weight: ArrayLike | None = None,
    missing: str = "error",
) -> FitResult:
    """``fit_em`` for every seed in ``seeds``, batched in one compiled program.

    Args:
      x: data, (n, d).
      k: number of components.
      seeds: integers; seed ``s`` starts as ``fit_em(..., seed=s)`` does.
      covariance_type, init, max_iter, tol, reg_covar, n_init, init_params,
      equal_weights, block_size, patience, sample_weight, missing: as in ``fit_em``,
      shared by all seeds (with ``missing="marginalize"`` the seeds share the rows
      grouped by pattern and their cached features).

    Returns:
      ``FitResult`` whose fields have a leading axis of ``len(seeds)``: ``params``
      (a batched ``MixtureParams``), ``curve`` (S, max_iter + 1), ``n_iter``,
      ``converged``, ``degenerate`` (S,). A degenerate seed is not raised: its
      ``params`` are the last finite ones.

    Examples:
      >>> import numpy as np
      >>> x = np.concatenate([np.random.default_rng(0).normal(m, 1.0, (100, 2)) for m in (-5, 5)])
      >>> res = fit_em_seeds(x, 2, seeds=[0, 1, 2], covariance_type="diag")
      >>> res.curve.shape, res.n_iter.shape
      ((3, 101), (3,))
      >>> from mogjax import fit_em
      >>> one = fit_em(x, 2, covariance_type="diag", seed=1)
      >>> bool(np.allclose(res.curve[1], one.curve, equal_nan=True, rtol=1e-5))
      True
    """
    v.check_choice(missing, "missing", ("error", "marginalize"))
    x, gaps = prepare_missing(x) if missing == "marginalize" else (v.check_data(x), None)
    n, d = x.shape
    k, init, max_iter, n_init, tol, reg_covar = v.check_fit_settings(
        k, init_params, covariance_type, init, max_iter, n_init, tol, reg_covar)
    seeds = [v.check_int(s, "seeds entry", 0) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    weight = v.check_sample_weight(sample_weight, n, x.dtype)
    v.check_enough_samples(n if weight is None else int(jnp.sum(weight > 0)), k)
    patience, _ = v.check_stop_rule(patience, None)
    keys = jnp.stack([v.split_keys(s, n_init) for s in seeds])
    result = (_fit_seeds_compiled if gaps is None else _fit_seeds_missing)(
        x if gaps is None else gaps, keys, v.check_user_init(init_params, k, d, covariance_type),
        jnp.asarray(tol, x.dtype), jnp.asarray(reg_covar, x.dtype), jnp.int32(patience), weight,
        jnp.int32(max_iter), k=k, covariance_type=covariance_type, init=init,
        capacity=curve_capacity(max_iter), equal_weights=bool(equal_weights),
        block_size=None if block_size is None else _blocks.choose_block_size(n, 1, block_size),
    )
    return trimmed(result, max_iter)
