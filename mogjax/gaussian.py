r"""Gaussian log-densities and Mahalanobis distances, per covariance type.

Every density is evaluated in log space from the Cholesky factor of the precision
(scikit-learn's ``precisions_cholesky_`` convention): ``prec_chol`` holds, per
covariance type,

==============  ===========  =================================================
type            shape        meaning
==============  ===========  =================================================
``full``        (k, d, d)    upper-triangular ``U_j`` with ``inv(Sigma_j) = U_j U_j^T``
``tied``        (d, d)       one ``U`` shared by every component
``diag``        (k, d)       ``1 / sqrt(diag(Sigma_j))``
``spherical``   (k,)         ``1 / sigma_j``
``identity``    (k,)         ones: ``Sigma_j = I`` is fixed (soft k-means)
==============  ===========  =================================================

The fast path. The squared Mahalanobis distance is written as one matrix product of
*quadratic features* of the data against *precision features* of the parameters:

.. math::

   (x-\mu_j)^T P_j (x-\mu_j) = \phi(x)^T \mathrm{vech}(P_j) - 2 \mu_j^T P_j x
   + \mu_j^T P_j \mu_j,

with :math:`\phi(x)` the ``d(d+1)/2`` products :math:`x_a x_b, a \le b` (the squares
for ``diag``, :math:`\|x\|^2` for ``spherical``/``identity``). For ``n`` points and
``k`` components this is an ``(n, D) @ (D, k)`` product, ``D = d(d+1)/2 + d`` for a
full covariance, with no ``(n, k, d)`` or ``(n, k, d, d)`` intermediate. The same
features give EM's second moments as ``resp^T @ features``.

The expansion subtracts large numbers when ``x`` is far from the origin, so data and
means are first shifted by a ``center`` (by default the mixture's mean,
``sum_j pi_j mu_j``, which sits inside the data). In float32 the distance of a point
then carries an absolute error of about ``1e-7 * ||x - center||^2 / sigma_j^2``:
accurate unless a component is hundreds of times narrower than its distance from
the mixture mean, where float64 (``jax_enable_x64``) is the remedy.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from mogjax import _blocks
from mogjax._typing import Array

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical", "identity")


def check_covariance_type(covariance_type: str) -> str:
    """Return ``covariance_type`` or raise ``ValueError`` naming the valid ones."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Invalid value for 'covariance_type': {covariance_type!r}; "
            f"it must be one of {COVARIANCE_TYPES}"
        )
    return covariance_type


def _upper_from_symmetric(mat: Array) -> Array:
    """Upper-triangular ``U`` with ``U @ U.T == mat`` (mat SPD), via a flipped Cholesky."""
    flipped = jnp.flip(mat, axis=(-2, -1))
    return jnp.flip(jnp.linalg.cholesky(flipped), axis=(-2, -1))


def precision_cholesky(covariances: Array, covariance_type: str) -> Array:
    """Cholesky factor of the precision from covariances (shapes as the module table).

    NaN, not an exception, where a covariance is not positive definite: callers
    inside compiled code test ``isfinite``; see ``mogjax.em.fit_em`` for the error.

    Examples:
      >>> import jax.numpy as jnp
      >>> u = precision_cholesky(jnp.array([[[4.0, 0.0], [0.0, 1.0]]]), "full")
      >>> [round(float(v), 3) for v in jnp.diagonal(u[0])]
      [0.5, 1.0]
    """
    if covariance_type in ("full", "tied"):
        chol = jnp.linalg.cholesky(covariances)
        eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
        return jnp.swapaxes(solve_triangular(chol, eye, lower=True), -1, -2)
    if covariance_type == "identity":
        return jnp.ones_like(covariances)
    return jnp.where(covariances > 0, jax.lax.rsqrt(covariances), jnp.nan)


def precision_cholesky_from_precisions(precisions: Array, covariance_type: str) -> Array:
    """Cholesky factor (upper for ``full``/``tied``) from precision matrices or values."""
    if covariance_type in ("full", "tied"):
        return _upper_from_symmetric(precisions)
    if covariance_type == "identity":
        return jnp.ones_like(precisions)
    return jnp.where(precisions > 0, jnp.sqrt(precisions), jnp.nan)


