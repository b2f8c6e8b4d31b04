r"""Missing values (NaN) marginalised: the E-step of exact EM for data missing at random.

A row with observed coordinates ``o`` and missing ones ``m`` has the likelihood of its
observed coordinates, :math:`\sum_j \pi_j N(x_o; \mu_{j,o}, \Sigma_{j,oo})`. The E-step
gives the *expected* sufficient statistics under each component:

.. math::

   \hat x_{ij} = x_o \cup \big(\mu_{j,m} + \Sigma_{j,mo}\Sigma_{j,oo}^{-1}(x_o - \mu_{j,o})\big),
   \qquad
   E[x x^T] = \hat x_{ij} \hat x_{ij}^T + C_{j}, \quad
   C_{j,mm} = \Sigma_{j,mm} - \Sigma_{j,mo}\Sigma_{j,oo}^{-1}\Sigma_{j,om},

so the M-step is unchanged and EM stays exact EM: the observed-data likelihood
never decreases.

**Rows grouped by pattern.** The conditioning depends only on which coordinates are
missing, so it is computed once per (pattern, component) from
:math:`A = \Sigma_{oo} \oplus I_{mm}` (the observed block, padded with the identity;
its Cholesky factor gives the marginal's determinant and the observed block's
precision). Rows are then
processed in blocks, each row gathering its pattern's matrices: memory
``O(block * k * d^2)``, work ``O(n k d^2 + p k d^3)`` for ``p`` patterns. Every
covariance type goes through the full matrices (``diag``, ``spherical``, ``tied`` and
``identity`` expanded), and the second moments are reduced back to the type's shape.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve

from mogjax import _blocks
from mogjax import _validation as v
from mogjax import gaussian as gs
from mogjax._typing import Array
from mogjax.mixture import MixtureParams
from mogjax.suffstats import SufficientStats

PATTERN_BLOCK = 256  # rows per block; every block holds rows of one pattern


class MissingData(NamedTuple):
    """Data with missing entries, grouped by pattern into blocks of ``block`` rows.

    The rows are sorted by pattern and every pattern's rows padded (weight 0) to a
    whole number of blocks, so a block holds one pattern and its conditioning comes
    as a few (k, d, d) matrices: no per-row gather (the statistics are sums, so the
    order is free).

    Attributes:
      x: (N, d) rows, missing entries set to 0, padding rows 0.
      real: (N,) 1 for the input's rows, 0 for padding.
      pattern: (N,) every row's pattern (constant over a block).
      patterns: (p, d) booleans, the distinct patterns of observed coordinates.
      rows: (n,) where input row ``i`` sits in ``x``.
      block: rows per block.
    """

    x: Array
    real: Array
    pattern: Array
    patterns: Array
    rows: Array
    block: int

    def place(self, weight: Array | None) -> Array:
        """Per-row weights (n,) of the input, laid out as ``x``'s rows (N,)."""
        if weight is None:
            return self.real
        return jnp.zeros_like(self.real).at[self.rows].set(weight)


jax.tree_util.register_pytree_node(
    MissingData,
    lambda m: ((m.x, m.real, m.pattern, m.patterns, m.rows), m.block),
    lambda block, arrays: MissingData(*arrays, block),
)


def prepare_missing(x) -> tuple[Array, MissingData | None]:
    """``x`` checked as ``fit_em``'s data (NaN aside) and its ``MissingData``, or
    ``None`` when nothing is missing."""
    arr = np.asarray(x)
    nan = np.isnan(arr) if arr.dtype.kind == "f" else None
    if nan is None or not nan.any():
        return v.check_data(x), None
    checked = v.check_data(np.where(nan, 0.0, arr))
    return checked, split_missing(arr, checked.dtype)


