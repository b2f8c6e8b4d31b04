"""Data: the small real data sets shipped with the package, and synthetic mixtures.

Files are read with NumPy's text parser (no pickle anywhere).
"""

from importlib import resources

import jax
import numpy as np

from mogjax import _validation as v
from mogjax.mixture import MixtureParams, sample


def _load_csv(name: str) -> tuple[np.ndarray, list[str]]:
    path = resources.files("mogjax") / "data" / name
    with path.open() as f:
        lines = [line for line in f if not line.startswith("#")]
    header = lines[0].strip().split(",")
    return np.loadtxt(lines[1:], delimiter=",", dtype=np.float64, ndmin=2), header


def load_old_faithful() -> np.ndarray:
    """Old Faithful geyser eruptions: (272, 2), duration and waiting time in minutes.

    Two clear clusters (short and long eruptions); the classic 2-D mixture example.

    Examples:
      >>> load_old_faithful().shape
      (272, 2)
    """
    data, _ = _load_csv("old_faithful.csv")
    return data


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    """Fisher's Iris: measurements (150, 4) in cm and species labels (150,) in {0, 1, 2}.

    Examples:
      >>> x, y = load_iris()
      >>> x.shape, sorted(set(y.tolist()))
      ((150, 4), [0, 1, 2])
    """
    data, _ = _load_csv("iris.csv")
    return data[:, :4], data[:, 4].astype(np.int64)


def make_mixture_params(
    seed: int, n_components: int, n_features: int, *, separation: float = 6.0,
    covariance_type: str = "full",
) -> MixtureParams:
    """Random mixture parameters with means about ``separation`` standard deviations apart.

    Weights are drawn from a Dirichlet(5) (no tiny component); covariances are
    random SPD matrices with eigenvalues in [0.5, 2] (their diagonal for ``diag``,
    a scale for ``spherical``, one shared matrix for ``tied``).
    """
    k = v.check_int(n_components, "n_components", 1)
    d = v.check_int(n_features, "n_features", 1)
    v.check_nonnegative(separation, "separation")
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 5.0))
    means = rng.normal(scale=separation, size=(k, d))
    q, _ = np.linalg.qr(rng.normal(size=(k, d, d)))
    eig = rng.uniform(0.5, 2.0, size=(k, d))
    full = np.einsum("kij,kj,klj->kil", q, eig, q)
    cov = {
        "full": full,
        "tied": full[0],
        "diag": eig,
        "spherical": eig[:, 0],
        "identity": np.ones(k),
    }[covariance_type]
    return MixtureParams.from_covariances(weights, means, cov, covariance_type)


def make_mixture(
    seed: int, n_samples: int, n_components: int, n_features: int, **kwargs
) -> tuple[np.ndarray, np.ndarray, MixtureParams]:
    """Points drawn from a random mixture: ``(x, labels, true_params)``.

    Args:
      seed: integer seed (parameters and points).
      n_samples, n_components, n_features: sizes.
      **kwargs: passed to ``make_mixture_params`` (``separation``, ``covariance_type``).

    Examples:
      >>> x, labels, params = make_mixture(0, 500, 3, 2)
      >>> x.shape, labels.shape, params.n_components
      ((500, 2), (500,), 3)
    """
    params = make_mixture_params(seed, n_components, n_features, **kwargs)
    x, labels = sample(jax.random.key(seed), params, n_samples)
    return np.asarray(x), np.asarray(labels), params


