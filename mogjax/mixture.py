r"""The parameter pytree of a Gaussian mixture and everything that reads it.

The mixture density is :math:`p(x) = \sum_j \pi_j f_{\mu_j,\Sigma_j}(x)`; its
log-likelihood on data ``X`` is :math:`\log L = \sum_i \log \sum_j \pi_j f_j(x_i)`.
Curves and scores report the mean per sample, ``log L / n`` (scikit-learn's
``score``), so that runs on different ``n`` compare.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mogjax import _blocks
from mogjax import gaussian as gs
from mogjax._typing import Array, ArrayLike


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["log_weights", "means", "prec_chol"],
    meta_fields=["covariance_type"],
)
@dataclasses.dataclass(frozen=True)
class MixtureParams:
    """Parameters of a Gaussian mixture: an immutable JAX pytree.

    Attributes:
      log_weights: log mixing proportions, (k,); ``logsumexp(log_weights) == 0``.
      means: component means, (k, d).
      prec_chol: Cholesky factor of the precisions, shaped by ``covariance_type``
        (see ``mogjax.gaussian``); the same convention as scikit-learn's
        ``precisions_cholesky_``.
      covariance_type: static metadata, one of ``COVARIANCE_TYPES``.

    Covariances and precisions are derived on demand (``covariances``,
    ``precisions``). Build from covariances with ``MixtureParams.from_covariances``;
    change a field with ``params.replace(means=...)``. ``jit``, ``vmap`` and
    ``grad`` see the three arrays; the covariance type is part of the tree's
    structure, so changing it compiles a new program.
    """

    log_weights: Array
    means: Array
    prec_chol: Array
    covariance_type: str = "full"

    @classmethod
    def from_covariances(
        cls, weights: ArrayLike, means: ArrayLike, covariances: ArrayLike,
        covariance_type: str = "full",
    ) -> "MixtureParams":
        """Parameters from weights (k,), means (k, d) and covariances (typed shape).

        Examples:
          >>> import jax.numpy as jnp
          >>> p = MixtureParams.from_covariances(
          ...     jnp.array([0.5, 0.5]), jnp.zeros((2, 2)), jnp.array([1.0, 4.0]), "spherical")
          >>> p.n_components, p.n_features, [float(v) for v in p.covariances]
          (2, 2, [1.0, 4.0])
        """
        gs.check_covariance_type(covariance_type)
        means = jnp.asarray(means)
        weights = jnp.asarray(weights, means.dtype)
        covariances = jnp.asarray(covariances, means.dtype)
        return cls(
            jnp.log(weights / jnp.sum(weights)),
            means,
            gs.precision_cholesky(covariances, covariance_type),
            covariance_type,
        )

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]

    @property
    def weights(self) -> Array:
        """Mixing proportions, (k,)."""
        return jnp.exp(self.log_weights)

    @property
    def covariances(self) -> Array:
        """Covariances in scikit-learn's shapes: full (k,d,d), tied (d,d), diag (k,d),
        spherical and identity (k,)."""
        return gs.covariances_from_cholesky(self.prec_chol, self.covariance_type)

    @property
    def precisions(self) -> Array:
        """Inverse covariances, shaped as ``covariances``."""
        return gs.precisions_from_cholesky(self.prec_chol, self.covariance_type)

    @property
    def center(self) -> Array:
        """The mixture's mean ``sum_j pi_j mu_j``, (d,)."""
        return gs.default_center(self.means, self.log_weights)

    def replace(self, **changes) -> "MixtureParams":
        return dataclasses.replace(self, **changes)


def log_prob_components(params: MixtureParams, x: Array) -> Array:
    """``log pi_j + log f_j(x_i)`` for every point and component: (n, d) -> (n, k)."""
    rel, offset = _log_prob_parts(params, x)
    return rel - offset[:, None]


