r"""Exact EM with the rows of the data sharded over devices and processes.

The E-step's sufficient statistics add over any split of the rows, so every device
reduces its own rows to ``(log L, W_j, S_j, Q_j)`` with the same blocked
matrix-product E-step as ``mogjax.fit_em``, one ``jax.lax.psum`` adds them across
the mesh, and the M-step runs replicated on every device:

.. math::

   W_j = \sum_{\text{devices } r} \sum_{i \in r} w_{ij}, \qquad
   S_j = \sum_r \sum_{i \in r} w_{ij} (x_i - c), \qquad
   Q_j = \sum_r \sum_{i \in r} w_{ij} (x_i - c)(x_i - c)^T.

The parameters are therefore those of single-device EM up to the order of the
floating-point sums (about ``1e-12`` relative in float64). Layout:

- a 1-D ``jax.sharding.Mesh`` with one axis (``"data"``) holds the rows; every
  device gets ``rows_per_shard`` rows, the last ones of a shard being zero-weight
  padding when ``n`` does not divide evenly (the mask is built on device from the
  per-shard counts, so nothing but ``x`` travels);
- the center of the statistics is the global mean (``psum`` of the sums over ``n``);
- the whole fit (initialisation, the ``lax.while_loop``, the choice among restarts)
  is one ``jax.jit`` of one ``jax.shard_map``, with one ``psum`` per iteration.

Several processes (``jax.distributed.initialize``) run the very same code: each
process passes the rows it holds to ``shard_rows`` / ``fit_em_sharded`` and the
result is replicated everywhere; see ``docs/distributed.md``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mogjax import _blocks
from mogjax import _validation as v
from mogjax._typing import Array, ArrayLike
from mogjax.em import curve_capacity, em_loop, trimmed
from mogjax.estep import e_step_data, e_step_moments
from mogjax.init import INIT_SAMPLE, initialize, initialize_compiled
from mogjax.missing import (
    MissingData, choose_block, expected_stats, find_patterns, pattern_moments, pattern_terms,
    split_missing,
)
from mogjax.mixture import MixtureParams
from mogjax.results import FitResult, best_of, pick_best, raise_if_degenerate
from mogjax.sharding import (
    DATA_AXIS, ShardedData, ShardLayout, check_mesh, default_mesh, shard_rows,
)
from mogjax.suffstats import SufficientStats, stats_from_moments


# ---- inside the shard_map: every function below sees one device's rows ----


def _local_rows(x_local: Array, layout: ShardLayout):
    """(row weights (r,): 0 for padding, global (weighted) center (d,), the rows with
    the padding moved onto the center)."""
    valid = jnp.asarray(layout.shard_counts)[jax.lax.axis_index(layout.axis_name)]
    mask = jnp.arange(x_local.shape[0]) < valid
    if layout.weighted:
        weight, x_local = jnp.where(mask, x_local[:, -1], 0.0), x_local[:, :-1]
        total = jnp.sum(weight[:, None] * x_local, axis=0)
        mass = jax.lax.psum(jnp.sum(weight), layout.axis_name)
    else:
        weight, mass = mask, layout.n_samples
        total = jnp.sum(jnp.where(mask[:, None], x_local, 0.0), axis=0)
    center = jax.lax.psum(total, layout.axis_name) / mass
    return weight, center, jnp.where(mask[:, None], x_local, center)


def _sharded_e_step(params, data, weight, center, layout, block_size, data_are_features):
    """Statistics of this device's rows, summed over the mesh: replicated."""
    local = e_step_moments(params, data, center, block_size, data_are_features, weight=weight)
    ll, counts, moments = jax.lax.psum(local, layout.axis_name)
    n = (jax.lax.psum(jnp.sum(weight), layout.axis_name) if layout.weighted
         else jnp.asarray(layout.n_samples, data.dtype))
    return stats_from_moments(n, ll, center, counts, moments, params.covariance_type)


