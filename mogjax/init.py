"""Initial parameters, shared by EM, gradient ascent and every other algorithm.

Each method picks a first assignment of the points and takes one M-step from it:

``"random_from_data"``
    The lecture's start: ``k`` distinct points ``S`` drawn uniformly from ``X``;
    every point is assigned to its nearest center in ``S``; the first M-step uses
    those hard weights. (scikit-learn's method of the same name gives each center
    only its own point, so its covariances start at ``reg_covar``; ours start from
    the nearest-center cells.)
``"kmeans++"`` (also ``"k-means++"``)
    As above, with the centers chosen by greedy k-means++ (``2 + log k`` candidates
    per center, as scikit-learn).
``"kmeans"``
    Lloyd's k-means from k-means++ centers, and its final labels as hard weights
    (scikit-learn's default).
``"random"``
    Uniform random responsibilities, each row normalised (scikit-learn's
    ``"random"``).

User-given ``weights``, ``means`` and ``precisions`` replace the corresponding
initialised values, with scikit-learn's semantics: covariances not given are
estimated from the method's assignment. All randomness comes from an explicit key;
everything here is jittable and ``vmap``-able over keys.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mogjax import gaussian as gs
from mogjax._typing import Array
from mogjax.mixture import MixtureParams
from mogjax.suffstats import accumulate, m_step

INIT_METHODS = ("kmeans++", "kmeans", "random_from_data", "random")
# Rows an initialisation sees at most where the data are not one array in memory
# (chunked, sharded and online EM): a sample of the data, ``init_sample`` in their APIs.
INIT_SAMPLE = 65_536
ALIASES = {"k-means++": "kmeans++"}


def canonical_init(method: str) -> str:
    """The canonical name of an init method, or ``ValueError`` listing the choices."""
    method = ALIASES.get(method, method)
    if method not in INIT_METHODS:
        raise ValueError(
            f"Invalid value for 'init': {method!r}; it must be one of "
            f"{INIT_METHODS + tuple(ALIASES)}"
        )
    return method


def _squared_distances(x: Array, centers: Array) -> Array:
    """``||x_i - c_j||^2``, (n, k), through one matrix product (x already centerd)."""
    xx = jnp.sum(x * x, axis=1)[:, None]
    cc = jnp.sum(centers * centers, axis=1)[None, :]
    return jnp.maximum(xx - 2.0 * x @ centers.T + cc, 0.0)


def nearest_center(x: Array, centers: Array, k=None) -> Array:
    """Index of the nearest of the first ``k`` centers (default all) of every point:
    (n, d), (m, d) -> (n,). Distances from differences (exact to rounding, whatever
    the scale of ``x``), one center at a time: memory O(n d).

    Examples:
      >>> import jax.numpy as jnp
      >>> nearest_center(jnp.array([[0.0], [4.0]]), jnp.array([[1.0], [3.0]])).tolist()
      [0, 1]
    """
    x, centers = jnp.asarray(x), jnp.asarray(centers)

    def body(j, best):
        nearest_d2, index = best
        d2 = jnp.sum((x - centers[j]) ** 2, axis=1)
        return jnp.minimum(d2, nearest_d2), jnp.where(d2 < nearest_d2, j, index)

    n = x.shape[0]
    start = (jnp.full(n, jnp.inf, x.dtype), jnp.zeros(n, jnp.int32))
    k = centers.shape[0] if k is None else k
    return jax.lax.fori_loop(0, k, body, start)[1]


def kmeans_plusplus(key: Array, x: Array, k: int, sample_weight: Array | None = None) -> Array:
    """Greedy k-means++ centers chosen among the points: (n, d) -> (k, d).

    Each new center is the best of ``2 + floor(log k)`` candidates drawn with
    probability proportional to the squared distance to the nearest center so far
    (times the sample weight, when given: the first center is drawn by weight, and the
    best candidate is the one of least weighted inertia).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[0.0], [0.1], [10.0], [10.1]])
      >>> c = kmeans_plusplus(jax.random.key(0), x, 2)
      >>> sorted(round(float(v)) for v in c[:, 0])
      [0, 10]
    """
    n, d = x.shape
    trials = 2 + int(math.log(k))
    xc = x - jnp.mean(x, axis=0)
    xx = jnp.sum(xc * xc, axis=1)
    key, first_key = jax.random.split(key)
    if sample_weight is None:
        first = jax.random.randint(first_key, (), 0, n)
        log_w, w = 0.0, 1.0
    else:
        log_w = jnp.where(sample_weight > 0, jnp.log(sample_weight), -jnp.inf)
        first = jax.random.categorical(first_key, log_w)
        w = sample_weight
    d2 = jnp.maximum(xx - 2.0 * xc @ xc[first] + xx[first], 0.0)
    centers = jnp.zeros((k, d), x.dtype).at[0].set(xc[first])

    def add_center(j, carry):
        centers, d2, key = carry
        key, sub = jax.random.split(key)
        logits = jnp.where(d2 > 0, jnp.log(d2), -jnp.inf) + log_w
        logits = jnp.where(jnp.any(jnp.isfinite(logits)), logits, log_w)  # all covered
        cand = jax.random.categorical(sub, logits, shape=(trials,))
        cand_d2 = jnp.maximum(xx[None] - 2.0 * xc[cand] @ xc.T + xx[cand][:, None], 0.0)
        new_d2 = jnp.minimum(d2[None], cand_d2)
        best = jnp.argmin(jnp.sum(new_d2 * w, axis=1))
        return centers.at[j].set(xc[cand[best]]), new_d2[best], key

    centers, _, _ = jax.lax.fori_loop(1, k, add_center, (centers, d2, key))
    return centers + jnp.mean(x, axis=0)


class _LloydState(NamedTuple):
    centers: Array
    moved: Array  # squared distance the centers moved in the last step
    step: Array


def kmeans(
    key: Array, x: Array, k: int, max_iter: int = 100, tol: float = 1e-4,
    sample_weight: Array | None = None,
) -> tuple[Array, Array]:
    """Lloyd's k-means from k-means++ centers, compiled as one ``while_loop``.

    Stops when the centers move less than ``tol`` times the mean feature variance
    (scikit-learn's rule) or after ``max_iter`` iterations; a cluster that empties
    keeps its previous center. With ``sample_weight`` (n,) the centers are weighted
    means (and the variance a weighted one).

    Returns:
      ``(centers, labels)``: (k, d) and (n,).
    """
    if sample_weight is None:
        w, shift = jnp.ones(x.shape[0], x.dtype), jnp.mean(x, axis=0)
        threshold = tol * jnp.mean(jnp.var(x, axis=0))
    else:
        w, shift = sample_weight, jnp.average(x, axis=0, weights=sample_weight)
        threshold = tol * jnp.mean(jnp.average((x - shift) ** 2, axis=0, weights=w))
    xc = x - shift

    def labels_of(c):
        return jnp.argmin(_squared_distances(xc, c), axis=1)

    def body(s: _LloydState) -> _LloydState:
        labels = labels_of(s.centers)
        sums = jax.ops.segment_sum(xc if sample_weight is None else w[:, None] * xc, labels, k)
        counts = jax.ops.segment_sum(w, labels, k)
        new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], s.centers)
        return _LloydState(new, jnp.sum((new - s.centers) ** 2), s.step + 1)

    def cond(s: _LloydState):
        return (s.step < max_iter) & (s.moved > threshold)

    c0 = kmeans_plusplus(key, x, k, sample_weight) - shift
    s = jax.lax.while_loop(cond, body, _LloydState(c0, jnp.asarray(jnp.inf, x.dtype),
                                                   jnp.int32(0)))
    return s.centers + shift, labels_of(s.centers)


def initial_responsibilities(key: Array, x: Array, k: int, method: str,
                             sample_weight: Array | None = None) -> Array:
    """The (n, k) assignment a method starts from (one-hot except for ``"random"``).

    With ``sample_weight`` the centers are drawn by weight (rows of weight 0 never
    become centers) and k-means weighs its means.
    """
    method = canonical_init(method)
    n = x.shape[0]
    if method == "random":
        resp = jax.random.uniform(key, (n, k), x.dtype)
        return resp / jnp.sum(resp, axis=1, keepdims=True)
    if method == "kmeans":
        _, labels = kmeans(key, x, k, sample_weight=sample_weight)
    else:
        if method == "kmeans++":
            centers = kmeans_plusplus(key, x, k, sample_weight)
        else:
            p = None if sample_weight is None else sample_weight / jnp.sum(sample_weight)
            centers = x[jax.random.choice(key, n, (k,), replace=False, p=p)]
        labels = nearest_center(x, centers)
    return jax.nn.one_hot(labels, k, dtype=x.dtype)


def initialize(
    key: Array,
    x: Array,
    k: int,
    covariance_type: str = "full",
    method: str = "kmeans++",
    reg_covar=1e-6,
    *,
    weights: Array | None = None,
    means: Array | None = None,
    precisions: Array | None = None,
    equal_weights: bool = False,
    block_size: int | None = None,
    sample_weight: Array | None = None,
) -> MixtureParams:
    """Initial mixture parameters: ``method``'s assignment, then one M-step.

    Args:
      key: JAX random key.
      x: data, (n, d), already validated.
      k: number of components.
      covariance_type: one of ``COVARIANCE_TYPES``.
      method: one of ``INIT_METHODS``.
      reg_covar: added to the covariance diagonal in the M-step.
      weights, means, precisions: optional user-given values in scikit-learn's
        shapes (``weights_init``, ``means_init``, ``precisions_init``), validated by
        the caller; they replace what the method gives.
      equal_weights: start (and stay, for EM) at ``pi_j = 1/k``.
      block_size: rows per block of the statistics (``None``: chosen from the size).
      sample_weight: (n,) non-negative weights of the rows (``None``: all 1): the
        assignment and the M-step are weighted.

    Returns:
      ``MixtureParams``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[0.0, 0.0], [0.0, 1.0], [9.0, 9.0], [9.0, 10.0]])
      >>> p = initialize(jax.random.key(0), x, 2, "diag", "kmeans")
      >>> sorted(round(float(m), 4) for m in p.means[:, 1])
      [0.5, 9.5]
    """
    dtype = x.dtype
    if weights is None or means is None or (precisions is None and covariance_type != "identity"):
        resp = initial_responsibilities(key, x, k, method, sample_weight)
        if sample_weight is not None:
            resp = resp * sample_weight[:, None]
        stats = accumulate(x, resp, covariance_type, block_size=block_size)
        params = m_step(stats, reg_covar, equal_weights=equal_weights)
    else:
        d = x.shape[1]
        params = MixtureParams(
            jnp.zeros(k, dtype), jnp.zeros((k, d), dtype),
            jnp.ones(k, dtype) if covariance_type == "identity" else None, covariance_type,
        )
    if weights is not None:
        w = jnp.asarray(weights, dtype)
        params = params.replace(log_weights=jnp.log(w / jnp.sum(w)))
    if means is not None:
        params = params.replace(means=jnp.asarray(means, dtype))
    if precisions is not None:
        chol = gs.precision_cholesky_from_precisions(jnp.asarray(precisions, dtype), covariance_type)
        params = params.replace(prec_chol=chol)
    if equal_weights:
        params = params.replace(log_weights=jnp.full((k,), -math.log(k), dtype))
    return params


# ``initialize`` as its own compiled program, for host-side loops (chunked, online EM).
initialize_compiled = jax.jit(
    initialize, static_argnames=("k", "covariance_type", "method", "equal_weights", "block_size")
)
