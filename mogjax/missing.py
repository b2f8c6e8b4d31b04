r"""Missing values (NaN) marginalised: the E-step of exact EM for data missing at random.

EM with incomplete data (Dempster, Laird & Rubin 1977, sec. 4.1.3; Little & Rubin,
*Statistical Analysis with Missing Data*, ch. 8 and 11; for mixtures Ghahramani &
Jordan 1994, *Supervised learning from incomplete data via an EM approach*). A row
with observed coordinates ``o`` and missing ones ``m`` has the likelihood of its
observed coordinates, :math:`\sum_j \pi_j N(x_o; \mu_{j,o}, \Sigma_{j,oo})`. The
E-step gives the *expected* sufficient statistics under each component:

.. math::

   \hat x_{ij} = x_o \cup \big(\mu_{j,m} + B_j (x_o - \mu_{j,o})\big), \quad
   B_j = \Sigma_{j,mo}\Sigma_{j,oo}^{-1}, \qquad
   E[x x^T] = \hat x_{ij} \hat x_{ij}^T + C_{j}, \quad
   C_{j,mm} = \Sigma_{j,mm} - B_j \Sigma_{j,om},

so the M-step is unchanged and EM stays exact EM: the observed-data likelihood
never decreases.

**Matrix products within a pattern.** Rows are sorted by missingness pattern and
cut into blocks of one pattern. Within a pattern the completion is affine in the
row, :math:`\hat y_{ij} = T_j y_i + t_j` (``y = x - c`` with the missing entries
set to 0, :math:`T_j` the identity on ``o`` plus :math:`B_j` on the rows ``m``,
:math:`t_j = (I - T_j)(\mu_j - c)`) and :math:`C_j` is constant, so with the block's
complete-data moments :math:`W_j = \sum_i w_{ij}`, :math:`s_j = \sum_i w_{ij} y_i`,
:math:`M_j = \sum_i w_{ij} y_i y_i^T`,

.. math::

   \sum_i w_{ij} \hat y_{ij} = T_j s_j + W_j t_j, \qquad
   \sum_i w_{ij} E[y y^T] = T_j M_j T_j^T + T_j s_j t_j^T + t_j s_j^T T_j^T
   + W_j (t_j t_j^T + C_j).

The observed coordinates' log-density is a quadratic form with the marginal
precision :math:`\Sigma_{j,oo}^{-1} \oplus 0`, so it is ``features @ theta_p`` with
the complete-data quadratic features of ``y`` (``mogjax.gaussian``) and one
``theta`` per pattern. A block therefore costs the complete-data E-step's two matrix
products (``mogjax.estep.block_statistics``, batched over the blocks of a step);
``(W, s, M)`` are summed per pattern and transformed once per pattern and E-step:
work ``O(n k D + p k d^3)`` for ``p`` patterns, ``D`` the features' width. The
conditioning (:math:`\Sigma_{oo}^{-1}`, :math:`B_j`, :math:`C_j` and
:math:`|\Sigma_{oo}|`) is one sweep of every covariance on the observed coordinates
(``sweep_observed``). Chunked, sharded, online and batched-seed EM use the same
pieces (``pattern_terms``, ``pattern_moments``, ``expected_stats``): per-pattern
moments add across chunks and devices like the complete-data statistics.

The per-pattern terms take ``O(p k (D + d^2))`` memory: fine for the few hundred
patterns of a low-dimensional data set; with a pattern per row (many columns, many
holes) the cost is that of conditioning every row separately.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mogjax import _blocks
from mogjax import _validation as v
from mogjax import gaussian as gs
from mogjax._typing import Array
from mogjax.estep import FEATURE_CACHE_BYTES, block_statistics
from mogjax.mixture import MixtureParams
from mogjax.suffstats import SufficientStats

PATTERN_BLOCK = 128  # most rows per block; every block holds rows of one pattern
PADDING_SHARE = 8  # blocks are shrunk until padding adds at most 1/PADDING_SHARE of n
PATTERN_GROUP = 16  # patterns conditioned at once: their (k, d, d) matrices stay in cache


class MissingData(NamedTuple):
    """Data with missing entries, grouped by pattern into blocks of ``block`` rows.

    The rows are sorted by pattern and every pattern's rows padded (weight 0) to a
    whole number of blocks, so a block holds one pattern (the statistics are sums, so
    the order is free).

    Attributes:
      x: (N, d) rows, missing entries set to 0, padding rows 0.
      real: (N,) 1 for the input's rows, 0 for padding.
      pattern: (N,) every row's pattern (constant over a block).
      patterns: (p, d) booleans, the patterns of observed coordinates.
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