def separated_means(n_components: int, n_features: int, separation: float) -> np.ndarray:
    r"""``k`` points in ``d`` dimensions whose smallest pairwise distance is exactly
    ``separation * sqrt(d)`` (Dasgupta's c-separation, 1999, for unit covariances).

    When ``k <= d + 1`` the points are the vertices of a regular simplex (every pair
    at that distance), in the first ``k - 1`` coordinates. Otherwise no ``k`` points
    of ``R^d`` are equidistant, and they are the ``k`` points of the cubic lattice
    :math:`s\mathbb{Z}^d` nearest the origin (ties broken lexicographically): nearest
    neighbours at distance ``s``, the others farther. Both are centred on the origin.

    Examples:
      >>> m = separated_means(3, 2, 1.0)
      >>> from scipy.spatial.distance import pdist
      >>> np.round(pdist(m), 12).tolist() == [round(np.sqrt(2), 12)] * 3
      True
    """
    k = v.check_int(n_components, "n_components", 1)
    d = v.check_int(n_features, "n_features", 1)
    v.check_nonnegative(separation, "separation")
    s = float(separation) * np.sqrt(d)
    if k <= d + 1:  # centred unit vectors e_i s / sqrt(2) of R^k, in k - 1 coordinates
        simplex = (np.eye(k) - 1.0 / k) * s / np.sqrt(2.0)
        u, sv, _ = np.linalg.svd(simplex)
        coords = u[:, : k - 1] * sv[: k - 1]
        return np.pad(coords, ((0, 0), (0, d - (k - 1))))
    radius = int(np.ceil(k ** (1.0 / d)))
    axis = np.arange(-radius, radius + 1)
    grid = np.stack(np.meshgrid(*[axis] * d, indexing="ij"), -1).reshape(-1, d)
    order = np.lexsort((*grid.T[::-1], np.sum(grid**2, axis=1)))
    points = grid[order[:k]] * s
    return points - points.mean(axis=0)


def make_separated_mixture(
    seed: int, n_samples: int, n_components: int, n_features: int, *,
    separation: float, covariance: str = "identity", weights: str = "equal",
) -> tuple[np.ndarray, np.ndarray, MixtureParams]:
    r"""Points from a mixture of controlled overlap: ``(x, labels, true_params)``.

    The means are ``separated_means``: the smallest distance between two of them is
    exactly :math:`c\sqrt{d}` for ``separation`` :math:`= c`, Dasgupta's (1999)
    c-separation for components whose largest covariance eigenvalue is 1
    (:math:`\|\mu_i - \mu_j\| \ge c \sqrt{d\,\lambda_{max}}`). Overlap studies of EM
    against gradient methods (Xu & Jordan 1996; Salakhutdinov, Roweis & Ghahramani
    2003) sweep ``c``: ``c = 4`` is well separated, ``c <= 1`` overlaps heavily.

    Args:
      seed: integer seed (covariances, weights and points; the means are fixed).
      n_samples, n_components, n_features: sizes ``n``, ``k``, ``d``.
      separation: ``c >= 0``.
      covariance: ``"identity"`` (every :math:`\Sigma_j = I`) or ``"random"``: a
        random rotation of eigenvalues uniform in [0.5, 1], so the largest is at
        most 1 and the c-separation still holds.
      weights: ``"equal"`` (:math:`\pi_j = 1/k`) or ``"dirichlet"`` (Dirichlet(5)).

    Returns:
      ``x`` (n, d), ``labels`` (n,), and the true ``MixtureParams`` (``full``).

    Examples:
      >>> x, labels, p = make_separated_mixture(0, 400, 3, 2, separation=2.0)
      >>> x.shape, p.n_components
      ((400, 2), 3)
    """
    v.check_choice(covariance, "covariance", ("identity", "random"))
    v.check_choice(weights, "weights", ("equal", "dirichlet"))
    means = separated_means(n_components, n_features, separation)
    k, d = means.shape
    rng = np.random.default_rng(seed)
    pi = np.full(k, 1.0 / k) if weights == "equal" else rng.dirichlet(np.full(k, 5.0))
    if covariance == "identity":
        cov = np.broadcast_to(np.eye(d), (k, d, d)).copy()
    else:
        q, _ = np.linalg.qr(rng.normal(size=(k, d, d)))
        cov = np.einsum("kij,kj,klj->kil", q, rng.uniform(0.5, 1.0, (k, d)), q)
    params = MixtureParams.from_covariances(pi, means, cov, "full")
    x, labels = sample(jax.random.key(seed), params, v.check_int(n_samples, "n_samples", 1))
    return np.asarray(x), np.asarray(labels), params