def split_missing(x, dtype, block: int = PATTERN_BLOCK) -> MissingData:
    """``MissingData`` of ``x`` (n, d) holding NaN; host-side.

    Raises:
      ValueError: a row with every entry missing (named).
    """
    x = np.asarray(x)
    observed = ~np.isnan(x)
    empty = ~observed.any(axis=1)
    if empty.any():
        raise ValueError(f"row {int(np.argmax(empty))} of X has every entry missing (NaN); "
                         "remove such rows: they carry no information")
    patterns, pattern = np.unique(observed, axis=0, return_inverse=True)
    pattern = pattern.reshape(-1)
    counts = np.bincount(pattern, minlength=len(patterns))
    padded = -(-counts // block) * block  # each pattern's rows, padded to whole blocks
    starts = np.concatenate([[0], np.cumsum(padded)[:-1]])
    order = np.argsort(pattern, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[
        pattern[order]]
    rows = starts[pattern] + rank
    total = int(padded.sum())
    out = np.zeros((total, x.shape[1]))
    out[rows] = np.where(observed, x, 0.0)
    real = np.zeros(total)
    real[rows] = 1.0
    pattern_rows = np.repeat(np.arange(len(patterns)), padded)
    return MissingData(jnp.asarray(out, dtype), jnp.asarray(real, dtype),
                       jnp.asarray(pattern_rows, jnp.int32), jnp.asarray(patterns),
                       jnp.asarray(rows, jnp.int32), block)


class Conditionals(NamedTuple):
    """Per (pattern, component): what conditioning on the observed coordinates needs."""

    precision: Array  # (p, k, d, d): inverse of Sigma_oo (+) 0 (zero outside o x o)
    gain: Array  # (p, k, d, d): rows m of Sigma A^-1 (the regression on observed deviations)
    cond_cov: Array  # (p, k, d, d): Sigma_mm - Sigma_mo Sigma_oo^-1 Sigma_om, zero elsewhere
    half_log_det: Array  # (p, k): log |Sigma_oo| / 2
    n_observed: Array  # (p,)
    observed: Array  # (p, d) the patterns themselves


def conditionals(params: MixtureParams, patterns: Array) -> Conditionals:
    """``Conditionals`` of every pattern under every component."""
    cov = gs.full_covariances(params.covariances, params.covariance_type, params.n_components,
                              params.n_features)
    dtype = cov.dtype

    def one(mask, sigma):
        o = mask.astype(dtype)
        a = o[:, None] * o[None, :] * sigma + jnp.diag(1.0 - o)
        chol = jnp.linalg.cholesky(a)
        solved = cho_solve((chol, True), sigma)  # A^-1 Sigma
        gain = (1.0 - o)[:, None] * solved.T  # (Sigma A^-1) restricted to missing rows
        miss = (1.0 - o)[:, None] * (1.0 - o)[None, :]
        cond = miss * (sigma - sigma @ (o[:, None] * solved))
        precision = o[:, None] * cho_solve((chol, True), jnp.diag(o))
        return precision, gain, cond, jnp.sum(jnp.log(jnp.diagonal(chol)))

    per = jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None))(patterns, cov)
    return Conditionals(*per, jnp.sum(patterns, axis=1).astype(dtype), patterns)


def _conditioned(params, cond, xb, pb):
    """A block of one pattern ``pb``: (log pi_j f_j(x_o) (b, k), conditional means (b, k, d))."""
    means = params.means
    observed = cond.observed[pb]
    filled = jnp.where(observed, xb[:, None, :], means[None])  # (b, k, d)
    dev = filled - means[None]  # zero where missing
    maha = jnp.einsum("bkd,kde,bke->bk", dev, cond.precision[pb], dev)
    log_prob = (params.log_weights - cond.half_log_det[pb]
                - 0.5 * (cond.n_observed[pb] * jnp.log(2 * jnp.pi).astype(xb.dtype) + maha))
    return log_prob, filled + jnp.einsum("kde,bke->bkd", cond.gain[pb], dev)


