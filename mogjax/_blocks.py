"""Bounded memory: run a function over row blocks of large arrays.

Anything whose intermediate is ``(n, width)`` with a large ``width`` (EM's quadratic
features, the ``(n, k)`` responsibilities) goes through these helpers, so its peak
memory is ``O(block_size * width)`` however large ``n`` is. The blocks are a
``fori_loop`` of ``dynamic_slice``s over the first ``(n // block_size) * block_size``
rows plus one call on the remainder, so no padding is needed here (chunked and
sharded EM pad to fixed shapes themselves and pass 0/1 row weights).
"""

import jax
import jax.numpy as jnp

# Elements of one block's widest intermediate: 2**21 float32 = 8 MiB stays in cache
# levels that keep the matrix products fast (see benchmarks/em.py).
BLOCK_ELEMENTS = 2**21


def choose_block_size(n: int, width: int, block_size: int | None = None) -> int:
    """Rows per block: ``block_size`` if given, else about ``BLOCK_ELEMENTS / width``."""
    if block_size is not None:
        if int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        return min(int(block_size), n)
    rows = max(512, BLOCK_ELEMENTS // max(width, 1)) // 256 * 256  # aligned slices
    return max(1, min(n, rows))


def _block(arrays, start, block_size):
    return [jax.lax.dynamic_slice_in_dim(a, start, block_size) for a in arrays]


def sum_over_blocks(fn, arrays, block_size: int):
    """``sum_b fn(*[a[b] for a in arrays])`` over row blocks; ``fn`` returns a pytree.

    Blocks are read in place with ``dynamic_slice`` (no copy of the arrays).
    """
    n = arrays[0].shape[0]
    n_blocks, n_full = n // block_size, (n // block_size) * block_size
    total = None
    if n_blocks >= 1:
        # The loop starts from the first block's sums, not from zeros: inside
        # shard_map the carry must vary over the mesh as the block sums do.
        total = fn(*[a[:block_size] for a in arrays])

        def body(i, acc):
            blocks = _block(arrays, i * block_size, block_size)
            return jax.tree.map(jnp.add, acc, fn(*blocks))

        if n_blocks > 1:
            total = jax.lax.fori_loop(1, n_blocks, body, total)
    if n_full < n:
        rest = fn(*[a[n_full:] for a in arrays])
        total = rest if total is None else jax.tree.map(jnp.add, total, rest)
    return total


def map_over_blocks(fn, arrays, block_size: int):
    """``fn`` applied per row block, outputs concatenated along the first axis."""
    n = arrays[0].shape[0]
    n_blocks, n_full = n // block_size, (n // block_size) * block_size
    parts = []
    if n_blocks:
        out = jax.lax.map(
            lambda i: fn(*_block(arrays, i * block_size, block_size)), jnp.arange(n_blocks)
        )
        parts.append(jax.tree.map(lambda o: o.reshape((n_full,) + o.shape[2:]), out))
    if n_full < n:
        parts.append(fn(*[a[n_full:] for a in arrays]))
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *parts)
