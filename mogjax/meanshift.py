r"""Gaussian mean shift: every seed climbs the kernel density estimate of the data.

.. math::

   u(p) = \frac{\sum_i w_i K(x_i, p)\, x_i}{\sum_i w_i K(x_i, p)}, \qquad
   K(x, p) = \exp\Big(-\frac{\|p - x\|^2}{2\sigma^2}\Big)

is the lecture's update (``w_i`` counts identical rows of ``x``); it never lowers the
density estimate, and its limits are the modes. How it stays fast and small:

- Identical rows of ``x`` become one weighted row; identical seeds, one seed.
- The kernel is computed in tiles of (block of seeds) x (tile of data), never an
  ``n x n`` matrix (``mogjax.meanshift_kernel``): from an expanded matrix product
  while the data span few bandwidths, from differences otherwise, so any positive
  bandwidth gives finite, correct modes.
- Every term is at most 1, and a seed that starts on the data keeps a denominator
  of at least 1 (its own term; the density only grows), so no maximum needs
  subtracting. A block where a denominator underflows (a seed some 12 sigma from
  all data, in float32) is recomputed with each row's largest exponent subtracted
  (log-sum-exp), so far points underflow harmlessly.
- A seed stops when it moves at most ``tol * bandwidth`` and costs nothing after:
  each iteration gathers the moving seeds to the front and computes their blocks
  only. Seeds in one grid cell of side ``tol * bandwidth`` (closer than the
  stopping rule can tell apart) travel as one from then on.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mogjax import _validation as v
from mogjax._typing import Array, ArrayLike
from mogjax.bandwidth import BANDWIDTH_METHODS, estimate_bandwidth  # noqa: F401 (re-export)
from mogjax.gaussian import check_covariance_type
from mogjax.init import nearest_center
from mogjax.meanshift_kernel import block_shape, iterate, make_tiles, merge, move, needs_exact
from mogjax.mixture import MixtureParams
from mogjax.suffstats import accumulate, m_step

MERGE_FRACTION = 0.5  # default merge radius, in bandwidths


class MeanShiftResult(NamedTuple):
    """What ``mean_shift`` returns; the curves are data.

    Attributes:
      centers: the modes, (k, d), largest cluster first.
      labels: cluster of every row of ``X``, (n,); -1 for orphans when
        ``cluster_all=False``.
      counts: points per cluster, (k,).
      n_iter: iterations run (the most any seed needed).
      converged: whether every seed stopped before ``max_iter``.
      curve: largest move per iteration, (max_iter + 1,): ``curve[t]`` for
        iteration ``t``; ``curve[0]`` and the entries after ``n_iter`` are NaN.
      mean_curve: mean move over all seeds per iteration (stopped seeds move 0).
      n_active: seeds still moving after ``t`` iterations, (max_iter + 1,).
      limits: where every seed stopped, (m, d) (m = n when the seeds are ``X``).
      kernel_evaluations: kernel values computed, (seed, data row) pairs.
    """

    centers: Array
    labels: Array
    counts: Array
    n_iter: Array
    converged: Array
    curve: Array
    mean_curve: Array
    n_active: Array
    limits: Array
    kernel_evaluations: Array


@functools.partial(jax.jit, static_argnames=("block_size",))
def mean_shift_step(points: ArrayLike, x: ArrayLike, bandwidth, *, block_size=None):
    r"""One mean-shift update of every point over the data, ``u(p)``: (m, d). Jitted.

    Kernels from differences (exact for any bandwidth).

    Args:
      points: where the kernels sit, (m, d).
      x: the data defining the density, (n, d).
      bandwidth: the Gaussian kernel's sigma (traced: no recompilation).
      block_size: seeds per block, or a pair (seeds per block, data rows per tile).

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.0], [1.0], [2.0], [10.0]])
      >>> p = mean_shift_step(jnp.array([[1.0], [10.0]]), x, 1.0)
      >>> [round(float(u), 4) for u in p[:, 0]]
      [1.0, 10.0]
    """
    x = jnp.asarray(x)
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    p = jnp.asarray(points, x.dtype)
    if x.ndim != 2 or p.ndim != 2 or p.shape[1] != x.shape[1]:
        raise ValueError(
            f"points (m, d) and x (n, d) must share d, got {p.shape}, {x.shape}")
    (m, d), n = p.shape, x.shape[0]
    rows, tile = block_shape(m, n, d, block_size, exact=True)
    center = jnp.mean(x, axis=0)
    tiles = make_tiles(x - center, jnp.ones(n, x.dtype), bandwidth, tile, exact=True)
    pts = jnp.pad(p - center, ((0, -m % rows), (0, 0)))
    return move(pts, jnp.zeros(pts.shape[0], x.dtype), m, tiles, rows, True)[0][:m] + center


@functools.partial(jax.jit, static_argnames=("max_iter", "rows", "tile", "blurring",
                                             "by_seed", "exact"))
def _mean_shift_compiled(x, w, mult, seeds, bandwidth, tol, merge_radius, orphan_radius,
                         cluster_all, *, max_iter, rows, tile, blurring, by_seed, exact):
    """Iterate, merge the limits into modes, label and sort: one program."""
    center = jnp.sum(w[:, None] * x, axis=0) / jnp.sum(w)
    xc, m = x - center, seeds.shape[0]
    size = m + (-m % rows)
    pts = jnp.pad(seeds - center, ((0, size - m), (0, 0)))
    seed_w = jnp.pad(w, (0, size - m)) if blurring else None
    s = iterate(pts, jnp.arange(size) < m, xc, w, seed_w, bandwidth, tol * bandwidth,
                max_iter, rows, tile, blurring, exact)
    group, heads, k = merge(s.pts, s.root, s.logd, merge_radius)
    centers = s.pts[heads]
    label = group[s.parent[: x.shape[0]]] if by_seed else nearest_center(xc, centers, k)
    order = jnp.argsort(-jax.ops.segment_sum(w, label, size), stable=True)
    rank = jnp.zeros(size, jnp.int32).at[order].set(jnp.arange(size, dtype=jnp.int32))
    label, centers = rank[label], centers[order]  # largest first; ties: denser first
    far = jnp.sum((xc - centers[label]) ** 2, axis=1) > orphan_radius**2
    label = jnp.where(far & ~cluster_all, -1, label)
    kept = jnp.where(label >= 0, mult, 0)
    counts = jax.ops.segment_sum(kept, jnp.maximum(label, 0), size)
    done = jnp.arange(max_iter) < s.it
    evals = jnp.sum(jnp.where(done, s.n_active[:-1], 0).astype(x.dtype)) * x.shape[0]
    limits = s.pts[s.parent[:m]] + center
    return MeanShiftResult(centers + center, label, counts, s.it, ~jnp.any(s.active),
                           s.curve, s.mean_curve, s.n_active, limits, evals), k


def _unique(a: np.ndarray):
    """Unique rows, the index of every row's unique row, and the multiplicities."""
    u, inverse, counts = np.unique(a, axis=0, return_inverse=True, return_counts=True)
    return u, inverse.reshape(-1), counts