def pattern_keys(observed: np.ndarray) -> np.ndarray:
    """One sortable key per row of a boolean (n, d) array (its bits, packed)."""
    packed = np.ascontiguousarray(np.packbits(observed, axis=1))
    return packed.view(np.dtype((np.void, packed.shape[1]))).ravel()


def patterns_of_keys(keys: np.ndarray, n_features: int) -> np.ndarray:
    """The boolean rows (p, d) of ``pattern_keys``."""
    packed = np.frombuffer(keys.tobytes(), np.uint8).reshape(len(keys), -1)
    return np.unpackbits(packed, axis=1, count=n_features).astype(bool)


def find_patterns(x) -> tuple[np.ndarray, np.ndarray]:
    """``(patterns (p, d) bool, rows per pattern (p,))`` of the observed entries of
    ``x`` (n, d) holding NaN; host-side.

    Raises:
      ValueError: a row with every entry missing (named).
    """
    observed = ~np.isnan(np.asarray(x))
    empty = ~observed.any(axis=1)
    if empty.any():
        raise ValueError(f"row {int(np.argmax(empty))} of X has every entry missing (NaN); "
                         "remove such rows: they carry no information")
    keys, first, counts = np.unique(pattern_keys(observed), return_index=True, return_counts=True)
    return observed[first], counts


def choose_block(n: int, n_patterns: int) -> int:
    """Rows per block: the largest power of two up to ``PATTERN_BLOCK`` whose padding
    (at most ``block - 1`` rows per pattern) adds at most ``n / PADDING_SHARE`` rows."""
    block = PATTERN_BLOCK
    while block > 1 and n_patterns * (block - 1) * PADDING_SHARE > n:
        block //= 2
    return block


