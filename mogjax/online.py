r"""Online (stepwise) EM for data streams: one pass, running sufficient statistics.

Cappé & Moulines (2009), *On-line expectation-maximization algorithm for latent
data models*; Liang & Klein (2009), *Online EM for unsupervised models*. Batch
``t`` (``t = 0, 1, ...``) of ``m_t`` rows gives per-point statistics
:math:`\hat s_t = \frac{1}{m_t}\sum_{i \in B_t} s(x_i; \theta_t)` (counts, first and
second moments about a fixed center, from the current parameters' E-step); they
are blended into running statistics and the M-step reads those:

.. math::

   s_{t+1} = (1 - \eta_t)\, s_t + \eta_t\, \hat s_t, \qquad
   \eta_0 = 1,\quad \eta_t = (t + t_0)^{-\alpha}\ (t \ge 1), \qquad
   \theta_{t+1} = \text{M-step}(s_{t+1}),

with :math:`\alpha \in (0.5, 1]` (``step_size_power``) and :math:`t_0 > 0`
(``step_offset``). Dividing by :math:`m_t` makes batches of different sizes (the
last, shorter one) mix on one scale; the M-step is scale-free, so one step with
``eta = 1`` is a plain EM step on the batch.

The batches are the stream's rows re-cut to ``batch_size`` (the last one padded
with zero-weight rows, so one program is compiled). The stream is read in its
order: it should be in random order, as for any stochastic method.
"""

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mogjax import _validation as v
from mogjax._typing import Array
from mogjax.chunked import chunk_statistics, full_pass
from mogjax.chunks import (
    as_source, checked_chunks, is_chunked, padded, rebatch, summarize, with_weights,
)
from mogjax.estep import data_center
from mogjax.missing import (
    expected_stats, find_patterns, pattern_moments, pattern_terms, split_missing,
)
from mogjax.init import INIT_SAMPLE, initialize_compiled
from mogjax.mixture import MixtureParams, is_finite, mean_log_likelihood
from mogjax.results import FAILURE_ADVICE, DegenerateCovarianceError, finite_params
from mogjax.suffstats import SufficientStats, m_step



class OnlineResult(NamedTuple):
    """What ``fit_online_em`` returns.

    Attributes:
      params: the final ``MixtureParams`` (never NaN).
      curve: mean log-likelihood per evaluation, (m,): ``curve[0]`` for the initial
        parameters, then after every ``eval_every`` steps and after the last step.
        On ``eval_data`` when given, else progressive validation (see
        ``fit_online_em``).
      curve_steps: the number of steps taken at each curve entry, (m,) integers.
      n_steps: steps (batches) taken.
      n_seen: rows read from the stream (with repeats over epochs).
      n_rejected: steps undone because they gave non-finite parameters.
    """

    params: MixtureParams
    curve: Array
    curve_steps: Array
    n_steps: Array
    n_seen: Array
    n_rejected: Array


def per_point(stats: SufficientStats) -> SufficientStats:
    """Statistics divided by their number of points (``n`` becomes 1)."""
    scale = 1.0 / stats.n
    return stats.replace(
        n=jnp.ones_like(stats.n), log_likelihood=stats.log_likelihood * scale,
        counts=stats.counts * scale, sum_x=stats.sum_x * scale, sum_xx=stats.sum_xx * scale,
    )


def blend(running: SufficientStats, new: SufficientStats, eta) -> SufficientStats:
    """``(1 - eta) * running + eta * new`` (same center)."""
    mix = lambda a, b: (1 - eta) * a + eta * b
    out = jax.tree.map(mix, running.replace(center=None), new.replace(center=None))
    return out.replace(center=running.center)


@functools.partial(jax.jit, static_argnames=("equal_weights", "block_size", "weighted"))
def online_step(
    params: MixtureParams, running: SufficientStats, batch: Array, n_valid, eta, reg_covar,
    *, equal_weights: bool = False, block_size: int | None = None, weighted: bool = False,
):
    """One stepwise-EM step on the first ``n_valid`` rows of ``batch`` (b, d). Jitted.

    With ``weighted`` the batch's last column holds the rows' weights and the step
    blends the batch's statistics per unit of weight.

    Returns:
      ``(params, running, batch_mean_log_likelihood, ok)``: the new parameters and
      running statistics (the incoming ones when the step is not finite,
      ``ok = False``), and the batch's mean log-likelihood under the *incoming*
      parameters.
    """
    stats = chunk_statistics(params, batch, n_valid, running.center, block_size=block_size,
                             weighted=weighted)
    return _blended(params, running, stats, eta, reg_covar, equal_weights)


