r"""The compiled machinery of Gaussian mean shift: kernel sums in tiles, the loop, the merge.

``mogjax.meanshift`` holds the public functions; this module holds what they compile.
Points are kept centred on the data's (weighted) mean.

**Kernel sums in tiles.** For a block of seeds ``p`` and a tile of data rows ``x``
the exponent ``-||p - x||^2 / 2 sigma^2`` is computed one of two ways:

- *expanded*: in units of sigma (``p' = p / sigma``), one matrix product of
  ``[p', 1, |p'|^2]`` and ``[x', -|x'|^2 / 2, -1/2]``: fast, but its rounding error
  is about ``eps * r'^2 / 2`` for points ``r'`` sigmas from the center, which swamps
  the exponent once the data span many bandwidths (float32: ``r'`` above about 40);
- *exact*: from the differences, ``((p - x) / sigma)^2`` summed: as many operations
  but no cancellation and no overflow, so even a bandwidth of ``1e-20`` gives every
  distinct point its own mode.

``needs_exact`` chooses (on the host, from the data's spread): the expanded form
while its error stays below ``EXACT_THRESHOLD`` in exponent units.
"""

import jax
import jax.numpy as jnp
import numpy as np
from typing import NamedTuple

from mogjax import _blocks
from mogjax._typing import Array

ROWS = 512  # seeds per block
TILE_ELEMENTS = 2**20  # kernel entries per (block x tile): 4 MiB in float32
FAR = -1e30  # exponent of the data's padding rows (expanded form): exp gives exactly 0
EXACT_THRESHOLD = 1e-3  # largest rounding error of the expanded exponent allowed


def needs_exact(spread: float, bandwidth: float, dtype) -> bool:
    """Whether the expanded exponent's error, ``eps * spread^2 / 2 sigma^2``, is too big."""
    return float(np.finfo(dtype).eps) * spread**2 / (2 * bandwidth**2) > EXACT_THRESHOLD