def split_missing(x, dtype, block: int | None = None, patterns=None,
                  n_rows: int | None = None) -> MissingData:
    """``MissingData`` of ``x`` (n, d) holding NaN; host-side.

    Args:
      x: the rows, NaN where missing.
      dtype: the compute dtype.
      block: rows per block (default ``choose_block``).
      patterns: (p, d) booleans holding every pattern of ``x`` (default: those of
        ``x``); a fixed table lets chunks of one data set share one program.
      n_rows: pad ``x`` (with weight-0 rows) to this many rows, a multiple of
        ``block`` (default: as few as the blocks need).

    Raises:
      ValueError: a row with every entry missing (named), a pattern not in
        ``patterns``, or more rows than ``n_rows``.
    """
    x = np.asarray(x)
    if patterns is None:
        patterns, _ = find_patterns(x)
    patterns = np.asarray(patterns, bool)
    observed = ~np.isnan(x)
    empty = ~observed.any(axis=1)
    if empty.any():
        raise ValueError(f"row {int(np.argmax(empty))} of X has every entry missing (NaN); "
                         "remove such rows: they carry no information")
    table = pattern_keys(patterns)
    order_t = np.argsort(table)
    keys = pattern_keys(observed)
    at = np.minimum(np.searchsorted(table[order_t], keys), len(table) - 1)
    pattern = order_t[at]
    if np.any(table[pattern] != keys):
        raise ValueError("a row's missingness pattern is not in the given patterns")
    counts = np.bincount(pattern, minlength=len(patterns))
    if block is None:
        block = choose_block(x.shape[0], int(np.count_nonzero(counts)))
    padded = -(-counts // block) * block  # each pattern's rows, padded to whole blocks
    starts = np.concatenate([[0], np.cumsum(padded)[:-1]])
    order = np.argsort(pattern, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[
        pattern[order]]
    rows = starts[pattern] + rank
    total = int(padded.sum())
    if n_rows is not None:
        if n_rows < total or n_rows % block:
            raise ValueError(f"n_rows={n_rows} cannot hold {total} rows in blocks of {block}")
        total = n_rows
    out = np.zeros((total, x.shape[1]))
    out[rows] = np.where(observed, x, 0.0)
    real = np.zeros(total)
    real[rows] = 1.0
    pattern_rows = np.zeros(total, np.int32)
    pattern_rows[: int(padded.sum())] = np.repeat(np.arange(len(patterns)), padded)
    return MissingData(jnp.asarray(out, dtype), jnp.asarray(real, dtype),
                       jnp.asarray(pattern_rows, jnp.int32), jnp.asarray(patterns),
                       jnp.asarray(rows, jnp.int32), block)


# ---- per pattern: the observed coordinates' density and the completion ----


class PatternTerms(NamedTuple):
    """Per pattern ``p`` the marginal log-density of a row ``y = x - center`` (missing
    entries 0) is ``log_const[p] - 0.5 * (quadratic_features(y) @ theta[p] + offset[p])``."""

    theta: Array  # (p, D, k)
    offset: Array  # (p, k)
    log_const: Array  # (p, k)


class Swept(NamedTuple):
    """Every full covariance (k, d, d) swept on every pattern's observed coordinates
    (``sweep_observed``): ``g`` (p, k, d, d) and ``half_log_det`` (p, k), the
    observed block's ``log |Sigma_oo| / 2``."""

    g: Array
    half_log_det: Array


def sweep_observed(params: MixtureParams, patterns: Array) -> Swept:
    r"""Beaton's sweep operator (Little & Rubin, sec. 7.4) on the observed coordinates
    of every pattern, for every component's covariance.

    Sweeping :math:`\Sigma` on the pivots ``o`` leaves :math:`-\Sigma_{oo}^{-1}` in
    the ``o x o`` block, :math:`B = \Sigma_{mo}\Sigma_{oo}^{-1}` in ``m x o`` and the
    conditional covariance :math:`\Sigma_{mm} - B \Sigma_{om}` in ``m x m``; the
    product of the pivots is :math:`|\Sigma_{oo}|`. Plain elementwise arithmetic,
    ``d`` rank-one updates of all ``p k`` matrices at once: no LAPACK call (whose
    batched kernels share XLA's thread pool and can wait on each other when two run
    at once on a small machine).
    """
    cov = gs.full_covariances(params.covariances, params.covariance_type,
                              params.n_components, params.n_features)
    d = cov.shape[-1]

    index = jnp.arange(d)

    def one(mask):
        def pivot(j, carry):  # one elementwise pass over the (k, d, d) matrices
            g, log_det = carry
            on = mask[j]
            h = jnp.where(on, g[:, j, j], 1.0)[:, None, None]
            col, row = g[:, :, j][:, :, None], g[:, j, :][:, None, :]
            at_row, at_col = (index == j)[:, None], (index == j)[None, :]
            swept = jnp.where(at_row & at_col, -1.0 / h, jnp.where(
                at_col, col / h, jnp.where(at_row, row / h, g - col * row / h)))
            return (jnp.where(on, swept, g),
                    log_det + jnp.where(on, jnp.log(h[:, 0, 0]), 0.0))

        g, log_det = jax.lax.fori_loop(0, d, pivot, (cov, jnp.zeros(cov.shape[0], cov.dtype)))
        return g, 0.5 * log_det

    return Swept(*jax.lax.map(one, patterns, batch_size=PATTERN_GROUP))


def pattern_terms(params: MixtureParams, patterns: Array, center: Array,
                  swept: Swept | None = None) -> PatternTerms:
    """``PatternTerms`` of every pattern (p, d) under every component (``swept``:
    ``sweep_observed``'s, for ``full``/``tied``, when already computed)."""
    cov_type, d = params.covariance_type, params.n_features
    dtype = params.means.dtype
    log_2pi = jnp.log(2 * jnp.pi).astype(dtype)
    if cov_type in ("full", "tied"):
        swept = sweep_observed(params, patterns) if swept is None else swept
        o = patterns.astype(dtype)
        prec = -(o[:, None, :, None] * o[:, None, None, :]) * swept.g  # Sigma_oo^-1 (+) 0
        mu = params.means - center
        rows, cols = np.triu_indices(d)
        scale = np.where(rows == cols, 1.0, 2.0).astype(dtype)
        prec_mu = jnp.einsum("pkij,kj->pki", prec, mu)
        theta = jnp.swapaxes(jnp.concatenate(
            [prec[..., rows, cols] * scale, -2.0 * prec_mu], axis=-1), -1, -2)
        offset = jnp.sum(mu * prec_mu, axis=-1)
        log_const = (params.log_weights - swept.half_log_det
                     - 0.5 * jnp.sum(o, axis=1, keepdims=True) * log_2pi)
        return PatternTerms(theta, offset, log_const)

    def one(mask):  # independent coordinates: drop the missing ones from mean and log-det
        o = mask.astype(dtype)
        means = center + o * (params.means - center)
        theta, offset = gs.precision_features(means, params.prec_chol, cov_type, center)
        log_prec = jnp.log(params.prec_chol)
        half_log_det = (jnp.sum(o * log_prec, axis=-1) if cov_type == "diag"
                        else jnp.sum(o) * log_prec)
        log_const = params.log_weights + half_log_det - 0.5 * jnp.sum(o) * log_2pi
        return theta, offset, log_const

    return PatternTerms(*jax.vmap(one)(patterns))


def completion(params: MixtureParams, patterns: Array, center: Array,
               swept: Swept | None = None):
    r"""``(T (p, k, d, d), t (p, k, d), C (p, k, d, d))``: under component ``j`` a
    row ``y = x - center`` of pattern ``p`` (missing entries 0) completes to
    :math:`T y + t` with conditional covariance ``C`` (zero outside the missing block).
    """
    swept = sweep_observed(params, patterns) if swept is None else swept
    o = patterns.astype(swept.g.dtype)[:, None]  # (p, 1, d)
    gain = swept.g * ((1.0 - o)[..., :, None] * o[..., None, :])  # B, rows m, columns o
    t_mat = gain + o[..., :, None] * jnp.eye(o.shape[-1], dtype=o.dtype)
    mu = params.means - center
    shift = mu - jnp.einsum("pkde,ke->pkd", t_mat, mu)
    return t_mat, shift, swept.g * ((1.0 - o)[..., :, None] * (1.0 - o)[..., None, :])


# ---- the E-step: complete-data products per block, one transform per pattern ----


class PatternMoments(NamedTuple):
    """Complete-data sums per pattern and component of the rows ``y`` (missing entries
    0): ``counts`` (p, k) and ``moments`` (p, k, D), ``resp^T @ features`` of the
    pattern's rows; ``log_likelihood`` (scalar) and ``n`` (the rows' weight)."""

    n: Array
    log_likelihood: Array
    counts: Array
    moments: Array

    def __add__(self, other: "PatternMoments") -> "PatternMoments":
        return PatternMoments(*(a + b for a, b in zip(self, other)))


def observed_features(data: MissingData, center: Array, covariance_type: str,
                      x: Array | None = None, pattern: Array | None = None) -> Array:
    """Quadratic features of ``y = x - center`` with every missing entry 0: (N, D)."""
    x = data.x if x is None else x
    pattern = data.pattern if pattern is None else pattern
    y = jnp.where(data.patterns[pattern], x - center, 0.0)
    return gs.quadratic_features(y, covariance_type)


def pattern_moments(terms: PatternTerms, data: MissingData, center: Array,
                    covariance_type: str, weight: Array, features: Array | None = None,
                    block_size: int | None = None) -> PatternMoments:
    """``PatternMoments`` of ``data`` under the density ``terms``.

    ``weight`` (N,): the rows' weights laid out as ``data.x`` (``data.place``);
    ``features``: the rows' ``observed_features`` when precomputed. Each step takes a
    group of blocks: its densities and moments are the complete-data
    ``block_statistics`` batched over the blocks (each with its pattern's ``theta``).
    """
    b = data.block
    n_total, d = data.x.shape
    p, width, k = terms.theta.shape
    n_blocks = n_total // b
    block_pattern = data.pattern[::b]
    group_size = max(1, _blocks.choose_block_size(n_total, width + k, block_size) // b)
    if features is None:
        rows = data.x.reshape(n_blocks, b, d)
        feats = lambda xb, pb: observed_features(
            data, center, covariance_type, xb.reshape(-1, d), jnp.repeat(pb, b)
        ).reshape(xb.shape[0], b, width)
    else:
        rows = features.reshape(n_blocks, b, width)
        feats = lambda fb, pb: fb
    stats = jax.vmap(block_statistics)

    def group(xb, wb, pb):  # the group's sums, added into the per-pattern totals
        ll, counts, moments = stats(feats(xb, pb), terms.theta[pb], terms.offset[pb],
                                    terms.log_const[pb], wb)
        return lambda acc: (acc[0] + jnp.sum(ll), acc[1].at[pb].add(counts),
                            acc[2].at[pb].add(moments))

    arrays = [rows, weight.reshape(n_blocks, b), block_pattern]
    n_groups, n_full = n_blocks // group_size, (n_blocks // group_size) * group_size
    dtype = weight.dtype
    zeros = (jnp.zeros((), dtype), jnp.zeros((p, k), dtype), jnp.zeros((p, k, width), dtype))
    # the totals start from the first group's sums, not from zeros: inside shard_map
    # the loop's carry must vary over the mesh as the sums do
    take = lambda start, size: [jax.lax.dynamic_slice_in_dim(a, start, size) for a in arrays]
    acc = group(*take(0, min(group_size, n_blocks)))(zeros)
    if n_groups > 1:
        acc = jax.lax.fori_loop(1, n_groups,
                                lambda i, acc: group(*take(i * group_size, group_size))(acc),
                                acc)
    if n_groups >= 1 and n_full < n_blocks:
        acc = group(*[a[n_full:] for a in arrays])(acc)
    return PatternMoments(jnp.sum(weight), *acc)


def expected_stats(params: MixtureParams, patterns: Array, center: Array,
                   sums: PatternMoments, swept: Swept | None = None) -> SufficientStats:
    """The expected sufficient statistics (module doc) from the per-pattern sums:
    one transform per pattern and component."""
    cov_type, d = params.covariance_type, params.n_features
    w, mom = sums.counts, sums.moments
    if cov_type in ("full", "tied"):
        swept = sweep_observed(params, patterns) if swept is None else swept

        def one(args):  # one pattern's expected sums (k, d), (k, d, d)
            mask, g, half_log_det, w, mom = args
            t_mat, shift, cond = (a[0] for a in completion(
                params, mask[None], center, Swept(g[None], half_log_det[None])))
            second = gs.unpack_second_moments(mom[:, :-d], d, "full")
            ts = jnp.einsum("kde,ke->kd", t_mat, mom[:, -d:])
            cross = ts[:, :, None] * shift[:, None, :]
            sum_xx = (t_mat @ second @ jnp.swapaxes(t_mat, -1, -2) + cross
                      + jnp.swapaxes(cross, -1, -2)
                      + w[:, None, None] * (shift[:, :, None] * shift[:, None, :] + cond))
            return ts + w[:, None] * shift, sum_xx

        sum_x, sum_xx = jax.lax.map(one, (patterns, swept.g, swept.half_log_det, w, mom),
                                    batch_size=PATTERN_GROUP)
        sum_x, sum_xx = jnp.sum(sum_x, axis=0), jnp.sum(sum_xx, axis=0)
    else:  # the completion keeps the observed entries and fills in the mean
        o = patterns.astype(mom.dtype)[:, None, :]  # (p, 1, d)
        var = jnp.diagonal(gs.full_covariances(params.covariances, cov_type,
                                               params.n_components, d), axis1=-2, axis2=-1)
        shift = (1.0 - o) * (params.means - center)  # (p, k, d)
        extra = w[..., None] * (shift**2 + (1.0 - o) * var)
        sum_x = jnp.sum(mom[..., -d:] + w[..., None] * shift, axis=0)
        if cov_type == "diag":
            sum_xx = jnp.sum(mom[..., :d] + extra, axis=0)
        else:
            sum_xx = jnp.sum(mom[..., 0] + jnp.sum(extra, axis=-1), axis=0)
    return SufficientStats(sums.n, sums.log_likelihood, center, jnp.sum(w, axis=0), sum_x,
                           sum_xx, cov_type)


def caches_observed_features(data: MissingData, covariance_type: str) -> bool:
    """Whether the E-step precomputes ``observed_features`` (``FEATURE_CACHE_BYTES``)."""
    width = gs.n_quadratic_features(data.x.shape[1], covariance_type)
    return data.x.shape[0] * width * data.x.dtype.itemsize <= FEATURE_CACHE_BYTES


def missing_e_step(data: MissingData, center: Array, covariance_type: str, weight=None,
                   block_size: int | None = None):
    """``params -> SufficientStats``: the E-step over ``data`` (features precomputed
    once when they fit ``FEATURE_CACHE_BYTES``); ``weight`` (n,) the input rows'."""
    w = data.place(weight)
    features = (observed_features(data, center, covariance_type)
                if caches_observed_features(data, covariance_type) else None)

    def e_step(params: MixtureParams) -> SufficientStats:
        swept = (sweep_observed(params, data.patterns)
                 if covariance_type in ("full", "tied") else None)
        terms = pattern_terms(params, data.patterns, center, swept)
        sums = pattern_moments(terms, data, center, covariance_type, w, features, block_size)
        return expected_stats(params, data.patterns, center, sums, swept)

    return e_step


def missing_stats(params: MixtureParams, data: MissingData, center: Array,
                  weight=None) -> SufficientStats:
    """Expected sufficient statistics (module doc) and the observed-data log-likelihood;
    ``weight`` (n,) the input rows' sample weights."""
    return missing_e_step(data, center, params.covariance_type, weight)(params)


def imputed_center(data: MissingData, weight=None) -> Array:
    """The (weighted) mean of every column over its observed entries, (d,) (0 for a
    column with none)."""
    wo = data.patterns[data.pattern] * data.place(weight)[:, None]
    mass = jnp.sum(wo, axis=0)
    return jnp.where(mass > 0, jnp.sum(wo * data.x, axis=0) / jnp.where(mass > 0, mass, 1), 0)


def start_rows(data: MissingData, center: Array) -> Array:
    """The input rows (n, d) with every missing entry at ``center``'s value."""
    observed = data.patterns[data.pattern][data.rows]
    return jnp.where(observed, data.x[data.rows], center)


@jax.jit
def _impute(params: MixtureParams, data: MissingData) -> Array:
    center = imputed_center(data)
    swept = sweep_observed(params, data.patterns)
    terms = pattern_terms(params, data.patterns, center,
                          swept if params.covariance_type in ("full", "tied") else None)
    t_mat, shift, _ = completion(params, data.patterns, center, swept)

    def fn(xb, pb):
        feats = observed_features(data, center, params.covariance_type, xb, pb)
        maha = jnp.einsum("bD,bDk->bk", feats, terms.theta[pb]) + terms.offset[pb]
        resp = jax.nn.softmax(terms.log_const[pb] - 0.5 * jnp.maximum(maha, 0.0), axis=1)
        y = jnp.where(data.patterns[pb], xb - center, 0.0)
        filled = jnp.einsum("bkde,be->bkd", t_mat[pb], y) + shift[pb]
        return center + jnp.einsum("bk,bkd->bd", resp, filled)

    rows = max(1, min(data.x.shape[0], 2**21 // (params.n_components * params.n_features**2)))
    return _blocks.map_over_blocks(fn, [data.x, data.pattern], rows)[data.rows]


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
