r"""Exact EM over data larger than memory: chunks in, the in-memory fit out.

EM's E-step reduces to sufficient statistics that add up across rows
(``mogjax.suffstats``), so one iteration over chunked data is

.. math::

   s = \sum_{c} \hat s(\theta_t; X_c), \qquad \theta_{t+1} = \text{M-step}(s),

with every chunk's statistics taken about one fixed center (the data mean, as the
in-memory fit). The fit is the same full-batch EM as ``mogjax.fit_em``: same
stopping rule, same curve (``curve[0]`` for the initial parameters, the mean
log-likelihood over all ``n`` rows), same ``FitResult``.

Data sources are ``mogjax.chunks`` (memmaps, ``.npy`` paths, arrays, lists of
arrays, callables).

**Chunks and compilation.** Chunks are re-cut to ``chunk_size`` rows (default: the
longest chunk the source yields, or about ``CHUNK_ELEMENTS`` values per chunk for
an array) and the last one is padded with zero-weight rows, so the jitted chunk
E-step (``chunk_statistics``) compiles once per fit. Inside a chunk the E-step runs
in row blocks, so device memory is ``O(chunk * d + block * (d^2 + k))`` whatever
``n``; host memory holds two chunks (one read while the previous one computes) and
the statistics, accumulated in float64.

**Initialisation.** The in-memory inits need all the data; here ``init`` runs on a
sample of at most ``init_sample`` rows taken at a fixed stride over the whole data
(every row when ``n <= init_sample``, in which case the fit starts exactly where
``fit_em`` starts). ``init_params`` replaces it, as in ``fit_em``.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mogjax import _validation as v
from mogjax._typing import Array
from mogjax.estep import e_step_moments
from mogjax.chunks import (
    INIT_SAMPLE, as_source, checked_chunks, padded, rebatch, summarize, with_weights,
)
from mogjax.init import initialize_compiled
from mogjax.missing import (
    MissingData, PatternMoments, choose_block, expected_stats, pattern_moments,
    pattern_terms, split_missing,
)
from mogjax.progress import log_progress
from mogjax.mixture import MixtureParams, is_finite
from mogjax.results import (
    FitResult, count_small_gains, pick_best, raise_if_degenerate, start_counter,
)
from mogjax.suffstats import SufficientStats, m_step, stats_from_moments



@functools.partial(jax.jit, static_argnames=("block_size", "weighted"))
def chunk_statistics(
    params: MixtureParams, chunk: Array, n_valid, center: Array, *, block_size: int | None = None,
    weighted: bool = False,
) -> SufficientStats:
    """E-step statistics of the first ``n_valid`` rows of ``chunk`` (c, d). Jitted.

    Rows from ``n_valid`` on are padding and weigh nothing; ``n_valid`` is traced, so
    every chunk of one shape shares one compiled program. With ``weighted`` the last
    column holds the rows' weights (``chunks.with_weights``; ``n`` is then their sum).

    Examples:
      >>> import jax.numpy as jnp
      >>> p = MixtureParams(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones(1), "identity")
      >>> s = chunk_statistics(p, jnp.array([[1.0], [3.0], [0.0]]), 2, jnp.array([2.0]))
      >>> float(s.n), float(s.counts[0]), float(s.sum_xx[0])
      (2.0, 2.0, 2.0)
    """
    weight = (jnp.arange(chunk.shape[0]) < n_valid).astype(chunk.dtype)
    if weighted:
        chunk, weight = chunk[:, :-1], weight * chunk[:, -1]
    ll, counts, moments = e_step_moments(params, chunk, center, block_size, False, weight)
    n = jnp.sum(weight) if weighted else jnp.asarray(n_valid, chunk.dtype)
    return stats_from_moments(n, ll, center, counts, moments, params.covariance_type)


_SUMS = ("n", "log_likelihood", "counts", "sum_x", "sum_xx")


def _add_on_host(total: list | None, stats: SufficientStats) -> list[np.ndarray]:
    """``total + stats`` in float64 NumPy (waits for ``stats`` to be computed)."""
    sums = [np.asarray(getattr(stats, f), np.float64) for f in _SUMS]
    return sums if total is None else [a + b for a, b in zip(total, sums)]


def full_pass(params, source, rows, center, n=None, block_size=None,
              weighted: bool = False) -> SufficientStats:
    """Statistics of all the data under ``params``: one jitted call per chunk.

    Args:
      params: the mixture.
      source: a ``ChunkSource``.
      rows: rows per chunk (the last is padded).
      center: the statistics' center, (d,), in the compute dtype.
      n: when given, the number of rows the pass must see.
      block_size: rows per block inside a chunk.
      weighted: the source's last column is the rows' weights (``with_weights``).

    Chunk ``i + 1`` is read while chunk ``i`` computes (so at most two are held);
    sums are kept in float64 on the host.
    """
    fill = np.asarray(center)
    if weighted:  # padding rows weigh 0
        fill = np.concatenate([fill, np.zeros(1, fill.dtype)])
    total, pending, seen = None, None, 0
    for batch in rebatch(checked_chunks(source, fill.shape[0], finite=False), rows):
        x = jnp.asarray(padded(batch, rows, fill))
        out = chunk_statistics(params, x, batch.shape[0], center, block_size=block_size,
                               weighted=weighted)
        total = total if pending is None else _add_on_host(total, pending)
        pending, seen = out, seen + batch.shape[0]
    if pending is None:
        raise ValueError("the data source yielded no rows on this pass")
    total = _add_on_host(total, pending)
    dtype = center.dtype
    if n is not None and seen != n:
        raise ValueError(
            f"the data source yielded {seen} rows on this pass but {n} on the "
            "first: a callable must give the same data every time"
        )
    sums = dict(zip(_SUMS, (jnp.asarray(a, dtype) for a in total)))
    return SufficientStats(center=center, covariance_type=params.covariance_type, **sums)


_m_step = jax.jit(m_step, static_argnames="equal_weights")


@functools.partial(jax.jit, static_argnames=("covariance_type", "block_size"))
def chunk_pattern_moments(terms, data: MissingData, center: Array, weight: Array, *,
                          covariance_type: str, block_size: int | None = None
                          ) -> PatternMoments:
    """``mogjax.missing.pattern_moments`` of one chunk with missing entries. Jitted."""
    return pattern_moments(terms, data, center, covariance_type, weight, None, block_size)


_pattern_terms = jax.jit(pattern_terms)
_expected_stats = jax.jit(expected_stats)


class MissingLayout(NamedTuple):
    """How every chunk with missing entries is laid out, so that one program serves all:
    the data's pattern table, rows per block, and rows per chunk after padding."""

    patterns: np.ndarray
    block: int
    n_rows: int

    @classmethod
    def of(cls, patterns: np.ndarray, n: int, rows: int) -> "MissingLayout":
        """For ``n`` rows in chunks of ``rows``: each chunk pads at most ``block - 1``
        rows for each pattern it holds."""
        block = choose_block(n, len(patterns))
        padded = rows + min(len(patterns), rows) * (block - 1)
        return cls(patterns, block, -(-padded // block) * block)


def missing_pass(params, source, rows, center, layout: MissingLayout, n=None,
                 block_size=None, weighted: bool = False) -> SufficientStats:
    """``full_pass`` over chunks with missing entries (NaN): each chunk grouped by
    pattern (``mogjax.missing.split_missing`` with the data's pattern table), its
    per-pattern moments summed on the host in float64, the expected statistics
    taken once at the end of the pass."""
    dtype = center.dtype
    d = center.shape[0]
    terms = _pattern_terms(params, jnp.asarray(layout.patterns), center)
    total, pending, seen = None, None, 0
    for batch in rebatch(checked_chunks(source, d + weighted, finite=False), rows):
        x, w = (batch[:, :-1], batch[:, -1]) if weighted else (batch, None)
        data = split_missing(x, dtype, layout.block, layout.patterns, layout.n_rows)
        weight = data.place(None if w is None else jnp.asarray(w, dtype))
        out = chunk_pattern_moments(terms, data, center, weight,
                                    covariance_type=params.covariance_type,
                                    block_size=block_size)
        total = total if pending is None else _add_moments(total, pending)
        pending, seen = out, seen + batch.shape[0]
    if pending is None:
        raise ValueError("the data source yielded no rows on this pass")
    total = _add_moments(total, pending)
    if n is not None and seen != n:
        raise ValueError(
            f"the data source yielded {seen} rows on this pass but {n} on the "
            "first: a callable must give the same data every time"
        )
    sums = PatternMoments(*(jnp.asarray(a, dtype) for a in total))
    return _expected_stats(params, jnp.asarray(layout.patterns), center, sums)


def _add_moments(total, sums: PatternMoments) -> list[np.ndarray]:
    """``total + sums`` in float64 NumPy."""
    arrays = [np.asarray(a, np.float64) for a in sums]
    return arrays if total is None else [a + b for a, b in zip(total, arrays)]


def fit_em_chunked(
    data,
    k: int | None = None,
    *,
    chunk_size: int | None = None,
    covariance_type: str = "full",
    init: str = "kmeans++",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    seed=0,
    init_params=None,
    init_sample: int = INIT_SAMPLE,
    equal_weights: bool = False,
    block_size: int | None = None,
    verbose: int = 0,
    patience: int = 1,
    previous_log_likelihood: float | None = None,
    sample_weight=None,
    missing: str = "error",
) -> FitResult:
    r"""Exact full-batch EM over chunked data (``fit_em``'s result, bounded memory).

    Reads the data once to validate it (every chunk: columns, NaN, infinity), take
    its mean (the statistics' center) and the init sample, then once per EM
    iteration. The loop over iterations and chunks runs on the host, one jitted call
    per chunk; the stopping rule and the curve are ``fit_em``'s.

    Args:
      data: chunked data, see the module doc (memmap, ``.npy`` path, 2-D array,
        sequence of 2-D arrays, or a callable returning an iterable of them).
      k: number of components (may be omitted when ``init_params`` is a
        ``MixtureParams``).
      chunk_size: rows per chunk (default: the longest chunk of the source; for
        arrays about ``CHUNK_ELEMENTS / d``); capped at ``n``.
      covariance_type, init, max_iter, tol, reg_covar, seed, init_params,
        equal_weights, verbose, patience, previous_log_likelihood: as ``fit_em``;
        ``init`` runs on the init sample.
      n_init: restarts, one after the other (each reads the data once per
        iteration); the one of highest final log-likelihood wins, as in ``fit_em``.
      init_sample: most rows the initialisation sees (a strided sample).
      block_size: rows per block inside a chunk (``None``: chosen from the sizes).
      sample_weight: the rows' weights, as ``fit_em``: one 1-D array, or chunked 1-D
        weights parallel to ``data`` (a sequence or a callable with the same chunk
        lengths), read with it on every pass.
      missing: as ``fit_em``: with ``"marginalize"`` NaN entries are missing at
        random. The first pass collects the data's missingness patterns and every
        column's mean over its observed entries (the center); each pass groups every
        chunk's rows by pattern and sums their per-pattern moments
        (``mogjax.missing``), so the fit is ``fit_em``'s marginalised EM. The init
        sample sees each missing entry at its column's mean.

    Returns:
      ``FitResult``, as ``fit_em``.

    Raises:
      ValueError: bad arguments or data, with the chunk named;
        ``DegenerateCovarianceError`` as ``fit_em``.
      TypeError: data of a kind not accepted.

    Examples:
      >>> import numpy as np
      >>> x = np.concatenate([np.random.default_rng(0).normal(m, 1.0, (100, 2)) for m in (-5, 5)])
      >>> chunks = [x[:70], x[70:150], x[150:]]
      >>> a = fit_em_chunked(chunks, 2, covariance_type="diag", chunk_size=64)
      >>> from mogjax import fit_em
      >>> b = fit_em(x, 2, covariance_type="diag")
      >>> bool(np.allclose(a.params.means, b.params.means, rtol=1e-4))
      True
      >>> int(a.n_iter) == int(b.n_iter)
      True
    """
    k, init, max_iter, n_init, tol, reg_covar = v.check_fit_settings(
        k, init_params, covariance_type, init, max_iter, n_init, tol, reg_covar)
    init_sample = v.check_int(init_sample, "init_sample", 1)
    verbose = v.check_int(verbose, "verbose", 0)
    rule = (tol, *v.check_stop_rule(patience, previous_log_likelihood))
    if chunk_size is not None:
        chunk_size = v.check_int(chunk_size, "chunk_size", 1)
    if block_size is not None:
        block_size = v.check_int(block_size, "block_size", 1)
    source = as_source(data, chunk_size)
    weighted = sample_weight is not None
    if weighted:
        source = with_weights(source, sample_weight)
    if not source.reiterable:
        raise ValueError(
            "exact EM reads the data once per iteration, but a one-shot iterator can be "
            "read once: pass a zero-argument callable returning a fresh iterator (e.g. "
            "`lambda: read_chunks()`), or use mogjax.fit_online_em"
        )

    v.check_choice(missing, "missing", ("error", "marginalize"))
    info = summarize(source, max(init_sample, k), weighted, missing == "marginalize")
    v.check_enough_samples(info.n, k)
    user_init = v.check_user_init(init_params, k, info.n_features, covariance_type)
    rows = min(chunk_size or info.longest, info.n)
    dtype = info.dtype
    center = jnp.asarray(info.mean, dtype)
    sample = info.sample
    if info.patterns is not None:  # the init sees missing entries at the center
        cols = sample.shape[1] - weighted
        sample = sample.copy()
        sample[:, :cols] = np.where(np.isnan(sample[:, :cols]), info.mean, sample[:, :cols])
    sample = jnp.asarray(sample, dtype)
    sample, sample_w = (sample[:, :-1], sample[:, -1]) if weighted else (sample, None)
    if info.patterns is None:
        e_step = lambda p: full_pass(p, source, rows, center, info.n, block_size, weighted)
    else:
        layout = MissingLayout.of(info.patterns, info.n, rows)
        e_step = lambda p: missing_pass(p, source, rows, center, layout, info.n, block_size,
                                        weighted)
    results = []
    for key in v.split_keys(seed, n_init):
        params = initialize_compiled(
            key, sample, k=k, covariance_type=covariance_type, method=init,
            reg_covar=jnp.asarray(reg_covar, dtype), equal_weights=bool(equal_weights),
            block_size=None if block_size is None else min(block_size, sample.shape[0]),
            sample_weight=sample_w, **user_init,
        )
        results.append(host_em_loop(
            params, e_step, max_iter, rule, jnp.asarray(reg_covar, dtype), bool(equal_weights),
            verbose, dtype, check_pass=lambda: checked_chunks(
                source, info.n_features + weighted, allow_nan=info.patterns is not None)))
    best = pick_best(results)
    raise_if_degenerate(best, dtype)
    return best


def host_em_loop(params, e_step, max_iter, rule, reg_covar, equal_weights, verbose, dtype,
                 check_pass=None) -> FitResult:
    """``mogjax.em.em_loop`` on the host, over an E-step that reads chunks: the same
    stopping rule (``rule = (tol, patience, previous)``), the same curve.

    ``check_pass`` (optional) reads the data once with every check on; it runs when a
    step's statistics are not finite, so NaN or infinity that appeared in the data
    after the first pass is named (chunk and row) rather than blamed on a covariance.
    """
    tol, patience, previous = rule
    stats = e_step(params)
    curve = np.full(max_iter + 1, np.nan, dtype)
    curve[0] = stats.mean_log_likelihood
    counter = start_counter(curve[0], previous)
    i, converged, degenerate = 0, False, not np.isfinite(curve[0])
    while i < max_iter and not converged and not degenerate:
        new_params = _m_step(stats, reg_covar, equal_weights=equal_weights)
        new_stats = e_step(new_params) if bool(is_finite(new_params)) else None
        if new_stats is None or not np.isfinite(float(new_stats.log_likelihood)):
            if check_pass is not None:  # data that changed between passes: name it
                for _ in check_pass():
                    pass
            degenerate = True
            break
        params, stats, i = new_params, new_stats, i + 1
        curve[i] = stats.mean_log_likelihood
        counter, stop = count_small_gains(counter, abs(curve[i] - curve[i - 1]), tol, patience)
        converged = bool(stop)
        if verbose:
            log_progress(verbose, "chunked EM iteration", i, curve[i])
    return FitResult(
        params, jnp.asarray(curve), jnp.asarray(i, jnp.int32), jnp.asarray(converged),
        jnp.asarray(degenerate),
    )
