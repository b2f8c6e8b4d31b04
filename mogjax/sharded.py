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
- the centre of the statistics is the global mean (``psum`` of the sums over ``n``);
- the whole fit (initialisation, the ``lax.while_loop``, the choice among restarts)
  is one ``jax.jit`` of one ``jax.shard_map``, with one ``psum`` per iteration.

Several processes (``jax.distributed.initialize``) run the very same code: each
process passes the rows it holds to ``shard_rows`` / ``fit_em_sharded`` and the
result is replicated everywhere; see ``docs/distributed.md``.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mogjax import _blocks
from mogjax import _validation as v
from mogjax import gaussian as gs
from mogjax._typing import Array, ArrayLike
from mogjax.em import (
    check_fit_settings,
    FAILURE_ADVICE, DegenerateCovarianceError, FitResult, _keys, caches_features,
    check_user_init, e_step_moments, em_loop,
)
from mogjax.init import initialize
from mogjax.mixture import MixtureParams
from mogjax.suffstats import SufficientStats, stats_from_moments

DATA_AXIS = "data"
# Without init_params, the initialisation sees every row while n is at most this,
# and otherwise a random subset of this many rows (one per stratum of the row order).
INIT_SAMPLES = 100_000


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """Where the rows live (static, hashable: it is compiled into the fit).

    Attributes:
      mesh: a 1-D mesh.
      axis_name: its axis.
      shard_counts: valid rows of each shard, in mesh order (the rest is padding).
      rows_per_shard: rows each device holds, padding included.
    """

    mesh: Mesh
    axis_name: str
    shard_counts: tuple[int, ...]
    rows_per_shard: int

    @property
    def n_samples(self) -> int:
        return sum(self.shard_counts)


class ShardedData(NamedTuple):
    """Rows sharded over a mesh: ``x`` (n_shards * rows_per_shard, d) and its layout."""

    x: Array
    layout: ShardLayout

    @property
    def n_samples(self) -> int:
        return self.layout.n_samples