@functools.partial(jax.jit, static_argnames=("equal_weights", "block_size"))
def missing_online_step(params: MixtureParams, running: SufficientStats, batch, eta, reg_covar,
                        *, equal_weights: bool = False, block_size: int | None = None):
    """``online_step`` on a batch with missing entries, ``batch = (MissingData, row
    weights as its rows)``: the blended statistics are the batch's expected ones
    (``mogjax.missing``). Jitted."""
    data, weight = batch
    center = running.center
    terms = pattern_terms(params, data.patterns, center)
    sums = pattern_moments(terms, data, center, params.covariance_type, weight, None,
                           block_size)
    stats = expected_stats(params, data.patterns, center, sums)
    return _blended(params, running, stats, eta, reg_covar, equal_weights)


def _blended(params, running, stats, eta, reg_covar, equal_weights: bool):
    """One stepwise-EM update from a batch's ``stats``: blend them into ``running``
    by ``eta``, M-step; a step whose parameters or likelihood are not finite is
    undone. Returns ``(params, running, batch mean log-likelihood, ok)``."""
    new_running = blend(running, per_point(stats), eta)
    new_params = m_step(new_running, reg_covar, equal_weights=equal_weights)
    ok = is_finite(new_params) & jnp.isfinite(stats.log_likelihood)
    keep = lambda a, b: jnp.where(ok, a, b)
    params, running = jax.tree.map(keep, (new_params, new_running), (params, running))
    return params, running, stats.mean_log_likelihood, ok


def _missing_batch(batch: np.ndarray, dtype, weighted: bool):
    """A batch with NaN as ``missing_online_step`` reads it: its rows grouped by
    pattern, one row per block (batches are small), and the pattern table padded to a
    power of two (complete patterns), so few programs are compiled."""
    x, w = (batch[:, :-1], batch[:, -1]) if weighted else (batch, None)
    patterns, _ = find_patterns(x)
    size = 1 << (len(patterns) - 1).bit_length()
    table = np.ones((size, x.shape[1]), bool)
    table[: len(patterns)] = patterns
    data = split_missing(x, dtype, 1, table)
    return data, data.place(None if w is None else jnp.asarray(w, dtype))


def step_size(t: int, power: float, offset: float) -> float:
    """``eta_t``: 1 for the first step, ``(t + offset) ** -power`` after it."""
    return 1.0 if t == 0 else float((t + offset) ** -power)


def _eval_fn(eval_data, n_features: int, dtype, missing: bool = False):
    """``params -> mean log-likelihood on eval_data`` (in memory or chunked)."""
    if is_chunked(eval_data):
        source = as_source(eval_data)
        if not source.reiterable:
            raise ValueError("eval_data is read at every evaluation: not a one-shot iterator")
        info = summarize(source, 1)
        if info.n_features != n_features:
            raise ValueError(f"eval_data has {info.n_features} features, the stream {n_features}")
        center = jnp.asarray(info.mean, dtype)
        pass_ = lambda p: full_pass(p, source, info.longest, center, info.n)
        return lambda p: float(pass_(p).mean_log_likelihood)
    arr = np.asarray(eval_data)
    if missing and arr.dtype.kind == "f" and np.isnan(arr).any():
        find_patterns(arr)  # a row with every entry missing is an error
        v.check_data(np.where(np.isnan(arr), 0.0, arr), "eval_data", n_features=n_features)
        x = jnp.asarray(arr, dtype)  # rows with NaN marginalise
    else:
        x = jnp.asarray(v.check_data(eval_data, "eval_data", n_features=n_features), dtype)
    return lambda p: float(mean_log_likelihood(p, x))


