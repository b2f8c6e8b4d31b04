"""Chunked data: where the rows of data larger than memory come from.

**What counts as chunked data** (``as_source``):

- a ``numpy.memmap`` (``np.load(path, mmap_mode="r")``), or the path of a ``.npy``
  file: read in ``chunk_size`` rows by plain file reads where the rows are
  contiguous on disk, so the process never holds more than a chunk of the file
  (pages of a memory map would count in its resident memory);
- any other 2-D array: sliced into ``chunk_size`` rows;
- a list or tuple of 2-D arrays (the chunks, any lengths);
- a zero-argument callable returning a fresh iterable of 2-D arrays: called once
  per pass (a first pass, then one per EM iteration), so it must give the same rows
  every time; ``lambda: np.load(...)`` readers and generator functions fit here;
- a one-shot iterator (a generator object): only online EM (``mogjax.online``) can
  use it, since exact EM reads the data once per iteration.

Every chunk is checked as it is read (columns, NaN, infinity; errors name the chunk
and row), re-cut to a fixed number of rows and padded (``rebatch``, ``padded``), so
that a jitted function of a chunk compiles once.
"""

import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import jax
import numpy as np

from mogjax import _validation as v
from mogjax.init import INIT_SAMPLE
from mogjax.missing import pattern_keys, patterns_of_keys

CHUNK_ELEMENTS = 2**22  # default chunk of an array source: 16 MiB of float32

class ChunkSource(NamedTuple):
    """Chunked data on the host (never traced).

    Attributes:
      chunks: zero-argument function returning a fresh iterator of 2-D arrays.
      reiterable: False for a one-shot iterator (it can be read once).
    """

    chunks: Callable[[], Iterator]
    reiterable: bool


def is_chunked(x) -> bool:
    """Whether ``fit_em`` takes ``x`` as chunked data rather than one array.

    True for a ``numpy.memmap``, a ``ChunkSource``, a callable, an iterator, and a
    list or tuple holding 2-D arrays (a list of rows stays one array). Other
    iterable objects are accepted by ``fit_em_chunked`` but not detected here.
    """
    if isinstance(x, (np.memmap, ChunkSource, Iterator)) or callable(x):
        return True
    if type(x) in (list, tuple):  # not NamedTuples such as ShardedData
        return any(isinstance(c, (np.ndarray, jax.Array)) and c.ndim >= 2 for c in x)
    return False