def _gather_rows(x_local: Array, rows: Array, layout: ShardLayout) -> Array:
    """Global valid rows ``rows`` (m,) of the sharded data, replicated: (m, d)."""
    counts = np.asarray(layout.shard_counts)
    ends = np.cumsum(counts)
    shard = jnp.searchsorted(jnp.asarray(ends, rows.dtype), rows, side="right")
    local = rows - jnp.asarray(ends - counts, rows.dtype)[shard]
    picked = x_local[jnp.clip(local, 0, x_local.shape[0] - 1)]
    mine = shard == jax.lax.axis_index(layout.axis_name)
    return jax.lax.psum(jnp.where(mine[:, None], picked, 0.0), layout.axis_name)


def _init_sample_rows(key: Array, n: int, m: int) -> Array:
    """All of ``0..n-1`` if ``m >= n``, else one random row from each of ``m`` strata."""
    if m >= n:
        return jnp.arange(n)
    edges = (np.arange(m + 1, dtype=np.int64) * n) // m
    return jnp.asarray(edges[:-1]) + jax.random.randint(key, (m,), 0, jnp.asarray(np.diff(edges)))


@functools.partial(
    jax.jit,
    static_argnames=(
        "layout", "k", "covariance_type", "init", "capacity", "equal_weights",
        "block_size", "init_sample", "needs_data",
    ),
)
def _fit_sharded_compiled(
    x, keys, user_init, tol, reg_covar, patience, max_iter, *, layout, k, covariance_type, init,
    capacity, equal_weights, block_size, init_sample, needs_data,
) -> FitResult:
    """One program: initialise and run EM for every key; return the best run."""
    n, d = layout.n_samples, x.shape[1] - layout.weighted

    def per_device(x_stored, keys, user_init, tol, reg_covar, patience, max_iter):
        weight, center, x_local = _local_rows(x_stored, layout)
        data, _, cached = e_step_data(x_local, covariance_type, center)
        e_step_fn = lambda p: _sharded_e_step(p, data, weight, center, layout, block_size,
                                              cached)

        def one_run(key):
            w_init = None
            if needs_data:
                rows = _init_sample_rows(jax.random.fold_in(key, 1), n, init_sample)
                x_init = _gather_rows(x_stored, rows, layout)
                if layout.weighted:
                    x_init, w_init = x_init[:, :-1], x_init[:, -1]
            else:  # every value given: initialize only reads the shape and dtype
                x_init = jnp.zeros((k, d), x_local.dtype)
            params = initialize(
                key, x_init, k, covariance_type, init, reg_covar, equal_weights=equal_weights,
                block_size=block_size, sample_weight=w_init, **user_init,
            )
            return em_loop(e_step_fn, params, tol, reg_covar, max_iter, equal_weights,
                           patience=patience, capacity=capacity)

        if keys.shape[0] == 1:
            runs = jax.tree.map(lambda a: a[None], one_run(keys[0]))
        else:
            runs = jax.vmap(one_run)(keys)
        return best_of(runs)

    axis = layout.axis_name
    fit = jax.shard_map(
        per_device, mesh=layout.mesh, in_specs=(P(axis), P(), P(), P(), P(), P(), P()),
        out_specs=P())
    return fit(x, keys, user_init, tol, reg_covar, patience, max_iter)


@functools.partial(jax.jit, static_argnames=("layout", "block_size"))
def _e_step_compiled(params, x, *, layout, block_size):
    def per_device(params, x_local):
        weight, center, x_local = _local_rows(x_local, layout)
        return _sharded_e_step(params, x_local, weight, center, layout, block_size, False)

    axis = layout.axis_name
    return jax.shard_map(per_device, mesh=layout.mesh, in_specs=(P(), P(axis)), out_specs=P())(
        params, x
    )