def _log_prob_parts(params: MixtureParams, x: Array) -> tuple[Array, Array]:
    """``log pi_j f_j(x_i) = rel_ij - offset_i`` (``gs.log_gaussian_density_parts``):
    softmax and argmax of ``rel`` stay defined for points too far for the dtype.

    Rows holding NaN are missing those coordinates: their density is that of the
    observed ones (``gs.observed_log_density``; computed only for a block holding
    such a row). A row with every entry missing gets density 1 (log 0).
    """
    # The density does not depend on the center of the expansion, so no gradient flows
    # through it (differentiating the centered features would triple the backward pass).
    center = jax.lax.stop_gradient(params.center)
    rel, offset = gs.log_gaussian_density_parts(
        x, params.means, params.prec_chol, params.covariance_type, center
    )
    rel = params.log_weights + rel
    missing = jnp.isnan(x)
    partial = jnp.any(missing, axis=1)

    def marginal():
        cov = gs.full_covariances(params.covariances, params.covariance_type,
                                  params.n_components, params.n_features)
        obs = gs.observed_log_density(jnp.where(missing, 0.0, x), ~missing, params.means, cov)
        return (jnp.where(partial[:, None], params.log_weights + obs, rel),
                jnp.where(partial, 0.0, offset))

    return jax.lax.cond(jnp.any(partial), marginal, lambda: (rel, offset))


def _check_x(params: MixtureParams, x) -> Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != params.n_features:
        raise ValueError(
            f"X must have shape (n, {params.n_features}) to match the parameters, "
            f"got {x.shape}"
        )
    if x.shape[0] == 0:
        raise ValueError("X has no rows; at least 1 is required")
    return x


def _block_rows(params: MixtureParams, x: Array) -> int:
    width = gs.n_quadratic_features(params.n_features, params.covariance_type)
    return _blocks.choose_block_size(x.shape[0], width + params.n_components)


@jax.jit
def score_samples(params: MixtureParams, x: ArrayLike) -> Array:
    """Log-density of the mixture at every point, ``log p(x_i)``: (n, d) -> (n,)."""
    x = _check_x(params, x)
    fn = lambda xb: jax.nn.logsumexp(log_prob_components(params, xb), axis=-1)
    return _blocks.map_over_blocks(fn, [x], _block_rows(params, x))


def _check_weight(x: Array, sample_weight) -> Array | None:
    if sample_weight is None:
        return None
    w = jnp.asarray(sample_weight, x.dtype)
    if w.shape != (x.shape[0],):
        raise ValueError(f"sample_weight must have shape ({x.shape[0]},), got {w.shape}")
    return w


def _total_weight(x: Array, w: Array | None) -> Array:
    return jnp.asarray(x.shape[0], x.dtype) if w is None else jnp.sum(w)


@jax.jit
def log_likelihood(params: MixtureParams, x: ArrayLike, sample_weight=None) -> Array:
    r"""Total log-likelihood :math:`\sum_i w_i \log \sum_j \pi_j f_j(x_i)` (a scalar).

    ``sample_weight`` (n,) weighs the rows (``None``: all 1; a row of weight 0
    counts for nothing, even where its density underflows). Memory is bounded: the
    data are processed in blocks of rows.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = MixtureParams(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones(1), "identity")
      >>> round(float(log_likelihood(p, jnp.zeros((2, 1)))), 4)
      -1.8379
    """
    x = _check_x(params, x)
    w = _check_weight(x, sample_weight)
    row = lambda xb: jax.nn.logsumexp(log_prob_components(params, xb), axis=-1)
    if w is None:
        return _blocks.sum_over_blocks(lambda xb: jnp.sum(row(xb)), [x], _block_rows(params, x))
    fn = lambda xb, wb: jnp.sum(jnp.where(wb > 0, wb * row(xb), 0.0))
    return _blocks.sum_over_blocks(fn, [x, w], _block_rows(params, x))


@jax.jit
def mean_log_likelihood(params: MixtureParams, x: ArrayLike, sample_weight=None) -> Array:
    """``log_likelihood / n`` (weighted: over the total weight): scikit-learn's
    ``score``, the fits' curve unit."""
    x = _check_x(params, x)
    w = _check_weight(x, sample_weight)
    return log_likelihood(params, x, w) / _total_weight(x, w)


@jax.jit
def responsibilities(params: MixtureParams, x: ArrayLike) -> Array:
    r"""Posterior probabilities :math:`w_{ij} = \pi_j f_j(x_i) / \sum_l \pi_l f_l(x_i)`.

    Returns:
      (n, k); every row is on the simplex (non-negative, sums to one).

    Examples:
      >>> import jax.numpy as jnp
      >>> p = MixtureParams(jnp.log(jnp.array([0.5, 0.5])), jnp.array([[-1.0], [1.0]]),
      ...                   jnp.ones(2), "identity")
      >>> [round(float(v), 4) for v in responsibilities(p, jnp.array([[0.0]]))[0]]
      [0.5, 0.5]
    """
    x = _check_x(params, x)
    fn = lambda xb: jax.nn.softmax(_log_prob_parts(params, xb)[0], axis=-1)
    return _blocks.map_over_blocks(fn, [x], _block_rows(params, x))


