r"""Expectation-maximisation for Gaussian mixtures, compiled end to end.

One iteration is an E-step (responsibilities of the current parameters, reduced at
once to sufficient statistics) followed by an M-step (``mogjax.suffstats.m_step``):

.. math::

   w_{ij} = \frac{\pi_j f_j(x_i)}{\sum_l \pi_l f_l(x_i)}, \qquad
   \pi_j = \frac{W_j}{n}, \quad \mu_j = \frac{\sum_i w_{ij} x_i}{W_j}, \quad
   \Sigma_j = \frac{\sum_i w_{ij}(x_i-\mu_j)(x_i-\mu_j)^T}{W_j} + \mathrm{reg}\, I.

The E-step never holds more than a block of rows: its cost is two matrix products
per block against the quadratic features of ``mogjax.gaussian``, and its memory
``O(block * (d^2 + k))`` whatever ``n``.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mogjax import _blocks
from mogjax import _validation as v
from mogjax._typing import Array, ArrayLike
from mogjax.init import initialize
from mogjax.missing import (
    MissingData, imputed_center, missing_e_step, prepare_missing, start_rows,
)
from mogjax.mixture import MixtureParams, is_finite
from mogjax.progress import report_every
from mogjax.results import (  # noqa: F401  (FAILURE_ADVICE: re-exported for callers)
    FAILURE_ADVICE, DegenerateCovarianceError, FitResult, StopCounter, best_of,
    count_small_gains, raise_if_degenerate, start_counter,
)
from mogjax.accelerated import fit_accelerated, resolve
from mogjax.chunked import fit_em_chunked
from mogjax.chunks import is_chunked
from mogjax.estep import (  # noqa: F401  (the E-step's names, re-exported)
    FEATURE_CACHE_BYTES, block_statistics, caches_features, density_terms, e_step,
    e_step_data, e_step_moments, stats_of, terms_moments,
)
from mogjax.suffstats import SufficientStats, m_step

@functools.partial(jax.jit, static_argnames=("equal_weights", "block_size"))
def em_step(
    params: MixtureParams, x: ArrayLike, *, reg_covar=1e-6, equal_weights: bool = False,
    block_size: int | None = None, sample_weight: ArrayLike | None = None,
) -> MixtureParams:
    """One EM iteration: an E-step on ``params``, then the M-step. Jitted.

    Args:
      params: current parameters.
      x: data, (n, d).
      reg_covar: added to the covariance diagonal (traced: no recompilation).
      equal_weights: keep ``pi_j = 1/k`` (the lecture's update).
      block_size: rows per block (``None``: chosen from the sizes).
      sample_weight: (n,) row weights (``None``: all 1).

    Returns:
      The next ``MixtureParams``.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.0], [2.0]])
      >>> p = MixtureParams(jnp.zeros(1), jnp.ones((1, 1)), jnp.ones((1, 1, 1)), "full")
      >>> q = em_step(p, x, reg_covar=0.0)
      >>> round(float(q.means[0, 0]), 5), round(float(q.covariances[0, 0, 0]), 5)
      (1.0, 1.0)
    """
    w = None if sample_weight is None else jnp.asarray(sample_weight)
    stats = e_step(params, jnp.asarray(x), block_size=block_size, sample_weight=w)
    return m_step(stats, reg_covar, equal_weights=equal_weights)


class EMState(NamedTuple):
    """The compiled EM loop's state."""

    params: MixtureParams
    stats: SufficientStats  # of ``params``
    curve: Array
    step: Array
    counter: StopCounter
    converged: Array
    degenerate: Array