def e_step_sharded(
    params: MixtureParams, data: ShardedData, *, block_size: int | None = None
) -> SufficientStats:
    """The E-step statistics of all the rows, each device reducing its own. Jitted.

    Args:
      params: the mixture (replicated).
      data: rows from ``shard_rows``.
      block_size: rows per block on each device (``None``: chosen from the sizes).

    Returns:
      ``SufficientStats`` of the ``n`` valid rows, centerd on their mean, replicated;
      ``m_step`` of it is one EM iteration.

    Examples:
      >>> import numpy as np
      >>> p = MixtureParams(np.zeros(1), np.zeros((1, 1)), np.ones(1), "identity")
      >>> s = e_step_sharded(p, shard_rows(np.array([[1.0], [3.0]])))
      >>> float(s.counts[0]), float(s.center[0]), float(s.n)
      (2.0, 2.0, 2.0)
    """
    if not isinstance(data, ShardedData):
        raise TypeError(f"data must come from shard_rows, got {type(data).__name__}")
    if params.n_features != data.x.shape[1] - data.layout.weighted:
        raise ValueError(f"data has {data.x.shape[1]} features, params {params.n_features}")
    return _e_step_compiled(params, data.x, layout=data.layout, block_size=block_size)


def fit_em_sharded(
    x: "ArrayLike | ShardedData",
    k: int | None = None,
    *,
    mesh: Mesh | None = None,
    axis_name: str = DATA_AXIS,
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
    init_sample: int = INIT_SAMPLE,
    patience: int = 1,
    sample_weight: ArrayLike | None = None,
    missing: str = "error",
) -> FitResult:
    r"""``fit_em`` with the rows sharded over the devices (and processes) of a mesh.

    Every device runs the blocked E-step on its rows; one ``psum`` per iteration
    adds the statistics; the M-step, the stopping rule (scikit-learn's, as
    ``fit_em``) and the curve are replicated. The whole fit is one compiled
    program. From the same initial parameters the result equals ``fit_em``'s up to
    the order of the floating-point sums.

    Initialisation: ``init_params`` (a complete ``MixtureParams``) skips it.
    Otherwise ``init`` runs replicated on every device over the data gathered
    to it: all ``n`` rows while ``n <= init_sample`` (then, with one process, the
    very start ``fit_em`` takes for the same ``seed``), else ``init_sample`` rows,
    one drawn at random from each of ``init_sample`` equal strata of the global row
    order (memory ``init_sample * d`` per device).

    Args:
      x: the rows this process holds, (n_local, d) (all of them with one process),
        or ``ShardedData`` from ``shard_rows`` (then ``mesh`` must be ``None``).
      k, covariance_type, init, max_iter, tol, reg_covar, n_init, seed,
        init_params, equal_weights, block_size, patience: as ``fit_em``
        (``block_size`` is per device). With several processes every process passes
        the same values.
      sample_weight: the local rows' weights (n_local,), as ``fit_em``'s (with
        ``ShardedData``, give them to ``shard_rows`` instead).
      mesh: a 1-D mesh (default: all devices, axis ``axis_name``).
      axis_name: the mesh axis holding the rows.
      init_sample: most rows the initialisation sees (>= k).
      missing: as ``fit_em``: with ``"marginalize"`` NaN entries of ``x`` (an array,
        one process) are missing at random. Every device holds a contiguous share
        of the rows grouped by pattern (``mogjax.missing``, one pattern table for
        all), reduces them to per-pattern moments, one ``psum`` adds those and the
        expected statistics follow replicated: ``fit_em``'s marginalised EM. The
        initialisation runs on the host over the rows (a strided sample of at most
        ``init_sample``) with each missing entry at its column's mean.

    Returns:
      ``FitResult``, replicated on every device (and process).

    Raises:
      ValueError: bad input, as ``fit_em``; ``DegenerateCovarianceError`` when the
        covariances stop being positive definite.

    Examples:
      >>> import numpy as np
      >>> x = np.concatenate([np.random.default_rng(0).normal(m, 1.0, (101, 2)) for m in (-5, 5)])
      >>> res = fit_em_sharded(x, 2, covariance_type="diag")
      >>> sorted(round(float(m)) for m in res.params.means[:, 0])
      [-5, 5]
    """
    v.check_choice(missing, "missing", ("error", "marginalize"))
    if missing == "marginalize" and not isinstance(x, ShardedData):
        arr = np.asarray(x)
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            return _fit_missing_sharded(
                arr, k, mesh=mesh, axis_name=axis_name, covariance_type=covariance_type,
                init=init, max_iter=max_iter, tol=tol, reg_covar=reg_covar, n_init=n_init,
                seed=seed, init_params=init_params, equal_weights=equal_weights,
                block_size=block_size, init_sample=init_sample, patience=patience,
                sample_weight=sample_weight)
    if isinstance(x, ShardedData):
        if mesh is not None or sample_weight is not None:
            raise ValueError("Pass mesh to shard_rows (sample_weight too), not with ShardedData")
        data = x
    else:
        data = shard_rows(x, mesh, axis_name=axis_name, sample_weight=sample_weight)
    n, d = data.n_samples, data.x.shape[1] - data.layout.weighted
    patience, _ = v.check_stop_rule(patience, None)
    k, init, max_iter, n_init, tol, reg_covar = v.check_fit_settings(
        k, init_params, covariance_type, init, max_iter, n_init, tol, reg_covar)
    init_sample = v.check_int(init_sample, "init_sample", k)
    v.check_enough_samples(n, k)
    user_init = v.check_user_init(init_params, k, d, covariance_type)
    needs_data = not (
        {"weights", "means"} <= set(user_init)
        and ("precisions" in user_init or covariance_type == "identity")
    )
    if block_size is not None:
        block_size = _blocks.choose_block_size(data.layout.rows_per_shard, 1, block_size)
    dtype = data.x.dtype
    best = _fit_sharded_compiled(
        data.x, v.split_keys(seed, n_init), user_init, jnp.asarray(tol, dtype),
        jnp.asarray(reg_covar, dtype), jnp.int32(patience), jnp.int32(max_iter),
        layout=data.layout, k=k, covariance_type=covariance_type, init=init,
        capacity=curve_capacity(max_iter),
        equal_weights=bool(equal_weights), block_size=block_size,
        init_sample=min(init_sample, n), needs_data=needs_data,
    )
    best = trimmed(best, max_iter)
    raise_if_degenerate(best, dtype)
    return best