def _positive(value, name: str) -> float:
    """``v.check_positive`` of a Python, NumPy or 0-d JAX scalar."""
    if isinstance(value, (bool, np.bool_, str)) or np.ndim(value) != 0:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return v.check_positive(float(value), name)


def bin_seeds(x: ArrayLike, bin_size: float, min_bin_freq: int = 1) -> np.ndarray:
    """scikit-learn's ``get_bin_seeds``: the centers of the grid cells of side
    ``bin_size`` holding at least ``min_bin_freq`` points, (m, d).

    Examples:
      >>> bin_seeds([[0.1, 0.0], [0.2, 0.1], [5.0, 5.0]], 1.0, 2).tolist()
      [[0.0, 0.0]]
    """
    x = np.asarray(v.check_data(x))
    bin_size = _positive(bin_size, "bin_size")
    min_bin_freq = v.check_int(min_bin_freq, "min_bin_freq", 1)
    cells, _, counts = _unique(np.round(x / bin_size))
    seeds = cells[counts >= min_bin_freq] * bin_size
    if len(seeds) == 0:
        raise ValueError(f"No bin of width {bin_size} holds min_bin_freq="
                         f"{min_bin_freq} points; lower min_bin_freq or raise the "
                         "bandwidth")
    return seeds.astype(x.dtype)