def em_loop(e_step_fn, params, tol, reg_covar, max_iter, equal_weights: bool,
            verbose: int = 0, patience=1, previous=None, capacity: int | None = None
            ) -> FitResult:
    """The EM loop from ``params`` over any E-step ``params -> SufficientStats``: one
    ``lax.while_loop``, the curve as data (in-memory and sharded EM share it).

    Stops by ``mogjax.results``' rule (``tol``, ``patience``; ``previous`` is the
    value before ``params`` when continuing a fit) or after ``max_iter`` iterations
    (traced when ``capacity``, the curve's static length less one, is given; else a
    static int and the capacity itself). A step whose parameters are not finite is
    undone and stops the loop (``degenerate``).
    """
    stats0 = e_step_fn(params)
    dtype = stats0.log_likelihood.dtype
    capacity = max_iter if capacity is None else capacity
    curve = jnp.full((capacity + 1,), jnp.nan, dtype).at[0].set(stats0.mean_log_likelihood)

    def cond(s: EMState):
        return (s.step < max_iter) & ~s.converged & ~s.degenerate

    def body(s: EMState) -> EMState:
        new_p = m_step(s.stats, reg_covar, equal_weights=equal_weights)
        new_stats = e_step_fn(new_p)
        ok = is_finite(new_p) & jnp.isfinite(new_stats.log_likelihood)
        p, stats = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (new_p, new_stats),
                                (s.params, s.stats))
        i = s.step + ok.astype(s.step.dtype)
        curve = s.curve.at[i].set(jnp.where(ok, stats.mean_log_likelihood, s.curve[i]))
        counter, stop = count_small_gains(s.counter, jnp.abs(curve[i] - curve[i - 1]), tol,
                                          patience)
        report_every(verbose, i, curve[i])
        return EMState(p, stats, curve, i, counter, ok & stop, ~ok)

    start = EMState(params, stats0, curve, jnp.int32(0), start_counter(curve[0], previous),
                    jnp.bool_(False), jnp.bool_(False))
    s = jax.lax.while_loop(cond, body, start)
    degenerate = s.degenerate | ~jnp.isfinite(curve[0])
    n_esteps = 1 + s.step + s.degenerate.astype(s.step.dtype)  # a failed step's E-step too
    t = jnp.arange(capacity + 1, dtype=s.step.dtype)
    esteps = jnp.where(t <= s.step, t + 1, -1)
    return FitResult(s.params, s.curve, s.step, s.converged, degenerate, n_esteps, esteps)


def _run_em(params, x, tol, reg_covar, max_iter, equal_weights, block_size, verbose=0,
            patience=1, previous=None, weight=None, capacity=None) -> FitResult:
    """EM on in-memory ``x`` from ``params``, its features cached when they fit."""
    data, center, cached = e_step_data(x, params.covariance_type, weight=weight)
    e_step_fn = lambda p: stats_of(p, data, center, block_size, cached, weight)
    return em_loop(e_step_fn, params, tol, reg_covar, max_iter, equal_weights, verbose,
                   patience, previous, capacity)


def curve_capacity(max_iter: int) -> int:
    """The compiled curve's length less one for ``max_iter``: a power of two, at least
    128, so that every ``max_iter`` up to it shares one program (``max_iter`` is
    traced; results are trimmed to ``max_iter + 1`` entries on the host)."""
    return max(128, 1 << max(int(max_iter), 1).bit_length())


def trimmed(result: FitResult, max_iter: int) -> FitResult:
    """``result`` with its curve (and ``esteps``) cut to ``max_iter + 1`` entries."""
    result = result._replace(curve=result.curve[..., : max_iter + 1])
    esteps = getattr(result, "esteps", None)
    return result if esteps is None else result._replace(esteps=esteps[..., : max_iter + 1])


@functools.partial(
    jax.jit,
    static_argnames=(
        "k", "covariance_type", "init", "capacity", "equal_weights", "block_size",
        "verbose",
    ),
)
def fit_em_compiled(
    x, keys, user_init, tol, reg_covar, patience=1, previous=jnp.nan, weight=None,
    max_iter=None, *, k, covariance_type, init, capacity, equal_weights, block_size,
    verbose=0,
) -> tuple[FitResult, FitResult]:
    """Initialise and run EM for every key with ``vmap``; return (best, all runs).

    ``weight``: the rows' sample weights (``None``: unweighted, a program of its own).
    ``max_iter`` (traced; default ``capacity``) at most; curves of ``capacity + 1``."""
    max_iter = capacity if max_iter is None else max_iter

    def one_run(key):
        params = initialize(
            key, x, k, covariance_type, init, reg_covar, equal_weights=equal_weights,
            block_size=block_size, sample_weight=weight, **user_init,
        )
        return _run_em(params, x, tol, reg_covar, max_iter, equal_weights, block_size, verbose,
                       patience, previous, weight, capacity)

    return restarts(one_run, keys)


def restarts(one_run, keys) -> tuple[FitResult, FitResult]:
    """``one_run`` for every key (``vmap``): (the best run, all runs stacked)."""
    if keys.shape[0] == 1:  # no batch dimension: vmap of size 1 costs ~20% here
        runs = jax.tree.map(lambda a: a[None], one_run(keys[0]))
    else:
        runs = jax.vmap(one_run)(keys)
    return best_of(runs), runs