def _file_region(a: np.ndarray):
    """``(filename, byte offset of a[0, 0])`` for a C-contiguous read-only memmap, else
    None (a copy-on-write or writable map may hold changes the file does not)."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not (isinstance(root, np.memmap) and isinstance(root.base, mmap.mmap)):
        return None
    if getattr(root, "mode", None) != "r":
        return None
    if getattr(a, "filename", None) is None or not a.flags.c_contiguous:
        return None
    delta = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return a.filename, root.offset + delta


def _file_chunks(filename, offset: int, dtype, shape, rows: int) -> Iterator[np.ndarray]:
    """Rows of a raw C-order array in a file, ``rows`` at a time, by plain reads."""
    n, d = shape
    row_bytes = d * np.dtype(dtype).itemsize
    with open(filename, "rb") as f:
        for start in range(0, n, rows):
            count = min(rows, n - start)
            f.seek(offset + start * row_bytes)
            out = np.fromfile(f, dtype, count * d)
            if out.size != count * d:
                end = start + out.size // d
                raise ValueError(f"data file {filename!r} ended at row {end} of {n}")
            yield out.reshape(count, d)


def _array_source(a, chunk_size: int | None) -> ChunkSource:
    if a.ndim != 2:
        raise ValueError(
            f"X must be a 2-D array (n_samples, n_features), got shape {tuple(a.shape)}"
        )
    rows = chunk_size or max(256, CHUNK_ELEMENTS // max(a.shape[1], 1))
    region = _file_region(a) if isinstance(a, np.memmap) else None
    if region is not None:
        return ChunkSource(lambda: _file_chunks(*region, a.dtype, a.shape, rows), True)
    return ChunkSource(lambda: (a[s : s + rows] for s in range(0, a.shape[0], rows)), True)


def as_source(data, chunk_size: int | None = None) -> ChunkSource:
    """The ``ChunkSource`` of any accepted form of chunked data (see the module doc).

    Raises:
      TypeError: ``data`` is none of the accepted forms.
      ValueError: an unreadable ``.npy`` path, or an array that is not 2-D.
    """
    if isinstance(data, ChunkSource):
        return data
    if isinstance(data, (str, os.PathLike)):
        try:
            data = np.load(data, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"data file {str(data)!r} cannot be read as a .npy array ({err})"
            ) from None
    if isinstance(data, (np.ndarray, jax.Array)):
        return _array_source(data, chunk_size)
    if callable(data):
        return ChunkSource(lambda: iter(data()), True)
    if isinstance(data, Iterator):
        used = []

        def once():
            if used:
                raise ValueError("a one-shot iterator of chunks was already read")
            used.append(True)
            return data

        return ChunkSource(once, False)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        return ChunkSource(lambda: iter(data), True)
    raise TypeError(
        "chunked data must be a numpy.memmap, a .npy path, a 2-D array, a sequence of "
        "2-D arrays, or a zero-argument callable returning an iterable of 2-D arrays; "
        f"got {type(data).__name__}"
    )


def check_chunk(
    chunk, index: int, row: int, n_features: int | None, finite: bool = True,
    allow_nan: bool = False,
) -> np.ndarray:
    """Validate one chunk (the ``index``-th, starting at data row ``row``).

    Raises ``TypeError``/``ValueError`` naming the chunk: non-numeric, not 2-D, a
    number of columns other than ``n_features``, NaN or infinity (when ``finite``;
    with ``allow_nan`` NaN is a missing entry and only infinity is refused).
    """
    try:
        a = np.asarray(chunk)
    except (TypeError, ValueError) as err:
        raise TypeError(f"chunk {index} is not a numeric array ({type(chunk).__name__})") from err
    if a.dtype.kind not in "biuf":
        raise TypeError(f"chunk {index} must be numeric, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"chunk {index} must be 2-D (rows, features), got shape {a.shape}")
    if n_features is not None and a.shape[1] != n_features:
        raise ValueError(
            f"chunk {index} has {a.shape[1]} columns, but the first chunk has {n_features}"
        )
    bad = (np.isinf(a) if allow_nan else ~np.isfinite(a)) if finite else None
    if bad is not None and bad.any():
        r, c = np.argwhere(bad)[0]
        what = "NaN" if np.isnan(a[r, c]) else "infinity"
        raise ValueError(
            f"chunk {index} contains {what} (row {r} of the chunk, row {row + r} of the "
            f"data, column {c}); remove or impute non-finite values"
        )
    return a


def _weight_feed(sample_weight):
    """``next_weights(m)``: the next ``m`` rows' weights, from one 1-D array or from
    chunked 1-D weights (a sequence or callable), and ``done()`` checking nothing is left."""
    if isinstance(sample_weight, (np.ndarray, jax.Array)):
        w, used = np.asarray(sample_weight), [0]
        if w.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D, got shape {w.shape}")

        def take(m):
            used[0] += m
            if used[0] > w.shape[0]:
                raise ValueError(f"sample_weight has {w.shape[0]} entries, the data more "
                                 f"rows (at least {used[0]})")
            return w[used[0] - m: used[0]]

        def done(rows):
            if rows != w.shape[0]:
                raise ValueError(f"sample_weight has {w.shape[0]} entries, the data {rows} rows")

        return take, done
    chunks = iter(as_source(sample_weight).chunks())

    def done(rows):
        if next(chunks, None) is not None:
            raise ValueError("sample_weight has more chunks than the data")

    return lambda m: np.asarray(next(chunks, np.zeros(0))), done


def check_weight_chunk(w: np.ndarray, rows: int, index: int, row: int) -> None:
    """One chunk's weights: 1-D, ``rows`` long, finite, non-negative (errors name it)."""
    if w.ndim != 1 or w.shape[0] != rows or w.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight chunk {index} must be 1-D numbers matching the "
                         f"data's {rows} rows, got shape {w.shape} and dtype {w.dtype}")
    bad = ~np.isfinite(w) | (w < 0)
    if np.any(bad):
        r = int(np.argmax(bad))
        raise ValueError(f"sample_weight chunk {index} has {w[r]} at row {r} (row {row + r} "
                         "of the data): weights must be finite and non-negative")


def with_weights(source: ChunkSource, sample_weight) -> ChunkSource:
    """Chunks of ``[x, w]``: the data's rows with their weights as a last column.

    ``sample_weight`` is one 1-D array (cut to the data's chunks) or chunked 1-D
    weights parallel to the data (a sequence or a callable, the same lengths). Each
    weight chunk is checked as it is read (``check_weight_chunk``).
    """

    def chunks():
        take, done = _weight_feed(sample_weight)
        row = 0
        for index, a in enumerate(source.chunks()):
            a = np.asarray(a)
            if a.ndim != 2:
                yield a  # checked_chunks names the problem
                continue
            w = take(a.shape[0])
            check_weight_chunk(np.asarray(w), a.shape[0], index, row)
            row += a.shape[0]
            dtype = a.dtype if a.dtype.kind == "f" else np.float64
            yield np.concatenate([a.astype(dtype), np.asarray(w, dtype)[:, None]], axis=1)
        done(row)

    return ChunkSource(chunks, source.reiterable)