# ---- missing values: rows grouped by pattern on every device ----


@functools.partial(
    jax.jit,
    static_argnames=("mesh", "axis_name", "covariance_type", "block", "block_size",
                     "capacity", "equal_weights"),
)
def _fit_missing_compiled(x, weight, pattern, patterns, center, params, tol, reg_covar,
                          patience, max_iter, *, mesh, axis_name, covariance_type, block,
                          block_size, capacity, equal_weights) -> FitResult:
    """Marginalised EM from ``params`` over rows grouped by pattern on every device."""

    def per_device(x_local, w_local, pattern_local, patterns, center, params, tol, reg_covar,
                   patience, max_iter):
        data = MissingData(x_local, w_local, pattern_local, patterns,
                           jnp.zeros((0,), jnp.int32), block)

        def e_step_fn(p):
            terms = pattern_terms(p, patterns, center)
            local = pattern_moments(terms, data, center, covariance_type, w_local, None,
                                    block_size)
            return expected_stats(p, patterns, center, jax.lax.psum(local, axis_name))

        return em_loop(e_step_fn, params, tol, reg_covar, max_iter, equal_weights,
                       patience=patience, capacity=capacity)

    rows = P(axis_name)
    fit = jax.shard_map(per_device, mesh=mesh,
                        in_specs=(rows, rows, rows) + (P(),) * 7, out_specs=P())
    return fit(x, weight, pattern, patterns, center, params, tol, reg_covar, patience,
               max_iter)


