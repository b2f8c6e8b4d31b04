"""Rows of the data over the devices (and processes) of a 1-D mesh, for sharded EM.

``shard_rows`` places the rows each process holds on its devices, padding every
device to the same number of rows (zero-weight rows, last); ``ShardLayout`` records
how many rows of each shard are real, so the fit (``mogjax.sharded``) can mask the
padding on device with nothing but ``x`` travelling.
"""

import dataclasses
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mogjax import _validation as v
from mogjax._typing import Array, ArrayLike

DATA_AXIS = "data"


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
    weighted: bool = False  # the last column of x holds the rows' sample weights

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


def check_mesh(mesh: Mesh, axis_name: str) -> Mesh:
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
    x: ArrayLike, mesh: Mesh | None = None, *, axis_name: str = DATA_AXIS,
    sample_weight: ArrayLike | None = None,
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
      sample_weight: the local rows' weights, (n_local,) (``None``: unweighted);
        they travel with the rows as a last column of ``x`` (``layout.weighted``).

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
    mesh = default_mesh(axis_name) if mesh is None else check_mesh(mesh, axis_name)
    layout = make_layout(mesh, axis_name, _rows_per_process(*x.shape))
    if sample_weight is not None:
        w = np.asarray(v.check_sample_weight(sample_weight, x.shape[0], x.dtype))
        x = np.concatenate([x, w[:, None]], axis=1)
        layout = dataclasses.replace(layout, weighted=True)
    n_local_devices = sum(dev.process_index == jax.process_index() for dev in mesh.devices.flat)
    local = np.zeros((layout.rows_per_shard * n_local_devices, x.shape[1]), x.dtype)
    local[: x.shape[0]] = x
    global_shape = (layout.rows_per_shard * mesh.devices.size, x.shape[1])
    sharding = NamedSharding(mesh, P(axis_name))
    x_global = jax.make_array_from_process_local_data(sharding, local, global_shape)
    return ShardedData(x_global, layout)