def checked_chunks(source: ChunkSource, n_features=None, finite=True,
                   allow_nan: bool = False) -> Iterator[np.ndarray]:
    """The source's non-empty chunks, each through ``check_chunk``."""
    row = 0
    for index, raw in enumerate(source.chunks()):
        a = check_chunk(raw, index, row, n_features, finite, allow_nan)
        n_features = a.shape[1]
        row += a.shape[0]
        if a.shape[0]:
            yield a


def rebatch(arrays: Iterable[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """Arrays of exactly ``rows`` rows (the last may be shorter) from any lengths."""
    buf, have = [], 0
    for a in arrays:
        while a.shape[0]:
            if not buf and a.shape[0] >= rows:
                yield a[:rows]
                a = a[rows:]
                continue
            take = min(rows - have, a.shape[0])
            buf.append(a[:take])
            have, a = have + take, a[take:]
            if have == rows:
                yield np.concatenate(buf)
                buf, have = [], 0
    if buf:
        yield np.concatenate(buf)


def padded(batch: np.ndarray, rows: int, fill: np.ndarray) -> np.ndarray:
    """``batch`` (m, d) as ``fill.dtype``, with copies of ``fill`` (d,) up to ``rows``.

    The statistics' centre makes a harmless filler: its features are all zero.
    """
    out = np.asarray(batch, fill.dtype)
    if out.shape[0] < rows:
        out = np.concatenate([out, np.broadcast_to(fill, (rows - out.shape[0], fill.shape[0]))])
    return out


class DataSummary(NamedTuple):
    """What the first pass learns: sizes, dtype, (weighted) mean in float64, the init
    sample (with its weight column when weighted) and the total weight (``n`` if not).
    With missing entries, ``mean`` is every column's mean over its observed entries,
    the sample keeps its NaN and ``patterns`` (p, d) holds every pattern of observed
    entries (``None`` when nothing is missing)."""

    n: int
    n_features: int
    dtype: np.dtype
    mean: np.ndarray
    longest: int
    sample: np.ndarray
    total_weight: float
    patterns: np.ndarray | None = None


def _missing_rows(x: np.ndarray, index: int, row: int) -> np.ndarray:
    """The observed entries of a chunk (NaN missing); a row with none is named."""
    observed = ~np.isnan(x)
    empty = ~observed.any(axis=1)
    if empty.any():
        r = int(np.argmax(empty))
        raise ValueError(f"chunk {index} has a row with every entry missing (row {r} of the "
                         f"chunk, row {row + r} of the data); remove such rows")
    return observed


def summarize(source: ChunkSource, sample_size: int = INIT_SAMPLE,
              weighted: bool = False, missing: bool = False) -> DataSummary:
    """One validating pass: sizes, mean, longest chunk and a strided sample.

    The sample holds the rows whose index is a multiple of a stride (a power of
    two, doubled whenever more than ``sample_size`` rows are kept), so it spreads
    over the whole data and is every row when ``n <= sample_size``. With
    ``weighted`` the last column of every chunk is the rows' weight (``with_weights``).
    With ``missing`` NaN entries are missing (``DataSummary``).
    """
    n, longest, stride, total, dtype, kept, mass = 0, 0, 1, None, None, [], 0.0
    col_mass, keys = 0.0, None
    for index, a in enumerate(checked_chunks(source, allow_nan=missing)):
        dtype = np.dtype(v.float_dtype(a.dtype)) if dtype is None else dtype
        w = a[:, -1].astype(np.float64) if weighted else None
        x = a[:, :-1] if weighted else a
        if missing:
            observed = _missing_rows(x, index, n)
            keys = np.unique(pattern_keys(observed) if keys is None else
                             np.concatenate([keys, pattern_keys(observed)]))
            x = np.where(observed, x, 0.0)
            ow = observed if w is None else observed * w[:, None]
            col_mass = col_mass + ow.sum(axis=0, dtype=np.float64)
        total = (x.sum(axis=0, dtype=np.float64) if w is None else w @ x.astype(np.float64)) + (
            0.0 if total is None else total)
        mass += a.shape[0] if w is None else float(w.sum())
        kept.append(np.array(a[(-n) % stride :: stride], dtype))
        while sum(len(s) for s in kept) > sample_size:
            kept, stride = [np.concatenate(kept)[::2]], stride * 2
        n, longest = n + a.shape[0], max(longest, a.shape[0])
    if n == 0:
        raise ValueError("the data source yielded no rows (no chunks, or only empty ones)")
    if mass <= 0:
        raise ValueError("sample_weight is zero everywhere: at least one row must weigh > 0")
    sample = np.concatenate(kept)
    d = sample.shape[1] - weighted
    if keys is not None and not (len(keys) == 1 and patterns_of_keys(keys, d).all()):
        patterns = patterns_of_keys(keys, d)
        mean = np.where(col_mass > 0, total / np.where(col_mass > 0, col_mass, 1.0), 0.0)
        return DataSummary(n, d, dtype, mean, longest, sample, mass, patterns)
    return DataSummary(n, d, dtype, total / mass, longest, sample, mass)