def fit_online_em(
    stream,
    k: int | None = None,
    *,
    batch_size: int = 1024,
    covariance_type: str = "full",
    init: str = "kmeans++",
    init_sample: int | None = None,
    n_epochs: int = 1,
    max_steps: int | None = None,
    step_size_power: float = 0.6,
    step_offset: float = 2.0,
    eval_data=None,
    eval_every: int = 10,
    reg_covar: float = 1e-6,
    seed=0,
    init_params=None,
    equal_weights: bool = False,
    block_size: int | None = None,
    sample_weight=None,
    missing: str = "error",
) -> OnlineResult:
    r"""Fit a Gaussian mixture by online (stepwise) EM over a stream of rows.

    Args:
      stream: the data, any form ``mogjax.chunks.as_source`` accepts, including a
        one-shot iterator of 2-D arrays (then ``n_epochs`` must be 1).
      k: number of components (may be omitted when ``init_params`` is a
        ``MixtureParams``).
      batch_size: rows per step.
      covariance_type, init, reg_covar, seed, init_params, equal_weights: as
        ``fit_em``.
      init_sample: rows from the start of the stream that ``init`` sees (default
        ``max(batch_size, INIT_SAMPLE)``; a start from too few rows can leave a
        component nearly empty, which small steps are slow to repair); they are then
        used for steps as well. Their mean is the statistics' fixed center.
      n_epochs: passes over a re-readable stream.
      max_steps: stop after this many steps (default: when the stream ends).
      step_size_power: :math:`\alpha \in (0.5, 1]`.
      step_offset: :math:`t_0 > 0` (at 0, the second step, with :math:`\eta_1 = 1`,
        would discard the first batch).
      eval_data: data to score the curve on: a held-out set, or the full data
        (an array, or chunked data, then read once per evaluation). ``None``:
        progressive validation, each batch scored by the parameters *before* its
        step, averaged (by rows) over the batches since the previous entry;
        ``curve[0]`` is then the first batch's score under the initial parameters.
      eval_every: steps between curve entries.
      block_size: rows per block inside a batch.
      sample_weight: the rows' weights: one 1-D array or chunked 1-D weights parallel
        to ``stream`` (``mogjax.chunks.with_weights``); each batch's statistics are
        blended per unit of weight.
      missing: as ``fit_em``: with ``"marginalize"`` NaN entries are missing at
        random and every step blends the batch's *expected* statistics
        (``mogjax.missing``; rows grouped by pattern within the batch), the stepwise
        EM of Cappe & Moulines for the observed data. The center and the start come
        from the first rows with each missing entry at its column's observed mean.
        A batch holding all the data takes one exact marginalised EM step
        (``eta_0 = 1``).

    Returns:
      ``OnlineResult``.

    Raises:
      ValueError, TypeError: bad arguments, or a bad chunk (named) met in the stream;
        ``DegenerateCovarianceError`` (its ``result`` finite) when the parameters
        are not finite at the end (a degenerate start that no step repaired).

    Examples:
      >>> import numpy as np
      >>> x = np.random.default_rng(0).normal(size=(4000, 2))
      >>> x[::2] += 8.0
      >>> res = fit_online_em(x, 2, batch_size=200, covariance_type="diag")
      >>> sorted(round(float(m)) for m in res.params.means[:, 0]), int(res.n_steps)
      ([0, 8], 20)
    """
    k = v.check_k(k, init_params)
    batch_size = v.check_int(batch_size, "batch_size", 1)
    _, init, _, _, _, reg_covar = v.check_fit_settings(
        k, init_params, covariance_type, init, 0, 1, 0.0, reg_covar)
    init_sample = v.check_int(max(batch_size, INIT_SAMPLE) if init_sample is None
                              else init_sample, "init_sample", 1)
    n_epochs = v.check_int(n_epochs, "n_epochs", 1)
    rate = _Rate(
        v.check_in_range(step_size_power, "step_size_power", 0.5, 1.0, low_open=True),
        v.check_in_range(step_offset, "step_offset", 0.0, np.inf, low_open=True),
        v.check_int(eval_every, "eval_every", 1),
        None if max_steps is None else v.check_int(max_steps, "max_steps", 1),
    )
    source = as_source(stream, batch_size)
    weighted = sample_weight is not None
    if weighted:
        source = with_weights(source, sample_weight)
    if n_epochs > 1 and not source.reiterable:
        raise ValueError(f"n_epochs={n_epochs} needs a re-readable stream, not a one-shot iterator")
    v.check_choice(missing, "missing", ("error", "marginalize"))
    gaps = missing == "marginalize"
    chunks = itertools.chain.from_iterable(checked_chunks(source, allow_nan=gaps)
                                           for _ in range(n_epochs))
    head, first = _read_head(chunks, init_sample)
    dtype = np.dtype(v.float_dtype(first.dtype))
    first, first_w = (first[:, :-1], first[:, -1]) if weighted else (first, None)
    center = None
    if gaps:  # the center: each column's (weighted) mean over its observed entries
        observed = ~np.isnan(first)
        ow = observed * (1.0 if first_w is None else first_w[:, None])
        mass = ow.sum(axis=0)
        center = np.where(mass > 0, (np.where(observed, first, 0.0) * ow).sum(axis=0)
                          / np.where(mass > 0, mass, 1.0), 0.0)
        first = np.where(observed, first, center)
        center = jnp.asarray(center, dtype)
    first = jnp.asarray(first, dtype)
    first_w = None if first_w is None else jnp.asarray(first_w, dtype)
    d = first.shape[1]
    v.check_enough_samples(first.shape[0], k)
    user_init = v.check_user_init(init_params, k, d, covariance_type)
    evaluate = None if eval_data is None else _eval_fn(eval_data, d, dtype, gaps)
    reg = jnp.asarray(reg_covar, dtype)
    params = initialize_compiled(
        v.split_keys(seed, 1)[0], first, k=k, covariance_type=covariance_type, method=init,
        reg_covar=reg, equal_weights=bool(equal_weights), block_size=None,
        sample_weight=first_w, **user_init)
    batches = rebatch(itertools.chain(head, chunks), batch_size)
    if gaps:
        step = functools.partial(missing_online_step, reg_covar=reg,
                                 equal_weights=bool(equal_weights), block_size=block_size)
        prepare = lambda batch: _missing_batch(batch, dtype, weighted)
    else:
        step = functools.partial(online_step, reg_covar=reg, equal_weights=bool(equal_weights),
                                 block_size=block_size, weighted=weighted)
        step, prepare = _with_rows(step), None
        center = data_center(first, first_w)
    result = _run(params, center, batches, batch_size, step, rate, evaluate, weighted, prepare)
    if not bool(is_finite(result.params)):  # a degenerate start no step could repair
        extra = ", or use float64 (jax_enable_x64)" if dtype == np.float32 else ""
        raise DegenerateCovarianceError(FAILURE_ADVICE.format(extra=extra),
                                        result._replace(params=finite_params(result.params)))
    return result