def precisions_from_cholesky(prec_chol: Array, covariance_type: str) -> Array:
    """Precision matrices (``full``/``tied``) or values (others) from their factor."""
    if covariance_type in ("full", "tied"):
        return prec_chol @ jnp.swapaxes(prec_chol, -1, -2)
    return prec_chol**2


def covariances_from_cholesky(prec_chol: Array, covariance_type: str) -> Array:
    """Covariances from the precision factor: ``inv(U U^T)`` or ``1 / prec_chol**2``."""
    if covariance_type in ("full", "tied"):
        eye = jnp.broadcast_to(
            jnp.eye(prec_chol.shape[-1], dtype=prec_chol.dtype), prec_chol.shape
        )
        inv_u = solve_triangular(prec_chol, eye, lower=False)  # U^{-1}
        return jnp.swapaxes(inv_u, -1, -2) @ inv_u
    return 1.0 / prec_chol**2


def half_log_det_precision(prec_chol: Array, covariance_type: str, n_features: int) -> Array:
    """``0.5 * log|P_j| = -0.5 * log|Sigma_j|`` per component: (k,), a scalar if tied."""
    if covariance_type in ("full", "tied"):
        return jnp.sum(jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    if covariance_type == "diag":
        return jnp.sum(jnp.log(prec_chol), axis=-1)
    return n_features * jnp.log(prec_chol)


def _triu(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n_features)


def n_quadratic_features(n_features: int, covariance_type: str) -> int:
    """Width of ``quadratic_features``: ``d(d+1)/2 + d``, ``2d`` or ``1 + d``."""
    d = n_features
    if covariance_type in ("full", "tied"):
        return d * (d + 1) // 2 + d
    if covariance_type == "diag":
        return 2 * d
    return 1 + d


def quadratic_features(x: Array, covariance_type: str) -> Array:
    """Features ``[phi(x), x]`` of (already centred) points: (n, d) -> (n, D).

    ``phi`` is the upper triangle of ``x x^T`` (``full``/``tied``), ``x**2``
    (``diag``) or ``||x||^2`` (``spherical``/``identity``).
    """
    if covariance_type in ("full", "tied"):
        rows, cols = _triu(x.shape[-1])
        quad = x[:, rows] * x[:, cols]
    elif covariance_type == "diag":
        quad = x * x
    else:
        quad = jnp.sum(x * x, axis=-1, keepdims=True)
    return jnp.concatenate([quad, x], axis=-1)


def precision_features(
    means: Array, prec_chol: Array, covariance_type: str, center: Array
) -> tuple[Array, Array]:
    """Weights ``theta`` (D, k) and offsets (k,) with ``maha = features @ theta + offset``.

    ``features = quadratic_features(x - center)``; ``maha`` is the squared Mahalanobis
    distance of ``x`` to every mean.
    """
    mu = means - center  # (k, d)
    k, d = mu.shape
    if covariance_type in ("full", "tied"):
        prec = precisions_from_cholesky(prec_chol, covariance_type)
        prec = jnp.broadcast_to(prec, (k, d, d))
        rows, cols = _triu(d)
        scale = np.where(rows == cols, 1.0, 2.0).astype(prec.dtype)
        quad = prec[:, rows, cols] * scale  # (k, d(d+1)/2)
        prec_mu = jnp.einsum("kij,kj->ki", prec, mu)
    else:
        prec = precisions_from_cholesky(prec_chol, covariance_type)
        quad = prec if covariance_type == "diag" else prec[:, None]
        prec_mu = quad * mu
    theta = jnp.concatenate([quad, -2.0 * prec_mu], axis=-1).T
    offset = jnp.sum(mu * prec_mu, axis=-1)
    return theta, offset


def unpack_second_moments(quad: Array, n_features: int, covariance_type: str) -> Array:
    """Second moments from the quadratic block of ``resp^T @ features``.

    (k, d(d+1)/2) -> (k, d, d) symmetric for ``full``/``tied``; unchanged otherwise.
    """
    if covariance_type not in ("full", "tied"):
        return quad[..., 0] if covariance_type in ("spherical", "identity") else quad
    rows, cols = _triu(n_features)
    out = jnp.zeros(quad.shape[:-1] + (n_features, n_features), quad.dtype)
    return out.at[..., rows, cols].set(quad).at[..., cols, rows].set(quad)


def default_center(means: Array, log_weights: Array | None = None) -> Array:
    """The mixture's mean ``sum_j pi_j mu_j`` (the plain mean of means without weights)."""
    if log_weights is None:
        return jnp.mean(means, axis=0)
    return jnp.exp(log_weights) @ means


def squared_mahalanobis(
    x: Array, means: Array, prec_chol: Array, covariance_type: str, center=None
) -> Array:
    """Squared Mahalanobis distances ``(x_i - mu_j)^T Sigma_j^{-1} (x_i - mu_j)``: (n, k).

    Clipped at zero (float rounding of the expansion can dip just below).
    """
    center = default_center(means) if center is None else center
    theta, offset = precision_features(means, prec_chol, covariance_type, center)
    features = quadratic_features(x - center, covariance_type)
    return jnp.maximum(features @ theta + offset, 0.0)


def mahalanobis(
    x: Array, means: Array, prec_chol: Array, covariance_type: str = "full"
) -> Array:
    r"""Mahalanobis distance :math:`\|x_i - \mu_j\|_{\Sigma_j}` of every point to every mean.

    Args:
      x: points, shape (n, d).
      means: component means, shape (k, d).
      prec_chol: precision Cholesky factors, shaped as the module table for
        ``covariance_type``.
      covariance_type: one of ``COVARIANCE_TYPES``.

    Returns:
      Distances, shape (n, k).

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[3.0, 4.0]])
      >>> float(mahalanobis(x, jnp.zeros((1, 2)), jnp.ones(1), "identity")[0, 0])
      5.0
      >>> float(mahalanobis(x, jnp.zeros((1, 2)), jnp.array([0.5]), "spherical")[0, 0])
      2.5
    """
    return jnp.sqrt(squared_mahalanobis(x, means, prec_chol, covariance_type))


def _whitened(x: Array, means: Array, prec_chol: Array, covariance_type: str) -> Array:
    """``U_j^T (x_i - mu_j)`` from differences: (n, k, d) (``||.||^2`` is the distance)."""
    diff = x[:, None, :] - means[None, :, :]
    if covariance_type == "full":
        return jnp.einsum("nkd,kde->nke", diff, prec_chol)
    if covariance_type == "tied":
        return diff @ prec_chol
    if covariance_type == "diag":
        return diff * prec_chol[None]
    return diff * prec_chol[None, :, None]


def _log_density_far(x, means, prec_chol, covariance_type, log_det) -> tuple[Array, Array]:
    """``(rel, offset)`` from differences, scaled per row so nothing overflows.

    With ``y_ij = U_j^T (x_i - mu_j)``, ``s_i = max |y_ij|`` and ``q_ij = ||y_ij / s_i||^2``:
    ``log f_j(x_i) = rel_ij - offset_i``, ``offset_i = s_i^2 min_j q_ij / 2`` (may be
    infinite) and ``rel_ij`` finite for the nearest component.
    """
    d = x.shape[-1]
    y = _whitened(x, means, prec_chol, covariance_type)
    s = jnp.max(jnp.abs(y), axis=(1, 2))
    s = jnp.where(s > 0, s, 1.0)
    q = jnp.sum((y / s[:, None, None]) ** 2, axis=-1)
    q_min = jnp.min(q, axis=1, keepdims=True)
    s2 = (s * s)[:, None]
    gap = jnp.where(q > q_min, s2 * (q - q_min), 0.0)
    rel = log_det - 0.5 * (d * math.log(2 * math.pi) + gap)
    return rel, 0.5 * s2[:, 0] * q_min[:, 0]


def log_gaussian_density_parts(
    x: Array, means: Array, prec_chol: Array, covariance_type: str = "full", center=None
) -> tuple[Array, Array]:
    """``(rel, offset)`` with ``log f_j(x_i) = rel_ij - offset_i``: (n, k), (n,).

    The fast path (quadratic features) gives ``offset = 0``. Rows where it is not
    finite (a point so far from the data's center that its squared features
    overflow) are recomputed from differences in a per-row scaled frame
    (``_log_density_far``): their ``rel`` stays finite for the nearest component,
    so responsibilities never turn NaN, and ``offset`` carries the (possibly
    infinite) common distance. The recomputation runs only for a block holding
    such a row (``lax.cond``).
    """
    d = x.shape[-1]
    maha = squared_mahalanobis(x, means, prec_chol, covariance_type, center)
    log_det = half_log_det_precision(prec_chol, covariance_type, d)
    fast = log_det - 0.5 * (d * math.log(2 * math.pi) + maha)
    bad = ~jnp.all(jnp.isfinite(fast), axis=1)

    def far():
        rel, offset = _log_density_far(x, means, prec_chol, covariance_type, log_det)
        return jnp.where(bad[:, None], rel, fast), jnp.where(bad, offset, 0.0)

    return jax.lax.cond(jnp.any(bad), far, lambda: (fast, jnp.zeros_like(fast[:, 0])))


def full_covariances(covariances: Array, covariance_type: str, k: int, d: int) -> Array:
    """Covariances in the type's shape (as ``MixtureParams.covariances``) as (k, d, d)
    matrices: ``tied`` repeated, ``diag``/``spherical``/``identity`` on the diagonal."""
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return jnp.broadcast_to(covariances, (k, d, d))
    eye = jnp.eye(d, dtype=covariances.dtype)
    if covariance_type == "diag":
        return covariances[:, :, None] * eye
    return covariances[:, None, None] * eye


def observed_log_density(x: Array, observed: Array, means: Array, cov: Array) -> Array:
    r"""``log N(x_o; mu_o, Sigma_oo)`` of every row's observed coordinates: (n, k).

    ``x`` (n, d) with anything where ``observed`` (n, d) is False; ``cov`` (k, d, d)
    full matrices. Each row conditions on its own pattern (a Cholesky factor of
    :math:`\Sigma_{oo} \oplus I` per row and component), in blocks of rows.
    """
    n, d = x.shape
    k = means.shape[0]

    def block(xb, ob):
        o = ob.astype(x.dtype)
        eye = jnp.eye(d, dtype=x.dtype)
        a = (o[:, None, :, None] * o[:, None, None, :] * cov[None]
             + (1.0 - o)[:, None, :, None] * eye)
        chol = jnp.linalg.cholesky(a)  # (b, k, d, d)
        dev = jnp.where(ob[:, None, :], xb[:, None, :] - means[None], 0.0)
        z = solve_triangular(chol, dev[..., None], lower=True)[..., 0]
        half_log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        d_obs = jnp.sum(o, axis=1, keepdims=True)
        return -half_log_det - 0.5 * (d_obs * math.log(2 * math.pi) + jnp.sum(z * z, axis=-1))

    rows = max(1, min(n, 2**21 // max(1, k * d * d)))
    return _blocks.map_over_blocks(block, [x, observed], rows)


def log_gaussian_density(
    x: Array, means: Array, prec_chol: Array, covariance_type: str = "full", center=None
) -> Array:
    r"""Log-density of every point under every component: (n, d) -> (n, k).

    .. math::

       \log f_{\mu_j,\Sigma_j}(x_i) = -\tfrac12\big(d \log 2\pi
       + \|x_i-\mu_j\|^2_{\Sigma_j}\big) + \tfrac12 \log|\Sigma_j^{-1}|

    Never NaN for finite input: a point too far for the range of the dtype gets
    ``-inf`` (see ``log_gaussian_density_parts``).

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.zeros((1, 1))
      >>> round(float(log_gaussian_density(x, jnp.zeros((1, 1)), jnp.ones(1), "identity")[0, 0]), 4)
      -0.9189
    """
    rel, offset = log_gaussian_density_parts(x, means, prec_chol, covariance_type, center)
    return rel - offset[:, None]
