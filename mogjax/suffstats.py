r"""Sufficient statistics of a weighted Gaussian mixture, and the M-step they feed.

EM only ever needs, per component ``j``, the sums

.. math::

   W_j = \sum_i w_{ij}, \qquad S_j = \sum_i w_{ij} (x_i - c), \qquad
   Q_j = \sum_i w_{ij} (x_i - c)(x_i - c)^T

(``Q_j`` reduced to its diagonal for ``diag`` and to its trace for ``spherical``),
with ``c`` a fixed ``center`` that keeps the sums well conditioned in float32. They
add up across row blocks, chunks of a file, mini-batches and devices, so every
flavour of EM reuses ``accumulate`` and ``m_step``. Both the E-step
(``mogjax.em.e_step``) and the initialisations (``mogjax.init``) produce them.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from mogjax import _blocks
from mogjax import gaussian as gs
from mogjax._typing import Array
from mogjax.mixture import MixtureParams


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["n", "log_likelihood", "center", "counts", "sum_x", "sum_xx"],
    meta_fields=["covariance_type"],
)
@dataclasses.dataclass(frozen=True)
class SufficientStats:
    """Weighted sums over data, relative to ``center``.

    Attributes:
      n: number of points summed (a scalar).
      log_likelihood: sum over points of ``log p(x_i)`` under the parameters that
        gave the weights (zero where the weights did not come from a mixture).
      center: the shift ``c``, (d,); statistics with different centres do not add.
      counts: ``W_j``, (k,).
      sum_x: ``S_j``, (k, d).
      sum_xx: ``Q_j``: (k, d, d) for ``full``/``tied``, (k, d) for ``diag``,
        (k,) (the trace) for ``spherical``/``identity``.
      covariance_type: static.
    """

    n: Array
    log_likelihood: Array
    center: Array
    counts: Array
    sum_x: Array
    sum_xx: Array
    covariance_type: str = "full"

    @property
    def mean_log_likelihood(self) -> Array:
        return self.log_likelihood / self.n

    def __add__(self, other: "SufficientStats") -> "SufficientStats":
        """Statistics of the union of two data sets (same ``center``)."""
        add = lambda a, b: a + b
        summed = jax.tree.map(add, self.replace(center=None), other.replace(center=None))
        return summed.replace(center=self.center)

    def replace(self, **changes) -> "SufficientStats":
        return dataclasses.replace(self, **changes)


def block_moments(x: Array, resp: Array, center: Array, covariance_type: str):
    """``(counts, resp^T @ quadratic_features(x - center))`` for one block of rows."""
    features = gs.quadratic_features(x - center, covariance_type)
    return jnp.sum(resp, axis=0), resp.T @ features


def stats_from_moments(
    n, log_likelihood, center, counts, moments, covariance_type: str
) -> SufficientStats:
    """Split the packed moments ``resp^T @ features`` into ``sum_x`` and ``sum_xx``."""
    d = center.shape[-1]
    quad, sum_x = moments[:, :-d], moments[:, -d:]
    sum_xx = gs.unpack_second_moments(quad, d, covariance_type)
    return SufficientStats(n, log_likelihood, center, counts, sum_x, sum_xx, covariance_type)


def accumulate(
    x: Array, resp: Array, covariance_type: str, center=None, block_size=None
) -> SufficientStats:
    """Statistics of ``x`` (n, d) weighted by ``resp`` (n, k), in blocks of rows.

    ``log_likelihood`` is zero: the weights here are given, not computed.
    """
    center = jnp.mean(x, axis=0) if center is None else center
    width = gs.n_quadratic_features(x.shape[1], covariance_type) + resp.shape[1]
    rows = _blocks.choose_block_size(x.shape[0], width, block_size)
    fn = lambda xb, rb: block_moments(xb, rb.astype(x.dtype), center, covariance_type)
    counts, moments = _blocks.sum_over_blocks(fn, [x, resp], rows)
    zero = jnp.zeros((), x.dtype)
    return stats_from_moments(
        jnp.asarray(x.shape[0], x.dtype), zero, center, counts, moments, covariance_type
    )


def m_step(
    stats: SufficientStats, reg_covar=1e-6, *, equal_weights: bool = False
) -> MixtureParams:
    r"""Maximum-likelihood parameters from the statistics (the M-step).

    .. math::

       \pi_j = W_j / \textstyle\sum_l W_l, \quad \mu_j = c + S_j / W_j, \quad
       \Sigma_j = Q_j / W_j - (\mu_j - c)(\mu_j - c)^T + \mathrm{reg\_covar}\, I

    ``tied`` pools the components' scatter, ``diag`` keeps the diagonal and
    ``spherical`` its mean; ``identity`` keeps ``Sigma_j = I``. As in
    scikit-learn, ``W_j`` gets ``10 * eps`` so an empty component does not divide by
    zero, and a variance that rounding pushed below zero is clipped at zero before
    ``reg_covar`` is added. With ``equal_weights`` the weights stay ``1/k``: the
    lecture's update.

    Args:
      stats: sufficient statistics.
      reg_covar: non-negative value added to the covariance diagonal (traced).
      equal_weights: keep ``pi_j = 1/k`` (static).

    Returns:
      ``MixtureParams``; a covariance that is not positive definite gives NaN in
      ``prec_chol`` (checked by the callers, never raised inside compiled code).
    """
    cov_type = stats.covariance_type
    dtype = stats.sum_x.dtype
    counts = stats.counts + 10 * jnp.finfo(dtype).eps
    k, d = stats.sum_x.shape
    shift = stats.sum_x / counts[:, None]  # mu_j - c
    means = stats.center + shift
    if equal_weights:
        log_weights = jnp.full((k,), -jnp.log(k), dtype)
    else:
        log_weights = jnp.log(counts) - jnp.log(jnp.sum(counts))
    eye = jnp.eye(d, dtype=dtype)
    if cov_type == "full":
        scatter = stats.sum_xx / counts[:, None, None] - shift[:, :, None] * shift[:, None, :]
        cov = scatter + reg_covar * eye
    elif cov_type == "tied":
        total = jnp.sum(stats.sum_xx, axis=0) - jnp.einsum("k,ki,kj->ij", counts, shift, shift)
        cov = total / jnp.sum(counts) + reg_covar * eye
    elif cov_type == "diag":
        cov = jnp.maximum(stats.sum_xx / counts[:, None] - shift**2, 0.0) + reg_covar
    elif cov_type == "spherical":
        var = stats.sum_xx / counts - jnp.sum(shift**2, axis=-1)
        cov = jnp.maximum(var / d, 0.0) + reg_covar
    else:
        cov = jnp.ones((k,), dtype)
    prec_chol = gs.precision_cholesky(cov, cov_type)
    return MixtureParams(log_weights, means, prec_chol, cov_type)