def mean_shift(
    x: ArrayLike, bandwidth: float, *, max_iter: int = 300, tol: float = 1e-3,
    seeds=None, bin_seeding: bool = False, min_bin_freq: int = 1,
    cluster_all: bool = True, merge_radius: float | None = None,
    blurring: bool = False, block_size=None, sample_weight=None,
) -> MeanShiftResult:
    r"""Gaussian mean shift clustering: loop, merge and labels in one program.

    Every seed moves by :math:`p \leftarrow u(p)` over the fixed data (the density
    estimate with kernel sigma ``bandwidth``) until it moves at most
    ``tol * bandwidth`` (then it stops, as scikit-learn's seeds do) or for
    ``max_iter`` iterations. Limits within ``merge_radius`` of a denser limit join
    its cluster (greedily, densest first), whose center is that densest limit: a
    mode to within about ``tol * bandwidth``. With the default seeds (every point)
    a point's label is the cluster of its own limit (the lecture's rule); with
    other seeds, its nearest center (scikit-learn's rule).

    Args:
      x: data, (n, d); float32 unless x64 is enabled (float32 stays float32).
      bandwidth: the Gaussian kernel's sigma (> 0). Not scikit-learn's flat
        radius ``h``: ``sigma = h / sqrt(d + 2)`` has the same spread.
      max_iter: iterations at most (>= 0).
      tol: a seed stops when it moves at most ``tol * bandwidth`` (>= 0).
      seeds: starting points, (m, d); default every row of ``x`` (which still
        defines the density).
      bin_seeding: start from the centers of the grid cells of side ``bandwidth``
        holding at least ``min_bin_freq`` points (scikit-learn's binning).
      min_bin_freq: see ``bin_seeding``.
      cluster_all: if False, points farther than ``bandwidth * sqrt(d + 2)`` (the
        flat radius of the same spread) from their center get label -1.
      merge_radius: limits this close form one cluster; default ``bandwidth / 2``.
        Limits of one mode stop within about ``tol * bandwidth / (1 - rate)`` of
        it (rate: the linear convergence rate, < 1), far inside; two modes closer
        than ``sigma / 2`` are barely distinct (between two equal kernels whose
        modes are ``sigma / 2`` apart the density dips by 0.02%).
      blurring: move the data with the seeds (blurring mean shift); all points
        stop together when none moves more than ``tol * bandwidth``.
      block_size: seeds per block (default 512), or a pair (seeds per block, data
        rows per tile); peak memory is O(block x tile).
      sample_weight: (n,) non-negative row weights: the density is the weighted
        kernel estimate :math:`\sum_i w_i K(x_i, p)` (identical rows add their
        weights; a row of weight 0 adds nothing to the density but is still a seed
        and labelled). ``counts`` still counts points.

    Returns:
      ``MeanShiftResult``.

    Raises:
      ValueError: bad input, named.

    Examples:
      >>> import numpy as np
      >>> x = np.array([[1, 1], [2, 1], [1, 0], [4, 7], [3, 5], [3, 6]])
      >>> res = mean_shift(x, bandwidth=1.0)
      >>> res.labels.tolist(), res.counts.tolist()
      ([0, 0, 0, 1, 1, 1], [3, 3])
      >>> [[round(float(c), 2) for c in row] for row in res.centers]
      [[1.31, 0.69], [3.18, 5.84]]
    """
    x = v.check_data(x)
    d = x.shape[1]
    bandwidth = _positive(bandwidth, "bandwidth")
    max_iter = v.check_int(max_iter, "max_iter", 0)
    tol = v.check_nonnegative(tol, "tol")
    merge_radius = bandwidth * MERGE_FRACTION if merge_radius is None else merge_radius
    merge_radius = v.check_nonnegative(merge_radius, "merge_radius")
    if blurring and (seeds is not None or bin_seeding):
        raise ValueError("blurring=True moves the data itself: seeds and bin_seeding "
                         "cannot be given")
    xn = np.asarray(x)
    data, inverse, mult = _unique(xn)
    weights = mult if sample_weight is None else np.bincount(
        inverse, weights=np.asarray(v.check_sample_weight(sample_weight, len(xn), np.float64)),
        minlength=len(data))
    by_seed = seeds is None and not bin_seeding  # label: the cluster of its own limit
    if seeds is not None:
        s = np.asarray(v.check_data(seeds, "seeds"), xn.dtype)
        if s.shape[1] != d:
            raise ValueError(f"seeds must have {d} features like x, got {s.shape}")
        seeds, seed_inverse, _ = _unique(s)
    elif bin_seeding:
        seeds, seed_inverse = bin_seeds(xn, bandwidth, min_bin_freq), None
    else:
        seeds, seed_inverse = data, inverse
    middle = np.average(data, axis=0, weights=weights)
    spread = max(np.abs(data - middle).max(), np.abs(seeds - middle).max()) * math.sqrt(d)
    exact = needs_exact(float(spread), bandwidth, xn.dtype)
    rows, tile = block_shape(len(seeds), len(data), d, block_size, exact)
    res, k = _mean_shift_compiled(
        jnp.asarray(data), jnp.asarray(weights, x.dtype), jnp.asarray(mult, jnp.int32),
        jnp.asarray(seeds), bandwidth,
        tol, merge_radius, bandwidth * math.sqrt(d + 2), bool(cluster_all),
        max_iter=max_iter, rows=rows, tile=tile, blurring=bool(blurring),
        by_seed=by_seed, exact=exact)
    k = int(k)
    limits = res.limits if seed_inverse is None else res.limits[seed_inverse]
    return res._replace(centers=res.centers[:k], counts=res.counts[:k],
                        labels=res.labels[inverse], limits=limits)


