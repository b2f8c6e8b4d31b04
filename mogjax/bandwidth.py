"""Bandwidth selection for mean shift and kernel density estimates.

``estimate_bandwidth`` follows scikit-learn's definition (the mean distance to the
``quantile * n``-th neighbour, a flat-kernel radius) or gives Scott's and Silverman's
Gaussian sigmas. Distances are computed in blocks of rows: memory O(block * n).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from mogjax import _blocks
from mogjax import _validation as v
from mogjax._typing import Array, ArrayLike

BANDWIDTH_METHODS = ("quantile", "scott", "silverman")


@jax.jit
def _squared_distances(xb: Array, x: Array) -> Array:
    """``||xb_i - x_j||^2`` from differences (exact to rounding), (b, n)."""
    return jnp.sum((xb[:, None, :] - x[None, :, :]) ** 2, axis=-1)


def estimate_bandwidth(
    X: ArrayLike, quantile: float = 0.3, n_samples: int | None = None, seed: int = 0,
    *, method: str = "quantile", block_size: int | None = None, random_state=None,
    n_jobs=None,
) -> np.floating:
    r"""A bandwidth from the data: scikit-learn's rule, or Scott's or Silverman's.

    ``method="quantile"`` is ``sklearn.cluster.estimate_bandwidth``: the mean over
    the points of the distance to their ``max(1, int(quantile * n))``-th nearest
    neighbour (the point itself counting as the first), on ``n_samples`` points
    drawn as scikit-learn draws them (``RandomState(seed).permutation``), so the
    value is scikit-learn's (to rounding), a NumPy float64 as scikit-learn's. It is a
    flat-kernel radius: the Gaussian sigma of the same spread is that over
    ``sqrt(d + 2)`` (what ``MeanShift(bandwidth=None)`` uses). Distances come in
    blocks of rows (memory O(block * n)); time is O(n^2).

    ``"scott"`` and ``"silverman"`` are Gaussian sigmas for density estimation,
    ``scipy.stats.gaussian_kde``'s factors ``n^{-1/(d+4)}`` and
    ``(n (d+2) / 4)^{-1/(d+4)}`` times the root mean feature variance: they aim
    at the density, not at clusters, and are usually smaller.

    Args:
      X: data, (n, d).
      quantile: in (0, 1]; 0.5 means the median neighbour (below ``1 / n``: the
        nearest, the point itself, so the bandwidth is 0).
      n_samples: use this many points (default all), for ``"quantile"``.
      seed: integer seed of the subsample.
      method: ``"quantile"``, ``"scott"`` or ``"silverman"``.
      block_size: rows per block of distances (default about 2**21 / (n d)).
      random_state: scikit-learn's name for ``seed`` (an int or a NumPy
        ``RandomState``), so its calls run unchanged; given, it replaces ``seed``.
      n_jobs: accepted for scikit-learn's calls; unused.

    Returns:
      The bandwidth, an ``np.float64`` (as scikit-learn's), computed in the working
      dtype (float32 unless x64 is on; float32 input stays float32).

    Examples:
      >>> X = [[1, 1], [2, 1], [1, 0], [4, 7], [3, 5], [3, 6]]
      >>> round(float(estimate_bandwidth(X, quantile=0.5)), 3)
      1.619
    """
    x = v.check_data(X)
    v.check_choice(method, "method", BANDWIDTH_METHODS)
    if method != "quantile":
        n, d = x.shape
        scale = math.sqrt(float(jnp.mean(jnp.var(x, axis=0, ddof=1 if n > 1 else 0))))
        sigma = (n if method == "scott" else n * (d + 2) / 4) ** (-1.0 / (d + 4)) * scale
        return np.float64(sigma)
    if isinstance(quantile, (bool, str)) or np.ndim(quantile) or not 0 < quantile <= 1:
        raise ValueError(
            f"Invalid value for 'quantile': {quantile!r}; it must be in (0, 1]")
    if n_samples is not None:
        n_samples = v.check_int(n_samples, "n_samples", 1)
        if isinstance(random_state, np.random.RandomState):
            rng = random_state
        else:
            rng = np.random.RandomState(v.check_int(
                seed if random_state is None else random_state,
                "seed" if random_state is None else "random_state", 0))
        x = x[rng.permutation(x.shape[0])[:n_samples]]
    n, d = x.shape
    k = max(1, int(n * quantile))
    rows = _blocks.choose_block_size(n, 1, block_size or max(1, 2**21 // (n * d)))
    total = 0.0
    for start in range(0, n, rows):  # select on the host: XLA's sort is ~10x slower
        d2 = np.asarray(_squared_distances(x[start : start + rows], x))
        total += float(np.sum(np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])))
    return np.float64(total / n)
