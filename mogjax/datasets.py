"""Data: the small real data sets shipped with the package, and synthetic mixtures.

Files are read with NumPy's text parser (no pickle anywhere).
"""

from importlib import resources

import jax
import numpy as np

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
    rng = np.random.default_rng(seed)
    k, d = n_components, n_features
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


def load_file(path, *, n_features: int | None = None) -> np.ndarray:
    """A user's data file as a float array (n, d): ``.npy`` or ``.csv``, never pickle.

    ``.npy`` is read with ``allow_pickle=False``. A CSV may start with one header line
    of column names and ``#`` comment lines; every other cell must be a number, and a
    bad cell is reported with its line and column. One clear ``ValueError`` per
    problem: a missing or empty file, non-numeric cells, NaN or infinity, a ragged
    row, the wrong number of columns (when ``n_features`` is given).

    Examples:
      >>> import pathlib, tempfile
      >>> f = pathlib.Path(tempfile.mkdtemp()) / "x.csv"
      >>> _ = f.write_text("a,b\\n1,2\\n3,4\\n")
      >>> load_file(f).tolist()
      [[1.0, 2.0], [3.0, 4.0]]
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"data file {str(path)!r} is empty")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"data file {str(path)!r} is not a plain numeric .npy array ({err})") from None
        if x.dtype.kind not in "biuf":
            raise ValueError(f"data file {str(path)!r} holds dtype {x.dtype}, not numbers")
        x = np.asarray(x, np.float64)
    elif suffix in (".csv", ".txt"):
        x = _read_csv(path)
    else:
        raise ValueError(f"data file {str(path)!r}: unknown format {suffix!r}; use .csv or .npy")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"data file {str(path)!r} must hold a 2-D table with rows, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        row, col = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"data file {str(path)!r} contains NaN or infinity (row {row + 1}, column {col + 1})")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"data file {str(path)!r} has {x.shape[1]} columns, expected {n_features}")
    return x


def _read_csv(path) -> np.ndarray:
    rows, width = [], None
    with open(path) as f:
        lines = [(i + 1, line.strip()) for i, line in enumerate(f)]
    lines = [(i, s) for i, s in lines if s and not s.startswith("#")]
    for idx, (lineno, text) in enumerate(lines):
        cells = [c.strip() for c in text.split(",")]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if idx == 0:
                continue  # a header of column names
            bad = next(j for j, c in enumerate(cells) if not _is_number(c))
            raise ValueError(
                f"data file {str(path)!r}, line {lineno}, column {bad + 1}: {cells[bad]!r} is not a number"
            ) from None
        if width is not None and len(values) != width:
            raise ValueError(
                f"data file {str(path)!r}, line {lineno}: {len(values)} columns, expected {width}"
            )
        width = len(values)
        rows.append(values)
    if not rows:
        raise ValueError(f"data file {str(path)!r} has no data rows")
    return np.asarray(rows, np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