def _fit_missing_sharded(x: np.ndarray, k, *, mesh, axis_name, covariance_type, init,
                         max_iter, tol, reg_covar, n_init, seed, init_params, equal_weights,
                         block_size, init_sample, patience, sample_weight) -> FitResult:
    """``fit_em_sharded(missing="marginalize")`` of an array holding NaN (one process)."""
    if jax.process_count() > 1:
        raise ValueError("missing='marginalize' in fit_em_sharded needs one process: with "
                         "several, every process would have to share the pattern table")
    dtype = v.check_data(np.where(np.isnan(x), 0.0, x)).dtype
    n, d = x.shape
    patterns, _ = find_patterns(x)
    weight = v.check_sample_weight(sample_weight, n, dtype)
    patience, _ = v.check_stop_rule(patience, None)
    k, init, max_iter, n_init, tol, reg_covar = v.check_fit_settings(
        k, init_params, covariance_type, init, max_iter, n_init, tol, reg_covar)
    init_sample = v.check_int(init_sample, "init_sample", k)
    v.check_enough_samples(n if weight is None else int(jnp.sum(weight > 0)), k)
    user_init = v.check_user_init(init_params, k, d, covariance_type)
    mesh = default_mesh(axis_name) if mesh is None else check_mesh(mesh, axis_name)
    w = np.ones(n) if weight is None else np.asarray(weight, np.float64)
    observed = ~np.isnan(x)
    mass = (observed * w[:, None]).sum(axis=0)
    center = np.where(mass > 0, (np.where(observed, x, 0.0) * w[:, None]).sum(axis=0)
                      / np.where(mass > 0, mass, 1.0), 0.0)
    # every device a contiguous share of the rows, grouped by pattern, one shape for all
    shards = mesh.devices.size
    per = -(-n // shards)
    block = choose_block(n, len(patterns))
    parts = [(x[i * per:(i + 1) * per], w[i * per:(i + 1) * per]) for i in range(shards)]
    split = [split_missing(xs, dtype, block, patterns) if len(xs) else None for xs, _ in parts]
    cap = max(s.x.shape[0] for s in split if s is not None)
    layouts = [split_missing(xs, dtype, block, patterns, cap) if len(xs) else None
               for xs, _ in parts]
    blank = lambda a: jnp.zeros((cap,) + a.shape[1:], a.dtype)
    first = layouts[0]
    stack = lambda f: jnp.concatenate([blank(f(first)) if s is None else f(s)
                                       for s in layouts])
    xs = stack(lambda s: s.x)
    pattern = stack(lambda s: s.pattern)
    ws = jnp.concatenate([blank(first.real) if s is None else s.place(jnp.asarray(wi, dtype))
                          for s, (_, wi) in zip(layouts, parts)])
    sharding = NamedSharding(mesh, P(axis_name))
    xs, ws, pattern = (jax.device_put(a, sharding) for a in (xs, ws, pattern))
    # the start: the rows (a strided sample) with each missing entry at its column's mean
    stride = max(1, -(-n // init_sample))
    x_init = jnp.asarray(np.where(observed, x, center)[::stride], dtype)
    w_init = None if weight is None else jnp.asarray(w[::stride], dtype)
    center = jnp.asarray(center, dtype)
    if block_size is not None:
        block_size = _blocks.choose_block_size(cap, 1, block_size)
    reg = jnp.asarray(reg_covar, dtype)
    results = []
    for key in v.split_keys(seed, n_init):
        params = initialize_compiled(
            key, x_init, k=k, covariance_type=covariance_type, method=init, reg_covar=reg,
            equal_weights=bool(equal_weights), block_size=None, sample_weight=w_init,
            **user_init)
        results.append(_fit_missing_compiled(
            xs, ws, pattern, jnp.asarray(patterns), center, params, jnp.asarray(tol, dtype),
            reg, jnp.int32(patience), jnp.int32(max_iter), mesh=mesh, axis_name=axis_name,
            covariance_type=covariance_type, block=block, block_size=block_size,
            capacity=curve_capacity(max_iter), equal_weights=bool(equal_weights)))
    best = trimmed(pick_best(results), max_iter)
    raise_if_degenerate(best, dtype)
    return best
