r"""The unconstrained twin of ``MixtureParams`` that gradient ascent steps freely.

``UnconstrainedParams`` holds values any optax optimiser can move anywhere; two pure
maps lead to and from ``MixtureParams``. Its ``logits`` (k - 1,) are
:math:`\log \pi_j - \log \pi_k` (the last component's logit is fixed at 0), its
``means`` (k, d) are the means, and its ``scale`` holds the free part of the
covariances:

=============  ===============  =======================================================
type           ``scale``        meaning
=============  ===============  =======================================================
``full``       (k, d(d+1)/2)    lower Cholesky factor ``L_j`` of
                                :math:`\Sigma^{free}_j = L_j L_j^T`, packed in
                                ``np.tril_indices`` order, its diagonal as a log
``tied``       (d(d+1)/2,)      one such ``L`` for every component
``diag``       (k, d)           log of the free variances
``spherical``  (k,)             log of the free variance
``identity``   (0,)             nothing: :math:`\Sigma_j = I` is fixed
=============  ===============  =======================================================

**The reg_covar floor.** The optimised covariance is

.. math::

   \Sigma_j = \Sigma^{free}_j + \mathrm{reg\_covar}\; I, \qquad \Sigma^{free}_j \succ 0,

so no covariance falls below ``reg_covar`` in any direction, the floor EM's M-step
sets by adding ``reg_covar`` to the covariance diagonal. ``from_unconstrained``
builds :math:`\Sigma_j` and turns it into ``prec_chol`` with
``mogjax.gaussian.precision_cholesky``; ``to_unconstrained`` subtracts the floor
again, so both maps take ``reg_covar`` (the same value for both). The two methods
climb the same function over the same set of covariances. Their stationary points
differ only at second order: EM's covariance is the weighted scatter *plus*
``reg_covar``, gradient ascent's the scatter itself (where the likelihood is flat),
so their final mean log-likelihoods differ by :math:`O(\mathrm{reg\_covar}^2)`. A
covariance on the floor (a collapsed component: singular or rounding-indefinite
:math:`\Sigma^{free}`) maps to the nearest representable point,
:math:`\Sigma^{free}_+ + \epsilon\,\mathrm{reg\_covar}\,I`, a change at rounding level.

With ``k - 1`` logits against the last component the maps are exact inverses in both
directions (up to rounding), for every covariance type.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mogjax import gaussian as gs
from mogjax._typing import Array
from mogjax.mixture import MixtureParams


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["logits", "means", "scale"], meta_fields=["covariance_type"],
)
@dataclasses.dataclass(frozen=True)
class UnconstrainedParams:
    """Unconstrained mixture parameters (shapes in the module table): a JAX pytree.

    Attributes:
      logits: (k - 1,) log-weights relative to the last component.
      means: (k, d).
      scale: the free covariance part, shaped by ``covariance_type``.
      covariance_type: static metadata, as in ``MixtureParams``.
    """

    logits: Array
    means: Array
    scale: Array
    covariance_type: str = "full"


def _tril(d: int):
    rows, cols = np.tril_indices(d)
    return rows, cols, rows == cols


def _free_cholesky(free: Array, reg_covar) -> Array:
    """Lower ``L`` with ``L L^T = free`` (symmetric, (..., d, d)).

    Where ``free`` is singular or (by rounding) indefinite, ``L`` is the factor of
    its positive part plus ``eps * reg_covar * I``, through a QR decomposition that
    needs no positive-definiteness.
    """
    dtype, d = free.dtype, free.shape[-1]
    chol = jnp.linalg.cholesky(free)
    ok = jnp.all(jnp.isfinite(chol), axis=(-2, -1), keepdims=True)
    floor = jnp.sqrt(jnp.finfo(dtype).eps * reg_covar + jnp.finfo(dtype).tiny)
    lam, vec = jnp.linalg.eigh(free)
    root = jnp.sqrt(jnp.maximum(lam, 0.0))[..., :, None] * jnp.swapaxes(vec, -1, -2)
    eye = jnp.broadcast_to(floor * jnp.eye(d, dtype=dtype), free.shape)
    r = jnp.linalg.qr(jnp.concatenate([root, eye], axis=-2), mode="r")
    sign = jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(dtype)
    return jnp.where(ok, chol, jnp.swapaxes(r * sign[..., :, None], -1, -2))


def to_unconstrained(params: MixtureParams, reg_covar=0.0) -> UnconstrainedParams:
    r"""Map mixture parameters to the unconstrained space; inverse of ``from_unconstrained``.

    Args:
      params: a ``MixtureParams`` whose covariances are at least ``reg_covar``.
      reg_covar: the floor :math:`\Sigma = \Sigma^{free} + \mathrm{reg\_covar}\,I`
        (the value the fit uses; ``0`` for a plain reparametrisation).

    Returns:
      ``UnconstrainedParams``; every entry finite for finite ``params``.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = MixtureParams.from_covariances(
      ...     jnp.array([0.25, 0.75]), jnp.zeros((2, 1)), jnp.array([1.0, 4.0]),
      ...     "spherical")
      >>> raw = to_unconstrained(p)
      >>> [round(float(a), 4) for a in raw.logits], [round(float(s), 4) for s in raw.scale]
      ([-1.0986], [0.0, 1.3863])
    """
    cov_type, dtype = params.covariance_type, params.means.dtype
    tiny, eps = jnp.finfo(dtype).tiny, jnp.finfo(dtype).eps
    log_w = jnp.maximum(params.log_weights, jnp.log(tiny))  # a zero weight stays finite
    logits = log_w[:-1] - log_w[-1]
    if cov_type in ("full", "tied"):
        d = params.n_features
        free = params.covariances - reg_covar * jnp.eye(d, dtype=dtype)
        free = 0.5 * (free + jnp.swapaxes(free, -1, -2))
        chol = _free_cholesky(free, reg_covar)
        rows, cols, diag = _tril(d)
        vals = chol[..., rows, cols]
        scale = jnp.where(diag, jnp.log(jnp.where(diag, vals, 1.0)), vals)
    elif cov_type in ("diag", "spherical"):
        free = params.covariances - reg_covar
        scale = jnp.log(jnp.maximum(free, eps * reg_covar + tiny))
    else:
        scale = jnp.zeros((0,), dtype)
    return UnconstrainedParams(logits, params.means, scale, cov_type)


def from_unconstrained(raw: UnconstrainedParams, reg_covar=0.0) -> MixtureParams:
    r"""Map unconstrained parameters to a ``MixtureParams`` (differentiable).

    .. math::

       \log \pi = \mathrm{log\_softmax}([\mathrm{logits}, 0]), \qquad
       \Sigma_j = L_j L_j^T + \mathrm{reg\_covar}\, I \;\;\text{or}\;\;
       \exp(\mathrm{scale}_j) + \mathrm{reg\_covar}.

    Args:
      raw: ``UnconstrainedParams``.
      reg_covar: the covariance floor (traced; the value given to ``to_unconstrained``).

    Returns:
      ``MixtureParams`` of the same covariance type.

    Examples:
      >>> import jax.numpy as jnp
      >>> raw = UnconstrainedParams(
      ...     jnp.zeros(1), jnp.zeros((2, 1)), jnp.zeros((2, 1)), "diag")
      >>> p = from_unconstrained(raw, reg_covar=1.0)
      >>> [round(float(w), 3) for w in p.weights], [round(float(c), 3) for c in p.covariances[:, 0]]
      ([0.5, 0.5], [2.0, 2.0])
    """
    cov_type, dtype = raw.covariance_type, raw.means.dtype
    k, d = raw.means.shape
    logits = jnp.concatenate([raw.logits, jnp.zeros((1,), dtype)])
    log_weights = jax.nn.log_softmax(logits)
    if cov_type in ("full", "tied"):
        rows, cols, diag = _tril(d)
        vals = jnp.where(diag, jnp.exp(jnp.where(diag, raw.scale, 0.0)), raw.scale)
        chol = jnp.zeros(raw.scale.shape[:-1] + (d, d), dtype)
        chol = chol.at[..., rows, cols].set(vals)
        cov = chol @ jnp.swapaxes(chol, -1, -2) + reg_covar * jnp.eye(d, dtype=dtype)
        prec_chol = gs.precision_cholesky(cov, cov_type)
    elif cov_type in ("diag", "spherical"):
        prec_chol = gs.precision_cholesky(jnp.exp(raw.scale) + reg_covar, cov_type)
    else:
        prec_chol = jnp.ones((k,), dtype)
    return MixtureParams(log_weights, raw.means, prec_chol, cov_type)