@jax.jit
def predict(params: MixtureParams, x: ArrayLike) -> Array:
    """Hard assignment: the component of largest responsibility, (n,) integers."""
    x = _check_x(params, x)
    fn = lambda xb: jnp.argmax(_log_prob_parts(params, xb)[0], axis=-1)
    return _blocks.map_over_blocks(fn, [x], _block_rows(params, x))


@functools.partial(jax.jit, static_argnames="n_samples")
def sample(key: Array, params: MixtureParams, n_samples: int) -> tuple[Array, Array]:
    """Draw ``n_samples`` points from the mixture.

    Args:
      key: a JAX random key.
      params: the mixture.
      n_samples: number of points.

    Returns:
      ``(x, labels)``: points (n_samples, d) and the component each came from.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> p = MixtureParams(jnp.zeros(1), jnp.full((1, 2), 3.0), jnp.ones(1), "identity")
      >>> x, labels = sample(jax.random.key(0), p, 5)
      >>> x.shape, labels.shape
      ((5, 2), (5,))
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 0:
        raise ValueError(f"n_samples must be an integer >= 0, got {n_samples!r}")
    key_label, key_noise = jax.random.split(key)
    labels = jax.random.categorical(key_label, params.log_weights, shape=(n_samples,))
    z = jax.random.normal(key_noise, (n_samples, params.n_features), params.means.dtype)
    cov_type, chol = params.covariance_type, params.prec_chol
    if cov_type in ("full", "tied"):
        # x = mu + U^{-T} z has covariance U^{-T} U^{-1} = (U U^T)^{-1}. One solve per
        # component against all z keeps memory at O(n d) (no (n, d, d) gather).
        def colour(u):
            return jax.scipy.linalg.solve_triangular(u, z.T, lower=False, trans="T").T

        if cov_type == "tied":
            noise = colour(chol)
        else:
            def add_component(acc, j):
                return acc + jnp.where((labels == j)[:, None], colour(chol[j]), 0.0), None

            noise, _ = jax.lax.scan(add_component, jnp.zeros_like(z), jnp.arange(params.n_components))
    elif cov_type == "diag":
        noise = z / chol[labels]
    else:
        noise = z / chol[labels][:, None]
    return params.means[labels] + noise, labels


def n_parameters(params: MixtureParams) -> int:
    """Free parameters: weights ``k - 1``, means ``k d``, covariances by type."""
    k, d = params.n_components, params.n_features
    cov = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
        "identity": 0,
    }[params.covariance_type]
    return int(k - 1 + k * d + cov)


@jax.jit
def bic(params: MixtureParams, x: ArrayLike, sample_weight=None) -> Array:
    """Bayesian information criterion ``-2 log L + n_parameters log n`` (lower is better).

    With ``sample_weight``, ``log L`` is the weighted total and ``n`` the total
    weight: integer weights give the criterion of the repeated rows.
    """
    x = _check_x(params, x)
    w = _check_weight(x, sample_weight)
    return -2.0 * log_likelihood(params, x, w) + n_parameters(params) * jnp.log(_total_weight(x, w))


@jax.jit
def aic(params: MixtureParams, x: ArrayLike, sample_weight=None) -> Array:
    """Akaike information criterion ``-2 log L + 2 n_parameters`` (lower is better);
    ``log L`` weighted as in ``bic``."""
    x = _check_x(params, x)
    w = _check_weight(x, sample_weight)
    return -2.0 * log_likelihood(params, x, w) + 2 * n_parameters(params)


def is_finite(params: MixtureParams) -> Array:
    """True where every array of ``params`` is finite (a traced boolean)."""
    leaves = jax.tree.leaves(params)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves]))


def to_numpy(params: MixtureParams) -> dict[str, np.ndarray]:
    """Weights, means, covariances and precision factors as NumPy arrays."""
    return {
        "weights": np.asarray(params.weights),
        "means": np.asarray(params.means),
        "covariances": np.asarray(params.covariances),
        "precisions_cholesky": np.asarray(params.prec_chol),
    }