def block_shape(m: int, n: int, d: int, block_size, exact: bool) -> tuple[int, int]:
    """(seeds per block, data rows per tile) from ``block_size`` (int, pair, None)."""
    rows, tile = block_size if isinstance(block_size, tuple) else (block_size, None)
    rows = _blocks.choose_block_size(m, 1, ROWS if rows is None else rows)
    if tile is None:
        tile = max(256, TILE_ELEMENTS // (rows * (d if exact else 1)))
    return rows, _blocks.choose_block_size(n, 1, tile)


class Tiles(NamedTuple):
    """The data as tiles: what the exponent reads, and ``[w x, w]`` for the sums."""

    kernel: Array  # (T, tile, d + 2): [x', -|x'|^2/2, -1/2]; or (T, tile, d): x, padding inf
    sums: Array  # (T, tile, d + 1)
    bandwidth: Array


def make_tiles(xc: Array, w: Array, bandwidth, tile: int, exact: bool) -> Tiles:
    """Centred data ``xc`` (n, d) with weights ``w`` (n,) as tiles of ``tile`` rows."""
    n, d = xc.shape
    pad = -n % tile
    xc, w = jnp.pad(xc, ((0, pad), (0, 0))), jnp.pad(w, (0, pad))
    if exact:
        kernel = jnp.where(w[:, None] > 0, xc, jnp.inf)
    else:
        xs = xc / bandwidth
        lin = jnp.where(w > 0, -0.5 * jnp.sum(xs * xs, axis=1), FAR)[:, None]
        kernel = jnp.concatenate([xs, lin, jnp.full_like(lin, -0.5)], axis=1)
    sums = jnp.concatenate([w[:, None] * xc, w[:, None]], axis=1)
    width = kernel.shape[1]
    return Tiles(kernel.reshape(-1, tile, width), sums.reshape(-1, tile, d + 1),
                 jnp.asarray(bandwidth, xc.dtype))


def block_update(pb: Array, tiles: Tiles, exact: bool) -> tuple[Array, Array]:
    """``u(p)`` and the log-density (unnormalised) of a block of seeds, (b, d)."""
    b = pb.shape[0]
    if exact:
        diff = lambda t: (pb[:, None, :] - tiles.kernel[t][None]) / tiles.bandwidth
        exponent = lambda t: -0.5 * jnp.sum(diff(t) ** 2, axis=-1)
    else:
        ps = pb / tiles.bandwidth
        pa = jnp.concatenate([ps, jnp.ones((b, 1), pb.dtype), jnp.sum(ps * ps, axis=1)[:, None]],
                             axis=1)
        exponent = lambda t: pa @ tiles.kernel[t].T
    zero = jnp.zeros(b, pb.dtype)
    n_tiles = tiles.kernel.shape[0]

    def sums(shift):
        body = lambda t, acc: acc + jnp.exp(exponent(t) + shift[:, None]) @ tiles.sums[t]
        return jax.lax.fori_loop(0, n_tiles, body, jnp.zeros((b, tiles.sums.shape[2]), pb.dtype))

    def rescue():  # subtract each row's largest exponent: the nearest point weighs 1
        top = lambda t, a: jnp.maximum(a, jnp.max(exponent(t), axis=1))
        shift = -jax.lax.fori_loop(0, n_tiles, top, zero + FAR)
        return sums(shift), shift

    s = sums(zero)
    tiny = jnp.finfo(pb.dtype).tiny * 2**24
    s, shift = jax.lax.cond(jnp.any(s[:, -1] < tiny), rescue, lambda: (s, zero))
    return s[:, :-1] / s[:, -1:], jnp.log(s[:, -1]) - shift


def move(pts: Array, logd: Array, n_act, tiles: Tiles, rows: int, exact: bool):
    """Update the first ``n_act`` rows of ``pts`` block by block; the rest stay.

    The last few moving seeds (at most ``rows // 8``) take one small block.
    """

    def blocks(size, n_blocks):
        def body(i, carry):
            block = jax.lax.dynamic_slice_in_dim(pts, i * size, size)
            put = lambda a, u: jax.lax.dynamic_update_slice_in_dim(a, u, i * size, 0)
            return jax.tree.map(put, carry, block_update(block, tiles, exact))

        return jax.lax.fori_loop(0, n_blocks, body, (pts, logd))

    small = max(1, rows // 8)
    new, ld = jax.lax.cond(n_act <= small, lambda: blocks(small, 1),
                           lambda: blocks(rows, (n_act + rows - 1) // rows))
    keep = jnp.arange(pts.shape[0]) < n_act
    return jnp.where(keep[:, None], new, pts), jnp.where(keep, ld, logd)


class ShiftState(NamedTuple):
    """The mean-shift loop's state."""

    pts: Array
    active: Array  # still moving
    root: Array  # travels for itself (follows no other seed)
    parent: Array  # the root each seed follows (itself for roots)
    logd: Array
    it: Array
    curve: Array
    mean_curve: Array
    n_active: Array


def compact(active: Array) -> tuple[Array, Array, Array]:
    """``(order, pos, n)``: a stable permutation putting the ``n`` active rows
    first, and its inverse (``x[order][pos] == x``)."""
    a = active.astype(jnp.int32)
    n = jnp.sum(a)
    pos = jnp.where(active, jnp.cumsum(a) - 1, n + jnp.cumsum(1 - a) - 1)
    order = jnp.zeros_like(pos).at[pos].set(jnp.arange(a.shape[0], dtype=jnp.int32))
    return order, pos, n


def coincide(pts, active, root, parent, width):
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


def iterate(pts, valid, xc, w, seed_w, bandwidth, thr, max_iter, rows, tile, blurring,
            exact) -> ShiftState:
    """Move the seeds until each moved at most ``thr`` (all together if blurring)."""
    m = pts.shape[0]
    fixed = None if blurring else make_tiles(xc, w, bandwidth, tile, exact)
    n_valid = jnp.sum(valid, dtype=jnp.int32)

    def body(s: ShiftState) -> ShiftState:
        tiles = make_tiles(s.pts, seed_w, bandwidth, tile, exact) if blurring else fixed
        order, pos, n_act = compact(s.active)  # moving seeds first
        moving = s.pts[order]
        new, ld = move(moving, s.logd[order], n_act, tiles, rows, exact)
        step = jnp.sqrt(jnp.sum((new - moving) ** 2, axis=1))
        pts, moved = new[pos], step[pos]
        active = s.active & (jnp.any(moved > thr) if blurring else moved > thr)
        root, parent = s.root, s.parent
        if not blurring:  # a sort per iteration: not worth it for the last few
            active, root, parent = jax.lax.cond(
                n_act > n_valid // 16, coincide, lambda *a: a[1:4],
                pts, active, root, parent, thr)
        t = s.it + 1
        return ShiftState(pts, active, root, parent, ld[pos], t,
                          s.curve.at[t].set(jnp.max(step)),
                          s.mean_curve.at[t].set(jnp.sum(step) / n_valid),
                          s.n_active.at[t].set(jnp.sum(active, dtype=jnp.int32)))

    nan = jnp.full(max_iter + 1, jnp.nan, pts.dtype)
    n_active = jnp.zeros(max_iter + 1, jnp.int32).at[0].set(n_valid)
    idx = jnp.arange(m, dtype=jnp.int32)
    start = ShiftState(pts, valid, valid, idx, jnp.zeros(m, pts.dtype), jnp.int32(0),
                       nan, nan, n_active)
    cond = lambda s: (s.it < max_iter) & jnp.any(s.active)
    return jax.lax.while_loop(cond, body, start)


def merge(pts: Array, valid: Array, score: Array, radius):
    """Greedy merge: the best-scoring free point takes the free points in radius.

    Returns ``(group, heads, k)``: every point's group (-1 for invalid rows), the
    index of each group's head (first ``k`` entries), the number of groups. Each
    round takes at least its head, so the loop ends whatever the values.
    """
    m = pts.shape[0]
    idx = jnp.arange(m, dtype=jnp.int32)

    def body(c):
        group, heads, k = c
        free = (group < 0) & valid
        j = jnp.argmax(jnp.where(free, jnp.nan_to_num(score, nan=-jnp.inf), -jnp.inf))
        j = jnp.where(free[j], j, jnp.argmax(free)).astype(jnp.int32)
        near = free & ((jnp.sum((pts - pts[j]) ** 2, axis=1) <= radius**2) | (idx == j))
        return jnp.where(near, k, group), heads.at[k].set(j), k + 1

    start = (jnp.full(m, -1, jnp.int32), jnp.zeros(m, jnp.int32), jnp.int32(0))
    return jax.lax.while_loop(lambda c: jnp.any((c[0] < 0) & valid), body, start)