def bayes_error(params: MixtureParams, n_samples: int = 20_000, seed: int = 0) -> float:
    r"""The Bayes error of a mixture: the chance that the most probable component of
    a point is not the one that drew it, :math:`1 - E_x[\max_j p(j \mid x)]`.

    Monte Carlo over ``n_samples`` points drawn with ``seed`` (the same sample for
    the same arguments, so settings compare); averaging :math:`1 - \max_j p(j|x)`
    rather than counting mistakes has the smaller variance. Its standard error is
    below ``0.5 / sqrt(n_samples)`` (0.0035 at the default).

    Examples:
      >>> p = make_separated_mixture(0, 10, 2, 1, separation=2.0)[2]
      >>> round(bayes_error(p), 2)   # two unit Gaussians 2 apart: Phi(-1) = 0.1587
      0.16
    """
    from mogjax.mixture import responsibilities

    x, _ = sample(jax.random.key(seed), params, n_samples)
    return float(1.0 - np.mean(np.max(np.asarray(responsibilities(params, x)), axis=1)))


def smallest_distance(means) -> float:
    """The smallest distance between two rows of ``means`` (k, d); ``inf`` for one row."""
    m = np.asarray(means, dtype=np.float64)
    if m.shape[0] < 2:
        return float("inf")
    gaps = np.linalg.norm(m[:, None] - m[None], axis=-1)
    return float(np.min(gaps[np.triu_indices(m.shape[0], 1)]))


# A text table is refused from its first bytes when they hold a NUL or are not UTF-8;
# a line longer than MAX_LINE is refused before it is read whole.
PROBE_BYTES = 64 * 1024
MAX_LINE = 1 << 20
ROWS_PER_BLOCK = 65536


def load_file(path, *, n_features: int | None = None, header: bool | None = None,
              missing: bool = False) -> np.ndarray:
    """A user's data file as a float array (n, d): ``.npy`` or ``.csv``, never pickle.

    ``.npy`` is read with ``allow_pickle=False``. A CSV (``.csv``, ``.txt``) is UTF-8
    text of comma-separated numbers, with ``#`` comment lines and blank lines
    skipped. Its first row is a header of column names only when no field in it
    parses as a number (a first row with a typo in one number is an error, not a
    header); ``header=True`` or ``False`` decides instead. It is read line by line
    into blocks of rows, so memory stays bounded by the result. One clear
    ``ValueError`` per problem, naming the file (and the line and column): a missing
    file, a folder, an empty file, a binary or NUL-filled file (refused from its
    first bytes), a line too long, non-numeric cells, NaN or infinity, a ragged row,
    the wrong number of columns (when ``n_features`` is given).

    ``missing=True`` reads missing entries as NaN (for ``fit_em(missing="marginalize")``):
    NaN in a ``.npy``; in a CSV an empty cell, ``nan`` or ``NA`` (any case). Infinity
    is still an error.

    Examples:
      >>> import pathlib, tempfile
      >>> f = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
      >>> _ = f.write_text("a,b\\n1,2\\n3,4\\n")
      >>> load_file(f).tolist()
      [[1.0, 2.0], [3.0, 4.0]]
    """
    from pathlib import Path

    path = Path(path)
    name = f"data file {str(path)!r}"
    if path.is_dir():
        raise ValueError(f"{name} is a folder, not a file")
    if not path.exists():
        raise ValueError(f"{name} does not exist")
    if not path.is_file():
        raise ValueError(f"{name} is not a regular file")
    if path.stat().st_size == 0:
        raise ValueError(f"{name} is empty")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = _read_npy(path, name)
    elif suffix in (".csv", ".txt"):
        x = _read_csv(path, name, header, missing)
    else:
        raise ValueError(f"{name}: unknown format {suffix!r}; use .csv or .npy")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must hold a 2-D table with rows, got shape {x.shape}")
    bad = np.isinf(x) if missing else ~np.isfinite(x)
    if np.any(bad):
        row, col = np.argwhere(bad)[0]
        what = "infinity" if missing else "NaN or infinity"
        hint = "" if missing else f"; {MISSING_HINT}"
        raise ValueError(f"{name} contains {what} (row {row + 1}, column {col + 1}){hint}")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"{name} has {x.shape[1]} columns, expected {n_features}")
    return x


