r"""Gaussian mean shift: every seed climbs the kernel density estimate of the data.

.. math::

   u(p) = \frac{\sum_i w_i K(x_i, p)\, x_i}{\sum_i w_i K(x_i, p)}, \qquad
   K(x, p) = \exp\Big(-\frac{\|p - x\|^2}{2\sigma^2}\Big)

is the lecture's update (``w_i`` counts identical rows of ``X``); it never lowers the
density estimate, and its limits are the modes. How it stays fast and small:

- Identical rows of ``X`` become one weighted row; identical seeds, one seed.
- The kernel is computed in tiles of (block of seeds) x (tile of data), never an
  ``n x n`` matrix. In a tile, the exponent ``-c ||p - x||^2`` (``c = 1/2 sigma^2``)
  is one matrix product of ``[p, 1, |p|^2]`` and ``[2c x, -c |x|^2, -c]`` (data
  centred on its mean, for float32 accuracy); one more product with ``[w x, w]``
  gives numerator and denominator.
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

from mogjax import _blocks
from mogjax import _validation as v
from mogjax._typing import Array, ArrayLike
from mogjax.gaussian import check_covariance_type
from mogjax.mixture import MixtureParams
from mogjax.bandwidth import BANDWIDTH_METHODS, estimate_bandwidth  # noqa: F401 (re-export)
from mogjax.suffstats import accumulate, m_step

ROWS = 512  # seeds per block
TILE_ELEMENTS = 2**20  # kernel entries per (block x tile): 4 MiB in float32
FAR = -1e30  # exponent of the data's padding rows: exp gives exactly 0
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


def _block_shape(m: int, n: int, block_size) -> tuple[int, int]:
    """(seeds per block, data rows per tile) from ``block_size`` (int, pair, None)."""
    rows, tile = block_size if isinstance(block_size, tuple) else (block_size, None)
    rows = _blocks.choose_block_size(m, 1, ROWS if rows is None else rows)
    tile = max(256, TILE_ELEMENTS // rows) if tile is None else tile
    return rows, _blocks.choose_block_size(n, 1, tile)


def _tiles(xc: Array, w: Array, scale, tile: int) -> tuple[Array, Array]:
    """Centred data as tiles of ``[2c x, -c|x|^2, -c]`` and of ``[w x, w]``."""
    n, d = xc.shape
    pad = -n % tile
    xc, w = jnp.pad(xc, ((0, pad), (0, 0))), jnp.pad(w, (0, pad))
    lin = jnp.where(w > 0, -scale * jnp.sum(xc * xc, axis=1), FAR)[:, None]
    xa = jnp.concatenate([2 * scale * xc, lin, jnp.full_like(lin, -scale)], axis=1)
    y = jnp.concatenate([w[:, None] * xc, w[:, None]], axis=1)
    return xa.reshape(-1, tile, d + 2), y.reshape(-1, tile, d + 1)


def _block_update(pb: Array, xa: Array, y: Array) -> tuple[Array, Array]:
    """``u(p)`` and the log-density (unnormalised) of a block of seeds, (b, d)."""
    b = pb.shape[0]
    ones, norms = jnp.ones((b, 1), pb.dtype), jnp.sum(pb * pb, axis=1)[:, None]
    pa = jnp.concatenate([pb, ones, norms], axis=1)
    zero = jnp.zeros(b, pb.dtype)

    def sums(shift):
        body = lambda t, acc: acc + jnp.exp(pa @ xa[t].T + shift[:, None]) @ y[t]
        acc = jnp.zeros((b, y.shape[2]), pb.dtype)
        return jax.lax.fori_loop(0, xa.shape[0], body, acc)

    def rescue():  # subtract each row's largest exponent: the nearest point weighs 1
        top = lambda t, a: jnp.maximum(a, jnp.max(pa @ xa[t].T, axis=1))
        shift = -jax.lax.fori_loop(0, xa.shape[0], top, zero + FAR)
        return sums(shift), shift

    s = sums(zero)
    tiny = jnp.finfo(pb.dtype).tiny * 2**24
    s, shift = jax.lax.cond(jnp.any(s[:, -1] < tiny), rescue, lambda: (s, zero))
    return s[:, :-1] / s[:, -1:], jnp.log(s[:, -1]) - shift


def _move(pts: Array, logd: Array, n_act, xa: Array, y: Array, rows: int):
    """Update the first ``n_act`` rows of ``pts`` block by block; the rest stay.

    The last few moving seeds (at most ``rows // 8``) take one small block.
    """

    def blocks(size, n_blocks):
        def body(i, carry):
            block = jax.lax.dynamic_slice_in_dim(pts, i * size, size)
            put = lambda a, u: jax.lax.dynamic_update_slice_in_dim(a, u, i * size, 0)
            return jax.tree.map(put, carry, _block_update(block, xa, y))

        return jax.lax.fori_loop(0, n_blocks, body, (pts, logd))

    small = max(1, rows // 8)
    new, ld = jax.lax.cond(n_act <= small, lambda: blocks(small, 1),
                           lambda: blocks(rows, (n_act + rows - 1) // rows))
    keep = jnp.arange(pts.shape[0]) < n_act
    return jnp.where(keep[:, None], new, pts), jnp.where(keep, ld, logd)


@functools.partial(jax.jit, static_argnames=("block_size",))
def mean_shift_step(points: ArrayLike, X: ArrayLike, bandwidth, *, block_size=None):
    r"""One mean-shift update of every point over the data, ``u(p)``: (m, d). Jitted.

    Args:
      points: where the kernels sit, (m, d).
      X: the data defining the density, (n, d).
      bandwidth: the Gaussian kernel's sigma (traced: no recompilation).
      block_size: seeds per block, or a pair (seeds per block, data rows per tile).

    Examples:
      >>> import jax.numpy as jnp
      >>> X = jnp.array([[0.0], [1.0], [2.0], [10.0]])
      >>> p = mean_shift_step(jnp.array([[1.0], [10.0]]), X, 1.0)
      >>> [round(float(u), 4) for u in p[:, 0]]
      [1.0, 10.0]
    """
    x = jnp.asarray(X)
    x = x.astype(jnp.result_type(x.dtype, jnp.float32))
    p = jnp.asarray(points, x.dtype)
    if x.ndim != 2 or p.ndim != 2 or p.shape[1] != x.shape[1]:
        raise ValueError(
            f"points (m, d) and X (n, d) must share d, got {p.shape}, {x.shape}")
    m, n = p.shape[0], x.shape[0]
    rows, tile = _block_shape(m, n, block_size)
    centre = jnp.mean(x, axis=0)
    xa, y = _tiles(x - centre, jnp.ones(n, x.dtype), 0.5 / bandwidth**2, tile)
    pts = jnp.pad(p - centre, ((0, -m % rows), (0, 0)))
    return _move(pts, jnp.zeros(pts.shape[0], x.dtype), m, xa, y, rows)[0][:m] + centre


class _State(NamedTuple):
    pts: Array
    active: Array  # still moving
    root: Array  # travels for itself (follows no other seed)
    parent: Array  # the root each seed follows (itself for roots)
    logd: Array
    it: Array
    curve: Array
    mean_curve: Array
    n_active: Array


def _compact(active: Array) -> tuple[Array, Array, Array]:
    """``(order, pos, n)``: a stable permutation putting the ``n`` active rows
    first, and its inverse (``x[order][pos] == x``)."""
    a = active.astype(jnp.int32)
    n = jnp.sum(a)
    pos = jnp.where(active, jnp.cumsum(a) - 1, n + jnp.cumsum(1 - a) - 1)
    order = jnp.zeros_like(pos).at[pos].set(jnp.arange(a.shape[0], dtype=jnp.int32))
    return order, pos, n


def _coincide(pts, active, root, parent, width):
    """Roots in one grid cell of side ``width`` travel as one from now on.

    A stopped root leads its cell if there is one (the others have reached its
    limit), else the first moving one; the others stop and follow the leader.
    """
    m, d = pts.shape
    cells = jnp.where(root[:, None], jnp.floor(pts / width), jnp.inf)
    idx = jnp.arange(m, dtype=jnp.int32)
    keys = (*cells.T, active.astype(jnp.int32), idx)
    *cols, _, order = jax.lax.sort(keys, num_keys=d + 1)
    cells = jnp.stack(cols, axis=1)
    same = jnp.all(cells[1:] == cells[:-1], axis=1) & jnp.isfinite(cells[1:, 0])
    first = jnp.concatenate([jnp.array([True]), ~same | (width <= 0)])
    lead = jax.lax.cummax(jnp.where(first, idx, 0))
    rep = jnp.zeros(m, jnp.int32).at[order].set(order[lead])
    follows = rep != idx
    return active & ~follows, root & ~follows, rep[parent]


def _iterate(pts, valid, xc, w, seed_w, scale, thr, max_iter, rows, tile, blurring):
    """Move the seeds until each moved at most ``thr`` (all together if blurring)."""
    m = pts.shape[0]
    fixed = None if blurring else _tiles(xc, w, scale, tile)
    n_valid = jnp.sum(valid, dtype=jnp.int32)

    def body(s: _State) -> _State:
        xa, y = _tiles(s.pts, seed_w, scale, tile) if blurring else fixed
        order, pos, n_act = _compact(s.active)  # moving seeds first
        moving = s.pts[order]
        new, ld = _move(moving, s.logd[order], n_act, xa, y, rows)
        step = jnp.sqrt(jnp.sum((new - moving) ** 2, axis=1))
        pts, moved = new[pos], step[pos]
        active = s.active & (jnp.any(moved > thr) if blurring else moved > thr)
        root, parent = s.root, s.parent
        if not blurring:  # a sort per iteration: not worth it for the last few
            active, root, parent = jax.lax.cond(
                n_act > n_valid // 16, _coincide, lambda *a: a[1:4],
                pts, active, root, parent, thr)
        t = s.it + 1
        return _State(pts, active, root, parent, ld[pos], t,
                      s.curve.at[t].set(jnp.max(step)),
                      s.mean_curve.at[t].set(jnp.sum(step) / n_valid),
                      s.n_active.at[t].set(jnp.sum(active, dtype=jnp.int32)))

    nan = jnp.full(max_iter + 1, jnp.nan, pts.dtype)
    n_active = jnp.zeros(max_iter + 1, jnp.int32).at[0].set(n_valid)
    idx = jnp.arange(m, dtype=jnp.int32)
    start = _State(pts, valid, valid, idx, jnp.zeros(m, pts.dtype), jnp.int32(0),
                   nan, nan, n_active)
    cond = lambda s: (s.it < max_iter) & jnp.any(s.active)
    return jax.lax.while_loop(cond, body, start)


def _merge(pts: Array, valid: Array, score: Array, radius):
    """Greedy merge: the best-scoring free point takes the free points in radius.

    Returns ``(group, heads, k)``: every point's group (-1 for invalid rows), the
    index of each group's head (first ``k`` entries), the number of groups.
    """
    m = pts.shape[0]

    def body(c):
        group, heads, k = c
        free = (group < 0) & valid
        j = jnp.argmax(jnp.where(free, score, -jnp.inf)).astype(jnp.int32)
        near = free & (jnp.sum((pts - pts[j]) ** 2, axis=1) <= radius**2)
        return jnp.where(near, k, group), heads.at[k].set(j), k + 1

    start = (jnp.full(m, -1, jnp.int32), jnp.zeros(m, jnp.int32), jnp.int32(0))
    return jax.lax.while_loop(lambda c: jnp.any((c[0] < 0) & valid), body, start)


def _nearest(xc: Array, centres: Array, k) -> Array:
    """Index of the nearest of the first ``k`` centres for every row, (n,)."""

    def body(j, c):
        d2 = jnp.sum((xc - centres[j]) ** 2, axis=1)
        return jnp.minimum(d2, c[0]), jnp.where(d2 < c[0], j, c[1])

    n = xc.shape[0]
    start = (jnp.full(n, jnp.inf, xc.dtype), jnp.zeros(n, jnp.int32))
    return jax.lax.fori_loop(0, k, body, start)[1]


@jax.jit
def nearest_center(X: ArrayLike, centers: ArrayLike) -> Array:
    """Index of the nearest centre of every row: (n, d), (k, d) -> (n,). Jitted.

    Examples:
      >>> nearest_center([[0.0], [4.0]], [[1.0], [3.0]]).tolist()
      [0, 1]
    """
    x, c = jnp.asarray(X), jnp.asarray(centers)
    shift = jnp.mean(c, axis=0)
    return _nearest(x - shift, c - shift, c.shape[0])


@functools.partial(jax.jit, static_argnames=("max_iter", "rows", "tile", "blurring",
                                             "by_seed"))
def _mean_shift_compiled(x, w, seeds, bandwidth, tol, merge_radius, orphan_radius,
                         cluster_all, *, max_iter, rows, tile, blurring, by_seed):
    """Iterate, merge the limits into modes, label and sort: one program."""
    centre = jnp.sum(w[:, None] * x, axis=0) / jnp.sum(w)
    xc, m = x - centre, seeds.shape[0]
    size = m + (-m % rows)
    pts = jnp.pad(seeds - centre, ((0, size - m), (0, 0)))
    seed_w = jnp.pad(w, (0, size - m)) if blurring else None
    s = _iterate(pts, jnp.arange(size) < m, xc, w, seed_w, 0.5 / bandwidth**2,
                 tol * bandwidth, max_iter, rows, tile, blurring)
    group, heads, k = _merge(s.pts, s.root, s.logd, merge_radius)
    centres = s.pts[heads]
    label = group[s.parent[: x.shape[0]]] if by_seed else _nearest(xc, centres, k)
    order = jnp.argsort(-jax.ops.segment_sum(w, label, size), stable=True)
    rank = jnp.zeros(size, jnp.int32).at[order].set(jnp.arange(size, dtype=jnp.int32))
    label, centres = rank[label], centres[order]  # largest first; ties: denser first
    far = jnp.sum((xc - centres[label]) ** 2, axis=1) > orphan_radius**2
    label = jnp.where(far & ~cluster_all, -1, label)
    kept = jnp.where(label >= 0, w, 0).astype(jnp.int32)
    counts = jax.ops.segment_sum(kept, jnp.maximum(label, 0), size)
    done = jnp.arange(max_iter) < s.it
    evals = jnp.sum(jnp.where(done, s.n_active[:-1], 0).astype(x.dtype)) * x.shape[0]
    limits = s.pts[s.parent[:m]] + centre
    return MeanShiftResult(centres + centre, label, counts, s.it, ~jnp.any(s.active),
                           s.curve, s.mean_curve, s.n_active, limits, evals), k


def _unique(a: np.ndarray):
    """Unique rows, the index of every row's unique row, and the multiplicities."""
    u, inverse, counts = np.unique(a, axis=0, return_inverse=True, return_counts=True)
    return u, inverse.reshape(-1), counts


def _positive(value, name: str) -> float:
    """A finite real number > 0 (a Python, NumPy or 0-d JAX scalar)."""
    if isinstance(value, (bool, np.bool_, str)) or np.ndim(value) != 0:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not np.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(
            f"Invalid value for {name!r}: {value}; it must be a finite number > 0")
    return float(value)


def bin_seeds(X: ArrayLike, bin_size: float, min_bin_freq: int = 1) -> np.ndarray:
    """scikit-learn's ``get_bin_seeds``: the centres of the grid cells of side
    ``bin_size`` holding at least ``min_bin_freq`` points, (m, d).

    Examples:
      >>> bin_seeds([[0.1, 0.0], [0.2, 0.1], [5.0, 5.0]], 1.0, 2).tolist()
      [[0.0, 0.0]]
    """
    x = np.asarray(v.check_data(X))
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
    X: ArrayLike, bandwidth: float, *, max_iter: int = 300, tol: float = 1e-3,
    seeds=None, bin_seeding: bool = False, min_bin_freq: int = 1,
    cluster_all: bool = True, merge_radius: float | None = None,
    blurring: bool = False, block_size=None,
) -> MeanShiftResult:
    r"""Gaussian mean shift clustering: loop, merge and labels in one program.

    Every seed moves by :math:`p \leftarrow u(p)` over the fixed data (the density
    estimate with kernel sigma ``bandwidth``) until it moves at most
    ``tol * bandwidth`` (then it stops, as scikit-learn's seeds do) or for
    ``max_iter`` iterations. Limits within ``merge_radius`` of a denser limit join
    its cluster (greedily, densest first), whose centre is that densest limit: a
    mode to within about ``tol * bandwidth``. With the default seeds (every point)
    a point's label is the cluster of its own limit (the lecture's rule); with
    other seeds, its nearest centre (scikit-learn's rule).

    Args:
      X: data, (n, d); float32 unless x64 is enabled (float32 stays float32).
      bandwidth: the Gaussian kernel's sigma (> 0). Not scikit-learn's flat
        radius ``h``: ``sigma = h / sqrt(d + 2)`` has the same spread.
      max_iter: iterations at most (>= 0).
      tol: a seed stops when it moves at most ``tol * bandwidth`` (>= 0).
      seeds: starting points, (m, d); default every row of ``X`` (which still
        defines the density).
      bin_seeding: start from the centres of the grid cells of side ``bandwidth``
        holding at least ``min_bin_freq`` points (scikit-learn's binning).
      min_bin_freq: see ``bin_seeding``.
      cluster_all: if False, points farther than ``bandwidth * sqrt(d + 2)`` (the
        flat radius of the same spread) from their centre get label -1.
      merge_radius: limits this close form one cluster; default ``bandwidth / 2``.
        Limits of one mode stop within about ``tol * bandwidth / (1 - rate)`` of
        it (rate: the linear convergence rate, < 1), far inside; two modes closer
        than ``sigma / 2`` are barely distinct (between two equal kernels whose
        modes are ``sigma / 2`` apart the density dips by 0.02%).
      blurring: move the data with the seeds (blurring mean shift); all points
        stop together when none moves more than ``tol * bandwidth``.
      block_size: seeds per block (default 512), or a pair (seeds per block, data
        rows per tile); peak memory is O(block x tile).

    Returns:
      ``MeanShiftResult``.

    Raises:
      ValueError: bad input, named.

    Examples:
      >>> import numpy as np
      >>> X = np.array([[1, 1], [2, 1], [1, 0], [4, 7], [3, 5], [3, 6]])
      >>> res = mean_shift(X, bandwidth=1.0)
      >>> res.labels.tolist(), res.counts.tolist()
      ([0, 0, 0, 1, 1, 1], [3, 3])
      >>> [[round(float(c), 2) for c in row] for row in res.centers]
      [[1.31, 0.69], [3.18, 5.84]]
    """
    x = v.check_data(X)
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
    data, inverse, weights = _unique(xn)
    by_seed = seeds is None and not bin_seeding  # label: the cluster of its own limit
    if seeds is not None:
        s = np.asarray(v.check_data(seeds, "seeds"), xn.dtype)
        if s.shape[1] != d:
            raise ValueError(f"seeds must have {d} features like X, got {s.shape}")
        seeds, seed_inverse, _ = _unique(s)
    elif bin_seeding:
        seeds, seed_inverse = bin_seeds(xn, bandwidth, min_bin_freq), None
    else:
        seeds, seed_inverse = data, inverse
    rows, tile = _block_shape(len(seeds), len(data), block_size)
    res, k = _mean_shift_compiled(
        jnp.asarray(data), jnp.asarray(weights, x.dtype), jnp.asarray(seeds), bandwidth,
        tol, merge_radius, bandwidth * math.sqrt(d + 2), bool(cluster_all),
        max_iter=max_iter, rows=rows, tile=tile, blurring=bool(blurring),
        by_seed=by_seed)
    k = int(k)
    limits = res.limits if seed_inverse is None else res.limits[seed_inverse]
    return res._replace(centers=res.centers[:k], counts=res.counts[:k],
                        labels=res.labels[inverse], limits=limits)


def modes_init(
    X: ArrayLike, bandwidth: float, *, covariance_type: str = "full",
    reg_covar: float = 1e-6, min_count: int | None = None, **mean_shift_kwargs,
) -> MixtureParams:
    """Initial mixture parameters from the mean-shift modes, for ``fit_em``.

    One component per cluster of at least ``min_count`` points (default ``d + 1``;
    the largest cluster is always kept; points of smaller ones join their nearest
    kept mode): weights are the cluster shares, means the modes, covariances the
    clusters' scatter plus ``reg_covar`` (one M-step from the hard labels).
    ``fit_em(X, init_params=modes_init(X, bandwidth))`` then fits k = the number
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
    x = v.check_data(X)
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