def _block(params, cond, center, xb, pb, wb):
    """(ll, counts, sum_x, sum_xx (k, d, d)) of a block of one pattern."""
    pb = pb[0]
    log_prob, x_hat = _conditioned(params, cond, xb, pb)
    row_ll = jax.nn.logsumexp(log_prob, axis=1)
    resp = jnp.exp(log_prob - row_ll[:, None]) * wb[:, None]
    x_hat = x_hat - center
    counts = jnp.sum(resp, axis=0)
    sum_x = jnp.einsum("bk,bkd->kd", resp, x_hat)
    sum_xx = jnp.einsum("bk,bkd,bke->kde", resp, x_hat, x_hat)
    sum_xx = sum_xx + counts[:, None, None] * cond.cond_cov[pb]
    return jnp.sum(jnp.where(wb > 0, wb * row_ll, 0.0)), counts, sum_x, sum_xx


def _reduce(sum_xx: Array, covariance_type: str) -> Array:
    """Full second moments (k, d, d) in the shape ``SufficientStats`` keeps."""
    if covariance_type in ("full", "tied"):
        return sum_xx
    diag = jnp.diagonal(sum_xx, axis1=-2, axis2=-1)
    return diag if covariance_type == "diag" else jnp.sum(diag, axis=-1)


def missing_stats(params: MixtureParams, data: MissingData, center: Array,
                  weight=None) -> SufficientStats:
    """Expected sufficient statistics (module doc) and the observed-data log-likelihood;
    ``weight`` (n,) the input rows' sample weights."""
    cond = conditionals(params, data.patterns)
    w = data.place(weight)
    fn = lambda xb, pb, wb: _block(params, cond, center, xb, pb, wb)
    ll, counts, sum_x, sum_xx = _blocks.sum_over_blocks(fn, [data.x, data.pattern, w],
                                                         data.block)
    return SufficientStats(jnp.sum(w), ll, center, counts, sum_x,
                           _reduce(sum_xx, params.covariance_type), params.covariance_type)


def imputed_center(data: MissingData, weight=None) -> Array:
    """The (weighted) mean of every column over its observed entries, (d,)."""
    wo = data.patterns[data.pattern] * data.place(weight)[:, None]
    return jnp.sum(wo * data.x, axis=0) / jnp.sum(wo, axis=0)


def start_rows(data: MissingData, center: Array) -> Array:
    """The input rows (n, d) with every missing entry at ``center``'s value."""
    observed = data.patterns[data.pattern][data.rows]
    return jnp.where(observed, data.x[data.rows], center)


@jax.jit
def _impute(params: MixtureParams, data: MissingData) -> Array:
    cond = conditionals(params, data.patterns)

    def fn(xb, pb):
        log_prob, x_hat = _conditioned(params, cond, xb, pb[0])
        return jnp.einsum("bk,bkd->bd", jax.nn.softmax(log_prob, axis=1), x_hat)

    return _blocks.map_over_blocks(fn, [data.x, data.pattern], data.block)[data.rows]


def impute(params: MixtureParams, x) -> Array:
    r"""The conditional-mean completion of ``x`` (n, d) under the mixture.

    Missing entries (NaN) become :math:`E[x_m \mid x_o] = \sum_j w_{ij}
    \big(\mu_{j,m} + \Sigma_{j,mo}\Sigma_{j,oo}^{-1}(x_o - \mu_{j,o})\big)`, with
    ``w_ij`` the responsibilities of the observed coordinates; observed entries stay.

    Raises:
      ValueError: a row with every entry missing, or a shape that does not match.

    Examples:
      >>> import numpy as np
      >>> p = MixtureParams.from_covariances(
      ...     np.ones(1), np.zeros((1, 2)), np.array([[[1.0, 0.5], [0.5, 1.0]]]))
      >>> impute(p, np.array([[2.0, np.nan]])).tolist()
      [[2.0, 1.0]]
    """
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != params.n_features:
        raise ValueError(f"X must have shape (n, {params.n_features}), got {arr.shape}")
    return _impute(params, split_missing(arr, params.means.dtype))