def modes_init(
    x: ArrayLike, bandwidth: float, *, covariance_type: str = "full",
    reg_covar: float = 1e-6, min_count: int | None = None, **mean_shift_kwargs,
) -> MixtureParams:
    """Initial mixture parameters from the mean-shift modes, for ``fit_em``.

    One component per cluster of at least ``min_count`` points (default ``d + 1``;
    the largest cluster is always kept; points of smaller ones join their nearest
    kept mode): weights are the cluster shares, means the modes, covariances the
    clusters' scatter plus ``reg_covar`` (one M-step from the hard labels).
    ``fit_em(x, init_params=modes_init(x, bandwidth))`` then fits k = the number
    of modes. ``mean_shift_kwargs`` go to ``mean_shift``.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> x = np.concatenate([rng.normal(m, 1.0, (100, 2)) for m in (-5, 5)])
      >>> p = modes_init(x, 1.0, covariance_type="diag")
      >>> p.n_components, sorted(round(float(m)) for m in p.means[:, 0])
      (2, [-5, 5])
    """
    check_covariance_type(covariance_type)
    x = v.check_data(x)
    res = mean_shift(x, bandwidth, **mean_shift_kwargs)
    if min_count is None:
        min_count = x.shape[1] + 1
    min_count = v.check_int(min_count, "min_count", 1)
    k = max(1, int(jnp.sum(res.counts >= min_count)))  # counts: largest first
    keep = (res.labels >= 0) & (res.labels < k)
    labels = jnp.where(keep, res.labels, nearest_center(x, res.centers[:k]))
    resp = jax.nn.one_hot(labels, k, dtype=x.dtype)
    params = m_step(accumulate(x, resp, covariance_type), reg_covar)
    return params.replace(means=res.centers[:k])
