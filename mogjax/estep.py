r"""The E-step: responsibilities reduced at once to sufficient statistics, in row blocks.

Component ``j``'s log density at a row ``x`` is written with the quadratic features
``phi`` of ``mogjax.gaussian`` as

.. math::

   \log \pi_j f_j(x) = \mathrm{log\_const}_j - \tfrac12\big(\phi(x - c)^T \theta_j
   + \mathrm{offset}_j\big),

so a block of rows costs two matrix products: ``features @ theta`` (the densities)
and ``resp^T @ features`` (the moments EM's M-step needs). Memory is
``O(block * (d^2 + k))`` whatever ``n``. Every flavour of EM (in memory, chunked,
sharded, online) and gradient ascent (whose gradient is these statistics) use it.
"""

import jax
import jax.numpy as jnp

from mogjax import _blocks
from mogjax import gaussian as gs
from mogjax._typing import Array
from mogjax.mixture import MixtureParams
from mogjax.suffstats import SufficientStats, stats_from_moments

# Precompute the quadratic features of the data once per fit while they take at most
# this many bytes (1e6 x 8 float32: 176 MB); above it, every E-step recomputes them
# block by block, which keeps memory at O(block * D) for any n (benchmarks/em.py).
FEATURE_CACHE_BYTES = 2**30


def density_terms(params: MixtureParams, center: Array, dtype):
    """``(theta, offset, log_const)``: component ``j``'s log-density at a row ``x`` is
    ``log_const[j] - 0.5 * (features(x - center) @ theta + offset)[j]``."""
    d = params.n_features
    theta, offset = gs.precision_features(params.means, params.prec_chol, params.covariance_type,
                                          center)
    log_const = (
        params.log_weights
        + gs.half_log_det_precision(params.prec_chol, params.covariance_type, d)
        - 0.5 * d * jnp.log(2 * jnp.pi).astype(dtype)
    )
    return theta, offset, log_const


def block_statistics(features, theta, offset, log_const, weight=None):
    """Log-likelihood, counts and moments of one block of feature rows.

    ``weight`` (rows,) multiplies every row's contribution: sample weights, and 0
    for the padding rows chunked and sharded EM add to reach a fixed shape (padding
    rows must hold finite values).
    """
    maha = jnp.maximum(features @ theta + offset, 0.0)
    log_prob = log_const - 0.5 * maha
    # The row maximum only keeps exp() in range: its derivative cancels, and
    # differentiating max itself divides by the count of entries equal to it,
    # which is 0 (NaN) when XLA recomputes log_prob with other rounding (seen at
    # --xla_backend_optimization_level=0). jax.nn.logsumexp stops it the same way.
    top = jax.lax.stop_gradient(jnp.max(log_prob, axis=1, keepdims=True))
    dens = jnp.exp(log_prob - top)
    norm = jnp.sum(dens, axis=1, keepdims=True)
    resp = dens / norm
    row_ll = (jnp.log(norm) + top)[:, 0]
    if weight is not None:
        weight = weight.astype(resp.dtype)
        resp, row_ll = resp * weight[:, None], jnp.where(weight > 0, row_ll * weight, 0.0)
    return jnp.sum(row_ll), jnp.sum(resp, axis=0), resp.T @ features


def e_step_moments(params, data, center, block_size, data_are_features: bool, weight=None):
    """``(log-likelihood, counts, moments)`` of ``data`` (rows or their quadratic
    features) summed over row blocks; ``weight`` as in ``block_statistics``."""
    terms = density_terms(params, center, data.dtype)
    return terms_moments(terms, data, center, params.covariance_type, block_size,
                         data_are_features, weight)


def terms_moments(terms, data, center, covariance_type: str, block_size,
                  data_are_features: bool, weight=None):
    """``e_step_moments`` from the density terms ``(theta, offset, log_const)``."""
    theta, offset, log_const = terms
    features = (lambda b: b) if data_are_features else (
        lambda xb: gs.quadratic_features(xb - center, covariance_type))
    if weight is None:
        block = lambda b: block_statistics(features(b), theta, offset, log_const)
        arrays = [data]
    else:
        block = lambda b, wb: block_statistics(features(b), theta, offset, log_const, wb)
        arrays = [data, weight]
    width = theta.shape[0] + theta.shape[1]
    rows = _blocks.choose_block_size(data.shape[0], width, block_size)
    return _blocks.sum_over_blocks(block, arrays, rows)


def stats_of(params, data, center, block_size, data_are_features: bool,
             weight=None) -> SufficientStats:
    """``e_step_moments`` as ``SufficientStats`` of all the rows of ``data``; with
    ``weight`` their ``n`` is the total weight."""
    ll, counts, moments = e_step_moments(params, data, center, block_size, data_are_features,
                                         weight)
    n = jnp.asarray(data.shape[0], data.dtype) if weight is None else jnp.sum(weight)
    return stats_from_moments(n, ll, center, counts, moments, params.covariance_type)


def caches_features(x, covariance_type: str) -> bool:
    """Whether EM precomputes the quadratic features of ``x`` (``FEATURE_CACHE_BYTES``)."""
    width = gs.n_quadratic_features(x.shape[1], covariance_type)
    return x.shape[0] * width * x.dtype.itemsize <= FEATURE_CACHE_BYTES


def data_center(x: Array, weight=None) -> Array:
    """The (weighted) mean of the rows: the statistics' center."""
    return jnp.mean(x, axis=0) if weight is None else jnp.average(x, axis=0, weights=weight)


def e_step_data(x: Array, covariance_type: str, center=None,
                weight=None) -> tuple[Array, Array, bool]:
    """``(data, center, cached)``: what an E-step over in-memory ``x`` reads: the
    quadratic features of ``x - center`` when they fit ``FEATURE_CACHE_BYTES``
    (``cached``), else ``x`` itself; ``center`` defaults to the (weighted) mean."""
    center = data_center(x, weight) if center is None else center
    cached = caches_features(x, covariance_type)
    data = gs.quadratic_features(x - center, covariance_type) if cached else x
    return data, center, cached


def e_step(
    params: MixtureParams, x: Array, *, center=None, block_size: int | None = None,
    sample_weight: Array | None = None,
) -> SufficientStats:
    """Responsibilities of ``params`` on ``x`` (n, d), reduced to sufficient statistics.

    Args:
      params: the mixture.
      x: data, (n, d).
      center: the shift of the statistics, (d,) (default: the (weighted) mean of ``x``).
      block_size: rows per block (``None``: chosen from the sizes).
      sample_weight: (n,) row weights (``None``: all 1).

    Returns:
      ``SufficientStats`` with ``log_likelihood`` the (weighted) total log-likelihood
      of ``params`` on ``x`` and ``n`` the total weight.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = MixtureParams(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones(1), "identity")
      >>> s = e_step(p, jnp.array([[1.0], [3.0]]))
      >>> float(s.counts[0]), float(s.center[0]), float(s.sum_x[0, 0])
      (2.0, 2.0, 0.0)
    """
    center = data_center(x, sample_weight) if center is None else center
    return stats_of(params, x, center, block_size, False, sample_weight)