def default_mesh(axis_name: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over every device of every process, ``jax.devices()`` order."""
    return Mesh(np.asarray(jax.devices()), (axis_name,))


def _check_mesh(mesh: Mesh, axis_name: str) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if mesh.axis_names != (axis_name,):
        raise ValueError(
            f"mesh must be 1-D with the single axis {axis_name!r}, got axes {mesh.axis_names}"
        )
    return mesh


def _rows_per_process(n_local: int, d: int) -> np.ndarray:
    """Local row counts of every process, (process_count,); one small all-gather."""
    if jax.process_count() == 1:
        return np.array([n_local])
    from jax.experimental import multihost_utils

    sizes = np.asarray(multihost_utils.process_allgather(np.array([n_local, d]))).reshape(-1, 2)
    if np.any(sizes[:, 1] != d):
        raise ValueError(
            f"Every process must hold rows of the same width; got {sizes[:, 1].tolist()}"
        )
    return sizes[:, 0]


def make_layout(mesh: Mesh, axis_name: str, rows_per_process) -> ShardLayout:
    """Pad each process's rows to the same per-device count and place them in order.

    Process ``p`` holding ``c_p`` rows and ``L`` devices of the mesh fills its shards
    in mesh order, ``rows_per_shard = max_p ceil(c_p / L)`` rows each, padding last
    (the order ``jax.make_array_from_process_local_data`` uses).
    """
    processes = [dev.process_index for dev in mesh.devices.flat]
    per_process = {p: processes.count(p) for p in set(processes)}
    if len(set(per_process.values())) != 1 or set(per_process) != set(range(len(rows_per_process))):
        raise ValueError(
            "The mesh must hold the same number of devices of every process; got "
            f"{per_process} for {len(rows_per_process)} processes"
        )
    local = next(iter(per_process.values()))
    rows = max(1, max(-(-int(c) // local) for c in rows_per_process))
    seen = {p: 0 for p in per_process}
    counts = []
    for p in processes:
        j, seen[p] = seen[p], seen[p] + 1
        counts.append(int(np.clip(int(rows_per_process[p]) - j * rows, 0, rows)))
    return ShardLayout(mesh, axis_name, tuple(counts), rows)


def shard_rows(
    x: ArrayLike, mesh: Mesh | None = None, *, axis_name: str = DATA_AXIS
) -> ShardedData:
    """Place the rows this process holds over its devices of a 1-D mesh.

    With one process ``x`` is the whole data set; with several (after
    ``jax.distributed.initialize``) every process calls this with its own rows (the
    counts may differ) and gets the same global array, whose row order is the
    processes' rows in mesh order. Each process pads its rows with zero-weight rows
    up to a common count per device.

    Args:
      x: local rows, (n_local, d); checked like ``fit_em``'s data.
      mesh: a 1-D mesh with axis ``axis_name`` (default: every device, in
        ``jax.devices()`` order).
      axis_name: the mesh axis the rows are split over.

    Returns:
      ``ShardedData`` with ``x`` of shape (n_shards * rows_per_shard, d), sharded
      ``PartitionSpec(axis_name)``, and its ``layout``.

    Examples:
      >>> import numpy as np
      >>> data = shard_rows(np.arange(10.0).reshape(5, 2))
      >>> data.n_samples, data.x.shape[1], tuple(data.x.sharding.spec)
      (5, 2, ('data',))
    """
    x = np.asarray(v.check_data(x))
    mesh = default_mesh(axis_name) if mesh is None else _check_mesh(mesh, axis_name)
    layout = make_layout(mesh, axis_name, _rows_per_process(*x.shape))
    n_local_devices = sum(dev.process_index == jax.process_index() for dev in mesh.devices.flat)
    local = np.zeros((layout.rows_per_shard * n_local_devices, x.shape[1]), x.dtype)
    local[: x.shape[0]] = x
    global_shape = (layout.rows_per_shard * mesh.devices.size, x.shape[1])
    sharding = NamedSharding(mesh, P(axis_name))
    x_global = jax.make_array_from_process_local_data(sharding, local, global_shape)
    return ShardedData(x_global, layout)


# ---- inside the shard_map: every function below sees one device's rows ----


def _local_rows(x_local: Array, layout: ShardLayout):
    """(mask (r,), global centre (d,), rows with the padding moved onto the centre)."""
    valid = jnp.asarray(layout.shard_counts)[jax.lax.axis_index(layout.axis_name)]
    mask = jnp.arange(x_local.shape[0]) < valid
    total = jnp.sum(jnp.where(mask[:, None], x_local, 0.0), axis=0)
    center = jax.lax.psum(total, layout.axis_name) / layout.n_samples
    return mask, center, jnp.where(mask[:, None], x_local, center)


def _sharded_e_step(params, data, mask, center, layout, block_size, data_are_features):
    """Statistics of this device's rows, summed over the mesh: replicated."""
    local = e_step_moments(params, data, center, block_size, data_are_features, weight=mask)
    ll, counts, moments = jax.lax.psum(local, layout.axis_name)
    n = jnp.asarray(layout.n_samples, data.dtype)
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


def _init_rows(key: Array, n: int, m: int) -> Array:
    """All of ``0..n-1`` if ``m >= n``, else one random row from each of ``m`` strata."""
    if m >= n:
        return jnp.arange(n)
    edges = (np.arange(m + 1, dtype=np.int64) * n) // m
    return jnp.asarray(edges[:-1]) + jax.random.randint(key, (m,), 0, jnp.asarray(np.diff(edges)))


@functools.partial(
    jax.jit,
    static_argnames=(
        "layout", "n_components", "covariance_type", "init", "max_iter", "equal_weights",
        "block_size", "init_samples", "needs_data",
    ),
)
def _fit_sharded_compiled(
    x, keys, user_init, tol, reg_covar, *, layout, n_components, covariance_type, init,
    max_iter, equal_weights, block_size, init_samples, needs_data,
) -> FitResult:
    """One program: initialise and run EM for every key; return the best run."""
    n, d = layout.n_samples, x.shape[1]

    def per_device(x_local, keys, user_init, tol, reg_covar):
        mask, center, x_local = _local_rows(x_local, layout)
        cached = caches_features(x_local, covariance_type)
        data = gs.quadratic_features(x_local - center, covariance_type) if cached else x_local
        e_step_fn = lambda p: _sharded_e_step(p, data, mask, center, layout, block_size, cached)

        def one_run(key):
            if needs_data:
                rows = _init_rows(jax.random.fold_in(key, 1), n, init_samples)
                x_init = _gather_rows(x_local, rows, layout)
            else:  # every value given: initialize only reads the shape and dtype
                x_init = jnp.zeros((n_components, d), x_local.dtype)
            params = initialize(
                key, x_init, n_components, covariance_type, init, reg_covar,
                equal_weights=equal_weights, block_size=block_size, **user_init,
            )
            return em_loop(e_step_fn, params, tol, reg_covar, max_iter, equal_weights)

        if keys.shape[0] == 1:
            runs = jax.tree.map(lambda a: a[None], one_run(keys[0]))
        else:
            runs = jax.vmap(one_run)(keys)
        final = jnp.take_along_axis(runs.curve, runs.n_iter[:, None], axis=1)[:, 0]
        score = jnp.where(runs.degenerate, -jnp.inf, jnp.nan_to_num(final, nan=-jnp.inf))
        return jax.tree.map(lambda a: a[jnp.argmax(score)], runs)

    axis = layout.axis_name
    fit = jax.shard_map(
        per_device, mesh=layout.mesh, in_specs=(P(axis), P(), P(), P(), P()), out_specs=P()
    )
    return fit(x, keys, user_init, tol, reg_covar)


@functools.partial(jax.jit, static_argnames=("layout", "block_size"))
def _e_step_compiled(params, x, *, layout, block_size):
    def per_device(params, x_local):
        mask, center, x_local = _local_rows(x_local, layout)
        return _sharded_e_step(params, x_local, mask, center, layout, block_size, False)

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
      ``SufficientStats`` of the ``n`` valid rows, centred on their mean, replicated;
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
    if params.n_features != data.x.shape[1]:
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
    init_samples: int = INIT_SAMPLES,
) -> FitResult:
    r"""``fit_em`` with the rows sharded over the devices (and processes) of a mesh.

    Every device runs the blocked E-step on its rows; one ``psum`` per iteration
    adds the statistics; the M-step, the stopping rule (scikit-learn's, as
    ``fit_em``) and the curve are replicated. The whole fit is one compiled
    program. From the same initial parameters the result equals ``fit_em``'s up to
    the order of the floating-point sums.

    Initialisation: ``init_params`` (a complete ``MixtureParams``) skips it.
    Otherwise ``init`` runs replicated on every device over the data gathered
    to it: all ``n`` rows while ``n <= init_samples`` (then, with one process, the
    very start ``fit_em`` takes for the same ``seed``), else ``init_samples`` rows,
    one drawn at random from each of ``init_samples`` equal strata of the global row
    order (memory ``init_samples * d`` per device).

    Args:
      x: the rows this process holds, (n_local, d) (all of them with one process),
        or ``ShardedData`` from ``shard_rows`` (then ``mesh`` must be ``None``).
      k, covariance_type, init, max_iter, tol, reg_covar, n_init, seed,
        init_params, equal_weights, block_size: as ``fit_em`` (``block_size`` is
        per device). With several processes every process passes the same values.
      mesh: a 1-D mesh (default: all devices, axis ``axis_name``).
      axis_name: the mesh axis holding the rows.
      init_samples: most rows the initialisation sees (>= k).

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
    if isinstance(x, ShardedData):
        if mesh is not None:
            raise ValueError("Pass mesh to shard_rows, not with ShardedData")
        data = x
    else:
        data = shard_rows(x, mesh, axis_name=axis_name)
    n, d = data.n_samples, data.x.shape[1]
    k, init, max_iter, n_init, tol, reg_covar = check_fit_settings(
        k, init_params, covariance_type, init, max_iter, n_init, tol, reg_covar)
    init_samples = v.check_int(init_samples, "init_samples", k)
    v.check_enough_samples(n, k)
    user_init = check_user_init(init_params, k, d, covariance_type)
    needs_data = not (
        {"weights", "means"} <= set(user_init)
        and ("precisions" in user_init or covariance_type == "identity")
    )
    if block_size is not None:
        block_size = _blocks.choose_block_size(data.layout.rows_per_shard, 1, block_size)
    dtype = data.x.dtype
    best = _fit_sharded_compiled(
        data.x, _keys(seed, n_init), user_init, jnp.asarray(tol, dtype),
        jnp.asarray(reg_covar, dtype), layout=data.layout, n_components=k,
        covariance_type=covariance_type, init=init, max_iter=max_iter,
        equal_weights=bool(equal_weights), block_size=block_size,
        init_samples=min(init_samples, n), needs_data=needs_data,
    )
    if bool(best.degenerate):
        extra = ", or use float64 (jax_enable_x64)" if dtype == jnp.float32 else ""
        raise DegenerateCovarianceError(FAILURE_ADVICE.format(extra=extra), best)
    return best