def _read_npy(path, name: str) -> np.ndarray:
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{name} is not a .npy file (it does not start with NumPy's "
                             "header)")
    try:
        x = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as err:
        raise ValueError(f"{name} is not a plain numeric .npy array ({err})") from None
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name} holds dtype {x.dtype}, not numbers")
    return np.array(x, np.float64)


def _check_text(path, name: str) -> None:
    """Refuse a file whose first bytes are not UTF-8 text (a NUL, an invalid byte)."""
    with open(path, "rb") as f:
        head = f.read(PROBE_BYTES)
    if (at := head.find(b"\0")) >= 0:
        raise ValueError(f"{name} is not a text file (a NUL byte at byte {at + 1}); "
                         "give a .csv of numbers or a .npy array")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not just a character cut by the probe's end
            raise ValueError(f"{name} is not UTF-8 text (byte 0x{head[err.start]:02x} at "
                             f"byte {err.start + 1}); give a .csv of numbers or a .npy "
                             "array") from None


def _lines(path, name: str):
    """``(line number, text)`` of every line that is not blank or a comment."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE + 1), b""), 1):
            if len(raw) > MAX_LINE:
                raise ValueError(f"{name}, line {lineno}: longer than {MAX_LINE} bytes; "
                                 "not a table of numbers")
            try:
                text = raw.decode("utf-8").strip().lstrip("\ufeff")
            except UnicodeDecodeError as err:
                raise ValueError(f"{name}, line {lineno}, byte {err.start + 1}: not UTF-8 "
                                 "text") from None
            if "\0" in text:
                raise ValueError(f"{name}, line {lineno}: a NUL byte; not a text table")
            if text and not text.startswith("#"):
                yield lineno, text


MISSING_CELLS = ("", "nan", "na")  # read as NaN by load_file(..., missing=True)
MISSING_HINT = ("missing=True reads missing entries as NaN, for fit_em(missing="
                "'marginalize') (experiments: model.missing=marginalize)")


def _parse(cells: list[str], missing: bool = False) -> list[float | None]:
    out = []
    for cell in cells:
        try:
            out.append(float(cell))
        except ValueError:
            out.append(np.nan if missing and cell.lower() in MISSING_CELLS else None)
    return out


def _read_csv(path, name: str, header: bool | None, missing: bool = False) -> np.ndarray:
    _check_text(path, name)
    blocks, block, width, first = [], [], None, True
    for lineno, text in _lines(path, name):
        cells = [c.strip() for c in text.split(",")]
        if first:
            first = False
            if header or (header is None and all(v is None for v in _parse(cells))):
                continue
        values = _parse(cells, missing)
        if None in values:
            bad = values.index(None)
            hint = (" (a header row holds no numbers; set data.header=true to skip it)"
                    if width is None else "")
            if cells[bad].lower() in MISSING_CELLS:
                hint = f": a missing entry; {MISSING_HINT}"
            raise ValueError(f"{name}, line {lineno}, column {bad + 1}: {cells[bad]!r} is "
                             f"not a number{hint}")
        if width is not None and len(values) != width:
            raise ValueError(f"{name}, line {lineno}: {len(values)} columns, expected {width}")
        width = len(values)
        block.append(values)
        if len(block) == ROWS_PER_BLOCK:
            blocks.append(np.asarray(block, np.float64))
            block = []
    if block:
        blocks.append(np.asarray(block, np.float64))
    if not blocks:
        raise ValueError(f"{name} has no data rows")
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