@functools.partial(
    jax.jit,
    static_argnames=("k", "covariance_type", "init", "capacity", "equal_weights", "block_size",
                     "verbose"),
)
def fit_missing_compiled(
    data: MissingData, keys, user_init, tol, reg_covar, patience, previous, weight, max_iter,
    *, k, covariance_type, init, capacity, equal_weights, block_size, verbose,
) -> FitResult:
    """``fit_em_compiled`` for data with missing entries (``mogjax.missing``): the start
    from the data with each missing entry at its column's mean."""
    center = imputed_center(data, weight)
    x_init = start_rows(data, center)
    e_step_fn = missing_e_step(data, center, covariance_type, weight, block_size)

    def one_run(key):
        params = initialize(
            key, x_init, k, covariance_type, init, reg_covar, equal_weights=equal_weights,
            block_size=block_size, sample_weight=weight, **user_init,
        )
        return em_loop(e_step_fn, params, tol, reg_covar, max_iter, equal_weights, verbose,
                       patience, previous, capacity)

    return restarts(one_run, keys)[0]


def fit_em(
    x: ArrayLike,
    k: int | None = None,
    *,
    covariance_type: str = "full",
    init: str = "kmeans++",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    seed=0,
    init_params=None,
    equal_weights: bool = False,
    block_size: int | None = None,
    verbose: int = 0,
    chunk_size: int | None = None,
    patience: int = 1,
    previous_log_likelihood: float | None = None,
    sample_weight: ArrayLike | None = None,
    missing: str = "error",
    acceleration=None,
) -> FitResult:
    r"""Fit a Gaussian mixture by EM; the whole loop is one compiled program.

    ``tol``, ``patience``, ``reg_covar`` and ``max_iter`` are traced, so a sweep over
    them compiles once (``max_iter`` up to a power of two: ``curve_capacity``); the
    sizes, ``covariance_type``, ``init``, ``n_init`` and ``equal_weights`` are
    compiled in. ``n_init`` restarts run side by side with
    ``vmap`` and the one of highest final log-likelihood wins.

    Stopping rule (``mogjax.results``, the same for every fit): after iteration ``t``
    the fit stops when the ``patience`` iterations before it each gained less than
    ``tol`` in mean log-likelihood; with ``patience=1``,
    :math:`|\ell_{t-1} - \ell_{t-2}| < \mathrm{tol}`, scikit-learn's rule (so
    ``n_iter``, ``converged`` and the parameters equal scikit-learn's from the same
    start); ``tol=0`` runs all ``max_iter`` iterations.

    Data larger than memory: when ``x`` is chunked (a ``numpy.memmap`` such as
    ``np.load(path, mmap_mode="r")``, a list or tuple of 2-D arrays, a zero-argument
    callable returning an iterable of 2-D arrays) or ``chunk_size`` is given, the
    same EM runs chunk by chunk in bounded memory: see
    ``mogjax.chunked.fit_em_chunked`` (there restarts run one after the other and ``init``
    runs on a strided sample of at most 65,536 rows).

    Args:
      x: data, (n, d); float32 unless x64 is enabled (float32 input stays float32);
        or chunked data, as above.
      k: number of components (may be omitted when ``init_params`` is a
        ``MixtureParams``).
      covariance_type: ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"`` or
        ``"identity"`` (soft k-means).
      init: ``"kmeans++"``, ``"kmeans"``, ``"random_from_data"`` (the lecture's)
        or ``"random"``; see ``mogjax.init``.
      max_iter: maximum number of EM iterations (>= 0).
      tol: convergence threshold on the gain in mean log-likelihood (>= 0).
      reg_covar: non-negative regularisation added to the covariance diagonal.
      n_init: number of restarts (>= 1), batched with ``vmap``.
      seed: an integer or a JAX key; restarts use ``jax.random.split(key, n_init)``.
      init_params: a ``MixtureParams`` to start from, or a mapping with any of
        ``weights``, ``means``, ``precisions`` (scikit-learn's shapes) replacing
        what ``init`` gives.
      equal_weights: keep ``pi_j = 1/k`` fixed: the lecture's update.
      block_size: rows per block of the E-step (``None``: chosen from the sizes).
      verbose: ``N > 0`` logs progress (iteration, mean log-likelihood) to the
        ``mogjax.progress`` logger every ``N`` iterations, through a host callback at
        that stride only; ``0`` (default) is silent and compiles no callback.
      chunk_size: rows per chunk; given (or with chunked ``x``), the fit is
        ``fit_em_chunked``'s.
      patience: consecutive small gains that stop the fit (>= 1).
      previous_log_likelihood: when continuing an earlier fit from its parameters
        (``init_params``), that fit's last curve value but one, so the gain into the
        start counts first (scikit-learn's ``warm_start``); ``None``: a fresh fit.
      sample_weight: (n,) non-negative row weights, not all zero (``None``: all 1).
        The fit maximises :math:`\sum_i w_i \log p(x_i) / \sum_i w_i` (the curve's
        unit), the initialisation draws and averages by weight, and a row of weight
        ``c`` counts as ``c`` copies of itself (integer weights give the fit of the
        repeated rows; rows of weight 0 change nothing). With chunked data, a
        parallel chunk source of 1-D weights (or one array).
      missing: ``"error"`` (default: NaN in ``x`` is an error naming the first one)
        or ``"marginalize"``: NaN entries are missing at random; each row's
        likelihood is that of its observed coordinates and the E-step gives expected
        statistics, so this is exact EM on the observed data (``mogjax.missing``;
        every covariance type; chunked data too). The initialisation sees each missing
        entry at its column's mean. Without NaN the fit is the complete-data fit.
      acceleration: ``None`` (plain EM), or accelerated EM over the same E-step and
        M-step from the same start: ``"squarem"``, ``"daarem"``, ``"overrelaxed"``,
        ``"ecg"`` or a settings object (``mogjax.accelerated``). ``max_iter``,
        ``tol`` and ``patience`` then count the method's iterations, ``params`` are
        the best point visited and ``n_esteps`` counts every E-step. In-memory,
        complete data only; restarts run one after the other.

    Returns:
      ``FitResult`` with ``params``, ``curve`` (``max_iter + 1`` entries, NaN
      after ``n_iter``), ``n_iter``, ``converged``, ``degenerate`` and
      ``n_esteps`` (E-steps made: ``n_iter + 1`` for plain EM).

    Raises:
      ValueError: bad input, named; ``DegenerateCovarianceError`` (a
        ``ValueError``) when every restart met a covariance that is not positive
        definite, with scikit-learn's advice and the partial result attached.

    Examples:
      >>> import numpy as np
      >>> x = np.concatenate([np.random.default_rng(0).normal(m, 1.0, (100, 2)) for m in (-5, 5)])
      >>> res = fit_em(x, 2, covariance_type="diag", seed=0)
      >>> sorted(round(float(m)) for m in res.params.means[:, 0])
      [-5, 5]
      >>> bool(np.all(np.diff(res.curve[: int(res.n_iter) + 1]) >= -1e-6))
      True
    """
    method = None if acceleration is None else resolve(acceleration)
    if method is not None and (chunk_size is not None or is_chunked(x) or missing != "error"):
        raise ValueError(f"acceleration={acceleration!r} needs complete in-memory data: "
                         "not chunked data (chunk_size, a memmap, a path, a list or a "
                         "callable) nor missing='marginalize'; use acceleration=None")
    if chunk_size is not None or is_chunked(x):
        return fit_em_chunked(
            x, k, chunk_size=chunk_size, covariance_type=covariance_type, init=init,
            max_iter=max_iter, tol=tol, reg_covar=reg_covar, n_init=n_init, seed=seed,
            init_params=init_params, equal_weights=equal_weights, block_size=block_size,
            verbose=verbose, patience=patience, previous_log_likelihood=previous_log_likelihood,
            sample_weight=sample_weight, missing=missing,
        )
    v.check_choice(missing, "missing", ("error", "marginalize"))
    x, gaps = prepare_missing(x) if missing == "marginalize" else (v.check_data(x), None)
    n, d = x.shape
    weight = v.check_sample_weight(sample_weight, n, x.dtype)
    k, init, max_iter, n_init, tol, reg_covar = v.check_fit_settings(
        k, init_params, covariance_type, init, max_iter, n_init, tol, reg_covar)
    v.check_enough_samples(n if weight is None else int(jnp.sum(weight > 0)), k)
    user_init = v.check_user_init(init_params, k, d, covariance_type)
    if block_size is not None:
        block_size = _blocks.choose_block_size(n, 1, block_size)

    patience, previous = v.check_stop_rule(patience, previous_log_likelihood)
    traced = (v.split_keys(seed, n_init), user_init, jnp.asarray(tol, x.dtype),
              jnp.asarray(reg_covar, x.dtype), jnp.int32(patience), jnp.asarray(previous, x.dtype),
              weight, jnp.int32(max_iter))
    static = dict(k=k, covariance_type=covariance_type, init=init,
                  capacity=curve_capacity(max_iter), equal_weights=bool(equal_weights),
                  block_size=block_size, verbose=v.check_int(verbose, "verbose", 0))
    if method is not None:
        best = fit_accelerated(x, *traced, method=method, **static)
    elif gaps is None:
        best, _ = fit_em_compiled(x, *traced, **static)
    else:
        best = fit_missing_compiled(gaps, *traced, **static)
    best = trimmed(best, max_iter)
    raise_if_degenerate(best, x.dtype)
    return best