class _Rate(NamedTuple):
    """When to step how far and when to record: ``eta_t`` and the curve's stride."""

    power: float
    offset: float
    eval_every: int
    max_steps: int | None


def _read_head(chunks, init_sample: int) -> tuple[list, np.ndarray]:
    """The first chunks, up to ``init_sample`` rows: ``(chunks, their rows joined)``."""
    head, seen = [], 0
    for a in chunks:
        head.append(a)
        seen += a.shape[0]
        if seen >= init_sample:
            break
    if not head:
        raise ValueError("the stream yielded no rows (no chunks, or only empty ones)")
    return head, np.concatenate(head)


class _Recorder:
    """The curve being built on the host: entries, their steps, the batches since the
    last entry (their scores, rows and whether each step was accepted)."""

    def __init__(self, evaluate, params):
        self.evaluate, self.rejected = evaluate, 0
        self.curve, self.steps, self.window = [], [], []
        if evaluate is not None:
            self.curve, self.steps = [evaluate(params)], [0]

    def add(self, t: int, score, rows: int, ok) -> None:
        self.window.append((score, rows, ok))
        if self.evaluate is None and t == 1:  # curve[0]: the first batch under the start
            self.curve, self.steps, self.window = [float(score)], [0], []

    def record(self, t: int, params) -> None:
        if self.evaluate is None and not self.window:  # nothing scored since the last entry
            return
        self.curve.append(_curve_entry(self.evaluate, params, self.window))
        self.steps.append(t)
        self.rejected += sum(not bool(o) for _, _, o in self.window)
        self.window = []


def _with_rows(step):
    """``step(params, running, (padded batch, valid rows), eta)`` from ``online_step``."""
    return lambda params, running, batch, eta: step(params, running, *batch, eta)


def _run(params, center, batches, batch_size: int, step, rate: _Rate, evaluate,
         weighted: bool, prepare=None) -> OnlineResult:
    """Step through the batches (one in flight at a time) and record the curve."""
    dtype = center.dtype
    shapes = jax.eval_shape(chunk_statistics, params,
                            jax.ShapeDtypeStruct((batch_size, center.shape[0]), dtype), 0, center)
    running = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes).replace(center=center)
    fill = np.asarray(center)
    if weighted:  # padding rows weigh 0
        fill = np.concatenate([fill, np.zeros(1, fill.dtype)])
    rec, t, n_seen = _Recorder(evaluate, params), 0, 0
    for batch in batches:
        if rate.max_steps is not None and t >= rate.max_steps:
            break
        if prepare is None:
            x = (jnp.asarray(padded(batch, batch_size, fill)), batch.shape[0])
        else:
            x = prepare(batch)
        if rec.window:  # wait for the previous step: at most one batch in flight
            jax.block_until_ready(rec.window[-1][0])
        eta = jnp.asarray(step_size(t, rate.power, rate.offset), dtype)
        params, running, score, ok = step(params, running, x, eta)
        t, n_seen = t + 1, n_seen + batch.shape[0]
        rec.add(t, score, batch.shape[0], ok)
        if t % rate.eval_every == 0 or t == rate.max_steps:
            rec.record(t, params)
    if rec.window:  # the stream ended between two entries
        rec.record(t, params)
    return OnlineResult(
        params, jnp.asarray(rec.curve, dtype), jnp.asarray(rec.steps, jnp.int32),
        jnp.asarray(t, jnp.int32), jnp.asarray(n_seen), jnp.asarray(rec.rejected, jnp.int32),
    )


def _curve_entry(evaluate, params, window) -> float:
    """``evaluate(params)``, or the row-weighted mean score of the window's batches."""
    if evaluate is not None:
        return evaluate(params)
    values = np.array([float(s) for s, _, _ in window])
    rows = np.array([m for _, m, _ in window], np.float64)
    return float(values @ rows / rows.sum())
